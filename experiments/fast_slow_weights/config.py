import dataclasses


@dataclasses.dataclass(frozen=True)
class FastSlowWeightsConfig:
    """Settings of the few-shot continual-learning replication (P35): a sequence of two-class tasks from real class
    splits, learned from a few examples each by fast/slow weights, by plain fine-tuning and, as the upper bound, by
    joint training on every task's examples at once.

    **Fields:**

    - `seed`: the first seed; run `r` uses `seed + r` for its initial weights, its few-shot examples and its steps.
    - `runs`: independent runs (seeds) averaged in the table.
    - `datasets`: "mnist" and/or "fashion_mnist".
    - `class_pairs`: the tasks, in order, each a pair of classes (labels of the data set).
    - `shots`: training examples per class and task (drawn from the training split).
    - `hidden_sizes`: the MLP's hidden layers; its 10 logits are shared, and each task reads the two of its classes.
    - `steps_per_task`: full-batch steps on each task's few examples (joint training takes this times the number
      of tasks).
    - `learning_rate`: Adam's step size, for every learner.
    - `strength`: `lambda` of the anchor penalty of the fast weights (consolidation step 1), on importances that
      each task normalises to mean 1.
    - `rate`: the meta step size of the consolidation into the slow weights (step 2).
    - `floor`: the precision added to the new task's importance in step 2 (relative to its mean of 1).
    - `test_per_class`: test examples per class for the accuracies (`None`: the whole test split).
    """

    seed: int = 0
    runs: int = 10
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    class_pairs: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))
    shots: int = 10
    hidden_sizes: tuple[int, ...] = (100, 100)
    steps_per_task: int = 100
    learning_rate: float = 1e-3
    strength: float = 0.1
    rate: float = 1.0
    floor: float = 0.1
    test_per_class: int | None = None

    @classmethod
    def quick(cls) -> "FastSlowWeightsConfig":
        """The `--quick` variant: MNIST only, two runs, 500 test images per class."""
        return cls(runs=2, datasets=("mnist",), test_per_class=500)
