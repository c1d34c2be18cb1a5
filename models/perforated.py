"""Dense layers whose neurons carry dendrite nodes, and an MLP made of them (perforated backpropagation, P29)."""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import ACTIVATIONS
from jaxinterp.composites import activation as apply_activation
from jaxinterp.sites import tag


class PerforatedLinear(eqx.Module):
    """An affine layer `W x + b` whose every neuron may carry dendrite nodes.

    Dendrite round `k` is one extra affine map of the layer's input with the layer's shape, `D_k x + c_k`: its row
    `j` is the dendrite node of neuron `j`, which sees the same input as the neuron. The node's output
    `a(D_k x + c_k)_j` (with `a` the dendrite activation) enters the neuron's pre-activation through its own
    weight `s_k[j]`:

        pre = W x + b + sum_k s_k * a(D_k x + c_k)

    A layer built here has no dendrites; `jaxinterp.learning.add_dendrites` appends a round with `s_k = 0`, which
    leaves the layer's output unchanged. Which arrays train in which phase is decided by the optimiser
    (`jaxinterp.learning.phase_optimiser`), not by the layer.

    Written for one example; batch with `jax.vmap`.
    """

    weight: Float[Array, "out_size in_size"]
    bias: Float[Array, " out_size"]
    dendrite_weights: tuple[Float[Array, "out_size in_size"], ...]
    dendrite_biases: tuple[Float[Array, " out_size"], ...]
    dendrite_scales: tuple[Float[Array, " out_size"], ...]
    dendrite_activation: str = eqx.field(static=True)

    def __init__(self, in_size: int, out_size: int, dendrite_activation: str = "tanh", *, key: PRNGKeyArray):
        """**Arguments:**

        - `in_size`, `out_size`: the input's and the output's sizes.
        - `dendrite_activation`: the nonlinearity of every dendrite node, a kind that
            `jaxinterp.composites.activation` accepts.
        - `key`: a PRNG key for the initial weights (uniform in `+-1 / sqrt(in_size)`, as `equinox.nn.Linear`).
        """
        if not (isinstance(in_size, int) and isinstance(out_size, int) and in_size > 0 and out_size > 0):
            raise ValueError(f"PerforatedLinear: sizes must be positive integers, got {in_size!r} and {out_size!r}")
        if dendrite_activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown dendrite activation {dendrite_activation!r}; choose one of {sorted(ACTIVATIONS)}"
            )
        linear = eqx.nn.Linear(in_size, out_size, key=key)
        self.weight, self.bias = linear.weight, linear.bias
        self.dendrite_weights, self.dendrite_biases, self.dendrite_scales = (), (), ()
        self.dendrite_activation = dendrite_activation

    @property
    def num_dendrites(self) -> int:
        """The number of dendrite rounds (dendrite nodes per neuron)."""
        return len(self.dendrite_weights)

    def dendrite_outputs(self, x: Float[Array, " in_size"]) -> Float[Array, "num_dendrites out_size"]:
        """**Arguments:** `x`, the layer's input. **Returns:** every dendrite node's output, one row per round."""
        if x.shape != self.weight.shape[1:]:
            raise ValueError(f"PerforatedLinear: expected an input of shape {self.weight.shape[1:]}, got {x.shape}")
        if not self.dendrite_weights:
            return jnp.zeros((0, self.weight.shape[0]), self.weight.dtype)
        stacked = jnp.stack(self.dendrite_weights) @ x + jnp.stack(self.dendrite_biases)
        return apply_activation(stacked, self.dendrite_activation)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        """**Arguments:** `x`, the layer's input. **Returns:** the neurons' pre-activations."""
        if x.shape != self.weight.shape[1:]:
            raise ValueError(f"PerforatedLinear: expected an input of shape {self.weight.shape[1:]}, got {x.shape}")
        pre = self.weight @ x + self.bias
        if self.dendrite_weights:
            pre = pre + jnp.sum(jnp.stack(self.dendrite_scales) * self.dendrite_outputs(x), axis=0)
        return pre


class PerforatedMLP(eqx.Module):
    """A multilayer perceptron of [`PerforatedLinear`][] layers: hidden layers, each followed by an elementwise
    activation, then a linear head. Every layer, the head included, can grow dendrites.

    Written for one example; batch with `jax.vmap`.

    Sites: `layers.{i}.pre` (the pre-activation of hidden layer `i`, dendrites included), `layers.{i}.post` (after
    the activation) and `logits`.
    """

    layers: tuple[PerforatedLinear, ...]
    activation: str = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        hidden_sizes: Sequence[int],
        out_size: int,
        activation: str = "relu",
        dendrite_activation: str = "tanh",
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_size`: the size of the input vector.
        - `hidden_sizes`: the width of each hidden layer, first to last; empty for a linear model.
        - `out_size`: the number of logits.
        - `activation`: the neurons' nonlinearity after every hidden layer (as [`models.MLP`][]).
        - `dendrite_activation`: the dendrite nodes' nonlinearity.
        - `key`: a PRNG key for the initial weights.
        """
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        sizes = (in_size, *hidden_sizes, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        self.layers = tuple(
            PerforatedLinear(fan_in, fan_out, dendrite_activation, key=layer_key)
            for fan_in, fan_out, layer_key in zip(sizes[:-1], sizes[1:], keys)
        )
        self.activation = activation

    def layer_inputs(self, x: Float[Array, " in_size"]) -> tuple[Float[Array, " _"], ...]:
        """**Arguments:** `x`, one input vector. **Returns:** the input of every layer, the head's last (what each
        layer's neurons and dendrite nodes see)."""
        inputs = [x]
        for layer in self.layers[:-1]:
            inputs.append(apply_activation(layer(inputs[-1]), self.activation))
        return tuple(inputs)

    def __call__(self, x: Float[Array, " in_size"]) -> Float[Array, " out_size"]:
        """**Arguments:** `x`, one input vector. **Returns:** the logits."""
        *hidden, head = self.layers
        for i, layer in enumerate(hidden):
            x = tag(layer(x), f"layers.{i}.pre")
            x = tag(apply_activation(x, self.activation), f"layers.{i}.post")
        return tag(head(x), "logits")
