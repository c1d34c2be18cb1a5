"""Learning a recurrent network through windows of truncated backpropagation, with the gradient from beyond each
window predicted by a feed-forward module (synthetic gradients, decoupled neural interfaces; the cerebellum of
cortico-cerebellar networks), and the plain truncated and full backpropagation through time to compare with."""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PyTree

Cell = Callable[[PyTree, Array], tuple[PyTree, Array]]
"""`cell(state, x) -> (state, output)`: one step of a recurrent network for one sequence. An equinox Module (its
arrays are trained), or `jax.tree_util.Partial(step, params)` for a function `step(params, state, x)`."""

StepLoss = Callable[[Array, Array], Float[Array, ""]]
"""`step_loss(output, target) -> loss`: the loss of one step's output, a scalar."""


def bptt_loss(
    cell: Cell,
    inputs: Array,
    targets: PyTree,
    *,
    initial_state: PyTree,
    step_loss: StepLoss,
    step_weights: Array | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The task loss of a recurrent network, differentiated by full backpropagation through time.

    The loss is `mean_b sum_t w_t step_loss(y_bt, target_bt)`, with `y_bt` the cell's output at step `t` of
    sequence `b`, run from `initial_state`.

    **Arguments:**

    - `cell`: `cell(state, x) -> (state, output)` for one sequence (see `Cell`); it is mapped over the batch.
    - `inputs`: `[batch, time, ...]`, one step's input per row of each sequence.
    - `targets`: an array (or pytree of arrays) `[batch, time, ...]`, one target per step.
    - `initial_state`: the state of one sequence at step 0 (a pytree; the same for every sequence).
    - `step_loss`: `step_loss(output, target) -> scalar` for one step.
    - `step_weights`: `w_t`, `[time]`; `None` weighs every step 1 (e.g. one-hot on the last step for a sequence
        classified at its end).

    **Returns:** `(loss, metrics)` for `jaxinterp.train(..., has_aux=True)`, with `metrics["task_loss"]` the loss
    (the outputs themselves come from `run_sequence`).
    """
    return _windowed_loss(cell, None, inputs, targets, initial_state, step_loss, step_weights, None, 0.0, 0.0)


def truncated_bptt_loss(
    cell: Cell,
    inputs: Array,
    targets: PyTree,
    *,
    window: int,
    initial_state: PyTree,
    step_loss: StepLoss,
    step_weights: Array | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The task loss of `bptt_loss`, differentiated by truncated backpropagation through time.

    The sequence is cut into windows of `window` steps (the last one shorter when `window` does not divide the
    length); the state entering each window is treated as a constant, so no gradient crosses a window boundary.
    The value equals `bptt_loss`'s; a window at least as long as the sequence gives the same gradient too.

    **Arguments:** as `bptt_loss`, and `window`, the truncation length in steps (a positive integer).

    **Returns:** `(loss, metrics)`, with `metrics["task_loss"]` the loss.
    """
    _check_window(window)
    return _windowed_loss(cell, None, inputs, targets, initial_state, step_loss, step_weights, window, 0.0, 0.0)


def synthetic_gradient_loss(
    cell: Cell,
    synthesiser: Callable[[Float[Array, " state"]], Float[Array, " state"]],
    inputs: Array,
    targets: PyTree,
    *,
    window: int,
    initial_state: PyTree,
    step_loss: StepLoss,
    step_weights: Array | None = None,
    scale: float = 0.1,
    discount: float = 0.1,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Truncated backpropagation through time with synthetic gradients at the window boundaries (Jaderberg et
    al. 2017; the cortico-cerebellar network of Boven et al. 2023): one objective whose gradient trains both the
    recurrent cell and the synthesiser.

    With windows `k = 0, 1, ...` of `window` steps, `s_k` the state entering window `k` (held constant, as in
    truncated BPTT), `s_(k+1)` the state leaving it, `L_k` the window's task loss and `C` the synthesiser (which
    reads and predicts flattened states, `ravel_pytree` order):

    - the cell is trained on `L_k + scale * <C(s_(k+1)), s_(k+1)>` with `C(s_(k+1))` constant: the gradient from
        beyond the window, which truncation drops, is replaced by `scale` times the prediction;
    - the synthesiser is trained on `|C(s_k) - g_k|^2` at every boundary `k >= 1`, toward the bootstrapped target
        `g_k = dL_k/ds_k + discount * (ds_(k+1)/ds_k)^T C(s_(k+1))` (held constant): the true gradient within the
        window plus the discounted prediction at the next boundary. After the last window the future gradient is 0.

    With `discount = 1`, `C` converges toward the true gradient of all future loss; the published code uses one
    factor, 0.1, for both (`scale = discount = 0.1`).

    **Arguments:** as `truncated_bptt_loss`, and

    - `synthesiser`: `C(state_vector) -> gradient_vector` for one sequence, both the size of the flattened state
        (an equinox Module, whose arrays are trained, or any callable pytree); e.g. `models.Cerebellum`.
    - `scale`: how much of the prediction the cell receives.
    - `discount`: how much of the next boundary's prediction enters the synthesiser's target.

    **Returns:** `(objective, metrics)` for `jaxinterp.train(..., has_aux=True)`. The objective's value is the
    task loss plus the synthesiser's loss (its gradient is the one described above); `metrics["task_loss"]` is the
    task loss (equal to `bptt_loss`'s) and `metrics["synthesiser_loss"]` the mean over sequences of
    `sum_k |C(s_k) - g_k|^2`.
    """
    _check_window(window)
    if not callable(synthesiser):
        raise TypeError(f"synthetic_gradient_loss: synthesiser must be callable, got {type(synthesiser).__name__}")
    return _windowed_loss(
        cell, synthesiser, inputs, targets, initial_state, step_loss, step_weights, window, scale, discount
    )


def boundary_gradients(
    cell: Cell,
    inputs: Array,
    targets: PyTree,
    *,
    window: int,
    initial_state: PyTree,
    step_loss: StepLoss,
    step_weights: Array | None = None,
) -> tuple[Float[Array, "batch boundaries state"], Float[Array, "batch boundaries state"]]:
    """The states at the window boundaries and the exact gradient of the future loss with respect to them, by full
    backpropagation through time: what a synthesiser at those boundaries should predict.

    With windows of `window` steps as in `truncated_bptt_loss`, boundary `k = 1, 2, ...` is the state `s_k` entering
    window `k` (the first window starts from `initial_state`, so it has none). The gradient at `s_k` is
    `d(sum_(j >= k) L_j) / ds_k`, everything the loss after the boundary owes to the state there, through all the
    later steps (the part truncation drops, plus the part inside window `k` that truncated BPTT keeps).

    **Arguments:** as `truncated_bptt_loss`.

    **Returns:** `(states, gradients)`, both `[batch, boundaries, state]` with the state flattened in
    `ravel_pytree` order; `boundaries` is the number of windows less one (0 when one window covers the sequence).
    """
    _check_window(window)
    _check_inputs("boundary_gradients", cell, inputs, targets, step_weights)
    time = jnp.shape(inputs)[1]
    weights = jnp.ones(time, jnp.result_type(float)) if step_weights is None else jnp.asarray(step_weights)
    window = min(window, time)
    bounds = [(start, min(start + window, time)) for start in range(0, time, window)]
    flat_initial, unravel = ravel_pytree(initial_state)

    def one_sequence(xs, ys):
        def step(state, step_data):
            x, y, w = step_data
            state, output = cell(state, x)
            return state, w * step_loss(output, y)

        def loss_and_states(nudges):
            state, task, states = initial_state, 0.0, []
            for k, (start, stop) in enumerate(bounds):
                if k > 0:
                    flat = ravel_pytree(state)[0]
                    states.append(flat)
                    state = unravel(flat + nudges[k - 1])
                segment = (
                    xs[start:stop],
                    jax.tree.map(lambda leaf, start=start, stop=stop: leaf[start:stop], ys),
                    weights[start:stop],
                )
                state, losses = jax.lax.scan(step, state, segment)
                task = task + jnp.sum(losses)
            return task, jnp.stack(states) if states else jnp.zeros((0, flat_initial.size), flat_initial.dtype)

        nudges = jnp.zeros((len(bounds) - 1, flat_initial.size), flat_initial.dtype)
        gradients, states = jax.grad(loss_and_states, has_aux=True)(nudges)
        return states, gradients

    return jax.vmap(one_sequence)(inputs, targets)


def synthetic_gradient_quality(
    synthesiser: Callable[[Float[Array, " state"]], Float[Array, " state"]],
    states: Float[Array, "batch boundaries state"],
    gradients: Float[Array, "batch boundaries state"],
    *,
    scale: float = 0.1,
) -> dict[str, Array]:
    """How well a synthesiser predicts the true future gradient at the window boundaries (from
    `boundary_gradients`).

    **Arguments:**

    - `synthesiser`: `C(state_vector) -> gradient_vector` for one state, as in `synthetic_gradient_loss`.
    - `states`, `gradients`: `[batch, boundaries, state]`, the flattened boundary states and the exact gradients of
        the future loss with respect to them.
    - `scale`: the factor the cortex receives the prediction with (`synthetic_gradient_loss`'s `scale`).

    **Returns:** a dict of `[boundaries]` arrays, each a mean over the batch: `"cosine"`, the cosine similarity
    between `C(s_k)` and the true gradient (0 where either is 0); `"relative_error"`, `|C(s_k) - g_k| / |g_k|` (1 for
    a synthesiser predicting 0); `"injected_relative_error"`, the same for what the cortex receives,
    `|scale C(s_k) - g_k| / |g_k|`; `"norm_ratio"`, `|C(s_k)| / |g_k|`; and `"true_norm"`, `|g_k|`.
    """
    predicted = jax.vmap(jax.vmap(synthesiser))(states)
    tiny = jnp.finfo(jnp.result_type(gradients)).tiny
    true_norm = jnp.linalg.norm(gradients, axis=-1)
    predicted_norm = jnp.linalg.norm(predicted, axis=-1)
    safe = jnp.maximum(true_norm, tiny)
    cosine = jnp.sum(predicted * gradients, axis=-1) / jnp.maximum(predicted_norm * true_norm, tiny)
    return {
        "cosine": jnp.mean(cosine, axis=0),
        "relative_error": jnp.mean(jnp.linalg.norm(predicted - gradients, axis=-1) / safe, axis=0),
        "injected_relative_error": jnp.mean(jnp.linalg.norm(scale * predicted - gradients, axis=-1) / safe, axis=0),
        "norm_ratio": jnp.mean(predicted_norm / safe, axis=0),
        "true_norm": jnp.mean(true_norm, axis=0),
    }


def run_sequence(cell: Cell, inputs: Array, *, initial_state: PyTree) -> tuple[PyTree, Array]:
    """Run `cell` over a batch of sequences from `initial_state`.

    **Arguments:** `cell`, `inputs` and `initial_state` as in `bptt_loss`.

    **Returns:** `(final_states, outputs)`, the final state of every sequence (batched along a first axis) and the
    outputs `[batch, time, ...]`.
    """
    _check_inputs("run_sequence", cell, inputs, None, None)

    def one(xs):
        return jax.lax.scan(lambda state, x: cell(state, x), initial_state, xs)

    return jax.vmap(one)(inputs)


def _check_window(window) -> None:
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise ValueError(f"window must be a positive integer number of steps, got {window!r}")


def _check_inputs(name, cell, inputs, targets, step_weights) -> None:
    if not callable(cell):
        raise TypeError(
            f"{name}: cell must be callable as cell(state, x) -> (state, output), got {type(cell).__name__}"
        )
    if jnp.ndim(inputs) < 2:
        raise ValueError(f"{name}: inputs must be [batch, time, ...], got shape {jnp.shape(inputs)}")
    batch, time = jnp.shape(inputs)[:2]
    if time == 0:
        raise ValueError(f"{name}: the sequences are empty (inputs of shape {jnp.shape(inputs)})")
    if targets is not None:
        for leaf in jax.tree.leaves(targets):
            if jnp.shape(leaf)[:2] != (batch, time):
                raise ValueError(
                    f"{name}: targets must be [batch, time, ...] like the inputs' {(batch, time)}, got shape "
                    f"{jnp.shape(leaf)}"
                )
    if step_weights is not None and jnp.shape(step_weights) != (time,):
        raise ValueError(f"{name}: step_weights must have shape ({time},), got {jnp.shape(step_weights)}")


def _windowed_loss(cell, synthesiser, inputs, targets, initial_state, step_loss, step_weights, window, scale, discount):
    if synthesiser is not None:
        name = "synthetic_gradient_loss"
    else:
        name = "bptt_loss" if window is None else "truncated_bptt_loss"
    _check_inputs(name, cell, inputs, targets, step_weights)
    time = jnp.shape(inputs)[1]
    weights = jnp.ones(time, jnp.result_type(float)) if step_weights is None else jnp.asarray(step_weights)
    window = time if window is None else min(window, time)
    bounds = [(start, min(start + window, time)) for start in range(0, time, window)]
    _, unravel = ravel_pytree(initial_state)

    def one_sequence(xs, ys):
        def run_window(cell, state, start, stop):
            def step(state, step_data):
                x, y, w = step_data
                state, output = cell(state, x)
                return state, w * step_loss(output, y)

            segment = (xs[start:stop], jax.tree.map(lambda leaf: leaf[start:stop], ys), weights[start:stop])
            state, losses = jax.lax.scan(step, state, segment)
            return jnp.sum(losses), ravel_pytree(state)[0]

        state = initial_state
        task, injected, synthesiser_loss = 0.0, 0.0, 0.0
        for k, (start, stop) in enumerate(bounds):
            entering = jax.lax.stop_gradient(state) if window < time else state
            if synthesiser is None:
                window_loss, leaving = run_window(cell, entering, start, stop)
            else:
                flat_entering = ravel_pytree(entering)[0]
                (window_loss, leaving), pullback = jax.vjp(
                    lambda flat, start=start, stop=stop: run_window(cell, unravel(flat), start, stop), flat_entering
                )
                if k == len(bounds) - 1:
                    future = jnp.zeros_like(leaving)
                else:
                    future = jax.lax.stop_gradient(synthesiser(jax.lax.stop_gradient(leaving)))
                    injected = injected + scale * jnp.vdot(future, leaving)
                if k > 0:
                    (target,) = pullback((jnp.ones_like(window_loss), discount * future))
                    error = synthesiser(flat_entering) - jax.lax.stop_gradient(target)
                    synthesiser_loss = synthesiser_loss + jnp.sum(error**2)
            task = task + window_loss
            state = unravel(leaving)
        return task, injected, synthesiser_loss

    task, injected, synthesiser_loss = jax.vmap(one_sequence)(inputs, targets)
    task, injected, synthesiser_loss = jnp.mean(task), jnp.mean(injected), jnp.mean(synthesiser_loss)
    objective = task + synthesiser_loss + (injected - jax.lax.stop_gradient(injected))
    metrics: dict[str, Any] = {"task_loss": task}
    if synthesiser is not None:
        metrics["synthesiser_loss"] = synthesiser_loss
    return objective, metrics
