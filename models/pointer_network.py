"""A pointer network (P40, Vinyals, Fortunato and Jaitly, *Pointer Networks*, 2015): an LSTM encoder reads a set of
points, an LSTM decoder emits a sequence whose every element is a pointer to one input position, chosen by an
attention over the encoder states: `u_j = v . tanh(W1 e_j + W2 d_t)`, `p(pointer = j) = softmax(u)_j`.

Position 0 is a learned "end" slot (its key `e_0` a learned vector), so the decoder can stop; positions `1..n` are
the input points. The decoder's input at each step is the embedding of the point pointed to at the step before (a
learned start vector at the first step). The formulas are in `docs/pointer_networks.md`.

Which pointers are allowed at each step is the task's rule (`RULES`), applied to the logits in training and in
decoding alike, so that a decoded sequence is always a valid answer's shape (P40 searches only over valid outputs):

- `"hull"`: every point at most once; the end only after at least three points;
- `"tour"`: every point at most once; the end once, and only once every point is visited;
- `"triangles"`: triples of points, ascending within a triple; the end only between triples.

Greedy decoding for a fixed number of steps ends with the end slot at the last step at the latest, so that every
decoded sequence is ended.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from jaxinterp.composites import activation
from jaxinterp.sites import tag

RULES = ("hull", "tour", "triangles")
END = 0
_NEG = -1e9


class _LSTMCell(eqx.Module):
    """One LSTM step with the four gates in one matrix: `[i, f, g, o] = W [x; h] + b`."""

    weight: Float[Array, "four_hidden inputs"]
    bias: Float[Array, " four_hidden"]

    def __init__(self, input_size: int, hidden_size: int, *, key: PRNGKeyArray):
        bound = hidden_size**-0.5
        self.weight = jax.random.uniform(key, (4 * hidden_size, input_size + hidden_size), minval=-bound, maxval=bound)
        self.bias = jnp.zeros(4 * hidden_size).at[hidden_size : 2 * hidden_size].set(1.0)  # forget-gate bias 1

    def __call__(self, x: Array, state: tuple[Array, Array], prefix: str) -> tuple[Array, Array]:
        hidden, cell = state
        i, f, g, o = jnp.split(self.weight @ jnp.concatenate([x, hidden]) + self.bias, 4)
        cell = activation(f, "sigmoid") * cell + activation(i, "sigmoid") * activation(g, "tanh")
        hidden = tag(activation(o, "sigmoid") * activation(cell, "tanh"), f"{prefix}.hidden")
        return hidden, cell


def allowed_pointers(
    rule: str,
    visited: Bool[Array, " slots"],
    step: Int[Array, ""],
    previous: Int[Array, ""],
    valid: Bool[Array, " slots"],
) -> Bool[Array, " slots"]:
    """Which of the `1 + n` pointer slots (0: end) the rule allows at decoding step `step`.

    **Arguments:** `rule` (one of `RULES`); `visited`, the slots pointed to so far; `step`; `previous`, the slot
    pointed to at the step before (0 at the first step); `valid`, which slots are real points (slot 0 counts as
    valid).

    **Returns:** a boolean mask over the slots; at least one slot is allowed (the end, once nothing else is).
    """
    slots = jnp.arange(valid.shape[0])
    points = valid & (slots > 0)
    if rule == "hull":
        allowed = points & ~visited
        allowed = allowed.at[END].set(step >= 3)
    elif rule == "tour":
        allowed = points & ~visited
        allowed = allowed.at[END].set(~jnp.any(allowed))
    elif rule == "triangles":
        position = step % 3
        first = position == 0
        room = slots <= jnp.sum(valid) - 1 - (2 - position)  # leave larger points for the rest of the triple
        allowed = points & room & (first | (slots > previous))
        allowed = allowed.at[END].set(first & (step > 0))
    else:
        raise ValueError(f"unknown pointer rule {rule!r}; choose one of {RULES}")
    return allowed.at[END].set(allowed[END] | ~jnp.any(allowed))


class PointerNetwork(eqx.Module):
    """An LSTM encoder-decoder whose output at each step is a pointer into its input (see the module docstring).

    Written for one example of up to `n` points, padded; batch with `jax.vmap`. Padded points (past `num_points`)
    are skipped by the encoder (its state is carried through them unchanged) and never pointed to.

    Sites, for one example: `embed` (`[n, hidden]`, the embedded points), `encoder.hidden` (per encoder step, inside
    the scan), `encoder.states` (`[1 + n, hidden]`, the end key and the encoder states), `decoder.hidden` (per
    decoder step), `pointer.scores` (per decoder step, `[1 + n]`, before masking), `logits` (`[steps, 1 + n]`,
    masked by the rule).
    """

    embed_weight: Float[Array, "hidden 2"]
    embed_bias: Float[Array, " hidden"]
    encoder: _LSTMCell
    decoder: _LSTMCell
    end_key: Float[Array, " hidden"]
    start: Float[Array, " hidden"]
    key_weight: Float[Array, "hidden hidden"]
    query_weight: Float[Array, "hidden hidden"]
    score: Float[Array, " hidden"]
    rule: str = eqx.field(static=True)

    def __init__(self, rule: str, hidden_size: int = 128, *, key: PRNGKeyArray):
        """**Arguments:** `rule` (one of `RULES`), `hidden_size` (of the embedding, both LSTMs and the attention),
        `key`."""
        if rule not in RULES:
            raise ValueError(f"PointerNetwork: unknown rule {rule!r}; choose one of {RULES}")
        keys = jax.random.split(key, 8)
        bound = hidden_size**-0.5

        def uniform(k, shape, scale=bound):
            return jax.random.uniform(k, shape, minval=-scale, maxval=scale)

        self.embed_weight = uniform(keys[0], (hidden_size, 2), 1.0)
        self.embed_bias = uniform(keys[1], (hidden_size,), 1.0)
        self.encoder = _LSTMCell(hidden_size, hidden_size, key=keys[2])
        self.decoder = _LSTMCell(hidden_size, hidden_size, key=keys[3])
        self.end_key = uniform(keys[4], (hidden_size,))
        self.start = uniform(keys[5], (hidden_size,))
        self.key_weight = uniform(keys[6], (hidden_size, hidden_size))
        self.query_weight = uniform(keys[7], (hidden_size, hidden_size))
        self.score = jnp.full((hidden_size,), bound, dtype=jnp.float32)
        self.rule = rule

    def encode(
        self, points: Float[Array, "n 2"], num_points: Int[Array, ""] | int
    ) -> tuple[Float[Array, "n hidden"], Float[Array, "slots hidden"], tuple[Array, Array]]:
        """**Returns:** `(embedded points, keys W1 e_j of the 1 + n slots, final encoder state (hidden, cell))`."""
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError(f"PointerNetwork: points must have shape [n, 2], got {points.shape}")
        embedded = tag(points @ self.embed_weight.T + self.embed_bias, "embed")
        size = self.embed_bias.shape[0]
        valid = jnp.arange(points.shape[0]) < num_points

        def step(state, inputs):
            x, keep = inputs
            new = self.encoder(x, state, "encoder")
            state = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new, state)
            return state, state[0]

        zero = (jnp.zeros(size, points.dtype), jnp.zeros(size, points.dtype))
        final, states = jax.lax.scan(step, zero, (embedded, valid))
        states = tag(jnp.concatenate([self.end_key[None], states]), "encoder.states")
        return embedded, states @ self.key_weight.T, final

    def _logits(self, keys: Array, hidden: Array, allowed: Array) -> Array:
        query = self.query_weight @ hidden
        scores = tag(activation(keys + query, "tanh") @ self.score, "pointer.scores")
        return jnp.where(allowed, scores, _NEG)

    def __call__(
        self, points: Float[Array, "n 2"], num_points: Int[Array, ""] | int, targets: Int[Array, " steps"]
    ) -> Float[Array, "steps slots"]:
        """Teacher-forced logits: at step `t` the decoder has been fed the slots `targets[:t]`.

        **Arguments:** `points` (`[n, 2]`, padded), `num_points` (how many are real), `targets` (`[steps]`, slot
        indices: 0 the end, `j` the point `points[j - 1]`; anything after the first end is ignored by the rule's
        masks only as far as the rule allows, so mask the loss there).

        **Returns:** `[steps, 1 + n]` logits, `-1e9` where the rule forbids a slot.
        """
        embedded, keys, state = self.encode(points, num_points)
        slots = jnp.concatenate([self.start[None], embedded])  # slot 0 feeds the start vector
        valid = jnp.arange(keys.shape[0]) <= num_points

        def step(carry, inputs):
            state, visited, previous = carry
            t, target = inputs
            hidden, cell = self.decoder(slots[previous], state, "decoder")
            allowed = allowed_pointers(self.rule, visited, t, previous, valid)
            logits = self._logits(keys, hidden, allowed)
            return ((hidden, cell), visited.at[target].set(True), target), logits

        init = (state, jnp.zeros(keys.shape[0], bool), jnp.asarray(END))
        _, logits = jax.lax.scan(step, init, (jnp.arange(targets.shape[0]), targets))
        return tag(logits, "logits")

    def decode(self, points: Float[Array, "n 2"], num_points: Int[Array, ""] | int, steps: int) -> Int[Array, " steps"]:
        """Greedy decoding under the rule: the slot of largest logit at each step, fed back; after the first end,
        every further output is the end, and the last step is the end if none came before (for `"triangles"`,
        choose `steps` one more than a multiple of 3).

        **Returns:** `[steps]` slot indices (0 the end, `j` the point `j - 1`).
        """
        _, keys, state = self.encode(points, num_points)
        embedded = points @ self.embed_weight.T + self.embed_bias
        slots = jnp.concatenate([self.start[None], embedded])
        valid = jnp.arange(keys.shape[0]) <= num_points

        def step(carry, t):
            state, visited, previous, done = carry
            hidden, cell = self.decoder(slots[previous], state, "decoder")
            logits = self._logits(keys, hidden, allowed_pointers(self.rule, visited, t, previous, valid))
            choice = jnp.where(done | (t == steps - 1), END, jnp.argmax(logits))
            return ((hidden, cell), visited.at[choice].set(True), choice, done | (choice == END)), choice

        init = (state, jnp.zeros(keys.shape[0], bool), jnp.asarray(END), jnp.asarray(False))
        _, choices = jax.lax.scan(step, init, jnp.arange(steps))
        return choices
