import dataclasses


@dataclasses.dataclass(frozen=True)
class DaleLangevinConfig:
    """Settings of the Dale-meets-Langevin replication (P4).

    **Fields:**

    - `seed`: the one seed every random draw derives from.
    - `datasets`: any of "mnist", "fashion_mnist", "digits".
    - `image_size`: MNIST-style 28x28 images are average-pooled to this size (a divisor of 28); digits stay 8x8.
    - `train_size`: training images used (`None`: the whole training split).
    - `eval_size`: test images used as the reference set of FID/KID.
    - `widths`, `embed_dim`: the score U-Net (`models.score_net.ScoreUNet`).
    - `train_steps`, `batch_size`, `learning_rate`, `warmup_steps`, `ema_decay`: training of each score network.
    - `classifier_channels`, `classifier_steps`: the feature classifier for FID/KID (`models.cnn.CNN`).
    - `sigma`: GBM volatility (drift `mu = sigma^2 / 2`).
    - `ve_sigma_max`, `vp_beta_max`: the additive baselines.
    - `t_min`: the smallest training time.
    - `num_levels`: noise levels (score evaluations) of each fixed-step sampler, uniform in `(0, 1]`.
    - `num_samples`: samples drawn by each sampler.
    - `adaptive_rtol`, `adaptive_atol`: tolerances of the adaptive diffrax solve (ShARK) of the GBM reverse SDE.
    - `checkpoint_every`: training steps between checkpoints.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    image_size: int = 14
    train_size: int | None = None
    eval_size: int = 2000
    widths: tuple[int, ...] = (16, 32)
    embed_dim: int = 32
    train_steps: int = 600
    batch_size: int = 128
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    ema_decay: float = 0.99
    classifier_channels: tuple[int, ...] = (32, 8)
    classifier_steps: int = 800
    sigma: float = 0.8
    ve_sigma_max: float = 10.0
    vp_beta_max: float = 20.0
    t_min: float = 1e-3
    num_levels: int = 100
    num_samples: int = 400
    adaptive_rtol: float = 1e-2
    adaptive_atol: float = 1e-2
    checkpoint_every: int = 100

    @classmethod
    def quick(cls) -> "DaleLangevinConfig":
        """The `--quick` variant: scikit-learn's 8x8 digits, a few minutes on two CPU cores."""
        return cls(
            datasets=("digits",),
            eval_size=297,
            train_steps=300,
            classifier_steps=300,
            num_levels=50,
            num_samples=256,
        )
