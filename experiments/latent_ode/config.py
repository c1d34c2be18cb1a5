"""Configuration of the latent ODE experiment on electricity demand (fpp2::elecdemand)."""

import dataclasses

VARIANTS = ("unregularised", "error", "error+stiffness", "SDE unregularised", "SDE error")
"""Every variant: latent ODEs without, with the error and with both regularisers; latent SDEs without and with the
error regulariser."""


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: each variant trained with seeds `seed .. seed+num_seeds-1`.

    **Fields:**

    - `seed`, `num_seeds`: the first seed and how many seeds per variant.
    - `window_hours`, `stride_hours`: windows of the hourly series (time in days, from 0) and their spacing.
    - `observed_fraction`: the chance that each hour of a window's first half is observed by the encoder.
    - `train_days`: windows that start before this day train; windows that start after it (and a gap of one
        window) test.
    - `max_windows`: at most this many training and this many test windows (the first ones).
    - `latent_size`, `hidden_size`, `width`, `depth`: the model's sizes.
    - `rtol`, `atol`: the latent ODE's Tsit5 solve's PID tolerances.
    - `sde_rtol`, `sde_atol`: the latent SDE's Heun solve's PID tolerances.
    - `batch_size`, `num_steps`, `learning_rate`, `kl_weight`: training (Adam, MSE plus `kl_weight` times the KL of
        `q(z0)` and, for the latent SDE, the path KL).
    - `error_weight`, `stiffness_weight`: the regularisers' weights when a latent ODE variant uses them.
    - `sde_error_weight`: the error regulariser's weight for the latent SDE.
    - `sde_num_steps`: training steps of the latent SDE variants.
    - `variants`: which of `VARIANTS` to train (each kind's regularised variants are compared with its
        unregularised one, so that one must be among them).
    """

    seed: int = 0
    num_seeds: int = 3
    window_hours: int = 48
    stride_hours: int = 6
    observed_fraction: float = 0.5
    train_days: int = 300
    max_windows: int = 2000
    latent_size: int = 8
    hidden_size: int = 32
    width: int = 64
    depth: int = 1
    rtol: float = 1e-5
    atol: float = 1e-5
    sde_rtol: float = 1e-3
    sde_atol: float = 1e-3
    batch_size: int = 64
    num_steps: int = 3000
    learning_rate: float = 3e-3
    kl_weight: float = 1e-3
    error_weight: float = 0.1
    stiffness_weight: float = 0.01
    sde_error_weight: float = 0.1
    sde_num_steps: int = 1000
    variants: tuple[str, ...] = VARIANTS

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def quick() -> Config:
    """Few windows, few steps: what the tests smoke-run."""
    return Config(num_seeds=1, max_windows=128, hidden_size=16, width=32, num_steps=30, sde_num_steps=30, batch_size=32)
