"""The one training loop: optax updates of a model's inexact arrays, an optional moving average of them, a metric
history, fixed per-step seeds and checkpoints that resume bit for bit."""

import hashlib
import json
import os
import pathlib
import tempfile
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from . import sharding

LossFn = Callable[[PyTree, PyTree, PRNGKeyArray], Float[Array, ""] | tuple[Float[Array, ""], PyTree]]
"""`loss_fn(model, batch, key) -> loss`, or `-> (loss, aux)` (with `has_aux=True`). For
[`jaxinterp.train`][] the `aux` is a dict of metrics; [`jaxinterp.dynamics.fit`][] takes solver heuristics."""

_FORMAT = "jaxinterp.train"
_VERSION = 1
_SYNC_EVERY = 10
_HEADER_LIMIT = 1 << 20


class _TrainState(eqx.Module):
    """What a checkpoint holds besides its header: the trainable arrays, their moving average (or `None`), the
    optimiser state, the data of the run's key and the metric history so far (NumPy arrays over steps)."""

    params: PyTree
    ema: PyTree
    opt_state: PyTree
    key: Array
    history: dict[str, np.ndarray]


def _sharded_batches(batches: Callable[[int], PyTree], mesh: Mesh) -> Callable[[int], PyTree]:
    """`batches` with every batch split along its first axis across `mesh`'s devices."""

    def sharded(step: int) -> PyTree:
        return sharding.shard_batch(batches(step), mesh)

    return sharded


def train(
    model: PyTree,
    loss_fn: LossFn,
    batches: Callable[[int], PyTree],
    optimiser: optax.GradientTransformation,
    *,
    steps: int,
    key: PRNGKeyArray,
    has_aux: bool = False,
    ema_decay: float | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    check_finite: bool = True,
    description: str = "train",
    progress: bool = True,
    mesh: Mesh | None = None,
) -> tuple[PyTree, dict[str, Any]]:
    """Train `model` for `steps` optimiser steps on `loss_fn`.

    Only the inexact arrays of `model` are trained (`eqx.partition(model, eqx.is_inexact_array)`); everything else
    is held fixed. Step `i` minimises `loss_fn(model, batches(i), jax.random.fold_in(key, i))`, so a run depends
    only on `key`, `batches` and the step count. One `eqx.filter_jit`-ted function takes each step, with the model,
    the batch, the key and the step number as arguments: runs that differ only in array values (the batch, weights
    passed inside it, the initial model) share one compilation.

    With `checkpoint` set, the full state is saved there every `checkpoint_every` steps and after the last one
    (atomically: written to a temporary file, then moved into place), and a run that finds the file continues from
    its step; running `steps=k` and then the full `steps` with the same checkpoint gives bit-identical parameters
    and metrics to one uninterrupted run.

    **Arguments:**

    - `model`: the initial model (an equinox Module, or any pytree with inexact arrays).
    - `loss_fn`: `loss_fn(model, batch, key) -> loss`, a scalar; with `has_aux=True`, `-> (loss, metrics)`
        with `metrics` a dict of arrays recorded every step (the name `"loss"` is the loop's own).
    - `batches`: a function `step -> batch`, deterministic in the step (e.g. [`jaxinterp.minibatches`][]). Arrays
        in the batch are traced; any other leaf is static and recompiles the step when it changes.
    - `optimiser`: an optax gradient transformation (reuse one object across runs to share the compilation).
    - `steps`: the total number of steps, counting those already in the checkpoint.
    - `key`: a JAX PRNG key; step `i` gets `jax.random.fold_in(key, i)`.
    - `has_aux`: whether `loss_fn` returns `(loss, metrics)`.
    - `ema_decay`: `d` in `ema_i = d * ema_(i-1) + (1 - d) * params_i` (with `ema_0` the initial parameters), or
        `None` for no average.
    - `checkpoint`: a file to save to and resume from, or `None`.
    - `checkpoint_every`: steps between checkpoints.
    - `check_finite`: raise `FloatingPointError` naming the step at which the loss first is NaN or infinite (the
        loss is checked every few steps and before each checkpoint, so no such state is ever saved).
    - `description`, `progress`: the tqdm progress bar's label (also used in error messages), and whether to show
        it; its postfix shows the latest loss.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` (`jaxinterp.sharding.mesh()`) for data-parallel training:
        each batch is split along its first axis across the devices, the parameters, average and optimiser state
        are replicated, and XLA inserts the gradient all-reduce (`docs/sharding.md`). `None`: the mesh of an
        enclosing `jaxinterp.sharding.training_mesh` context, if any, else one device.

    **Returns:** `(model, history)`. `model` is the moving average of the parameters if `ema_decay` is set, else
    the parameters after the last step. `history` maps `"loss"` and each metric of `loss_fn` to a NumPy array with
    one entry per step from step 0 (including steps restored from the checkpoint; empty metrics if no step was ever
    taken), plus `start_step` (the step this call began at), `wall_time_s` (this call's training time, compilation
    included) and `first_step_s` (this call's first step alone, i.e. mostly compilation).
    """
    _check_arguments(model, loss_fn, batches, optimiser, steps, has_aux, ema_decay, checkpoint_every)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    if not jax.tree.leaves(params):
        raise ValueError("train: the model has no inexact (floating-point) arrays to train")
    state = _TrainState(
        params,
        None if ema_decay is None else params,
        optimiser.init(params),
        _key_data(key),
        {},
    )
    path = None if checkpoint is None else pathlib.Path(checkpoint)
    start = 0
    if path is not None and path.exists():
        start, state = _load(path, state)
        if start > steps:
            raise ValueError(
                f"{description}: the checkpoint {path} is at step {start}, past the {steps} steps asked for; "
                "delete it or ask for more steps"
            )
        if not np.array_equal(np.asarray(state.key), np.asarray(_key_data(key))):
            raise ValueError(
                f"{description}: the checkpoint {path} was written by a run with a different key; resuming it "
                "would mix two runs (delete it to start afresh)"
            )

    history = _History(state.history, start)
    params, ema, opt_state = state.params, state.ema, state.opt_state
    mesh = sharding.current_training_mesh() if mesh is None else sharding.check_mesh(mesh)
    if mesh is not None:
        params, ema, opt_state = sharding.replicate((params, ema, opt_state), mesh)
        batches = _sharded_batches(batches, mesh)
    started = time.perf_counter()
    first_step_s = 0.0
    with tqdm(total=steps, initial=start, desc=description, disable=not progress, leave=False) as bar:
        for i in range(start, steps):
            params, ema, opt_state, metrics = _train_step(
                params,
                static,
                opt_state,
                ema,
                batches(i),
                key,
                np.uint32(i),
                loss_fn=loss_fn,
                optimiser=optimiser,
                has_aux=has_aux,
                ema_decay=ema_decay,
            )
            history.append(metrics)
            bar.update()
            if i == start:
                jax.block_until_ready(metrics)
                first_step_s = time.perf_counter() - started
            done = i + 1
            save = path is not None and (done % checkpoint_every == 0 or done == steps)
            if save or done % _SYNC_EVERY == 0 or done == steps:
                history.sync(check_finite, description)
                if progress:
                    bar.set_postfix(loss=f"{history.latest_loss():.4g}")
            if save:
                _save(path, done, _TrainState(params, ema, opt_state, _key_data(key), history.arrays()))
    history.sync(check_finite, description)
    out = history.arrays()
    out["start_step"] = start
    out["wall_time_s"] = time.perf_counter() - started
    out["first_step_s"] = first_step_s
    return eqx.combine(params if ema is None else ema, static), out


def minibatches(data: PyTree, batch_size: int, *, key: PRNGKeyArray) -> Callable[[int], PyTree]:
    """Minibatches drawn with replacement from in-memory data, the one for step `i` from `jax.random.fold_in(key,
    i)`: a `batches` for [`jaxinterp.train`][].

    **Arguments:**

    - `data`: an array or a pytree of arrays (e.g. images and labels), examples along the first axis of each.
    - `batch_size`: examples per batch.
    - `key`: a JAX PRNG key, used for nothing else (give the loop a different one).

    **Returns:** a function `step -> batch`, the batch with the structure of `data` and `batch_size` rows.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"minibatches: batch_size must be a positive integer, got {batch_size!r}")
    leaves = jax.tree.leaves(data)
    if not leaves:
        raise ValueError("minibatches: data has no arrays")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes or 0 in sizes:
        raise ValueError(
            f"minibatches: every array of data needs the same, non-empty first axis; got first axes {sorted(sizes)}"
        )
    data = jax.tree.map(jnp.asarray, data)

    def batch(step: int) -> PyTree:
        return _draw(data, key, np.uint32(step), batch_size)

    return batch


@eqx.filter_jit
def _draw(data, key, step, batch_size):
    size = jax.tree.leaves(data)[0].shape[0]
    index = jr.randint(jr.fold_in(key, step), (batch_size,), 0, size)
    return jax.tree.map(lambda leaf: leaf[index], data)


@eqx.filter_jit
def _train_step(params, static, opt_state, ema, batch, key, step, *, loss_fn, optimiser, has_aux, ema_decay):
    def objective(params):
        out = loss_fn(eqx.combine(params, static), batch, jr.fold_in(key, step))
        if not has_aux:
            if isinstance(out, tuple):
                raise TypeError("train: loss_fn returned a tuple; pass has_aux=True if it returns (loss, metrics)")
            out = out, {}
        elif not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], dict)):
            raise TypeError("train: with has_aux=True, loss_fn must return (loss, metrics) with metrics a dict")
        elif "loss" in out[1]:
            raise ValueError("train: 'loss' is the loop's own metric; give the metric of loss_fn another name")
        if jnp.shape(out[0]) != ():
            raise ValueError(f"train: loss_fn must return a scalar loss, got shape {jnp.shape(out[0])}")
        return out

    (loss, metrics), grads = eqx.filter_value_and_grad(objective, has_aux=True)(params)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    params = eqx.apply_updates(params, updates)
    if ema is not None:
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
    return params, ema, opt_state, {"loss": loss, **metrics}


class _History:
    """The metric history: NumPy chunks already on the host, and the latest steps' metrics still on the device."""

    def __init__(self, restored: dict[str, np.ndarray], start: int):
        self._chunks = {name: [values] for name, values in restored.items()}
        self._pending: list[dict[str, Array]] = []
        self._next_step = start
        self._latest_loss = float("nan")

    def append(self, metrics: dict[str, Array]) -> None:
        self._pending.append(metrics)

    def sync(self, check_finite: bool, description: str) -> None:
        if not self._pending:
            return
        pulled = jax.device_get(self._pending)
        first = self._next_step
        self._pending = []
        self._next_step += len(pulled)
        if self._chunks and set(self._chunks) != set(pulled[0]):
            raise ValueError(
                f"{description}: loss_fn records the metrics {sorted(pulled[0])}, but the checkpoint holds "
                f"{sorted(self._chunks)}"
            )
        for name in pulled[0]:
            self._chunks.setdefault(name, []).append(np.stack([np.asarray(r[name]) for r in pulled]))
        losses = np.asarray([r["loss"] for r in pulled])
        self._latest_loss = float(losses[-1])
        if check_finite and not np.all(np.isfinite(losses)):
            bad = int(np.flatnonzero(~np.isfinite(losses))[0])
            raise FloatingPointError(
                f"{description}: the loss is {losses[bad]} at step {first + bad} (counting from 0); "
                "pass check_finite=False to train on regardless"
            )

    def latest_loss(self) -> float:
        return self._latest_loss

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(chunks) for name, chunks in self._chunks.items()}


def _check_arguments(model, loss_fn, batches, optimiser, steps, has_aux, ema_decay, checkpoint_every) -> None:
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"train: steps must be a non-negative integer, got {steps!r}")
    if not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1:
        raise ValueError(f"train: checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    if not callable(loss_fn):
        raise TypeError(f"train: loss_fn must be callable, got {type(loss_fn).__name__}")
    if not callable(batches):
        raise TypeError(
            f"train: batches must be a function step -> batch, got {type(batches).__name__} "
            "(for in-memory data use jaxinterp.minibatches; for a fixed batch, lambda step: batch)"
        )
    if not (callable(getattr(optimiser, "init", None)) and callable(getattr(optimiser, "update", None))):
        raise TypeError(f"train: optimiser must be an optax GradientTransformation, got {type(optimiser).__name__}")
    if not isinstance(has_aux, bool):
        raise TypeError(f"train: has_aux must be True or False, got {has_aux!r}")
    if ema_decay is not None and not (isinstance(ema_decay, (int, float)) and 0.0 <= ema_decay < 1.0):
        raise ValueError(f"train: ema_decay must be None or a number in [0, 1), got {ema_decay!r}")


def _key_data(key: PRNGKeyArray) -> Array:
    key = jnp.asarray(key)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jr.key_data(key)
    return key


def _fingerprint(state: _TrainState) -> str:
    """A hash of the shapes and dtypes of everything but the history: what a checkpoint must match to resume."""
    leaves = jax.tree.leaves((state.params, state.ema, state.opt_state, state.key))
    layout = [(tuple(np.shape(leaf)), str(getattr(leaf, "dtype", type(leaf).__name__))) for leaf in leaves]
    return hashlib.sha256(repr(layout).encode()).hexdigest()


def _save(path: pathlib.Path, step: int, state: _TrainState) -> None:
    header = {
        "format": _FORMAT,
        "version": _VERSION,
        "step": step,
        "fingerprint": _fingerprint(state),
        "metrics": {name: [list(values.shape[1:]), str(values.dtype)] for name, values in state.history.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=path.name + ".", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(json.dumps(header).encode() + b"\n")
            eqx.tree_serialise_leaves(file, state)
        os.replace(partial, path)
    except BaseException:
        pathlib.Path(partial).unlink(missing_ok=True)
        raise


def _load(path: pathlib.Path, like: _TrainState) -> tuple[int, _TrainState]:
    """The step and state of the checkpoint at `path`, checked against the state `like` of the current run."""
    with open(path, "rb") as file:
        try:
            header = json.loads(file.readline(_HEADER_LIMIT))
            if header.get("format") != _FORMAT:
                raise ValueError("it has no training-checkpoint header")
            if header.get("version") != _VERSION:
                raise ValueError(f"it has format version {header.get('version')}, not {_VERSION}")
            step = int(header["step"])
            metrics = {
                name: np.zeros((step, *shape), dtype=np.dtype(dtype))
                for name, (shape, dtype) in header["metrics"].items()
            }
        except Exception as error:
            raise ValueError(f"the checkpoint {path} cannot be read: {error}") from error
        if header.get("fingerprint") != _fingerprint(like):
            raise ValueError(
                f"the checkpoint {path} was written for a different model, optimiser or moving average (its "
                "arrays have other shapes or dtypes); delete it or point checkpoint elsewhere"
            )
        try:
            like = _TrainState(like.params, like.ema, like.opt_state, like.key, metrics)
            state = eqx.tree_deserialise_leaves(file, like)
            trailing = file.read(1)
        except Exception as error:
            raise ValueError(f"the checkpoint {path} cannot be read (truncated or corrupt): {error}") from error
    if trailing:
        raise ValueError(f"the checkpoint {path} cannot be read: it has data past the training state")
    return step, state
