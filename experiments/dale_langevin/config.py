import dataclasses

# The samplers of one run, by name. "reverse-SDE steps": one update per level with the level spacing as the step,
# the reverse-time SDE discretised as it stands. "paper's schedule": the official code's annealed variant, a fixed
# step, several updates per level and the noise multiplied by `noise_decay` at every level.
DALE_REVERSE_SDE = "Dale-Langevin, reverse-SDE steps (GBM)"
DALE_PAPER = "Dale-Langevin, paper's annealed schedule (GBM)"
AMBIENT_REVERSE_SDE = "ambient multiplicative, reverse-SDE steps (GBM)"
AMBIENT_PAPER = "ambient multiplicative, paper's annealed schedule (GBM)"
SHARK = "reverse SDE, diffrax ShARK adaptive (GBM)"
VE_EULER = "VE, Euler-Maruyama"
VP_EULER = "VP, Euler-Maruyama"
PAPER_LEVELS = 1000
SAMPLERS = (DALE_PAPER, DALE_REVERSE_SDE, AMBIENT_PAPER, AMBIENT_REVERSE_SDE, SHARK, VE_EULER, VP_EULER)


@dataclasses.dataclass(frozen=True)
class DaleLangevinConfig:
    """Settings of the Dale-meets-Langevin replication (P4).

    **Fields:**

    - `seed`: the one seed every random draw derives from.
    - `datasets`: any of "mnist", "fashion_mnist", "digits".
    - `image_size`: MNIST-style 28x28 images are average-pooled to this size (a divisor of 28); digits stay 8x8.
    - `train_size`: training images used (`None`: the whole training split).
    - `eval_size`: test images used as the reference set of FID/KID and of the recognisability of real images.
    - `widths`, `embed_dim`: the score U-Net (`models.score_net.ScoreUNet`).
    - `train_steps`, `batch_size`, `learning_rate`, `warmup_steps`, `ema_decay`: training of each score network.
    - `classifier_channels`, `classifier_steps`: the feature classifier for FID/KID and recognisability
      (`models.cnn.CNN`; its features are the flattened output of the last stage).
    - `sigma`: GBM volatility (drift `mu = sigma^2 / 2`).
    - `ve_sigma_max`, `vp_beta_max`: the additive baselines.
    - `t_min`: the smallest training time.
    - `num_levels`: noise levels of each fixed-step sampler, uniform in `(0, 1]`.
    - `samplers`: the samplers run, names from `SAMPLERS`; a score network is trained for each process they need.
    - `dale_step_size`, `ambient_step_size`, `ambient_steps_per_level`, `noise_decay`: the paper's annealed
      schedule (official MNIST settings, given for `PAPER_LEVELS` levels): a fixed step, updates per level, and the
      factor by which the noise shrinks from one level to the next. With another `num_levels` the step scales with
      the level spacing and the decay compounds over it, so the schedule covers the same time and ends at the same
      noise (`paper_schedule`).
    - `denoising_steps`: noise-free updates at the last level after the paper's schedule (the official code's
      optional Tweedie denoiser; 0 is its default).
    - `num_samples`: samples drawn by each sampler.
    - `curve_steps`, `curve_levels`, `curve_samplers`, `curve_samples`: the FID curve against training budget and
      noise levels: the networks after each of `curve_steps` (and `train_steps`) training steps, sampled by
      `curve_samplers` at each of `curve_levels` level counts, `curve_samples` samples per point (both empty: no
      curve).
    - `confidence`: a sample is recognised when the classifier gives one class at least this probability.
    - `adaptive_rtol`, `adaptive_atol`: tolerances of the adaptive diffrax solve (ShARK) of the GBM reverse SDE.
    - `checkpoint_every`: training steps between checkpoints.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    image_size: int = 28
    train_size: int | None = None
    eval_size: int = 2000
    widths: tuple[int, ...] = (16, 32, 64)
    embed_dim: int = 32
    train_steps: int = 600
    batch_size: int = 64
    learning_rate: float = 2e-3
    warmup_steps: int = 50
    ema_decay: float = 0.99
    classifier_channels: tuple[int, ...] = (32, 32, 8)
    classifier_steps: int = 800
    sigma: float = 0.8
    ve_sigma_max: float = 10.0
    vp_beta_max: float = 20.0
    t_min: float = 1e-3
    num_levels: int = 1000
    samplers: tuple[str, ...] = (DALE_PAPER, DALE_REVERSE_SDE, VP_EULER)
    dale_step_size: float = 6.165e-4
    ambient_step_size: float = 1.438e-4
    ambient_steps_per_level: int = 4
    noise_decay: float = 0.995
    denoising_steps: int = 0
    num_samples: int = 160
    curve_steps: tuple[int, ...] = (150, 300)
    curve_levels: tuple[int, ...] = (100,)
    curve_samplers: tuple[str, ...] = (DALE_REVERSE_SDE, VP_EULER)
    curve_samples: int = 128
    confidence: float = 0.9
    adaptive_rtol: float = 1e-2
    adaptive_atol: float = 1e-2
    checkpoint_every: int = 100

    def __post_init__(self):
        unknown = [name for name in self.samplers + self.curve_samplers if name not in SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}; choose from {list(SAMPLERS)}")
        if not self.samplers:
            raise ValueError("samplers is empty; choose from " + str(list(SAMPLERS)))
        if any(steps >= self.train_steps or steps < 1 for steps in self.curve_steps):
            raise ValueError(f"curve_steps must lie in [1, train_steps = {self.train_steps}), got {self.curve_steps}")
        if 28 % self.image_size:
            raise ValueError(f"image_size must divide 28, got {self.image_size}")

    def paper_schedule(self) -> dict[str, float]:
        """The paper's annealed schedule at `num_levels` levels: `dale_step`, `ambient_step` and `noise_decay`."""
        scale = PAPER_LEVELS / self.num_levels
        return {
            "dale_step": self.dale_step_size * scale,
            "ambient_step": self.ambient_step_size * scale,
            "noise_decay": self.noise_decay**scale,
        }

    @classmethod
    def quick(cls) -> "DaleLangevinConfig":
        """The `--quick` variant: scikit-learn's 8x8 digits and every sampler, a few minutes on two CPU cores."""
        return cls(
            datasets=("digits",),
            eval_size=297,
            widths=(16, 32),
            batch_size=128,
            train_steps=300,
            classifier_channels=(32, 8),
            classifier_steps=300,
            num_levels=100,
            samplers=SAMPLERS,
            num_samples=256,
            curve_steps=(75, 150),
            curve_levels=(20, 100),
            curve_samples=256,
        )
