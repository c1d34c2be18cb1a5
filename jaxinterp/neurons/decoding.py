"""Decoding MLP neurons through the final projection (P39): every neuron's weight vector sent through the final
norm's weight and the unembedding gives logits over the vocabulary, whose top and bottom tokens say what the neuron
writes; searching neurons by token; and clamping a neuron to measure how far the output distribution moves toward
its tokens. See `docs/neurons.md`.

The model is duck-typed, as `models.transformer.Transformer` is built (a pre-norm transformer with a
language-model head):

- `model.blocks[L].mlp` with `w_out` (`[d_mlp, d_model]`), `w_in` (`[d_model, d_mlp]`) and, when gated, `w_gate`
  (`[d_model, d_mlp]`);
- `model.ln_final`: the final norm, with `weight` (`[d_model]`) and `bias` (None for an RMSNorm), or None (no
  normalisation);
- `model.unembed` (`[d_model, vocab]`), or None with the embedding tied, `model.token_embed` (`[vocab, d_model]`);
- `model.cfg.lm_head` and `model.cfg.post_norm` where the model has a `cfg`;
- for clamping, the site `blocks.L.mlp.post` (`[seq, d_mlp]`) and `model(tokens)` returning logits `[seq, vocab]`.
"""

import functools
import numbers
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from ..intervene import Intervened, intervene

DEFAULT_MEMORY_BYTES = 256 * 2**20
"""The default memory budget of one chunk of `decode_directions`: at most 682 neurons at a vocabulary of 49,152
(678 for SmolLM2's 46,080 neurons, evened out over the chunks)."""

WEIGHTS = ("out", "in", "gate")
"""Which weight vector of a neuron is decoded: `"out"`, its row of `W_out` (what it writes into the residual
stream); `"in"`, its column of `W_in` (the up projection of a gated MLP: what it reads); `"gate"`, its column of
`W_gate` (gated MLPs)."""

_BLOCK = 128  # vocabulary entries per block of the two-stage selection (`_select`)
_BYTES_PER_LOGIT = 8  # a chunk's float32 logits and one temporary of the same size, per neuron and token


class Readout(NamedTuple):
    """The final projection a direction is decoded through: `logits = (centre(a) * scale) @ unembed`.

    - `unembed`: `[d_model, vocab]`, the unembedding (the transposed token embedding where they are tied).
    - `scale`: `[d_model]`, the final norm's weight, or None where there is no final norm.
    - `centre`: subtract the mean over `d_model` first (the final norm is a LayerNorm).

    The final norm's division by the root mean square (or standard deviation) of the residual stream is not applied:
    it is one positive factor per position, which scales a direction's logits and leaves its token ranking
    unchanged. Nor is a LayerNorm's bias: it adds the same logits to every direction.
    """

    unembed: Float[Array, "d_model vocab"]
    scale: Float[Array, " d_model"] | None
    centre: bool

    @property
    def vocab_size(self) -> int:
        """The number of tokens."""
        return self.unembed.shape[1]

    def through_norm(self, directions: Float[ArrayLike, "*batch d_model"]) -> Float[Array, "*batch d_model"]:
        """Directions as the unembedding reads them: mean-centred (LayerNorm), then times the norm's weight.

        **Arguments:** `directions`: `[..., d_model]`.

        **Returns:** `[..., d_model]`.
        """
        directions = jnp.asarray(directions, jnp.float32)
        if self.centre:
            directions = directions - directions.mean(axis=-1, keepdims=True)
        return directions if self.scale is None else directions * self.scale

    def logits(self, directions: Float[ArrayLike, "*batch d_model"]) -> Float[Array, "*batch vocab"]:
        """The full logits of directions, dense (for a few; `decode_directions` for many).

        **Arguments:** `directions`: `[..., d_model]`.

        **Returns:** `[..., vocab]`.
        """
        return self.through_norm(directions) @ self.unembed


class Decoded(NamedTuple):
    """The top and bottom tokens of decoded directions.

    - `top_ids`: int32 `[..., k]`, the tokens with the largest logits, the largest first.
    - `top_logits`: float32 `[..., k]`, their logits.
    - `bottom_ids`, `bottom_logits`: `[..., bottom_k]`, the tokens with the smallest logits, the smallest first.
    - `layers`: from `decode_neurons`, the layers along the first axis (the arrays are `[layers, d_mlp, k]`);
      None from `decode_directions`.

    Logit values are exact with float32 matrix products (the default), approximate with bfloat16 ones. Among exactly
    equal logits, which token is listed is not specified.
    """

    top_ids: Int[Array, "*batch k"]
    top_logits: Float[Array, "*batch k"]
    bottom_ids: Int[Array, "*batch bottom_k"]
    bottom_logits: Float[Array, "*batch bottom_k"]
    layers: tuple[int, ...] | None = None


class NeuronHits(NamedTuple):
    """Neurons found for one token, best first (NumPy arrays, one entry per neuron).

    - `layers`, `neurons`: where each neuron is.
    - `ranks`: the token's place among the neuron's tokens, 0 for its first.
    - `logits`: the token's logit for the neuron.
    - `scores`: what the neurons are ranked by after `ranks` (`search_token`) or alone (`top_neurons_for_token`):
      the logit, or with `score="z"` the logit's z-score among the neuron's logits over the vocabulary.
    """

    layers: np.ndarray
    neurons: np.ndarray
    ranks: np.ndarray
    logits: np.ndarray
    scores: np.ndarray


class ClampEffect(NamedTuple):
    """How clamping a neuron moves the output distribution, at every output position (`[seq]` arrays).

    - `top_ids`, `bottom_ids`: `[k]`, the neuron's decoded top and bottom tokens.
    - `top_mass`, `top_mass_clamped`: `sum_{v in top} p(v)` and `sum_{v in top} p_clamped(v)`, the probability of
      the top tokens without and with the clamp.
    - `top_shift`: `log top_mass_clamped - log top_mass`, the change of the log-probability mass on the top tokens
      in nats (positive: toward them), computed in log space.
    - `bottom_shift`: the same for the bottom tokens.
    - `kl`: `KL(p || p_clamped)`, in nats, from the clean distribution to the clamped one.
    """

    top_ids: Int[Array, " k"]
    bottom_ids: Int[Array, " k"]
    top_mass: Float[Array, " seq"]
    top_mass_clamped: Float[Array, " seq"]
    top_shift: Float[Array, " seq"]
    bottom_shift: Float[Array, " seq"]
    kl: Float[Array, " seq"]


# ------------------------------------------------------------------------------------------------ the model's parts
def _where(model) -> str:
    return type(model).__name__


def readout(model: Any) -> Readout:
    """The final projection of a pre-norm transformer with a language-model head: its final norm's weight (and, for
    a LayerNorm, mean-centring) and its unembedding.

    **Arguments:** `model`: see the module docstring for the attributes read.

    **Returns:** a `Readout`. A `ValueError` for a model without a language-model head or a post-norm model (whose
    MLP outputs pass through every later block's norm, not through one final projection).
    """
    cfg = getattr(model, "cfg", None)
    if not getattr(cfg, "lm_head", True):
        raise ValueError(
            f"readout: this {_where(model)} has no language-model head (cfg.lm_head is False): it returns hidden "
            "states, so there is no unembedding to decode neurons through"
        )
    if getattr(cfg, "post_norm", False):
        raise ValueError(
            f"readout: this {_where(model)} is post-norm (cfg.post_norm): each MLP output passes through every later "
            "block's norm, so decoding through the final projection applies to pre-norm models only"
        )
    unembed = getattr(model, "unembed", None)
    if unembed is None:
        embed = getattr(model, "token_embed", None)
        if embed is None:
            raise ValueError(f"readout: this {_where(model)} has neither `unembed` nor a tied `token_embed`")
        unembed = jnp.asarray(embed).T
    norm = getattr(model, "ln_final", None)
    if norm is None:
        return Readout(jnp.asarray(unembed, jnp.float32), None, False)
    scale = jnp.asarray(norm.weight, jnp.float32)
    return Readout(jnp.asarray(unembed, jnp.float32), scale, getattr(norm, "bias", None) is not None)


def _n_layers(model) -> int:
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"this {_where(model)} has no `blocks`: neurons are read from `model.blocks[L].mlp`")
    return len(blocks)


def _layers(model, layers, where: str) -> tuple[int, ...]:
    """`layers` (None: all; an int; a sequence) as a tuple of valid layer indices, or a `ValueError`."""
    n = _n_layers(model)
    if layers is None:
        return tuple(range(n))
    chosen = (layers,) if isinstance(layers, numbers.Integral) else tuple(layers)
    if not chosen:
        raise ValueError(f"{where}: no layers chosen")
    for layer in chosen:
        if not isinstance(layer, numbers.Integral) or isinstance(layer, bool) or not 0 <= layer < n:
            raise ValueError(f"{where}: unknown layer {layer!r}: the model has {n} layers, 0 to {n - 1}")
    return tuple(int(layer) for layer in chosen)


def _mlp(model, layer: int, where: str):
    mlp = getattr(model.blocks[layer], "mlp", None)
    if mlp is None:
        raise ValueError(f"{where}: layer {layer} has no MLP (an attention-only model)")
    return mlp


def _d_mlp(model, layer: int, where: str) -> int:
    return _mlp(model, layer, where).w_out.shape[0]


def _check_neuron(model, layer: int, neuron, where: str) -> int:
    d_mlp = _d_mlp(model, layer, where)
    if not isinstance(neuron, numbers.Integral) or isinstance(neuron, bool) or not 0 <= neuron < d_mlp:
        raise ValueError(
            f"{where}: neuron {neuron!r} of layer {layer} is out of range: the layer has {d_mlp} neurons, "
            f"0 to {d_mlp - 1}"
        )
    return int(neuron)


def _weight_rows(mlp, weights: str, layer: int, where: str) -> Array:
    """The chosen weight vector of every neuron of one MLP, `[d_mlp, d_model]`."""
    if weights not in WEIGHTS:
        raise ValueError(f"{where}: weights must be one of {WEIGHTS}, got {weights!r}")
    if weights == "out":
        return mlp.w_out
    matrix = mlp.w_in if weights == "in" else getattr(mlp, "w_gate", None)
    if matrix is None:
        raise ValueError(f"{where}: layer {layer}'s MLP is not gated, so it has no W_gate to decode")
    return matrix.T


def neuron_directions(model: Any, layers=None, *, weights: str = "out") -> Float[Array, "layers d_mlp d_model"]:
    """The weight vectors of every neuron of the chosen layers, stacked.

    **Arguments:**

    - `model`: see the module docstring.
    - `layers`: a layer, a sequence of layers, or None for all.
    - `weights`: `"out"` (rows of `W_out`, the default), `"in"` or `"gate"` (columns of `W_in`, `W_gate`); see
      `WEIGHTS`.

    **Returns:** `[len(layers), d_mlp, d_model]`.
    """
    where = "neuron_directions"
    chosen = _layers(model, layers, where)
    return jnp.stack([_weight_rows(_mlp(model, layer, where), weights, layer, where) for layer in chosen])


def neuron_logits(model: Any, layer: int, neuron: int, *, weights: str = "out") -> Float[Array, " vocab"]:
    """One neuron's full logits through the final projection, dense: `readout(model).logits(direction)`.

    **Arguments:** `model`, `layer`, `neuron` (its index in the layer), `weights` (see `WEIGHTS`).

    **Returns:** `[vocab]`.
    """
    where = "neuron_logits"
    (layer,) = _layers(model, layer, where)
    neuron = _check_neuron(model, layer, neuron, where)
    return readout(model).logits(_weight_rows(_mlp(model, layer, where), weights, layer, where)[neuron])


# ----------------------------------------------------------------------------------------------------- decoding
def _select(logits: Array, k: int, vocab: int, largest: bool) -> tuple[Array, Array]:
    """The `k` largest (or smallest) of each row among the first `vocab` columns, sorted, with their columns.

    Wide rows are selected in two stages: the rows are cut into blocks of `_BLOCK` columns, the `k` blocks with the
    largest maxima are kept, and the `k` largest entries of those `k * _BLOCK` candidates are the answer. It is
    exact: an entry among the row's `k` largest lies in a block whose maximum is at least as large, and fewer than
    `k` blocks can have a larger maximum. The block maxima are one streaming pass, where `lax.top_k` over the full
    row is a per-row partial sort.
    """
    sign = 1.0 if largest else -1.0
    rows, width = logits.shape
    if width % _BLOCK or width < 2 * k * _BLOCK:
        values, ids = lax.top_k(sign * logits[:, :vocab], k)
        return sign * values, ids
    blocks = (sign * logits).reshape(rows, width // _BLOCK, _BLOCK)
    if width != vocab:  # padding columns never win
        blocks = jnp.where(jnp.arange(width).reshape(-1, _BLOCK) < vocab, blocks, -jnp.inf)
    _, block_ids = lax.top_k(blocks.max(axis=-1), k)
    block_ids = jnp.sort(block_ids, axis=-1)
    candidates = jnp.take_along_axis(blocks, block_ids[:, :, None], axis=1).reshape(rows, k * _BLOCK)
    values, positions = lax.top_k(candidates, k)
    ids = jnp.take_along_axis(block_ids, positions // _BLOCK, axis=1) * _BLOCK + positions % _BLOCK
    return sign * values, ids.astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("k", "bottom_k", "chunk", "centre", "matmul_dtype"))
def _decode(directions, unembed, scale, *, k, bottom_k, chunk, centre, matmul_dtype):
    """`decode_directions` on `[n, d_model]` directions: one compiled `lax.map` over chunks of `chunk` rows."""
    n, d = directions.shape
    vocab = unembed.shape[1]
    rows = Readout(unembed, scale, centre).through_norm(directions).astype(matmul_dtype)
    rows = jnp.pad(rows, ((0, -n % chunk), (0, 0)))
    if vocab >= 2 * max(k, bottom_k) * _BLOCK:
        unembed = jnp.pad(unembed, ((0, 0), (0, -vocab % _BLOCK)))
    unembed = unembed.astype(matmul_dtype)

    def one_chunk(x):
        logits = jnp.dot(x, unembed, preferred_element_type=jnp.float32)
        top = _select(logits, k, vocab, largest=True)
        bottom = _select(logits, bottom_k, vocab, largest=False) if bottom_k else (logits[:, :0], logits[:, :0])
        return top, bottom

    (top_v, top_i), (bottom_v, bottom_i) = lax.map(one_chunk, rows.reshape(-1, chunk, d))

    def flat(x):
        return x.reshape(rows.shape[0], x.shape[-1])[:n]

    return flat(top_i).astype(jnp.int32), flat(top_v), flat(bottom_i).astype(jnp.int32), flat(bottom_v)


def chunk_size_for(n: int, vocab: int, memory_bytes: int = DEFAULT_MEMORY_BYTES) -> int:
    """The chunk `decode_directions` uses: as many directions as fit in `memory_bytes` (each costs its float32
    logits and one temporary of their size, `8 * vocab` bytes), evened out over the chunks so that little padding is
    computed.

    **Arguments:** `n` (directions), `vocab`, `memory_bytes`.

    **Returns:** the number of directions per chunk, between 1 and `n`.
    """
    if not isinstance(memory_bytes, numbers.Integral) or memory_bytes <= 0:
        raise ValueError(f"decode_directions: memory_bytes must be a positive integer, got {memory_bytes!r}")
    largest = max(1, min(n, memory_bytes // (_BYTES_PER_LOGIT * vocab)))
    chunks = -(-n // largest)
    return -(-n // chunks)


def _count(value, name: str, where: str, *, low: int, high: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{where}: {name} must be an integer from {low} to {high}, got {value!r}")
    return int(value)


def decode_directions(
    directions: Float[ArrayLike, "*batch d_model"],
    projection: Readout,
    k: int = 10,
    *,
    bottom_k: int | None = None,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    chunk_size: int | None = None,
    matmul_dtype=jnp.float32,
) -> Decoded:
    """The top-k and bottom-k tokens of many directions through a final projection, jitted and chunked.

    Each direction `a` gets the logits `(centre(a) * scale) @ unembed` (`Readout`); the directions are processed in
    chunks (one compiled `lax.map`), so that only one chunk's logits, `[chunk, vocab]`, exist at a time.

    **Arguments:**

    - `directions`: `[..., d_model]`.
    - `projection`: the `Readout` (`readout(model)`, or one built from arrays).
    - `k`: top tokens per direction.
    - `bottom_k`: bottom tokens per direction (default `k`; 0 for none).
    - `memory_bytes`: the budget of one chunk's logits and selection (`chunk_size_for`).
    - `chunk_size`: directions per chunk, overriding `memory_bytes`.
    - `matmul_dtype`: the operands' type in the matrix product (accumulated in float32); `jnp.bfloat16` is faster
      on accelerators, and its logits and rankings are approximate.

    **Returns:** a `Decoded` with `[..., k]` and `[..., bottom_k]` arrays (`layers` None).
    """
    where = "decode_directions"
    directions = jnp.asarray(directions, jnp.float32)
    unembed = jnp.asarray(projection.unembed, jnp.float32)
    d_model, vocab = unembed.shape
    if directions.ndim < 1 or directions.shape[-1] != d_model:
        raise ValueError(
            f"{where}: directions must be [..., d_model] with d_model = {d_model} (the unembedding's rows), got "
            f"shape {directions.shape}"
        )
    if projection.scale is not None and jnp.shape(projection.scale) != (d_model,):
        raise ValueError(f"{where}: the norm's scale must be [{d_model}], got shape {jnp.shape(projection.scale)}")
    batch = directions.shape[:-1]
    n = int(np.prod(batch, dtype=int))
    if n == 0:
        raise ValueError(f"{where}: no directions to decode (shape {directions.shape})")
    k = _count(k, "k", where, low=1, high=vocab)
    bottom_k = k if bottom_k is None else _count(bottom_k, "bottom_k", where, low=0, high=vocab)
    chunk = chunk_size_for(n, vocab, memory_bytes) if chunk_size is None else chunk_size
    chunk = min(_count(chunk, "chunk_size", where, low=1, high=2**31), n)
    scale = None if projection.scale is None else jnp.asarray(projection.scale, jnp.float32)
    top_i, top_v, bottom_i, bottom_v = _decode(
        directions.reshape(n, d_model), unembed, scale, k=k, bottom_k=bottom_k, chunk=chunk,
        centre=bool(projection.centre), matmul_dtype=jnp.dtype(matmul_dtype),
    )  # fmt: skip
    return Decoded(
        top_i.reshape(*batch, k), top_v.reshape(*batch, k), bottom_i.reshape(*batch, bottom_k),
        bottom_v.reshape(*batch, bottom_k),
    )  # fmt: skip


def decode_neurons(
    model: Any,
    k: int = 10,
    *,
    bottom_k: int | None = None,
    layers=None,
    weights: str = "out",
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    chunk_size: int | None = None,
    matmul_dtype=jnp.float32,
) -> Decoded:
    """The top-k and bottom-k tokens of every MLP neuron of the chosen layers, all layers in one compiled call.

    Neuron `i` of layer `L` has the direction `a = W_out[L][i]` (`weights="out"`) and the logits
    `(a * g) @ W_U` for an RMSNorm final norm with weight `g`, `((a - mean(a)) * g) @ W_U` for a LayerNorm, and
    `a @ W_U` without a final norm, `W_U` the unembedding: the final norm's weight (and a LayerNorm's
    mean-centring) and the unembedding, as P39 applies them; not the norm's division by the residual stream's root
    mean square (a positive factor, which leaves the ranking unchanged) and not a LayerNorm's bias (the same for
    every neuron). See `readout`, `decode_directions`.

    **Arguments:**

    - `model`: a pre-norm transformer with a language-model head (`models.transformer.Transformer`; the attributes
      read are listed in the module docstring).
    - `k`, `bottom_k`, `memory_bytes`, `chunk_size`, `matmul_dtype`: as for `decode_directions`.
    - `layers`: a layer, a sequence of layers, or None for all.
    - `weights`: which weight vector of each neuron (`WEIGHTS`).

    **Returns:** a `Decoded` with `[len(layers), d_mlp, k]` arrays and `layers` set.
    """
    projection = readout(model)
    chosen = _layers(model, layers, "decode_neurons")
    directions = neuron_directions(model, chosen, weights=weights)
    decoded = decode_directions(
        directions, projection, k, bottom_k=bottom_k, memory_bytes=memory_bytes, chunk_size=chunk_size,
        matmul_dtype=matmul_dtype,
    )  # fmt: skip
    return decoded._replace(layers=chosen)


# ------------------------------------------------------------------------------------------------------ searching
def _token(token, where: str, vocab: int | None = None) -> int:
    top = "" if vocab is None else f" below {vocab}"
    if not isinstance(token, numbers.Integral) or isinstance(token, bool) or token < 0 or (vocab and token >= vocab):
        raise ValueError(f"{where}: token must be a token id, an integer from 0{top}, got {token!r}")
    return int(token)


def search_token(decoded: Decoded, token: int, *, bottom: bool = False) -> NeuronHits:
    """The neurons whose decoded top-k (or bottom-k) tokens include `token`, ranked by the token's place in their
    list (first place first), then by its logit (largest first; smallest first for `bottom`).

    **Arguments:** `decoded` (from `decode_neurons`), `token` (a token id), `bottom` (search the bottom-k lists).

    **Returns:** `NeuronHits`, empty when no neuron lists the token.
    """
    where = "search_token"
    if decoded.layers is None or np.ndim(decoded.top_ids) != 3:
        raise ValueError(f"{where}: needs the neurons of decode_neurons ([layers, d_mlp, k] with their layers)")
    token = _token(token, where)
    ids = np.asarray(decoded.bottom_ids if bottom else decoded.top_ids)
    values = np.asarray(decoded.bottom_logits if bottom else decoded.top_logits)
    layer_at, neuron, rank = np.nonzero(ids == token)
    logit = values[layer_at, neuron, rank]
    order = np.lexsort((neuron, layer_at, logit if bottom else -logit, rank))
    layers = np.asarray(decoded.layers)[layer_at]
    return NeuronHits(layers[order], neuron[order], rank[order], logit[order], logit[order])


SCORES = ("logit", "z")
"""How `top_neurons_for_token` ranks neurons: by the token's logit, or by its z-score `(logit - mean) / std` among
the neuron's logits over the whole vocabulary (which discounts neurons that raise every token alike)."""


@functools.partial(jax.jit, static_argnames=("n", "bottom", "centre", "standardise"))
def _by_token(directions, unembed, scale, token, *, n, bottom, centre, standardise):
    projection = Readout(unembed, scale, centre)
    sign = -1.0 if bottom else 1.0
    rows = projection.through_norm(directions.reshape(-1, directions.shape[-1]))
    scores = rows @ unembed[:, token]
    if standardise:  # the mean and variance of a . u over the tokens u, from the unembedding's first two moments
        mean = rows @ unembed.mean(axis=1)
        second = jnp.sum((rows @ (unembed @ unembed.T / unembed.shape[1])) * rows, axis=-1)
        scores = (scores - mean) / jnp.sqrt(jnp.maximum(second - mean**2, jnp.finfo(jnp.float32).tiny))
    _, found = lax.top_k(sign * scores, n)
    logits = rows[found] @ unembed
    own = logits[:, token]
    ranks = jnp.sum(sign * logits > sign * own[:, None], axis=-1)
    return found, ranks, own, scores[found]


def top_neurons_for_token(
    model: Any,
    token: int,
    n: int = 10,
    *,
    layers=None,
    weights: str = "out",
    bottom: bool = False,
    score: str = "logit",
) -> NeuronHits:
    """The `n` neurons of the chosen layers that raise `token` most (lower it most, for `bottom`), exactly: by the
    token's logit, one matrix-vector product through the token's column of the final projection, or by the logit's
    z-score among the neuron's logits, whose mean and variance over the vocabulary come from the unembedding's mean
    and second-moment matrix (`[d_model, d_model]`); then each found neuron's full logits give the token's rank.

    **Arguments:** `model` (see the module docstring), `token` (a token id), `n`, `layers` (None: all), `weights`
    (`WEIGHTS`), `bottom`, `score` (`"logit"`, or `"z"`: the logit's z-score among the neuron's logits, `SCORES`).

    **Returns:** `NeuronHits`, `n` neurons, the largest score first (smallest first for `bottom`); `ranks` is the
    token's place among all of the neuron's tokens (0: its top token; for `bottom`, its bottom token).
    """
    where = "top_neurons_for_token"
    if score not in SCORES:
        raise ValueError(f"{where}: score must be one of {SCORES}, got {score!r}")
    projection = readout(model)
    token = _token(token, where, projection.vocab_size)
    chosen = _layers(model, layers, where)
    directions = neuron_directions(model, chosen, weights=weights)
    n = _count(n, "n", where, low=1, high=int(np.prod(directions.shape[:2])))
    found, ranks, logits, scores = _by_token(
        directions, projection.unembed, projection.scale, token, n=n, bottom=bottom, centre=projection.centre,
        standardise=score == "z",
    )  # fmt: skip
    layer_at, neuron = np.divmod(np.asarray(found), directions.shape[1])
    return NeuronHits(np.asarray(chosen)[layer_at], neuron, np.asarray(ranks), np.asarray(logits), np.asarray(scores))


# ------------------------------------------------------------------------------------------------------- clamping
def _position_tuple(positions, where: str) -> tuple[int, ...] | None:
    """`positions` (None, a position, or a sequence of them) as None or a non-empty tuple of ints."""
    if positions is None:
        return None
    chosen = (positions,) if isinstance(positions, numbers.Integral) else tuple(positions)
    if not chosen or not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in chosen):
        raise ValueError(
            f"{where}: positions must be None, a position or a non-empty sequence of positions, got {positions!r}"
        )
    return tuple(int(p) for p in chosen)


def _position_index(positions: tuple[int, ...], seq: int, where: str) -> Int[Array, " n"]:
    """The positions as non-negative indices into `seq` tokens, or a `ValueError` naming one out of range."""
    for p in positions:
        if not -seq <= p < seq:
            raise ValueError(f"{where}: position {p} is out of range for {seq} tokens (-{seq} to {seq - 1})")
    return jnp.asarray([p % seq for p in positions], jnp.int32)


def _clamped(model, layer: int, neuron, value, positions, where: str) -> Intervened:
    """`model` with neuron `neuron` of layer `layer` held at `value` at `positions`: None (all), a tuple of ints
    (checked against the sequence when called) or an index array (checked already)."""

    def hold(post):
        if positions is None:
            index = slice(None)
        elif isinstance(positions, tuple):
            index = _position_index(positions, post.shape[0], where)
        else:
            index = positions
        return post.at[index, neuron].set(value)

    return intervene(model, {f"blocks.{layer}.mlp.post": hold})


def clamp(model: Any, layer: int, neuron: int, value: float | Float[ArrayLike, ""], *, positions=None) -> Intervened:
    """`model` with one MLP neuron's activation held at `value`: `jaxinterp.intervene` at the site
    `blocks.{layer}.mlp.post` (the activation, times the up projection for a gated MLP), which `W_out` reads.

    **Arguments:** `model`, `layer`, `neuron` (its index in the layer), `value` (a number, or a traced scalar),
    `positions` (None: every position; a position or a sequence of them, negative counting from the end).

    **Returns:** a function with `model`'s signature (an equinox Module, for `eqx.filter_jit`).
    """
    where = "clamp"
    (layer,) = _layers(model, layer, where)
    neuron = _check_neuron(model, layer, neuron, where)
    return _clamped(model, layer, neuron, value, _position_tuple(positions, where), where)


@eqx.filter_jit
def _clamp_effect(model, tokens, layer, neuron, value, positions, top_ids, bottom_ids):
    clean = jax.nn.log_softmax(model(tokens), axis=-1)
    held = jax.nn.log_softmax(_clamped(model, layer, neuron, value, positions, "clamp_effect")(tokens), axis=-1)

    def mass(logp, ids):
        return jax.nn.logsumexp(logp[..., ids], axis=-1)

    top, top_held = mass(clean, top_ids), mass(held, top_ids)
    return ClampEffect(
        top_ids,
        bottom_ids,
        jnp.exp(top),
        jnp.exp(top_held),
        top_held - top,
        mass(held, bottom_ids) - mass(clean, bottom_ids),
        jnp.sum(jnp.exp(clean) * (clean - held), axis=-1),
    )


def clamp_effect(
    model: Any,
    tokens: Int[ArrayLike, " seq"],
    layer: int,
    neuron: int,
    value: float | Float[ArrayLike, ""],
    *,
    positions=None,
    k: int = 10,
    weights: str = "out",
) -> ClampEffect:
    """How far clamping a neuron (`clamp`) moves the model's output distribution toward the neuron's decoded tokens.

    The target tokens are the neuron's top-k and bottom-k tokens through the final projection (`neuron_logits`);
    one jitted call runs the clean and the clamped forward on `tokens` and compares their softmax distributions at
    every position.

    **Arguments:** `model` (returning logits `[seq, vocab]`), `tokens` (int `[seq]`, one prompt), `layer`,
    `neuron`, `value`, `positions` (as for `clamp`), `k` (tokens per list), `weights` (which weight vector gives
    the target tokens, `WEIGHTS`).

    **Returns:** a `ClampEffect`.
    """
    where = "clamp_effect"
    (layer,) = _layers(model, layer, where)
    neuron = _check_neuron(model, layer, neuron, where)
    tokens = jnp.asarray(tokens, jnp.int32)
    positions = _position_tuple(positions, where)
    if positions is not None:  # traced, so that other positions in prompts of one length reuse the compilation
        positions = _position_index(positions, tokens.shape[0], where)
    logits = neuron_logits(model, layer, neuron, weights=weights)
    k = _count(k, "k", where, low=1, high=logits.shape[0])
    _, top_ids = lax.top_k(logits, k)
    _, bottom_ids = lax.top_k(-logits, k)
    return _clamp_effect(model, tokens, layer, jnp.int32(neuron), jnp.float32(value), positions, top_ids, bottom_ids)
