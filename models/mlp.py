"""A fully connected classifier."""

from collections.abc import Sequence

import equinox as eqx
import jax
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import ACTIVATIONS
from jaxinterp.composites import activation as apply_activation
from jaxinterp.sites import tag


class MLP(eqx.Module):
    """A multilayer perceptron: affine layers, each followed by an elementwise activation, then a linear head.

    Written for one example; batch with `jax.vmap`.

    Sites: `layers.{i}.pre` (the affine output of hidden layer `i`), `layers.{i}.post` (that output after the
    activation) and `logits`.
    """

    layers: tuple[eqx.nn.Linear, ...]
    head: eqx.nn.Linear
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_sizes: Sequence[int],
        out_size: int,
        activation: str = "relu",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the size of the input vector.
        - `hidden_sizes`: the width of each hidden layer, first to last; empty for a linear model.
        - `out_size`: the number of logits.
        - `activation`: the nonlinearity after every hidden layer, one of the kinds that
            `jaxinterp.composites.activation` accepts ("relu", "gelu", "gelu_new", "silu", "tanh", "sigmoid").
        - `key`: a PRNG key for the initial weights.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        sizes = (in_size, *hidden_sizes)
        *layer_keys, head_key = jax.random.split(key, len(hidden_sizes) + 1)
        self.layers = tuple(
            eqx.nn.Linear(fan_in, fan_out, key=layer_key)
            for fan_in, fan_out, layer_key in zip(sizes[:-1], sizes[1:], layer_keys)
        )
        self.head = eqx.nn.Linear(sizes[-1], out_size, key=head_key)
        self.activation = activation

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        """**Arguments:**

        - `x`: one input vector.

        **Returns:**

        The logits.
        """
        for i, layer in enumerate(self.layers):
            x = tag(layer(x), f"layers.{i}.pre")
            x = tag(apply_activation(x, self.activation), f"layers.{i}.post")
        return tag(self.head(x), "logits")
