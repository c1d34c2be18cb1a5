import dataclasses


@dataclasses.dataclass(frozen=True)
class ConvergentLearningConfig:
    """Settings of the convergent-learning replication (P8).

    **Fields:**

    - `seed`: the first seed; network `i` is initialised and trained from `seed + i`.
    - `dataset`: "mnist" or "fashion_mnist".
    - `num_networks`: networks of the same architecture, trained from different seeds.
    - `channels`: the `models.cnn.CNN` stages (3x3 convolution, ReLU, 2x2 pooling each).
    - `train_size`, `train_steps`, `batch_size`, `learning_rate`: training of each network (Adam).
    - `num_images`: test images whose activations (every spatial position a sample) give the correlations.
    - `reliable_threshold`: a unit of network 0 is learned reliably when its best match in every other network
      correlates at least this much.
    - `mi_bins`, `mi_samples`: histogram bins and samples (positions) of the mutual-information matching.
    - `prediction_samples`: samples (positions) for sparse prediction and the clusters' regressions, half to fit
      and half to evaluate.
    - `l1_penalties`: the L1 penalties of sparse prediction.
    - `prediction_steps`: proximal gradient steps of each sparse prediction.
    - `cluster_size`: units per cluster (both networks together) of the spectral clustering.
    """

    seed: int = 0
    dataset: str = "mnist"
    num_networks: int = 4
    channels: tuple[int, ...] = (16, 32, 64)
    train_size: int | None = None
    train_steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 2e-3
    num_images: int = 2000
    reliable_threshold: float = 0.8
    mi_bins: int = 16
    mi_samples: int = 50_000
    prediction_samples: int = 20_000
    l1_penalties: tuple[float, ...] = (0.0, 0.03, 0.1, 0.3)
    prediction_steps: int = 300
    cluster_size: int = 4

    @classmethod
    def quick(cls) -> "ConvergentLearningConfig":
        """The `--quick` variant: two networks, short training, about a minute on two CPU cores."""
        return cls(
            num_networks=2,
            channels=(8, 16, 32),
            train_size=10_000,
            train_steps=200,
            num_images=500,
            mi_samples=20_000,
            prediction_samples=8000,
            l1_penalties=(0.0, 0.1),
            prediction_steps=150,
        )
