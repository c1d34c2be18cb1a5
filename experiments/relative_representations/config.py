import dataclasses


@dataclasses.dataclass(frozen=True)
class RelativeRepresentationsConfig:
    """Settings of the relative-representations replication (P41).

    **Fields:**

    - `seed`: the first seed; the network of seed index `i` is initialised and trained from `seed + i`.
    - `datasets`: any of "mnist", "fashion_mnist".
    - `num_seeds`: networks per encoder kind and representation.
    - `encoders`: "mlp" (`models.mlp.MLP` on the flattened image) and/or "cnn" (`models.cnn.CNN`), each ending in
      a linear map to `latent_width`.
    - `latent_width`: the width of every encoder's output, shared so that absolute latents can be stitched too.
    - `mlp_hidden`, `cnn_channels`: the encoders' hidden sizes.
    - `decoder_hidden`: the decoder (a parameter-free layer norm, then `models.mlp.MLP`) hidden sizes.
    - `num_anchors`, `anchor_strategy`: anchors drawn from the training images (`jaxinterp.compare.select_anchors`).
    - `train_size`, `train_steps`, `batch_size`, `learning_rate`: training of each network (Adam).
    - `test_size`: test images used for every accuracy.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    num_seeds: int = 3
    encoders: tuple[str, ...] = ("mlp", "cnn")
    latent_width: int = 64
    mlp_hidden: tuple[int, ...] = (256,)
    cnn_channels: tuple[int, ...] = (8, 16)
    decoder_hidden: tuple[int, ...] = (128,)
    num_anchors: int = 200
    anchor_strategy: str = "by_class"
    train_size: int | None = None
    train_steps: int = 500
    batch_size: int = 128
    learning_rate: float = 1e-3
    test_size: int = 5000

    @classmethod
    def quick(cls) -> "RelativeRepresentationsConfig":
        """The `--quick` variant: MNIST, two seeds, short training, about a minute on two CPU cores."""
        return cls(
            datasets=("mnist",), num_seeds=2, num_anchors=100, train_size=10_000, train_steps=200, test_size=1000
        )
