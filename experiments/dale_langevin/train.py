"""Training a model on random minibatches with Adam, a weight average, and checkpoints that resume exactly."""

import functools
import os
import pathlib
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

LossFn = Callable[[eqx.Module, PyTree[Array], PRNGKeyArray], Float[Array, ""]]


class TrainState(eqx.Module):
    """Everything a resumed run needs: the trainable arrays, their exponential moving average, the optimiser state,
    the number of steps taken and a running average of the loss."""

    params: eqx.Module
    ema_params: eqx.Module
    opt_state: optax.OptState
    step: Array
    loss_average: Array


@functools.cache
def _optimiser(learning_rate: float, warmup_steps: int) -> optax.GradientTransformation:
    schedule = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def train(
    model: eqx.Module,
    loss_fn: LossFn,
    data: PyTree[Array],
    *,
    key: PRNGKeyArray,
    steps: int,
    batch_size: int,
    learning_rate: float,
    warmup_steps: int = 0,
    ema_decay: float = 0.99,
    checkpoint: pathlib.Path | None = None,
    checkpoint_every: int = 100,
    description: str = "train",
) -> tuple[eqx.Module, float]:
    """Train `model` for `steps` Adam steps (global-norm clipping at 1, linear warm-up, then a constant rate).

    Step `i` draws its minibatch (with replacement) and its loss randomness from `jr.fold_in(key, i)`, so the run
    depends only on the key and the step count. With `checkpoint` set, the state is saved there every
    `checkpoint_every` steps and at the end (`eqx.tree_serialise_leaves` of a `TrainState`), and a run that finds a
    checkpoint continues from its step; interrupted-and-resumed and uninterrupted runs give identical weights.

    **Arguments:**

    - `model`: the initial model.
    - `loss_fn`: `(model, batch, key) -> scalar loss`.
    - `data`: the training examples, an array or a pytree of arrays (e.g. images and labels) sharing the first
        axis.
    - `key`: a JAX PRNG key for the minibatches and the loss.
    - `steps`: the total number of steps (including any already in the checkpoint).
    - `batch_size`: examples per step.
    - `learning_rate`: the Adam learning rate after warm-up.
    - `warmup_steps`: steps of linear warm-up from 0.
    - `ema_decay`: decay of the exponential moving average of the weights, which is what is returned.
    - `checkpoint`: a file to save to and resume from, or `None`.
    - `checkpoint_every`: steps between checkpoints.
    - `description`: the progress-bar label.

    **Returns:** the weight-averaged model and the running average of the loss at the end.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimiser = _optimiser(learning_rate, warmup_steps)
    state = TrainState(params, params, optimiser.init(params), jnp.array(0, jnp.int32), jnp.array(0.0, jnp.float32))
    if checkpoint is not None and checkpoint.exists():
        state = eqx.tree_deserialise_leaves(checkpoint, state)

    data = jax.tree.map(jnp.asarray, data)
    start = int(state.step)
    with tqdm(total=steps, initial=start, desc=description, leave=False) as bar:
        for i in range(start, steps):
            state = _train_step(state, data, key, loss_fn, static, optimiser, batch_size, ema_decay)
            bar.update()
            if checkpoint is not None and ((i + 1) % checkpoint_every == 0 or i + 1 == steps):
                _save(checkpoint, state)
            if (i + 1) % 25 == 0:
                bar.set_postfix(loss=f"{float(state.loss_average):.4g}")
    return eqx.combine(state.ema_params, static), float(state.loss_average)


@eqx.filter_jit
def _train_step(state, data, key, loss_fn, static, optimiser, batch_size, ema_decay):
    step_key = jr.fold_in(key, state.step)
    index_key, loss_key = jr.split(step_key)
    size = jax.tree.leaves(data)[0].shape[0]
    index = jr.randint(index_key, (batch_size,), 0, size)
    batch = jax.tree.map(lambda leaf: leaf[index], data)

    def objective(p):
        return loss_fn(eqx.combine(p, static), batch, loss_key)

    loss, grads = eqx.filter_value_and_grad(objective)(state.params)
    updates, opt_state = optimiser.update(grads, state.opt_state, state.params)
    params = eqx.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, state.ema_params, params)
    weight = jnp.where(state.step == 0, 1.0, 0.02)
    loss_average = (1 - weight) * state.loss_average + weight * loss
    return TrainState(params, ema, opt_state, state.step + 1, loss_average)


def _save(path: pathlib.Path, state: TrainState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    eqx.tree_serialise_leaves(partial, state)
    os.replace(partial, path)
