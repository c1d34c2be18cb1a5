"""Fast and slow weights for few-shot continual learning (Wang, Li, Zhong and Zhu, *Few-shot Continual Learning: a
Brain-inspired Approach*, 2021; docs/fast_slow_weights.md).

The slow weights `phi` are the long-term memory and the starting point of every new task; the fast weights `theta`
are adapted to the current task from its few examples. Learning a task is fast adaptation followed by a two-step
consolidation:

1. in the fast weights: `theta` starts at `phi` and minimises the task loss plus the anchor penalty
   `strength / 2 * sum_i Omega_i (theta_i - phi_i)^2`, with `Omega` the summed importance of the earlier tasks;
2. into the slow weights: `phi <- phi + rate * (F_i + floor) / (Omega_i + F_i + floor) * (theta_i - phi_i)`, the
   precision-weighted merge of the old slow weights (precision `Omega`) and the fast ones (precision `F`, the new
   task's diagonal Fisher information at `theta`), then `Omega <- Omega + F`.

Every function works on any pure model (an equinox Module or any pytree); only its inexact arrays are adapted.
"""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..training import LossFn, train

PerExampleLoss = Callable[[PyTree, PyTree], Float[Array, ""]]
"""`per_example_loss(model, example) -> loss`: the negative log-likelihood of one example (no batch axis)."""


def _parameters(model: PyTree) -> PyTree:
    return eqx.filter(model, eqx.is_inexact_array)


def _check_like(name: str, tree: PyTree, reference: PyTree, what: str) -> None:
    """Raise `ValueError` unless `tree` has the structure and array shapes of `reference`'s parameters."""
    reference = _parameters(reference)
    tree_structure = jax.tree.structure(tree)
    if tree_structure != jax.tree.structure(reference):
        raise ValueError(f"{name}: {what} must have the structure of the model's inexact arrays")
    for leaf, ref in zip(jax.tree.leaves(tree), jax.tree.leaves(reference)):
        if jnp.shape(leaf) != jnp.shape(ref):
            raise ValueError(
                f"{name}: {what} has an array of shape {jnp.shape(leaf)} where the model has {jnp.shape(ref)}"
            )


def _check_non_negative(name: str, value: Any, what: str) -> None:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: {what} must be a finite non-negative number, got {value!r}")


def zero_importance(model: PyTree) -> PyTree:
    """The importance of a model that has learned nothing yet: zeros shaped like its inexact arrays.

    **Arguments:**

    - `model`: an equinox Module or any pytree.

    **Returns:** a pytree with the structure of `eqx.filter(model, eqx.is_inexact_array)`, every array zero.
    """
    return jax.tree.map(jnp.zeros_like, _parameters(model))


def anchor_penalty(model: PyTree, anchor: PyTree, importance: PyTree) -> Float[Array, ""]:
    """`1/2 sum_i Omega_i (theta_i - phi_i)^2` over every inexact array of `model` (`theta`), with `phi` the
    matching array of `anchor` and `Omega` of `importance`.

    **Arguments:**

    - `model`: the fast weights.
    - `anchor`: the slow weights, a model of the same structure (or its inexact arrays alone).
    - `importance`: non-negative weights shaped like the model's inexact arrays (e.g. from [`diagonal_fisher`][]).

    **Returns:** the scalar penalty.
    """
    params, anchor = _parameters(model), _parameters(anchor)
    terms = jax.tree.map(lambda p, a, w: jnp.sum(w * (p - a) ** 2), params, anchor, importance)
    return 0.5 * sum(jax.tree.leaves(terms), jnp.zeros(()))


def fast_weight_loss(loss_fn: LossFn, strength: float) -> LossFn:
    """The loss of step 1 of the consolidation: the task loss plus the anchor penalty that protects earlier tasks.

    **Arguments:**

    - `loss_fn`: the task loss `loss_fn(model, batch, key) -> scalar` (no auxiliary output).
    - `strength`: `lambda` in `loss_fn + lambda * anchor_penalty` (0: plain adaptation).

    **Returns:** `fast_loss(model, (batch, anchor, importance), key) -> (loss, {"task_loss", "penalty"})`, for
    [`jaxinterp.train`][] with `has_aux=True`. The anchor (the slow weights' inexact arrays) and the importance
    travel in the batch, so one compilation serves every task of a sequence.
    """
    _check_non_negative("fast_weight_loss", strength, "strength")
    if not callable(loss_fn):
        raise TypeError(f"fast_weight_loss: loss_fn must be callable, got {type(loss_fn).__name__}")
    try:
        return _cached_fast_weight_loss(loss_fn, float(strength))
    except TypeError:  # an unhashable loss_fn: build a fresh one (its steps are then compiled per call)
        return _build_fast_weight_loss(loss_fn, float(strength))


def _build_fast_weight_loss(loss_fn: LossFn, strength: float) -> LossFn:
    def fast_loss(model, batch, key):
        task_batch, anchor, importance = batch
        task_loss = loss_fn(model, task_batch, key)
        if isinstance(task_loss, tuple):
            raise TypeError("fast_weight_loss: loss_fn must return a scalar loss, not (loss, metrics)")
        penalty = anchor_penalty(model, anchor, importance)
        return task_loss + strength * penalty, {"task_loss": task_loss, "penalty": penalty}

    return fast_loss


_cached_fast_weight_loss = functools.lru_cache(maxsize=64)(_build_fast_weight_loss)
"""One loss per `(loss_fn, strength)`, so that the tasks of a sequence share the compiled training step."""


def fast_adapt(
    slow: PyTree,
    loss_fn: LossFn,
    batches: Callable[[int], PyTree],
    optimiser: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    importance: PyTree | None = None,
    strength: float = 0.0,
    description: str = "fast weights",
    progress: bool = True,
) -> tuple[PyTree, dict[str, Any]]:
    """Fast adaptation (step 1): fast weights that start at the slow weights and learn the current task from its
    few examples under the anchor penalty, in [`jaxinterp.train`][].

    **Arguments:**

    - `slow`: the slow weights (a model); they are not changed.
    - `loss_fn`: the task loss `loss_fn(model, batch, key) -> scalar`.
    - `batches`: `step -> batch` of the current task (e.g. the few-shot support set every step).
    - `optimiser`: the fast weights' optax optimiser (reuse one object across tasks to share the compilation).
    - `steps`, `key`: the number of steps and the PRNG key of the loop.
    - `importance`: the earlier tasks' summed importance `Omega` (default: zero, i.e. no protection).
    - `strength`: `lambda` of the anchor penalty.
    - `description`, `progress`: passed to the loop.

    **Returns:** `(fast, history)`: the fast weights (a model like `slow`) and the loop's history, with
    `task_loss` and `penalty` per step.
    """
    importance = zero_importance(slow) if importance is None else importance
    _check_like("fast_adapt", importance, slow, "importance")
    anchor = _parameters(slow)
    return train(
        slow,
        fast_weight_loss(loss_fn, strength),
        lambda step: (batches(step), anchor, importance),
        optimiser,
        steps=steps,
        key=key,
        has_aux=True,
        description=description,
        progress=progress,
    )


@eqx.filter_jit
def _fisher(model, per_example_loss, examples):
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def squared_gradient(example):
        grads = jax.grad(lambda p: per_example_loss(eqx.combine(p, static), example))(params)
        return jax.tree.map(jnp.square, grads)

    squares = jax.vmap(squared_gradient)(examples)
    return jax.tree.map(lambda s: jnp.mean(s, axis=0), squares)


def diagonal_fisher(
    model: PyTree, per_example_loss: PerExampleLoss, examples: PyTree, *, normalise: bool = False
) -> PyTree:
    """The diagonal empirical Fisher information of a task: the mean over its examples of the squared gradient of
    each example's negative log-likelihood, `F_i = mean_n (d loss_n / d theta_i)^2`.

    **Arguments:**

    - `model`: the weights at which to take it (the fast weights of the task).
    - `per_example_loss`: `per_example_loss(model, example) -> scalar` for one example (no batch axis), e.g. the
        cross-entropy of its label.
    - `examples`: a pytree of arrays with the examples along the first axis of every leaf.
    - `normalise`: divide by the mean entry over all parameters, so that every task's importance has mean 1 however
        well its examples are already fitted (the squared gradients of a task fitted to near-zero loss are tiny).

    **Returns:** a pytree shaped like the model's inexact arrays, every entry non-negative.
    """
    if not isinstance(normalise, bool):
        raise TypeError(f"diagonal_fisher: normalise must be True or False, got {normalise!r}")
    if not callable(per_example_loss):
        raise TypeError(f"diagonal_fisher: per_example_loss must be callable, got {type(per_example_loss).__name__}")
    leaves = jax.tree.leaves(examples)
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in leaves}
    if not leaves or len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(
            "diagonal_fisher: examples needs arrays with the same, non-empty first axis (one row per example); got "
            f"first axes {sorted(sizes, key=str)}"
        )
    if not jax.tree.leaves(_parameters(model)):
        raise ValueError("diagonal_fisher: the model has no inexact (floating-point) arrays")
    fisher = _fisher(model, per_example_loss, jax.tree.map(jnp.asarray, examples))
    if normalise:
        leaves = jax.tree.leaves(fisher)
        mean = sum(jnp.sum(leaf) for leaf in leaves) / sum(leaf.size for leaf in leaves)
        fisher = jax.tree.map(lambda leaf: leaf / jnp.maximum(mean, jnp.finfo(leaf.dtype).tiny), fisher)
    return fisher


def consolidate(
    slow: PyTree,
    fast: PyTree,
    importance: PyTree,
    task_importance: PyTree,
    *,
    rate: float = 1.0,
    floor: float = 1e-8,
) -> tuple[PyTree, PyTree]:
    """Consolidation into the slow weights (step 2): move what the fast weights learned into the slow weights,
    parameter by parameter in proportion to how much it matters to the new task against the earlier ones.

    `phi_i <- phi_i + rate * (F_i + floor) / (Omega_i + F_i + floor) * (theta_i - phi_i)`, which for `rate = 1` is
    the mean of two Gaussians over the parameter: the earlier tasks' (centred at `phi`, precision `Omega`) and the
    new task's (centred at `theta`, precision `F + floor`). Then `Omega <- Omega + F`. Fast weights equal to the slow
    ones (no fast learning) leave the slow weights unchanged.

    **Arguments:**

    - `slow`: the slow weights `phi` (a model).
    - `fast`: the fast weights `theta` of the task just learned, a model of the same structure.
    - `importance`: `Omega`, the summed importance of the earlier tasks.
    - `task_importance`: `F`, the new task's importance at the fast weights (from [`diagonal_fisher`][]).
    - `rate`: a meta step size in `(0, 1]` (1: the full precision-weighted merge).
    - `floor`: a small positive precision added to `F`, so that parameters that no task depends on take the fast
        weights' values.

    **Returns:** `(slow, importance)`: the new slow weights (a model like `slow`) and `Omega + F`.
    """
    for what, tree in (("fast", fast), ("importance", importance), ("task_importance", task_importance)):
        _check_like("consolidate", _parameters(tree), slow, what)
    if not (isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0 < rate <= 1):
        raise ValueError(f"consolidate: rate must be a number in (0, 1], got {rate!r}")
    if not (isinstance(floor, (int, float)) and not isinstance(floor, bool) and floor > 0 and math.isfinite(floor)):
        raise ValueError(f"consolidate: floor must be a finite positive number, got {floor!r}")
    params, static = eqx.partition(slow, eqx.is_inexact_array)
    fast_params = _parameters(fast)
    if any(bool(jnp.any(leaf < 0)) for leaf in jax.tree.leaves((importance, task_importance))):
        raise ValueError("consolidate: importance and task_importance must be non-negative")
    new_params, new_importance = _merge(params, fast_params, importance, task_importance, rate, floor)
    return eqx.combine(new_params, static), new_importance


@jax.jit
def _merge(params, fast_params, importance, task_importance, rate, floor):
    def merge(p, f, omega, fisher):
        share = (fisher + floor) / (omega + fisher + floor)
        return p + rate * share * (f - p)

    new_params = jax.tree.map(merge, params, fast_params, importance, task_importance)
    return new_params, jax.tree.map(jnp.add, importance, task_importance)


def learn_task(
    slow: PyTree,
    importance: PyTree,
    loss_fn: LossFn,
    per_example_loss: PerExampleLoss,
    examples: PyTree,
    batches: Callable[[int], PyTree],
    optimiser: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    strength: float,
    rate: float = 1.0,
    floor: float = 1e-8,
    normalise: bool = False,
    description: str = "fast weights",
    progress: bool = True,
) -> tuple[PyTree, PyTree, PyTree, dict[str, Any]]:
    """One task of a sequence: fast adaptation ([`fast_adapt`][]), the task's importance at the fast weights
    ([`diagonal_fisher`][]) and consolidation into the slow weights ([`consolidate`][]).

    **Arguments:**

    - `slow`, `importance`: the slow weights and the earlier tasks' summed importance (start from the initial
        model and [`zero_importance`][]).
    - `loss_fn`, `batches`, `optimiser`, `steps`, `key`, `strength`: as for [`fast_adapt`][].
    - `per_example_loss`, `examples`, `normalise`: as for [`diagonal_fisher`][] (the task's few examples).
    - `rate`, `floor`: as for [`consolidate`][].

    **Returns:** `(slow, importance, fast, history)`: the consolidated slow weights, the summed importance including
    this task, the task's fast weights and the fast adaptation's history.
    """
    fast, history = fast_adapt(
        slow, loss_fn, batches, optimiser, steps=steps, key=key, importance=importance, strength=strength,
        description=description, progress=progress,
    )  # fmt: skip
    task_importance = diagonal_fisher(fast, per_example_loss, examples, normalise=normalise)
    slow, importance = consolidate(slow, fast, importance, task_importance, rate=rate, floor=floor)
    return slow, importance, fast, history
