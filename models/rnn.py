"""Recurrent sequence classifiers (GRU and LSTM) with every gate written out and tagged.

The gate equations follow PyTorch's `nn.GRU` and `nn.LSTM` (two biases per gate, the GRU reset gate applied after
the hidden-to-candidate matmul), so their weights map one to one.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from jaxinterp.composites import activation
from jaxinterp.sites import tag


class Gate(eqx.Module):
    """The two affine maps feeding one recurrent gate: one from the step's input, one from the previous hidden state.

    The gate's pre-activation is `from_input(x) + from_hidden(h)`.
    """

    input_weight: Float[Array, "hidden_size input_size"]
    input_bias: Float[Array, " hidden_size"]
    hidden_weight: Float[Array, "hidden_size hidden_size"]
    hidden_bias: Float[Array, " hidden_size"]

    def __init__(self, input_size: int, hidden_size: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `input_size`: the size of each step's input.
        - `hidden_size`: the size of the hidden state, and of the gate.
        - `key`: a PRNG key; every weight and bias is drawn uniformly from +-1/sqrt(hidden_size), as in PyTorch.
        """
        bound = hidden_size**-0.5
        keys = jax.random.split(key, 4)

        def uniform(k, shape):
            return jax.random.uniform(k, shape, minval=-bound, maxval=bound)

        self.input_weight = uniform(keys[0], (hidden_size, input_size))
        self.input_bias = uniform(keys[1], (hidden_size,))
        self.hidden_weight = uniform(keys[2], (hidden_size, hidden_size))
        self.hidden_bias = uniform(keys[3], (hidden_size,))

    def from_input(self, x: Float[Array, " input_size"]) -> Float[Array, " hidden_size"]:
        """The input's contribution to the pre-activation, bias included."""
        return self.input_weight @ x + self.input_bias

    def from_hidden(self, hidden: Float[Array, " hidden_size"]) -> Float[Array, " hidden_size"]:
        """The previous hidden state's contribution to the pre-activation, bias included."""
        return self.hidden_weight @ hidden + self.hidden_bias

    def __call__(
        self, x: Float[Array, " input_size"], hidden: Float[Array, " hidden_size"]
    ) -> Float[Array, " hidden_size"]:
        """The gate's pre-activation."""
        return self.from_input(x) + self.from_hidden(hidden)


def _step_inputs(
    embedding: eqx.nn.Embedding | None, inputs: Int[Array, " time"] | Float[Array, "time input_size"]
) -> Float[Array, "time input_size"]:
    """The per-step input vectors: embedded (and tagged `embed`) token ids, or the given features."""
    if embedding is None:
        return inputs
    return tag(embedding.weight[inputs], "embed")


def _embedding_and_step_size(
    input_size: int, embedding_size: int | None, hidden_size: int, embed: bool, key: PRNGKeyArray
) -> tuple[eqx.nn.Embedding | None, int]:
    """The token embedding (None without `embed`) and the size of the vector each step reads."""
    if not embed:
        return None, input_size
    embedding_size = hidden_size if embedding_size is None else embedding_size
    return eqx.nn.Embedding(input_size, embedding_size, key=key), embedding_size


class GRUClassifier(eqx.Module):
    """A GRU run over a sequence with `jax.lax.scan`, then a linear head on the final hidden state.

    One step, from hidden state `h` and input `x`:

    ```
    reset     = sigmoid(reset(x, h))
    update    = sigmoid(update(x, h))
    candidate = tanh(candidate.from_input(x) + reset * candidate.from_hidden(h))
    h         = (1 - update) * candidate + update * h
    ```

    Written for one sequence; batch with `jax.vmap`. The initial hidden state is zero.

    Sites: `embed` (the embedded tokens, when `embed=True`); inside the scan, once per step, `rnn.gates.reset`,
    `rnn.gates.update`, `rnn.gates.candidate` and `rnn.hidden`; then `final_hidden` and `logits`.
    """

    embedding: eqx.nn.Embedding | None
    reset: Gate
    update: Gate
    candidate: Gate
    head: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_classes: int,
        *,
        key: PRNGKeyArray,
        embed: bool = True,
        embedding_size: int | None = None,
    ):
        """**Arguments:**

        - `input_size`: the vocabulary size when `embed=True`, else the size of each step's feature vector.
        - `hidden_size`: the size of the hidden state.
        - `num_classes`: the number of logits.
        - `key`: a PRNG key for the initial weights.
        - `embed`: whether the input is a sequence of token ids to embed, or already a sequence of vectors.
        - `embedding_size`: the size of a token embedding when `embed=True`; defaults to `hidden_size`.
        """
        embedding_key, reset_key, update_key, candidate_key, head_key = jax.random.split(key, 5)
        self.embedding, step_size = _embedding_and_step_size(
            input_size, embedding_size, hidden_size, embed, embedding_key
        )
        self.reset = Gate(step_size, hidden_size, key=reset_key)
        self.update = Gate(step_size, hidden_size, key=update_key)
        self.candidate = Gate(step_size, hidden_size, key=candidate_key)
        self.head = eqx.nn.Linear(hidden_size, num_classes, key=head_key)
        self.hidden_size = hidden_size

    def step(
        self, hidden: Float[Array, " hidden_size"], x: Float[Array, " input_size"]
    ) -> Float[Array, " hidden_size"]:
        """One GRU step.

        **Arguments:**

        - `hidden`: the previous hidden state.
        - `x`: this step's input vector (already embedded).

        **Returns:**

        The new hidden state.
        """
        reset = tag(activation(self.reset(x, hidden), "sigmoid"), "rnn.gates.reset")
        update = tag(activation(self.update(x, hidden), "sigmoid"), "rnn.gates.update")
        candidate_preactivation = self.candidate.from_input(x) + reset * self.candidate.from_hidden(hidden)
        candidate = tag(activation(candidate_preactivation, "tanh"), "rnn.gates.candidate")
        return tag((1 - update) * candidate + update * hidden, "rnn.hidden")

    def __call__(self, inputs: Int[Array, " time"] | Float[Array, "time input_size"]) -> Float[Array, " num_classes"]:
        """**Arguments:**

        - `inputs`: one sequence: token ids `[time]` when `embed=True`, else feature vectors `[time, input_size]`.

        **Returns:**

        The logits.
        """
        xs = _step_inputs(self.embedding, inputs)

        def scan_step(hidden, x):
            return self.step(hidden, x), None

        final_hidden, _ = jax.lax.scan(scan_step, jnp.zeros(self.hidden_size, xs.dtype), xs)
        final_hidden = tag(final_hidden, "final_hidden")
        return tag(self.head(final_hidden), "logits")


class LSTMClassifier(eqx.Module):
    """An LSTM run over a sequence with `jax.lax.scan`, then a linear head on the final hidden state.

    One step, from hidden state `h`, cell state `c` and input `x`:

    ```
    input  = sigmoid(input(x, h))
    forget = sigmoid(forget(x, h))
    cell   = tanh(cell(x, h))
    output = sigmoid(output(x, h))
    c      = forget * c + input * cell
    h      = output * tanh(c)
    ```

    Written for one sequence; batch with `jax.vmap`. The initial hidden and cell states are zero.

    Sites: `embed` (the embedded tokens, when `embed=True`); inside the scan, once per step, `rnn.gates.input`,
    `rnn.gates.forget`, `rnn.gates.cell`, `rnn.gates.output`, `rnn.cell_state` and `rnn.hidden`; then
    `final_hidden` and `logits`.
    """

    embedding: eqx.nn.Embedding | None
    input: Gate
    forget: Gate
    cell: Gate
    output: Gate
    head: eqx.nn.Linear
    hidden_size: int = eqx.field(static=True)

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_classes: int,
        *,
        key: PRNGKeyArray,
        embed: bool = True,
        embedding_size: int | None = None,
    ):
        """**Arguments:**

        - `input_size`: the vocabulary size when `embed=True`, else the size of each step's feature vector.
        - `hidden_size`: the size of the hidden and cell states.
        - `num_classes`: the number of logits.
        - `key`: a PRNG key for the initial weights.
        - `embed`: whether the input is a sequence of token ids to embed, or already a sequence of vectors.
        - `embedding_size`: the size of a token embedding when `embed=True`; defaults to `hidden_size`.
        """
        embedding_key, input_key, forget_key, cell_key, output_key, head_key = jax.random.split(key, 6)
        self.embedding, step_size = _embedding_and_step_size(
            input_size, embedding_size, hidden_size, embed, embedding_key
        )
        self.input = Gate(step_size, hidden_size, key=input_key)
        self.forget = Gate(step_size, hidden_size, key=forget_key)
        self.cell = Gate(step_size, hidden_size, key=cell_key)
        self.output = Gate(step_size, hidden_size, key=output_key)
        self.head = eqx.nn.Linear(hidden_size, num_classes, key=head_key)
        self.hidden_size = hidden_size

    def step(
        self, state: tuple[Float[Array, " hidden_size"], Float[Array, " hidden_size"]], x: Float[Array, " input_size"]
    ) -> tuple[Float[Array, " hidden_size"], Float[Array, " hidden_size"]]:
        """One LSTM step.

        **Arguments:**

        - `state`: the previous `(hidden, cell_state)`.
        - `x`: this step's input vector (already embedded).

        **Returns:**

        The new `(hidden, cell_state)`.
        """
        hidden, cell_state = state
        input_gate = tag(activation(self.input(x, hidden), "sigmoid"), "rnn.gates.input")
        forget_gate = tag(activation(self.forget(x, hidden), "sigmoid"), "rnn.gates.forget")
        cell_gate = tag(activation(self.cell(x, hidden), "tanh"), "rnn.gates.cell")
        output_gate = tag(activation(self.output(x, hidden), "sigmoid"), "rnn.gates.output")
        cell_state = tag(forget_gate * cell_state + input_gate * cell_gate, "rnn.cell_state")
        hidden = tag(output_gate * activation(cell_state, "tanh"), "rnn.hidden")
        return hidden, cell_state

    def __call__(self, inputs: Int[Array, " time"] | Float[Array, "time input_size"]) -> Float[Array, " num_classes"]:
        """**Arguments:**

        - `inputs`: one sequence: token ids `[time]` when `embed=True`, else feature vectors `[time, input_size]`.

        **Returns:**

        The logits.
        """
        xs = _step_inputs(self.embedding, inputs)

        def scan_step(state, x):
            return self.step(state, x), None

        zeros = jnp.zeros(self.hidden_size, xs.dtype)
        (final_hidden, _), _ = jax.lax.scan(scan_step, (zeros, zeros), xs)
        final_hidden = tag(final_hidden, "final_hidden")
        return tag(self.head(final_hidden), "logits")
