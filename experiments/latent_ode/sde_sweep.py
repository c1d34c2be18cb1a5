"""Tune the latent SDE of this experiment: train it longer and sweep the weight of the error regulariser (P32).

`python -m experiments.latent_ode.sde_sweep [--quick] [--seed N]` trains `LatentSDE` on the same windows, loss and
evaluation as `experiments.latent_ode` (one seed), unregularised and with each error weight of
`SweepConfig.error_weights`, in stages of `SweepConfig.stages` steps (evaluated after each stage; each stage
continues from the last with a fresh Adam state and the next batches), and writes `results/latent_ode/sde_sweep/`:
the interpolation and forecast MSE and the NFE of every weight and training length, and which weights meet the
target at each length (interpolation MSE within 10% of the unregularised model's with at least 2x fewer NFE).
"""

import dataclasses
import time

import jax
import jax.numpy as jnp
import optax

from experiments.command_line import run_from_command_line
from experiments.record import write_results
from jaxinterp.dynamics.training import RegularisationWeights, fit

from .config import Config
from .config import quick as quick_base
from .run import _batches, _make_loss, build, evaluate, load

SLUG = "latent_ode/sde_sweep"


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """The sweep: the latent ODE experiment's `base` configuration, one seed, a longer training and error weights.

    **Fields:**

    - `base`: data, sizes and training settings, as `experiments.latent_ode.config.Config`.
    - `seed`: the seed of the models, the batches and the masks.
    - `stages`: training steps of each stage; the models are evaluated after every stage.
    - `error_weights`: the weights of `R_E` tried besides 0 (the unregularised model).
    - `mse_tolerance`, `min_nfe_cut`: the target, interpolation MSE at most `1 + mse_tolerance` times the
        unregularised model's and NFE at least `min_nfe_cut` times fewer.
    """

    base: Config = dataclasses.field(default_factory=Config)
    seed: int = 0
    stages: tuple[int, ...] = (1000, 500)
    error_weights: tuple[float, ...] = (0.01, 0.03)
    mse_tolerance: float = 0.1
    min_nfe_cut: float = 2.0


def quick() -> SweepConfig:
    """Few windows and steps, two weights: a smoke run."""
    return SweepConfig(base=quick_base(), stages=(10, 10), error_weights=(0.01,))


def main(config: SweepConfig) -> dict:
    """Train the unregularised latent SDE and one per error weight; write `results/latent_ode/sde_sweep/`.

    **Returns:** the metrics written to `results.json`.
    """
    started = time.time()
    base = config.base
    train, test, ts_np = load(base)
    ts = jnp.asarray(ts_np)
    loss = _make_loss(ts, base)
    optimiser = optax.adam(base.learning_rate)
    runs = []
    for weight in (0.0, *config.error_weights):
        model_key, train_key = jax.random.split(jax.random.key(config.seed))
        model = build(base, "SDE", ts_np, model_key)
        batches = _batches(train, base.batch_size, config.seed)
        steps, train_s = 0, 0.0
        for stage, stage_steps in enumerate(config.stages):
            model, history = fit(
                model,
                loss,
                batches,
                optimiser,
                num_steps=stage_steps,
                weights=RegularisationWeights(error=weight),
                key=jax.random.fold_in(train_key, stage),
                description=f"latent SDE, error weight {weight}, stage {stage}",
            )
            steps += stage_steps
            train_s += history["wall_time_s"] - history["first_step_s"]
            run = {"error_weight": weight, "steps": steps, **evaluate(model, ts, test, base), "train_s": train_s}
            runs.append(run)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}, flush=True)
    table = []
    for run in runs:
        reference = next(r for r in runs if r["error_weight"] == 0.0 and r["steps"] == run["steps"])
        mse_ratio = run["interpolation_mse"] / reference["interpolation_mse"]
        nfe_cut = reference["nfe"] / run["nfe"]
        run["mse_ratio"], run["nfe_cut"] = mse_ratio, nfe_cut
        run["meets_target"] = bool(
            run["error_weight"] > 0 and mse_ratio <= 1 + config.mse_tolerance and nfe_cut >= config.min_nfe_cut
        )
        table.append(
            {
                "steps": run["steps"],
                "error weight": run["error_weight"],
                "interpolation MSE": run["interpolation_mse"],
                "forecast MSE": run["forecast_mse"],
                "NFE": run["nfe"],
                "MSE ratio": mse_ratio,
                "NFE cut": nfe_cut,
                "training s": run["train_s"],
                "meets target": run["meets_target"],
            }
        )
    meeting = [(r["steps"], r["error_weight"]) for r in runs if r["meets_target"]]
    metrics = {"runs": runs, "meeting_target": meeting}
    write_results(SLUG, config, metrics, started=started, table=table)
    return metrics


if __name__ == "__main__":
    run_from_command_line(
        "latent_ode.sde_sweep", __doc__, SweepConfig(), quick(), "a few windows and steps: a smoke run", main
    )
