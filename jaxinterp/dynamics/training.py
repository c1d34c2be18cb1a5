"""Training neural differential equations with optax, adding the solver-heuristic regularisers of P32 with weights
that follow schedules over the training steps."""

from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..training import LossFn, train
from .regularisers import Heuristics


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


class _RegularisedLoss(eqx.Module):
    """`loss_fn` plus the weighted regularisers, on batches `(batch, weights)`; two of these with the same
    `loss_fn` are the same static argument of the loop's step, so runs differing only in weights share its
    compilation."""

    loss_fn: LossFn

    def __call__(self, model, batch, key):
        data, weights = batch
        task, heuristics = self.loss_fn(model, data, key)
        extra = penalty(heuristics, weights)
        metrics = {
            "task_loss": task,
            "penalty": extra,
            "error": jnp.mean(heuristics.error),
            "stiffness": jnp.mean(heuristics.stiffness),
            "nfe": jnp.mean(heuristics.nfe.astype(jnp.float32)),
        }
        return task + extra, metrics


def fit(
    model: eqx.Module,
    loss_fn: LossFn,
    batches: Iterator[PyTree] | Callable[[int], PyTree],
    optimiser: optax.GradientTransformation,
    *,
    num_steps: int,
    weights: RegularisationWeights | None = None,
    key: PRNGKeyArray,
    description: str = "train",
    progress: bool = True,
) -> tuple[eqx.Module, dict[str, Any]]:
    """Train `model` for `num_steps` optimiser steps on the regularised objective `task_loss + penalty`, with
    [`jaxinterp.train`][] (step `n` uses the key `jax.random.fold_in(key, n)` and the weights `weights.at(n)`).

    **Arguments:**

    - `model`: the model (an equinox Module).
    - `loss_fn`: `loss_fn(model, batch, key) -> (task_loss, heuristics)`.
    - `batches`: an iterator of batches, at least `num_steps` long (or a function `step -> batch`).
    - `optimiser`: an optax gradient transformation.
    - `num_steps`: how many steps to take.
    - `weights`: the regularisation weights (none by default).
    - `key`: a PRNG key.
    - `description`, `progress`: the tqdm progress bar's label, and whether to show it.

    **Returns:** `(model, history)`: `history` maps `loss`, `task_loss`, `penalty`, `error`, `stiffness` and `nfe`
    (means over any batch axes) to NumPy arrays over steps, plus `wall_time_s` (including compilation) and
    `first_step_s` (the first step alone), as [`jaxinterp.train`][] returns them.
    """
    weights = RegularisationWeights() if weights is None else weights
    draw = batches if callable(batches) else _from_iterator(batches)

    def regularised_batches(step: int) -> tuple[PyTree, Float[Array, "3"]]:
        return draw(step), weights.at(step)

    return train(
        model,
        _RegularisedLoss(loss_fn),
        regularised_batches,
        optimiser,
        steps=num_steps,
        key=key,
        has_aux=True,
        description=description,
        progress=progress,
    )


def _from_iterator(batches: Iterator[PyTree]) -> Callable[[int], PyTree]:
    if not isinstance(batches, Iterator):
        raise TypeError(f"fit: batches must be an iterator or a function step -> batch, got {type(batches).__name__}")

    def draw(step: int) -> PyTree:
        try:
            return next(batches)
        except StopIteration:
            raise ValueError(f"fit: batches ran out at step {step}") from None

    return draw
