"""Perforated backpropagation (Brenner and Mason, 2025): neurons grow dendrite nodes, trained to correlate with
the neurons' remaining error, in rounds that alternate with ordinary training of the neurons.

What the functions here ask of a model. A *perforated layer* is any module with the fields `weight`
`[out, in]`, `bias` `[out]` and three tuples with one entry per dendrite round, `dendrite_weights` (`[out, in]`),
`dendrite_biases` and `dendrite_scales` (`[out]` each), and a method `dendrite_outputs(x) -> [rounds, out]`; its
bias must enter the neurons' pre-activations unscaled (so that the gradient with respect to the bias is the
gradient with respect to the pre-activation). The model's perforated layers are found in pytree order
([`perforated_layers`][]), and the model has a method `layer_inputs(x)` giving, for one example, the input of each
of them in that order. `models.PerforatedLinear` and `models.PerforatedMLP` are such a layer and model.
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ..training import LossFn, train

_LAYER_FIELDS = ("weight", "bias", "dendrite_weights", "dendrite_biases", "dendrite_scales")
_PHASES = ("neurons", "dendrites")


def is_perforated_layer(node: Any) -> bool:
    """Whether `node` is a perforated layer: it has the fields `weight`, `bias`, `dendrite_weights`,
    `dendrite_biases`, `dendrite_scales` and a `dendrite_outputs` method."""
    return all(hasattr(node, name) for name in _LAYER_FIELDS) and callable(getattr(node, "dendrite_outputs", None))


def perforated_layers(model: PyTree) -> list:
    """**Arguments:** `model`, any pytree. **Returns:** its perforated layers, in pytree order."""
    return [node for node in jax.tree.leaves(model, is_leaf=is_perforated_layer) if is_perforated_layer(node)]


def _layers_or_raise(model: PyTree, caller: str) -> list:
    layers = perforated_layers(model)
    if not layers:
        raise ValueError(
            f"{caller}: the model has no perforated layers (modules with the fields {', '.join(_LAYER_FIELDS)} "
            "and a dendrite_outputs method, such as models.PerforatedLinear)"
        )
    return layers


def add_dendrites(model: PyTree, *, key: PRNGKeyArray) -> PyTree:
    """Give every neuron of every perforated layer one more dendrite node: a new round of dendrite weights and
    biases (uniform in `+-1 / sqrt(in_size)`, as a freshly built layer) and output weights of zero.

    Because the new output weights are zero, the model computes exactly the same function (and loss) as before.

    **Arguments:**

    - `model`: a model with perforated layers.
    - `key`: a PRNG key for the new dendrite weights.

    **Returns:** the model with one more dendrite round in each perforated layer.
    """
    layers = _layers_or_raise(model, "add_dendrites")
    grown = []
    for layer, layer_key in zip(layers, jr.split(key, len(layers))):
        out_size, in_size = layer.weight.shape
        bound = 1.0 / np.sqrt(in_size)
        weight_key, bias_key = jr.split(layer_key)
        weight = jr.uniform(weight_key, (out_size, in_size), layer.weight.dtype, -bound, bound)
        bias = jr.uniform(bias_key, (out_size,), layer.bias.dtype, -bound, bound)
        grown.append(
            eqx.tree_at(
                lambda lay: (lay.dendrite_weights, lay.dendrite_biases, lay.dendrite_scales),
                layer,
                (
                    (*layer.dendrite_weights, weight),
                    (*layer.dendrite_biases, bias),
                    (*layer.dendrite_scales, jnp.zeros((out_size,), layer.bias.dtype)),
                ),
            )
        )
    return eqx.tree_at(perforated_layers, model, grown)


def _first(batch: PyTree) -> Array:
    return batch[0]


def neuron_errors(
    model: PyTree, loss_fn: LossFn, batch: PyTree, key: PRNGKeyArray
) -> tuple[Float[Array, "batch _"], ...]:
    """The error of every neuron on every example: the gradient of that example's loss with respect to the
    neuron's pre-activation (taken as the gradient with respect to the layer's bias).

    **Arguments:**

    - `model`: a model with perforated layers.
    - `loss_fn`: `loss_fn(model, batch, key) -> loss` or `-> (loss, metrics)`, the task's loss as given to
        [`jaxinterp.train`][]; here it is called on one-example batches.
    - `batch`: a pytree of arrays with the examples along the first axis of each.
    - `key`: the key passed to `loss_fn`.

    **Returns:** one `[batch, out_size]` array per perforated layer, in [`perforated_layers`][] order.
    """
    layers = _layers_or_raise(model, "neuron_errors")
    sizes = {jnp.shape(leaf)[0] if jnp.ndim(leaf) else None for leaf in jax.tree.leaves(batch)}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"neuron_errors: every array of the batch needs the same first axis, got {sorted(sizes)}")

    def example_loss(biases, example):
        with_biases = eqx.tree_at(lambda m: [lay.bias for lay in perforated_layers(m)], model, biases)
        out = loss_fn(with_biases, jax.tree.map(lambda leaf: leaf[None], example), key)
        return out[0] if isinstance(out, tuple) else out

    errors = jax.vmap(jax.grad(example_loss), in_axes=(None, 0))([lay.bias for lay in layers], batch)
    return tuple(errors)


def dendrite_correlation(
    outputs: Float[Array, "batch neurons"], errors: Float[Array, "batch neurons"], *, eps: float = 1e-8
) -> Float[Array, " neurons"]:
    """The cascade-correlation score of each dendrite node: the magnitude of the correlation, over the examples,
    between the node's output and its neuron's error,

        |sum_p (v_p - mean v)(e_p - mean e)| / sqrt(sum_p (v_p - mean v)^2 * sum_p (e_p - mean e)^2).

    The errors are scaled to unit spread first, so the score does not depend on their size; a neuron whose error
    is constant (a dead unit) scores 0.

    **Arguments:**

    - `outputs`: the nodes' outputs, one column per neuron.
    - `errors`: the neurons' errors on the same examples (e.g. from [`neuron_errors`][]).
    - `eps`: added to the variances so that constant columns give finite values and gradients.

    **Returns:** the score of each neuron's node, in `[0, 1]`.
    """
    if outputs.ndim != 2 or outputs.shape != errors.shape:
        raise ValueError(
            f"dendrite_correlation: outputs and errors must both be [batch, neurons], got {outputs.shape} and "
            f"{errors.shape}"
        )
    if outputs.shape[0] < 2:
        raise ValueError("dendrite_correlation: a correlation needs at least two examples")
    v = outputs - outputs.mean(axis=0)
    e = errors - errors.mean(axis=0)
    e_spread = jnp.sqrt(jnp.mean(e**2, axis=0))
    e = jnp.where(e_spread > 0, e / jnp.where(e_spread > 0, e_spread, 1.0), 0.0)
    covariance = jnp.mean(v * e, axis=0)
    return jnp.abs(covariance) / jnp.sqrt((jnp.mean(v**2, axis=0) + eps) * (jnp.mean(e**2, axis=0) + eps))


def dendrite_objective(
    loss_fn: LossFn, *, inputs: Callable[[PyTree], Array] = _first
) -> Callable[[PyTree, PyTree, PRNGKeyArray], tuple[Float[Array, ""], dict]]:
    """The loss that trains the newest dendrite nodes: minus the mean, over every neuron of every perforated
    layer that has dendrites, of [`dendrite_correlation`][] between the neuron's newest node and its error on the
    batch (the errors held fixed).

    **Arguments:**

    - `loss_fn`: the task's loss, `loss_fn(model, batch, key) -> loss` (or `(loss, metrics)`).
    - `inputs`: picks the model's inputs `[batch, ...]` out of a batch (default: `batch[0]`).

    **Returns:** `objective(model, batch, key) -> (loss, {"correlation": mean score})`, a `loss_fn` for
    [`jaxinterp.train`][] with `has_aux=True`.
    """

    def objective(model, batch, key):
        layers = _layers_or_raise(model, "dendrite_objective")
        if not any(lay.dendrite_weights for lay in layers):
            raise ValueError("dendrite_objective: no perforated layer has dendrites; call add_dendrites first")
        errors = jax.lax.stop_gradient(neuron_errors(model, loss_fn, batch, key))
        layer_inputs = jax.vmap(model.layer_inputs)(inputs(batch))
        if len(layer_inputs) != len(layers):
            raise ValueError(
                f"dendrite_objective: model.layer_inputs gives {len(layer_inputs)} inputs for {len(layers)} "
                "perforated layers"
            )
        scores = [
            dendrite_correlation(jax.vmap(layer.dendrite_outputs)(x)[:, -1], error)
            for layer, x, error in zip(layers, layer_inputs, errors)
            if layer.dendrite_weights
        ]
        correlation = jnp.mean(jnp.concatenate(scores))
        return -correlation, {"correlation": correlation}

    return objective


def phase_labels(model: PyTree, phase: str) -> PyTree:
    """Which arrays train in a phase: a pytree shaped as `eqx.filter(model, eqx.is_inexact_array)` with the label
    `"train"` or `"frozen"` at each array.

    In the `"neurons"` phase everything trains except the dendrite nodes' weights and biases (the nodes' output
    weights `dendrite_scales` train with the neurons); in the `"dendrites"` phase only the newest round's dendrite
    weights and biases train.

    **Arguments:** `model`, a model with perforated layers; `phase`, `"neurons"` or `"dendrites"`.

    **Returns:** the label pytree.
    """
    if phase not in _PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {', '.join(_PHASES)}")
    layers = _layers_or_raise(model, "phase_labels")
    default = "train" if phase == "neurons" else "frozen"
    labels = jax.tree.map(lambda _: default, eqx.filter(model, eqx.is_inexact_array))

    def layer_labels(layer):
        newest = len(layer.dendrite_weights) - 1

        def label(path, _):
            field = path[0].name
            if field in ("dendrite_weights", "dendrite_biases"):
                return "train" if phase == "dendrites" and path[1].idx == newest else "frozen"
            return default

        return jax.tree_util.tree_map_with_path(label, eqx.filter(layer, eqx.is_inexact_array))

    return eqx.tree_at(perforated_layers, labels, [layer_labels(layer) for layer in layers])


def phase_optimiser(model: PyTree, optimiser: optax.GradientTransformation, phase: str) -> optax.GradientTransformation:
    """`optimiser` on the arrays that train in `phase` ([`phase_labels`][]) and an update of exactly zero on the
    rest.

    **Arguments:** `model`, the model the optimiser will train (its structure fixes the labels); `optimiser`, an
    optax gradient transformation; `phase`, `"neurons"` or `"dendrites"`.

    **Returns:** an optax gradient transformation for [`jaxinterp.train`][] on `model`.
    """
    labels = phase_labels(model, phase)  # a Module, hence callable: optax would call it, so it is wrapped
    return optax.multi_transform({"train": optimiser, "frozen": optax.set_to_zero()}, lambda params: labels)


def _steps_per_round(steps: int | Sequence[int], rounds: int, name: str) -> list[int]:
    if isinstance(steps, int) and not isinstance(steps, bool):
        steps = [steps] * (rounds + 1)
    steps = list(steps)
    if len(steps) != rounds + 1 or not all(isinstance(s, int) and s >= 0 for s in steps):
        raise ValueError(f"perforated_training: {name} must be a non-negative integer or {rounds + 1} of them")
    return steps


def perforated_training(
    model: PyTree,
    loss_fn: LossFn,
    batches: Callable[[int], PyTree],
    optimiser: optax.GradientTransformation,
    *,
    rounds: int,
    neuron_steps: int | Sequence[int],
    dendrite_steps: int | Sequence[int],
    key: PRNGKeyArray,
    has_aux: bool = False,
    dendrite_optimiser: optax.GradientTransformation | None = None,
    inputs: Callable[[PyTree], Array] = _first,
    evaluate: Callable[[PyTree], dict[str, Any]] | None = None,
    progress: bool = True,
) -> tuple[PyTree, list[dict[str, Any]]]:
    """The alternating schedule of perforated backpropagation, each phase one [`jaxinterp.train`][] run:

    1. train the neurons (every array but the dendrite nodes' weights) on `loss_fn`;
    2. for each of `rounds` rounds: [`add_dendrites`][]; train only the new nodes, the neurons frozen, on
       [`dendrite_objective`][]; then train the neurons again, the nodes frozen and their zero-initialised output
       weights trainable.

    **Arguments:**

    - `model`: a model with perforated layers (see the module's description).
    - `loss_fn`, `batches`, `has_aux`: the task, as for [`jaxinterp.train`][]; the dendrite phases draw their
        batches from `batches` too.
    - `optimiser`: the neurons' optimiser (a fresh state in every phase).
    - `rounds`: the number of dendrite rounds.
    - `neuron_steps`: steps of each neuron phase, one number or `rounds + 1` of them (the first for the initial
        phase).
    - `dendrite_steps`: steps of each dendrite phase, one number or `rounds + 1` of them (the first unused).
    - `key`: a PRNG key; each phase derives its own.
    - `dendrite_optimiser`: the nodes' optimiser (default: `optimiser`).
    - `inputs`: picks the model's inputs out of a batch (default: `batch[0]`).
    - `evaluate`: called on the model after each neuron phase; its dict is added to that phase's record.
    - `progress`: whether to show the training loop's progress bars.

    **Returns:** `(model, phases)`: the trained model and one record per phase, in order, with `phase`
    (`"neurons"` or `"dendrites"`), `round` (0 for the initial phase), `steps`, `final_loss`, `wall_time_s`,
    for the dendrite phases `correlation_start` and `correlation_end` (the mean score on the first and last
    batches), and the result of `evaluate`.
    """
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
        raise ValueError(f"perforated_training: rounds must be a non-negative integer, got {rounds!r}")
    _layers_or_raise(model, "perforated_training")
    neuron_steps = _steps_per_round(neuron_steps, rounds, "neuron_steps")
    dendrite_steps = _steps_per_round(dendrite_steps, rounds, "dendrite_steps")
    dendrite_optimiser = optimiser if dendrite_optimiser is None else dendrite_optimiser
    objective = dendrite_objective(loss_fn, inputs=inputs)
    phases = []

    def run_neurons(model, round_):
        model, history = train(
            model, loss_fn, batches, phase_optimiser(model, optimiser, "neurons"), steps=neuron_steps[round_],
            key=jr.fold_in(key, 3 * round_), has_aux=has_aux, description=f"neurons, round {round_}",
            progress=progress,
        )  # fmt: skip
        record = {"phase": "neurons", "round": round_, "steps": neuron_steps[round_]}
        record |= {"final_loss": _last(history["loss"]), "wall_time_s": history["wall_time_s"]}
        phases.append(record | (evaluate(model) if evaluate is not None else {}))
        return model

    model = run_neurons(model, 0)
    for round_ in range(1, rounds + 1):
        model = add_dendrites(model, key=jr.fold_in(key, 3 * round_ - 2))
        model, history = train(
            model, objective, batches, phase_optimiser(model, dendrite_optimiser, "dendrites"),
            steps=dendrite_steps[round_], key=jr.fold_in(key, 3 * round_ - 1), has_aux=True,
            description=f"dendrites, round {round_}", progress=progress,
        )  # fmt: skip
        phases.append({
            "phase": "dendrites", "round": round_, "steps": dendrite_steps[round_],
            "final_loss": _last(history["loss"]), "wall_time_s": history["wall_time_s"],
            "correlation_start": _first_value(history.get("correlation")),
            "correlation_end": _last(history.get("correlation")),
        })  # fmt: skip
        model = run_neurons(model, round_)
    return model, phases


def _last(values) -> float:
    return float(values[-1]) if values is not None and len(values) else float("nan")


def _first_value(values) -> float:
    return float(values[0]) if values is not None and len(values) else float("nan")
