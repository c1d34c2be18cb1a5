"""Fit a latent ODE and a latent SDE to irregularly observed two-day windows of electricity demand and temperature
(the encoder sees a random half of the first day's hours; the model reconstructs the first day and forecasts the
second), unregularised and with the solver regularisers of P32, and compare errors, NFE and wall times."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments.record import results_dir, write_results
from jaxinterp.data import electricity_demand
from jaxinterp.dynamics.training import RegularisationWeights, fit
from models.latent_ode import LatentODE
from models.latent_sde import LatentSDE

from .config import VARIANTS, Config

SLUG = "latent_ode"
PAPER = {
    "claim": "P32: regularising the error / stiffness estimates of a latent ODE (PhysioNet) cuts prediction and "
    "training time at a similar test error; P22: latent ODEs model irregularly sampled series",
    "source": "P32 (Pal et al. 2021), P22 (Kidger 2022); no latent-ODE numbers are quoted to compare with (docs/neural_de.md)",
}


def load(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardised hourly windows `[n, window_hours, 2]` (demand, temperature) for training and test, and the
    window's times in days."""
    _, half_hourly = electricity_demand()
    hourly = half_hourly.reshape(-1, 2, 2).mean(axis=1)
    window = config.window_hours
    starts = np.arange(0, len(hourly) - window + 1, config.stride_hours)
    boundary = config.train_days * 24
    train_starts = starts[starts + window <= boundary][: config.max_windows]
    test_starts = starts[starts >= boundary + window][: config.max_windows]
    mean = hourly[:boundary].mean(axis=0)
    std = hourly[:boundary].std(axis=0)
    standard = (hourly - mean) / std
    take = lambda s: np.stack([standard[i : i + window] for i in s]).astype(np.float32)
    ts = (np.arange(window) / 24.0).astype(np.float32)
    return take(train_starts), take(test_starts), ts


def _first_half(window: int) -> np.ndarray:
    return np.arange(window) < window // 2


def _observed(key, fraction: float, shape: tuple[int, int]) -> jax.Array:
    mask = jax.random.bernoulli(key, fraction, shape) & jnp.asarray(_first_half(shape[1]))
    return mask.at[:, 0].set(True)


def _batches(xs: np.ndarray, batch_size: int, seed: int):
    rng = np.random.default_rng(seed)
    while True:
        yield jnp.asarray(xs[rng.choice(len(xs), batch_size, replace=False)])


def build(config: Config, variant: str, ts: np.ndarray, key) -> LatentODE | LatentSDE:
    """The model a variant trains: a latent SDE for the `"SDE ..."` variants, else a latent ODE."""
    sizes = (2, config.latent_size, config.hidden_size, config.width, config.depth)
    t0, t1 = float(ts[0]), float(ts[-1])
    if variant.startswith("SDE"):
        return LatentSDE(*sizes, t0=t0, t1=t1, rtol=config.sde_rtol, atol=config.sde_atol, key=key)
    return LatentODE(*sizes, t0=t0, t1=t1, rtol=config.rtol, atol=config.atol, key=key)


def _make_loss(ts: jax.Array, config: Config):
    """MSE plus `kl_weight` times the KL of `q(z0)` from `N(0, I)` and, for a latent SDE, the path KL."""

    def loss(model: LatentODE | LatentSDE, xs, key):
        mask_key, sample_key = jax.random.split(key)
        mask = _observed(mask_key, config.observed_fraction, xs.shape[:2])
        predictions, mean, logstd, *path_kl, heuristics = model.solve_batch(ts, xs, mask, key=sample_key)
        kl = jnp.mean(jnp.sum(0.5 * (mean**2 + jnp.exp(2 * logstd) - 1) - logstd, axis=-1))
        kl = kl + sum(jnp.mean(k) for k in path_kl)
        return jnp.mean((predictions - xs) ** 2) + config.kl_weight * kl, heuristics

    return loss


@eqx.filter_jit
def _predict(model: LatentODE | LatentSDE, ts, xs, mask, key):
    outputs = model.solve_batch(ts, xs, mask, key=key)
    return outputs[0], outputs[-1].nfe


def evaluate(model: LatentODE, ts: jax.Array, xs: np.ndarray, config: Config) -> dict[str, float]:
    """Interpolation MSE (unobserved hours of the first day), forecast MSE (second day), mean NFE per batch, and the
    wall time of predicting every test window (compiled; the best of three)."""
    key = jax.random.key(12345)
    mask = np.asarray(_observed(key, config.observed_fraction, xs.shape[:2]))
    size = config.batch_size
    chunks = [slice(i, i + size) for i in range(0, len(xs) - size + 1, size)]
    args = [(jnp.asarray(xs[c]), jnp.asarray(mask[c])) for c in chunks]
    jax.block_until_ready(_predict(model, ts, *args[0], key))
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        outputs = jax.block_until_ready([_predict(model, ts, x, m, key) for x, m in args])
        timings.append(time.perf_counter() - started)
    predictions = np.concatenate([np.asarray(p) for p, _ in outputs])
    used = xs[: len(predictions)]
    squared = (predictions - used) ** 2
    first = _first_half(xs.shape[1])
    interpolate = first[None, :] & ~mask[: len(predictions)]
    return {
        "interpolation_mse": float(squared[interpolate].mean()),
        "forecast_mse": float(squared[:, ~first].mean()),
        "nfe": float(np.mean([int(n) for _, n in outputs])),
        "predict_s": min(timings),
    }


def _weights(config: Config, variant: str) -> RegularisationWeights:
    error_weight = config.sde_error_weight if variant.startswith("SDE") else config.error_weight
    return RegularisationWeights(
        error=error_weight if "error" in variant else 0.0,
        stiffness=config.stiffness_weight if "stiffness" in variant else 0.0,
    )


def _figure(models: dict[str, LatentODE | LatentSDE], ts: jax.Array, xs: np.ndarray, config: Config, path) -> None:
    key = jax.random.key(12345)
    x = xs[: config.batch_size]
    mask = _observed(key, config.observed_fraction, x.shape[:2])
    observed = np.asarray(mask)[0]
    fig, axes = plt.subplots(2, 1, figsize=(6, 4), sharex=True)
    for channel, (ax, name) in enumerate(zip(axes, ("demand (standardised)", "temperature (standardised)"))):
        ax.plot(ts, x[0, :, channel], color="0.6", label="data")
        ax.scatter(ts[observed], x[0, observed, channel], s=12, color="k", label="observed")
        for colour, (label, model) in zip(("C0", "C1"), models.items()):
            prediction = np.asarray(_predict(model, ts, jnp.asarray(x), mask, key)[0])[0]
            ax.plot(ts, prediction[:, channel], color=colour, label=label)
        ax.axvline(ts[len(ts) // 2], color="0.8", linestyle="--")
        ax.set_ylabel(name, fontsize=8)
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("days")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def check_variants(variants: tuple[str, ...]) -> None:
    """Raise `ValueError` unless every name is one of `VARIANTS` and each kind used (latent ODE, latent SDE) has its
    unregularised variant, the baseline of its ratios."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be some of {VARIANTS}; got {variants}")
    for kind, base in (("ODE", "unregularised"), ("SDE", "SDE unregularised")):
        if any(v.startswith("SDE") == (kind == "SDE") for v in variants) and base not in variants:
            raise ValueError(f"the latent {kind} variants {variants} need {base!r}, the baseline of their ratios")


def main(config: Config) -> dict:
    """Train every variant with every seed; write `results/latent_ode/`.

    **Returns:** the metrics written to `results.json`.
    """
    started = time.time()
    check_variants(config.variants)
    train, test, ts_np = load(config)
    ts = jnp.asarray(ts_np)
    loss = _make_loss(ts, config)
    optimiser = optax.adam(config.learning_rate)
    runs = []
    figure_models = {}
    for variant in config.variants:
        for seed in range(config.seed, config.seed + config.num_seeds):
            model_key, train_key = jax.random.split(jax.random.key(seed))
            model = build(config, variant, ts_np, model_key)
            model, history = fit(
                model,
                loss,
                _batches(train, config.batch_size, seed),
                optimiser,
                num_steps=config.sde_num_steps if variant.startswith("SDE") else config.num_steps,
                weights=_weights(config, variant),
                key=train_key,
                description=f"{variant} seed {seed}",
            )
            run = {"variant": variant, "seed": seed, **evaluate(model, ts, test, config)}
            run["train_s"] = history["wall_time_s"] - history["first_step_s"]
            run["compile_s"] = history["first_step_s"]
            runs.append(run)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}, flush=True)
            if "unregularised" in variant and seed == config.seed:
                figure_models["latent SDE (one sample)" if variant.startswith("SDE") else "latent ODE"] = model

    summary = {}
    for variant in config.variants:
        rows = [r for r in runs if r["variant"] == variant]
        summary[variant] = {
            key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows])))
            for key in ("interpolation_mse", "forecast_mse", "nfe", "predict_s", "train_s")
        }
    _figure(figure_models, ts, test, config, results_dir(SLUG) / "forecast.png")
    table = []
    for variant, stats in summary.items():
        # Ratios are to the unregularised model of the same kind (latent ODE or latent SDE).
        base = summary["SDE unregularised" if variant.startswith("SDE") else "unregularised"]
        table.append(
            {
                "variant": variant,
                "interpolation MSE": f"{stats['interpolation_mse'][0]:.3f} ± {stats['interpolation_mse'][1]:.3f}",
                "forecast MSE": f"{stats['forecast_mse'][0]:.3f} ± {stats['forecast_mse'][1]:.3f}",
                "NFE (prediction)": f"{stats['nfe'][0]:.1f} ± {stats['nfe'][1]:.1f}",
                "NFE ratio": stats["nfe"][0] / base["nfe"][0],
                "prediction s": stats["predict_s"][0],
                "training s": stats["train_s"][0],
                "training ratio": stats["train_s"][0] / base["train_s"][0],
            }
        )
    metrics = {"runs": runs, "summary": summary, "train_windows": len(train), "test_windows": len(test)}
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
