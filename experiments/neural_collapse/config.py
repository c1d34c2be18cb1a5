import dataclasses


@dataclasses.dataclass(frozen=True)
class NeuralCollapseConfig:
    """Settings of the neural-collapse replication (P13): bias-free deep linear networks trained with weight decay.

    **Fields:**

    - `seed`: the one seed every initialisation derives from.
    - `inputs`: "unconstrained" (the features entering the linear layers are free parameters, one per example: the
      unconstrained feature model) and/or "mnist" (the inputs are a small subset of MNIST images, pixels).
    - `losses`: "mse" and/or "ce".
    - `num_classes`: classes (MNIST digits `0..num_classes - 1`).
    - `balanced_count`: examples per class in the balanced runs.
    - `imbalanced_counts`: examples of each class in the imbalanced runs.
    - `width`: the width of the features and of every hidden linear layer.
    - `depth`: linear layers between the features and the classifier.
    - `weight_decay`: `lambda` of `lambda / 2 ||W||^2` on every layer, and per example on the free features.
    - `steps`, `learning_rate`, `momentum`: full-batch gradient descent with momentum.
    - `num_evaluations`: log-spaced moments of training at which the metrics are taken.
    - `orthogonality_tolerance`: imbalanced MSE: the largest `|cos|` between distinct class means that counts as
      near-orthogonal.
    """

    seed: int = 0
    inputs: tuple[str, ...] = ("unconstrained", "mnist")
    losses: tuple[str, ...] = ("mse", "ce")
    num_classes: int = 4
    balanced_count: int = 100
    imbalanced_counts: tuple[int, ...] = (200, 100, 50, 25)
    width: int = 16
    depth: int = 3
    weight_decay: float = 5e-3
    steps: int = 10_000
    learning_rate: float = 0.05
    momentum: float = 0.9
    num_evaluations: int = 16
    orthogonality_tolerance: float = 0.05

    @classmethod
    def quick(cls) -> "NeuralCollapseConfig":
        """The `--quick` variant: the unconstrained feature model only, shorter training, under a minute."""
        return cls(inputs=("unconstrained",), steps=3000, num_evaluations=8)
