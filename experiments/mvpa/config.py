import dataclasses


@dataclasses.dataclass(frozen=True)
class MVPAConfig:
    """Settings of the MVPA replication (P38): classify real multivariate series (UEA problems and EEG) after training
    on a subset of the channels, then test on other channel configurations, with an MVPFormer-style classifier and a
    standard transformer over time patches.

    **Fields:**

    - `seed`: the first seed; run `r` uses `seed + r` for its channel split, initial weights and minibatches.
    - `runs`: independent runs averaged in the table.
    - `datasets`: `(name, patch)` pairs, names from `jaxinterp.data.UEA_PROBLEMS`, `patch` the samples per token.
    - `train_fraction`: the share of a problem's channels seen in training (at least one channel stays unseen).
    - `steps`, `batch_size`, `learning_rate`, `weight_decay`: AdamW training of both models.
    - `d_model`, `n_heads`, `depth`: the size of both models.
    """

    seed: int = 0
    runs: int = 2
    datasets: tuple[tuple[str, int], ...] = (
        ("basic-motions", 10),
        ("japanese-vowels", 5),
        ("eyes-open-shut", 16),
        ("self-regulation-scp1", 32),
    )
    train_fraction: float = 0.67
    steps: int = 400
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    d_model: int = 32
    n_heads: int = 4
    depth: int = 2

    @classmethod
    def quick(cls) -> "MVPAConfig":
        """The `--quick` variant: BasicMotions and EyesOpenShut, one run of 100 steps with one block."""
        return cls(runs=1, datasets=(("basic-motions", 10), ("eyes-open-shut", 16)), steps=100, depth=1)
