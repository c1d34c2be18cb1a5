import dataclasses


@dataclasses.dataclass(frozen=True)
class CounterCurrentConfig:
    """Settings of the counter-current learning replication (P42): classifiers trained by counter-current
    learning, backpropagation and feedback alignment, and a convolutional autoencoder.

    **Fields:**

    - `seed`: the one seed every initialisation and minibatch order derives from.
    - `datasets`: "mnist" and/or "fashion_mnist".
    - `train_size`: training images used (the first ones of the training split), or `None` for all.
    - `activation`: the nonlinearity of every network ("elu", the paper's).
    - `mlp_hidden`: the hidden widths of the MLPs.
    - `mlp_bias`: whether the MLPs' layers have biases (the authors' have none).
    - `mlp_methods`: the learning rules for the MLPs: "backprop", "feedback_alignment", "counter_current".
    - `mlp_epochs`: passes over the training images for each MLP.
    - `cnn_channels`: the channels of the CNNs' stride-2 convolutional stages (then a linear head).
    - `cnn_methods`: the learning rules for the CNNs: "backprop", "counter_current".
    - `cnn_epochs`: passes over the training images for each CNN.
    - `optimiser`: the classifiers' optimiser, the same for every rule: "sgd" (the authors' released setting: plain
        SGD, the forward and the feedback network's gradients each clipped to global norm `gradient_clip`) or
        "adam".
    - `batch_size`, `learning_rate`, `gradient_clip`: the classifiers' minibatch size, learning rate and clipping
        norm (clipping with "sgd" only).
    - `autoencoder_learning_rate`: the autoencoder's rate (Adam, both rules).
    - `cnn_cosine_scale`: the weight of the CNNs' local losses, which compare unit-length activations.
    - `autoencoder_dataset`: the images of the autoencoder ("mnist" or "fashion_mnist"), or `None` for none.
    - `autoencoder_channels`, `autoencoder_steps`, `autoencoder_batch_size`: its encoder stages and training.
    - `evaluation_batch_size`: images per forward pass when testing.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    train_size: int | None = None
    activation: str = "elu"
    mlp_hidden: tuple[int, ...] = (256, 256, 256)
    mlp_bias: bool = False
    mlp_methods: tuple[str, ...] = ("backprop", "feedback_alignment", "counter_current")
    mlp_epochs: int = 20
    cnn_channels: tuple[int, ...] = (16, 32)
    cnn_methods: tuple[str, ...] = ("backprop", "counter_current")
    cnn_epochs: int = 2
    optimiser: str = "sgd"
    batch_size: int = 256
    learning_rate: float = 1.0
    gradient_clip: float = 1.0
    autoencoder_learning_rate: float = 1e-3
    cnn_cosine_scale: float = 1.0
    autoencoder_dataset: str | None = "mnist"
    autoencoder_channels: tuple[int, ...] = (16, 32)
    autoencoder_steps: int = 800
    autoencoder_batch_size: int = 64
    evaluation_batch_size: int = 1000

    @classmethod
    def quick(cls) -> "CounterCurrentConfig":
        """The `--quick` variant: fewer training steps on a 10,000-image training subset, about a minute."""
        return cls(train_size=10_000, mlp_epochs=5, cnn_epochs=1, autoencoder_steps=200)
