"""Feedback alignment (Lillicrap, Cownden, Tweed and Akerman, Nature Communications 2016): the error reaches a dense
layer's input through a fixed random matrix instead of the transpose of the layer's weights."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree


def _dense(x, weight, feedback):
    return weight @ x


def _dense_forward(x, weight, feedback):
    return weight @ x, (x, feedback)


def _dense_backward(residuals, cotangent):
    x, feedback = residuals
    return feedback.T @ cotangent, jnp.outer(cotangent, x), jnp.zeros_like(feedback)


_dense = jax.custom_vjp(_dense)
_dense.defvjp(_dense_forward, _dense_backward)


def feedback_alignment_dense(
    x: Float[Array, " in_features"],
    weight: Float[Array, "out_features in_features"],
    feedback: Float[Array, "out_features in_features"],
) -> Float[Array, " out_features"]:
    """`weight @ x`, whose backward pass sends the cotangent `g` to the input as `feedback^T g` (not
    `weight^T g`); the weight gets the usual `outer(g, x)` and the feedback matrix a zero cotangent.

    **Arguments:**

    - `x`: one input vector.
    - `weight`: the layer's weights.
    - `feedback`: the fixed feedback matrix, of the weights' shape.

    **Returns:** the output vector `weight @ x`.
    """
    if weight.shape != feedback.shape:
        raise ValueError(
            f"feedback_alignment_dense: the feedback matrix has shape {feedback.shape}, the weights {weight.shape}"
        )
    return _dense(x, weight, feedback)


class FeedbackAlignmentLinear(eqx.Module):
    """A dense layer trained by feedback alignment: the forward pass of an `eqx.nn.Linear`, whose error reaches the
    layer's input through a fixed random matrix `feedback` (drawn once, never updated: its gradient is zero).

    Written for one example; batch with `jax.vmap`.
    """

    weight: Float[Array, "out_features in_features"]
    bias: Float[Array, " out_features"] | None
    feedback: Float[Array, "out_features in_features"]

    def __init__(self, linear: eqx.nn.Linear, *, key: PRNGKeyArray):
        """**Arguments:**

        - `linear`: the layer whose weights (and bias, if any) are taken over; `"scalar"` sizes are not supported.
        - `key`: a PRNG key for the feedback matrix, drawn like the weights: uniform on `[-1/sqrt(in), 1/sqrt(in)]`.
        """
        if not isinstance(linear, eqx.nn.Linear):
            raise TypeError(f"FeedbackAlignmentLinear: expected an eqx.nn.Linear, got {type(linear).__name__}")
        if linear.weight.ndim != 2 or linear.in_features == "scalar" or linear.out_features == "scalar":
            raise ValueError("FeedbackAlignmentLinear: 'scalar' input or output sizes are not supported")
        bound = 1.0 / jnp.sqrt(linear.weight.shape[1])
        self.weight = linear.weight
        self.bias = linear.bias
        self.feedback = jax.random.uniform(key, linear.weight.shape, linear.weight.dtype, -bound, bound)

    def __call__(self, x: Float[Array, " in_features"], *, key: PRNGKeyArray | None = None) -> Array:
        """**Arguments:**

        - `x`: one input vector.
        - `key`: ignored (for the signature of `eqx.nn.Linear`).

        **Returns:** `weight @ x + bias`.
        """
        out = feedback_alignment_dense(x, self.weight, jax.lax.stop_gradient(self.feedback))
        return out if self.bias is None else out + self.bias


def feedback_alignment(model: PyTree, *, key: PRNGKeyArray) -> PyTree:
    """Rewrite a model so that each of its `eqx.nn.Linear` layers learns by feedback alignment.

    Every `eqx.nn.Linear` in the tree becomes a [`jaxinterp.learning.FeedbackAlignmentLinear`][] with the same
    weights and its own fixed random feedback matrix; the model's outputs are unchanged, and training it with
    ordinary gradients (`jaxinterp.train`, any optax optimiser) is then feedback alignment. The last layer's
    update is exactly backpropagation's; the updates of earlier layers use the random matrices.

    **Arguments:**

    - `model`: any pytree holding `eqx.nn.Linear` layers (e.g. `models.MLP`).
    - `key`: a PRNG key for the feedback matrices.

    **Returns:** the rewritten model. Raises `ValueError` if the model has no `eqx.nn.Linear` layer.
    """
    is_linear = lambda node: isinstance(node, eqx.nn.Linear)
    count = sum(is_linear(leaf) for leaf in jax.tree.leaves(model, is_leaf=is_linear))
    if count == 0:
        raise ValueError("feedback_alignment: the model has no eqx.nn.Linear layer to rewrite")
    keys = iter(jax.random.split(key, count))
    return jax.tree.map(
        lambda node: FeedbackAlignmentLinear(node, key=next(keys)) if is_linear(node) else node,
        model,
        is_leaf=is_linear,
    )
