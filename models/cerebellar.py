"""The cortico-cerebellar recurrent network of Boven et al. (2023): a recurrent "cortical" LSTM with a linear
readout, and the feed-forward "cerebellar" module that predicts the gradient of future loss with respect to the
cortical state (a synthesiser for `jaxinterp.learning.synthetic_gradient_loss`)."""

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .mlp import MLP
from .rnn import LSTMClassifier


class CorticalLSTM(eqx.Module):
    """An LSTM cell with a linear readout of its hidden state at every step: the cortical network.

    Called one step at a time as `cell(state, x) -> (state, output)` (the `Cell` of
    `jaxinterp.learning.synthetic_gradient_loss`), with `state = (hidden, cell_state)`; the gate equations and sites
    are those of `models.LSTMClassifier`, whose head is the readout. Written for one sequence; the learning rules
    map it over the batch.
    """

    lstm: LSTMClassifier

    def __init__(self, input_size: int, hidden_size: int, output_size: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `input_size`: the size of each step's input vector.
        - `hidden_size`: the size of the hidden and cell states.
        - `output_size`: the size of each step's readout (2 for a pen position, 10 for digit logits).
        - `key`: a PRNG key for the initial weights.
        """
        self.lstm = LSTMClassifier(input_size, hidden_size, output_size, embed=False, key=key)

    @property
    def hidden_size(self) -> int:
        """The size of the hidden state (the flattened state has twice this size)."""
        return self.lstm.hidden_size

    def initial_state(self) -> tuple[Float[Array, " hidden_size"], Float[Array, " hidden_size"]]:
        """The zero `(hidden, cell_state)` every sequence starts from."""
        zeros = jnp.zeros(self.lstm.hidden_size, self.lstm.head.weight.dtype)
        return zeros, zeros

    def __call__(
        self,
        state: tuple[Float[Array, " hidden_size"], Float[Array, " hidden_size"]],
        x: Float[Array, " input_size"],
    ) -> tuple[tuple[Float[Array, " hidden_size"], Float[Array, " hidden_size"]], Float[Array, " output_size"]]:
        """One step.

        **Arguments:**

        - `state`: the previous `(hidden, cell_state)`.
        - `x`: this step's input.

        **Returns:** `((hidden, cell_state), output)`: the new state and the readout of the new hidden state.
        """
        state = self.lstm.step(state, x)
        return state, self.lstm.head(state[0])


class Cerebellum(eqx.Module):
    """A feed-forward module from a flattened cortical state to a prediction of the gradient of the future loss
    with respect to that state: the cerebellum of the cortico-cerebellar network.

    An `MLP` (ReLU hidden layers) whose output layer starts at zero, so that the predictions start at zero and
    cortico-cerebellar learning starts as plain truncated backpropagation. Written for one example.
    """

    network: MLP

    def __init__(self, state_size: int, hidden_sizes: Sequence[int] = (), *, key: PRNGKeyArray):
        """**Arguments:**

        - `state_size`: the size of the flattened cortical state (`2 * hidden_size` for `CorticalLSTM`).
        - `hidden_sizes`: the widths of the hidden layers; empty for a linear predictor.
        - `key`: a PRNG key for the initial weights.
        """
        if not isinstance(state_size, int) or state_size < 1:
            raise ValueError(f"Cerebellum: state_size must be a positive integer, got {state_size!r}")
        network = MLP(state_size, tuple(hidden_sizes), state_size, activation="relu", key=key)
        self.network = eqx.tree_at(
            lambda net: (net.head.weight, net.head.bias),
            network,
            (jnp.zeros_like(network.head.weight), jnp.zeros_like(network.head.bias)),
        )

    def __call__(self, state: Float[Array, " state_size"]) -> Float[Array, " state_size"]:
        """**Arguments:**

        - `state`: one flattened cortical state.

        **Returns:** the predicted gradient, the same size.
        """
        if jnp.shape(state) != (self.network.head.out_features,):
            raise ValueError(
                f"Cerebellum: expected a flattened state of shape ({self.network.head.out_features},), got "
                f"{jnp.shape(state)}"
            )
        return self.network(state)
