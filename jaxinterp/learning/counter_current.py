"""Counter-current learning (Kao and Hariharan, NeurIPS 2024): a forward network and a feedback network trained by
layer-local losses between the activations at matching depths, with no gradient crossing a layer."""

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

Layer = Callable[[Array], Array]
"""One layer, written for one example: `layer(x) -> y` (an equinox Module, so that its arrays are trained)."""

PairLoss = Callable[[Array, Array], Float[Array, ""]]
"""`pair_loss(forward_activation, feedback_activation) -> scalar`: the local loss at one depth, on a batch of
forward activations `[batch, ...]` and a batch of feedback activations `[feedback_batch, ...]`."""


def _check_stacks(forward_layers: Sequence[Layer], feedback_layers: Sequence[Layer], name: str) -> None:
    if not isinstance(forward_layers, (list, tuple)) or not isinstance(feedback_layers, (list, tuple)):
        raise TypeError(f"{name}: forward_layers and feedback_layers must be lists or tuples of layers")
    if len(forward_layers) == 0:
        raise ValueError(f"{name}: the forward network has no layers")
    if len(forward_layers) != len(feedback_layers):
        raise ValueError(
            f"{name}: the forward network has {len(forward_layers)} layers but the feedback network has "
            f"{len(feedback_layers)}; layer l of the feedback network maps the output space of forward layer l "
            "back to its input space, so the two stacks must have the same depth"
        )


def counter_current_activations(
    forward_layers: Sequence[Layer],
    feedback_layers: Sequence[Layer],
    inputs: Array,
    feedback_inputs: Array,
) -> tuple[list[Array], list[Array]]:
    """The activations of both networks of a counter-current pair, each layer's input detached.

    With forward layers `f_1..f_L` and feedback layers `g_1..g_L` (`g_l` maps the output space of `f_l` back to its
    input space), the forward network computes `a_0 = x`, `a_l = f_l(sg(a_(l-1)))` and the feedback network
    `c_L = t`, `c_(l-1) = g_l(sg(c_l))`, where `sg` is `jax.lax.stop_gradient`: the parameters of a layer reach only
    the activation that layer produces.

    **Arguments:**

    - `forward_layers`: `f_1..f_L`, input end first; each written for one example (batched here with `jax.vmap`).
    - `feedback_layers`: `g_1..g_L`, in the same order (so `feedback_layers[0]` produces `c_0`, at the input end).
    - `inputs`: a batch `[batch, ...]` for the forward network.
    - `feedback_inputs`: a batch `[feedback_batch, ...]` for the feedback network's top (e.g. the one-hot codes of
        the classes, or the reconstruction targets); its batch size may differ from that of `inputs`.

    **Returns:** `(forward_activations, feedback_activations)`, the lists `[a_0, ..., a_L]` and `[c_0, ..., c_L]`.
    Raises `ValueError` when `a_l` and `c_l` have different per-example shapes at some depth.
    """
    _check_stacks(forward_layers, feedback_layers, "counter_current_activations")
    forward = [inputs]
    for layer in forward_layers:
        forward.append(jax.vmap(layer)(jax.lax.stop_gradient(forward[-1])))
    feedback = [feedback_inputs]
    _check_depth(forward[-1], feedback_inputs, len(forward_layers), top=True)
    for depth in reversed(range(len(feedback_layers))):
        feedback.insert(0, jax.vmap(feedback_layers[depth])(jax.lax.stop_gradient(feedback[0])))
        _check_depth(forward[depth], feedback[0], depth)
    return forward, feedback


def _check_depth(forward: Array, feedback: Array, depth: int, top: bool = False) -> None:
    if forward.shape[1:] != feedback.shape[1:]:
        hint = (
            "the feedback network's input must have the per-example shape of the forward network's output"
            if top
            else f"feedback layer {depth} must map back to the input space of forward layer {depth}"
        )
        raise ValueError(
            f"counter_current_activations: at depth {depth} the forward activations have per-example shape "
            f"{forward.shape[1:]} but the feedback activations {feedback.shape[1:]}; {hint}"
        )


def counter_current_losses(
    forward_layers: Sequence[Layer],
    feedback_layers: Sequence[Layer],
    inputs: Array,
    feedback_inputs: Array,
    *,
    pair_loss: PairLoss,
    output_loss: Callable[[Array, Array], Float[Array, ""]],
) -> list[Float[Array, ""]]:
    """The layer-local losses of counter-current learning, one per depth.

    Depth `l < L` pairs `a_l` with `c_l`: its loss `pair_loss(a_l, c_l)` trains forward layer `f_l` (nothing at
    `l = 0`, where `a_0` is the data) and feedback layer `g_(l+1)`. The top, `l = L`, has `output_loss(a_L, c_L)`
    (e.g. cross-entropy against the labels, or the reconstruction error), which trains `f_L` alone. Because every
    layer's input is detached, each loss reaches the parameters of at most two layers and no gradient crosses a
    layer; the gradient of the sum is the sum of the local gradients.

    **Arguments:**

    - `forward_layers`, `feedback_layers`, `inputs`, `feedback_inputs`: as for
        [`jaxinterp.learning.counter_current_activations`][].
    - `pair_loss`: `pair_loss(forward_activation, feedback_activation) -> scalar`, on batches (e.g.
        [`jaxinterp.learning.prototype_alignment_loss`][] with the labels bound, or `mean_squared_pair_loss`).
    - `output_loss`: `output_loss(forward_output, feedback_input) -> scalar`, on batches.

    **Returns:** the list of `L + 1` scalar losses, depth `0` first, the output loss last.
    """
    forward, feedback = counter_current_activations(forward_layers, feedback_layers, inputs, feedback_inputs)
    losses = [pair_loss(a, c) for a, c in zip(forward[:-1], feedback[:-1])]
    return losses + [output_loss(forward[-1], feedback[-1])]


def counter_current_loss(
    forward_layers: Sequence[Layer],
    feedback_layers: Sequence[Layer],
    inputs: Array,
    feedback_inputs: Array,
    *,
    pair_loss: PairLoss,
    output_loss: Callable[[Array, Array], Float[Array, ""]],
) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
    """The counter-current objective: the sum of the layer-local losses, for `jaxinterp.train` with `has_aux=True`.

    Minimising the sum with any optax optimiser gives each layer the update its own local loss asks for (see
    [`jaxinterp.learning.counter_current_losses`][], which takes the same arguments).

    **Returns:** `(total, metrics)`, with `metrics` holding `local_<l>` for each depth `l < L` and `output`.
    """
    losses = counter_current_losses(
        forward_layers, feedback_layers, inputs, feedback_inputs, pair_loss=pair_loss, output_loss=output_loss
    )
    metrics = {f"local_{depth}": loss for depth, loss in enumerate(losses[:-1])}
    metrics["output"] = losses[-1]
    return sum(losses), metrics


def _flatten(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)


def prototype_alignment_loss(
    forward_activations: Float[Array, "batch ..."],
    class_activations: Float[Array, "classes ..."],
    labels: Int[Array, " labels"],
    *,
    normalise: bool = False,
    scale: float = 128.0,
) -> Float[Array, ""]:
    """The classification pair loss: the inner products of each example's forward activation with the feedback
    activations of every class should be 1 for its own class and 0 for the others.

    With `A` the flattened forward activations `[batch, d]`, `B` those of the feedback network fed the one-hot code
    of each class `[classes, d]` and `Y` the one-hot labels, the loss is `scale * mean((A B^T - Y)^2) / d`; with
    `normalise`, the rows of `A` and `B` are first scaled to unit length (so the inner products are cosines) and
    the `1 / d` is dropped.

    **Arguments:**

    - `forward_activations`: the forward activations at one depth, `[batch, ...]`.
    - `class_activations`: the feedback activations at the same depth, one row per class, `[classes, ...]`.
    - `labels`: integer classes `0..classes - 1`, `[batch]`.
    - `normalise`: compare unit-length activations.
    - `scale`: the loss's weight.

    **Returns:** the scalar loss.
    """
    if forward_activations.shape[1:] != class_activations.shape[1:]:
        raise ValueError(
            "prototype_alignment_loss: the forward and feedback activations have per-example shapes "
            f"{forward_activations.shape[1:]} and {class_activations.shape[1:]}"
        )
    if labels.shape != forward_activations.shape[:1]:
        raise ValueError(
            f"prototype_alignment_loss: labels have shape {labels.shape}, expected ({forward_activations.shape[0]},)"
        )
    a, b = _flatten(forward_activations), _flatten(class_activations)
    if normalise:
        a = a / (jnp.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
        b = b / (jnp.linalg.norm(b, axis=1, keepdims=True) + 1e-8)
    same_class = jax.nn.one_hot(labels, b.shape[0], dtype=a.dtype)
    error = jnp.mean((a @ b.T - same_class) ** 2)
    return scale * error if normalise else scale * error / a.shape[1]


def mean_squared_pair_loss(
    forward_activations: Float[Array, "batch ..."], feedback_activations: Float[Array, "feedback_batch ..."]
) -> Float[Array, ""]:
    """The pair loss of the autoencoder variant: the mean squared difference of the two activations, example by
    example (the two batches hold the same examples, in the same order).

    **Returns:** the scalar `mean((a - c)^2)`.
    """
    if forward_activations.shape != feedback_activations.shape:
        raise ValueError(
            f"mean_squared_pair_loss: the activations have shapes {forward_activations.shape} and "
            f"{feedback_activations.shape}; both networks must see the same batch"
        )
    return jnp.mean((forward_activations - feedback_activations) ** 2)
