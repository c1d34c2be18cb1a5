"""Training neural differential equations with optax, adding the solver-heuristic regularisers of P32 with weights
that follow schedules over the training steps."""

import functools
import time
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .regularisers import Heuristics

LossFn = Callable[[eqx.Module, PyTree, PRNGKeyArray], tuple[Float[Array, ""], Heuristics]]


def _as_schedule(weight: float | optax.Schedule) -> optax.Schedule:
    return weight if callable(weight) else optax.constant_schedule(float(weight))


class RegularisationWeights(eqx.Module):
    """Weights of the regularisers as functions of the training step (`optax` schedules or constants).

    The penalty at step `n` is `error(n) * R_E + stiffness(n) * R_S + stiffness_integral(n) * R_S_int`, each
    regulariser averaged over any batch axes of the heuristics (per-example solves).

    **Arguments:**

    - `error`: the weight of `R_E = sum_j E_j |h_j|`.
    - `stiffness`: the weight of `R_S = max_j rho_j`.
    - `stiffness_integral`: the weight of `sum_j rho_j |h_j|`.
    """

    error: optax.Schedule
    stiffness: optax.Schedule
    stiffness_integral: optax.Schedule

    def __init__(
        self,
        error: float | optax.Schedule = 0.0,
        stiffness: float | optax.Schedule = 0.0,
        stiffness_integral: float | optax.Schedule = 0.0,
    ):
        self.error = _as_schedule(error)
        self.stiffness = _as_schedule(stiffness)
        self.stiffness_integral = _as_schedule(stiffness_integral)

    def at(self, step: int | Array) -> Float[Array, "3"]:
        """The three weights at training step `step`, as one array."""
        return jnp.stack(
            [
                jnp.asarray(self.error(step), jnp.float32),
                jnp.asarray(self.stiffness(step), jnp.float32),
                jnp.asarray(self.stiffness_integral(step), jnp.float32),
            ]
        )


def penalty(heuristics: Heuristics, weights: Float[Array, "3"]) -> Float[Array, ""]:
    """`weights . (R_E, R_S, R_S_int)`, each regulariser averaged over any batch axes of `heuristics`.

    **Arguments:**

    - `heuristics`: what a solve measured.
    - `weights`: the weights of the error, stiffness and stiffness-integral regularisers
        (from [`jaxinterp.dynamics.RegularisationWeights.at`][]).

    **Returns:** a scalar.
    """
    regularisers = jnp.stack(
        [jnp.mean(heuristics.error), jnp.mean(heuristics.stiffness), jnp.mean(heuristics.stiffness_integral)]
    )
    return jnp.dot(weights.astype(regularisers.dtype), regularisers)


@functools.lru_cache(maxsize=16)
def make_step(loss_fn: LossFn, optimiser: optax.GradientTransformation):
    """A jitted training step for `loss_fn` plus the weighted regularisers (cached per loss and optimiser, so that
    runs which differ only in their weights share one compilation).

    **Arguments:**

    - `loss_fn`: `loss_fn(model, batch, key) -> (task_loss, heuristics)`.
    - `optimiser`: an optax gradient transformation.

    **Returns:** `step(model, opt_state, batch, weights, key) -> (model, opt_state, metrics)` with `weights` as in
    [`jaxinterp.dynamics.penalty`][]; `metrics` holds `loss`, `task_loss`, `penalty`, `error`, `stiffness` and `nfe`
    (means over any batch axes).
    """

    def objective(model, batch, weights, key):
        task, heuristics = loss_fn(model, batch, key)
        extra = penalty(heuristics, weights)
        return task + extra, (task, extra, heuristics)

    @eqx.filter_jit
    def step(model, opt_state, batch, weights, key):
        (loss, (task, extra, heuristics)), grads = eqx.filter_value_and_grad(objective, has_aux=True)(
            model, batch, weights, key
        )
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)
        metrics = {
            "loss": loss,
            "task_loss": task,
            "penalty": extra,
            "error": jnp.mean(heuristics.error),
            "stiffness": jnp.mean(heuristics.stiffness),
            "nfe": jnp.mean(heuristics.nfe.astype(jnp.float32)),
        }
        return model, opt_state, metrics

    return step


def fit(
    model: eqx.Module,
    loss_fn: LossFn,
    batches: Iterator[PyTree],
    optimiser: optax.GradientTransformation,
    *,
    num_steps: int,
    weights: RegularisationWeights | None = None,
    key: PRNGKeyArray,
    description: str = "train",
    progress: bool = True,
) -> tuple[eqx.Module, dict[str, Any]]:
    """Train `model` for `num_steps` optimiser steps on the regularised objective.

    **Arguments:**

    - `model`: the model (an equinox Module).
    - `loss_fn`: `loss_fn(model, batch, key) -> (task_loss, heuristics)`.
    - `batches`: an iterator of batches, at least `num_steps` long.
    - `optimiser`: an optax gradient transformation.
    - `num_steps`: how many steps to take.
    - `weights`: the regularisation weights (none by default).
    - `key`: a PRNG key, split once per step.
    - `description`, `progress`: the tqdm progress bar's label, and whether to show it.

    **Returns:** `(model, history)`: `history` maps each metric of [`jaxinterp.dynamics.make_step`][] to a NumPy
    array over steps, plus `wall_time_s` (including compilation) and `first_step_s` (the first step alone).
    """
    weights = RegularisationWeights() if weights is None else weights
    step = make_step(loss_fn, optimiser)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    records = []
    started = time.perf_counter()
    first_step_s = 0.0
    bar = tqdm(range(num_steps), desc=description, disable=not progress, leave=False)
    for index, step_key in zip(bar, jax.random.split(key, num_steps)):
        model, opt_state, metrics = step(model, opt_state, next(batches), weights.at(index), step_key)
        records.append(metrics)
        if index == 0:
            jax.block_until_ready(metrics)
            first_step_s = time.perf_counter() - started
        if progress and index % 10 == 0:
            bar.set_postfix(loss=f"{float(metrics['loss']):.4f}", nfe=f"{float(metrics['nfe']):.0f}")
    records = jax.device_get(records)
    wall = time.perf_counter() - started
    history: dict[str, Any] = {name: np.asarray([r[name] for r in records]) for name in records[0]} if records else {}
    history["wall_time_s"] = wall
    history["first_step_s"] = first_step_s
    return model, history
