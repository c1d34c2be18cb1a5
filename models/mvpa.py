"""Multi-variate parallel attention (MVPA, P38) and the classifiers compared with it: MVPFormer-style models that read
any number of channels, and a standard transformer over time patches with the channels concatenated.

A series is `[channels, length]`; it is cut into `patches = length // patch` patches of `patch` samples per channel.
The formulas are in `docs/mvpa.md`."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from jaxinterp.composites import attention, layer_norm
from jaxinterp.sites import tag


def _normal(key, shape, scale=0.02):
    return scale * jax.random.normal(key, shape)


def channel_relations(channels: int, max_channel_offset: int) -> Array:
    """The relation index between every pair of channels: `min(|c - c'|, max_channel_offset)`, `[channels,
    channels]` int32. With `max_channel_offset = 1` it only says whether two tokens share a channel, which makes
    MVPA equivariant to permutations of the channels."""
    c = jnp.arange(channels)
    return jnp.minimum(jnp.abs(c[:, None] - c[None, :]), max_channel_offset)


def _patches(x: Array, patch: int, where: str) -> Array:
    """`[channels, length]` -> `[channels, length // patch, patch]` (a trailing part shorter than a patch dropped)."""
    if x.ndim != 2:
        raise ValueError(f"{where}: expected one series of shape [channels, length], got shape {x.shape}")
    channels, length = x.shape
    if length < patch:
        raise ValueError(f"{where}: the series has {length} samples, fewer than one patch of {patch}")
    n = length // patch
    return x[:, : n * patch].reshape(channels, n, patch)


def _standardise(x: Array) -> Array:
    """Each channel of `[channels, length]` centred and divided by its standard deviation over time."""
    mean = jnp.mean(x, axis=-1, keepdims=True)
    scale = jnp.sqrt(jnp.var(x, axis=-1, keepdims=True) + 1e-5)
    return (x - mean) / scale


class MVPAttention(eqx.Module):
    """Multi-variate parallel attention over a `[channels, patches, d_model]` grid of tokens.

    For the query token `(c, t)` and the key token `(c', t')` of head `h` the score is the sum of a content, a
    temporal and a spatial term,

        s = [(q + u) . k  +  (q + v) . W_R r(t - t')  +  (q + z) . W_C e(rel(c, c'))] / sqrt(d_head),

    with `q = W_q x_(c, t)`, `k = W_k x_(c', t')`, learned relative-time embeddings `r` (one per offset in
    `[-max_time_offset, max_time_offset]`, clipped there), learned channel-relation embeddings `e` (one per value of
    `channel_relations`) and learned biases `u, v, z`; the softmax runs over all `channels x patches` keys (those at
    later times masked out when `causal`). As in the official code (layers/mvpa.py), the temporal term depends only
    on `t - t'` and the spatial term only on the relation of the two channels, so the cost of the positional terms
    does not grow with a table of absolute positions and any channel count is accepted.

    Sites (under `prefix`): `{prefix}.content`, `{prefix}.temporal`, `{prefix}.spatial` (each term's scores,
    `[heads, tokens, tokens]` with tokens ordered channel-major), `{prefix}.pattern` and `{prefix}.z` (per-head
    outputs `[channels, patches, heads, d_head]`).
    """

    query: Float[Array, "d_model d_model"]
    key: Float[Array, "d_model d_model"]
    value: Float[Array, "d_model d_model"]
    out: Float[Array, "d_model d_model"]
    time_embedding: Float[Array, "offsets d_model"]
    time_projection: Float[Array, "d_model d_model"]
    channel_embedding: Float[Array, "relations d_model"]
    channel_projection: Float[Array, "d_model d_model"]
    biases: Float[Array, "3 heads d_head"]
    n_heads: int = eqx.field(static=True)
    max_time_offset: int = eqx.field(static=True)
    causal: bool = eqx.field(static=True)

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        max_time_offset: int,
        max_channel_offset: int = 1,
        causal: bool = False,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `d_model`: the token width (a multiple of `n_heads`).
        - `n_heads`: attention heads.
        - `max_time_offset`: the largest `|t - t'|` with its own embedding (larger offsets share the last one).
        - `max_channel_offset`: the channel relations, `min(|c - c'|, max_channel_offset)`; 1 (the default) tells
            only the same channel from another and keeps the attention equivariant to channel permutations.
        - `causal`: whether a token attends only to keys at its own time or earlier (the generative MVPFormer).
        - `key`: a PRNG key.
        """
        if d_model % n_heads:
            raise ValueError(f"MVPAttention: d_model {d_model} is not a multiple of n_heads {n_heads}")
        if max_time_offset < 0 or max_channel_offset < 1:
            raise ValueError(
                f"MVPAttention: need max_time_offset >= 0 and max_channel_offset >= 1, got {max_time_offset}, "
                f"{max_channel_offset}"
            )
        keys = jax.random.split(key, 9)
        scale = 1.0 / math.sqrt(d_model)
        self.query, self.key, self.value, self.out, self.time_projection, self.channel_projection = (
            _normal(k, (d_model, d_model), scale) for k in keys[:6]
        )
        self.time_embedding = _normal(keys[6], (2 * max_time_offset + 1, d_model), 1.0)
        self.channel_embedding = _normal(keys[7], (max_channel_offset + 1, d_model), 1.0)
        self.biases = _normal(keys[8], (3, n_heads, d_model // n_heads))
        self.n_heads = n_heads
        self.max_time_offset = max_time_offset
        self.causal = causal

    def __call__(self, x: Float[Array, "channels patches d_model"], prefix: str = "attention") -> Array:
        """**Arguments:** `x`, the tokens; `prefix`, the sites' prefix.

        **Returns:** the attention's output, `[channels, patches, d_model]`.
        """
        channels, patches, d_model = x.shape
        h, d_head = self.n_heads, d_model // self.n_heads
        tokens = x.reshape(channels * patches, d_model)
        q = (tokens @ self.query).reshape(-1, h, d_head)
        k = (tokens @ self.key).reshape(-1, h, d_head)
        v = (tokens @ self.value).reshape(-1, h, d_head)
        u, w, z = self.biases
        content = jnp.einsum("qhd,khd->hqk", q + u, k)
        # temporal: every query against every relative offset, then gathered at each pair's t - t'
        offsets = (self.time_embedding @ self.time_projection).reshape(-1, h, d_head)
        by_offset = jnp.einsum("qhd,ohd->hqo", q + w, offsets)
        t = jnp.tile(jnp.arange(patches), channels)
        shift = jnp.clip(t[:, None] - t[None, :], -self.max_time_offset, self.max_time_offset) + self.max_time_offset
        temporal = jnp.take_along_axis(by_offset, jnp.broadcast_to(shift, (h, *shift.shape)), axis=-1)
        # spatial: every query against every channel relation, gathered at each pair's relation
        relations = (self.channel_embedding @ self.channel_projection).reshape(-1, h, d_head)
        by_relation = jnp.einsum("qhd,rhd->hqr", q + z, relations)
        relation = channel_relations(channels, self.channel_embedding.shape[0] - 1)
        relation = jnp.repeat(jnp.repeat(relation, patches, axis=0), patches, axis=1)
        spatial = jnp.take_along_axis(by_relation, jnp.broadcast_to(relation, (h, *relation.shape)), axis=-1)
        content = tag(content, f"{prefix}.content")
        temporal = tag(temporal, f"{prefix}.temporal")
        spatial = tag(spatial, f"{prefix}.spatial")
        scores = (content + temporal + spatial) / math.sqrt(d_head)
        if self.causal:
            scores = jnp.where(t[None, :, None] >= t[None, None, :], scores, jnp.finfo(scores.dtype).min)
        pattern = tag(jax.nn.softmax(scores, axis=-1), f"{prefix}.pattern")
        heads = jnp.einsum("hqk,khd->qhd", pattern, v)
        heads = tag(heads.reshape(channels, patches, h, d_head), f"{prefix}.z")
        return heads.reshape(channels, patches, d_model) @ self.out


class _Block(eqx.Module):
    """A pre-norm transformer block: `x + attention(norm(x))`, then `x + MLP(norm(x))` with GELU."""

    attention: eqx.Module
    norms: Float[Array, "4 d_model"]
    up: eqx.nn.Linear
    down: eqx.nn.Linear

    def __init__(self, attention_module: eqx.Module, d_model: int, d_mlp: int, *, key):
        up_key, down_key = jax.random.split(key)
        self.attention = attention_module
        self.norms = jnp.stack([jnp.ones(d_model), jnp.zeros(d_model)] * 2)
        self.up = eqx.nn.Linear(d_model, d_mlp, key=up_key)
        self.down = eqx.nn.Linear(d_mlp, d_model, key=down_key)

    def __call__(self, x: Array, prefix: str) -> Array:
        x = tag(x + self.attention(layer_norm(x, self.norms[0], self.norms[1], 1e-5), f"{prefix}.attention"),
                f"{prefix}.mid")  # fmt: skip
        hidden = layer_norm(x, self.norms[2], self.norms[3], 1e-5)
        hidden = tag(jax.nn.gelu(jnp.einsum("...d,ed->...e", hidden, self.up.weight) + self.up.bias), f"{prefix}.mlp")
        return tag(x + jnp.einsum("...e,de->...d", hidden, self.down.weight) + self.down.bias, f"{prefix}.out")


class MVPFormer(eqx.Module):
    """A classifier of multivariate series of any channel count built from MVPA blocks: every channel's patches are
    standardised and embedded by one linear map shared across channels, so a channel is a row of tokens and nothing
    in the model is tied to a channel's index; `depth` pre-norm blocks of `MVPAttention` and a GELU MLP follow, then
    a mean over all tokens, a layer norm and a linear head.

    Written for one series; batch with `jax.vmap` (a batch shares its channel count).

    Sites: `embedding` (`[channels, patches, d_model]`), `blocks.{i}.attention.*` (see `MVPAttention`),
    `blocks.{i}.mid`, `blocks.{i}.mlp`, `blocks.{i}.out`, `pooled`, `logits`.
    """

    embedding: eqx.nn.Linear
    blocks: tuple[_Block, ...]
    final_norm: Float[Array, "2 d_model"]
    head: eqx.nn.Linear
    patch: int = eqx.field(static=True)

    def __init__(
        self,
        patch: int,
        n_classes: int,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        depth: int = 2,
        d_mlp: int | None = None,
        max_time_offset: int = 64,
        max_channel_offset: int = 1,
        causal: bool = False,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `patch`: samples per patch (a token).
        - `n_classes`: the number of logits.
        - `d_model`, `n_heads`, `depth`, `d_mlp` (default `4 d_model`): the blocks' sizes.
        - `max_time_offset`, `max_channel_offset`, `causal`: as for `MVPAttention`.
        - `key`: a PRNG key.
        """
        if patch < 1 or n_classes < 1 or depth < 1:
            raise ValueError(f"MVPFormer: need patch, n_classes and depth >= 1, got {patch}, {n_classes}, {depth}")
        keys = jax.random.split(key, 2 * depth + 2)
        self.embedding = eqx.nn.Linear(patch, d_model, key=keys[0])
        self.blocks = tuple(
            _Block(
                MVPAttention(d_model, n_heads, max_time_offset, max_channel_offset, causal, key=keys[2 * i + 1]),
                d_model,
                d_mlp or 4 * d_model,
                key=keys[2 * i + 2],
            )
            for i in range(depth)
        )
        self.final_norm = jnp.stack([jnp.ones(d_model), jnp.zeros(d_model)])
        self.head = eqx.nn.Linear(d_model, n_classes, key=keys[-1])
        self.patch = patch

    def __call__(self, x: Float[Array, "channels length"]) -> Float[Array, " n_classes"]:
        """**Arguments:** `x`, one series (any number of channels, at least one patch long).

        **Returns:** the logits.
        """
        patches = _patches(_standardise(x), self.patch, "MVPFormer")
        h = tag(jnp.einsum("ctp,dp->ctd", patches, self.embedding.weight) + self.embedding.bias, "embedding")
        for i, block in enumerate(self.blocks):
            h = block(h, f"blocks.{i}")
        pooled = tag(layer_norm(jnp.mean(h, axis=(0, 1)), self.final_norm[0], self.final_norm[1], 1e-5), "pooled")
        return tag(self.head(pooled), "logits")


class _StandardAttention(eqx.Module):
    """Multi-head softmax self-attention over a sequence of tokens (`jaxinterp.composites.attention`)."""

    qkv: Float[Array, "3 d_model d_model"]
    out: Float[Array, "d_model d_model"]
    n_heads: int = eqx.field(static=True)

    def __init__(self, d_model: int, n_heads: int, *, key):
        if d_model % n_heads:
            raise ValueError(f"attention: d_model {d_model} is not a multiple of n_heads {n_heads}")
        qkv_key, out_key = jax.random.split(key)
        self.qkv = _normal(qkv_key, (3, d_model, d_model), 1.0 / math.sqrt(d_model))
        self.out = _normal(out_key, (d_model, d_model), 1.0 / math.sqrt(d_model))
        self.n_heads = n_heads

    def __call__(self, x: Float[Array, "seq d_model"], prefix: str = "attention") -> Array:
        seq, d_model = x.shape
        q, k, v = (jnp.einsum("sd,de->se", x, w).reshape(seq, self.n_heads, -1) for w in self.qkv)
        z = attention(q, k, v, jnp.ones((1, seq, seq), bool), pattern_site=f"{prefix}.pattern")
        return tag(z, f"{prefix}.z").reshape(seq, d_model) @ self.out


class PatchTransformer(eqx.Module):
    """The standard-transformer baseline: one token per time patch, holding that patch of every channel (each
    standardised per channel) concatenated and embedded by a linear map, plus a learned position embedding;
    `depth` pre-norm blocks of ordinary softmax attention, a mean over tokens, a layer norm and a linear head. Its
    input width fixes the channels: a channel's meaning is its slot.

    Sites: `embedding` (`[patches, d_model]`), `blocks.{i}.attention.pattern`, `blocks.{i}.attention.z`,
    `blocks.{i}.mid`, `blocks.{i}.mlp`, `blocks.{i}.out`, `pooled`, `logits`.
    """

    embedding: eqx.nn.Linear
    positions: Float[Array, "max_patches d_model"]
    blocks: tuple[_Block, ...]
    final_norm: Float[Array, "2 d_model"]
    head: eqx.nn.Linear
    channels: int = eqx.field(static=True)
    patch: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        patch: int,
        n_classes: int,
        max_patches: int,
        *,
        d_model: int = 32,
        n_heads: int = 4,
        depth: int = 2,
        d_mlp: int | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `channels` (the fixed input channels), `patch`, `n_classes`, `max_patches` (rows of the
        position table), and the block sizes as for `MVPFormer`; `key`."""
        keys = jax.random.split(key, 2 * depth + 3)
        self.embedding = eqx.nn.Linear(channels * patch, d_model, key=keys[0])
        self.positions = _normal(keys[1], (max_patches, d_model))
        self.blocks = tuple(
            _Block(
                _StandardAttention(d_model, n_heads, key=keys[2 * i + 2]),
                d_model,
                d_mlp or 4 * d_model,
                key=keys[2 * i + 3],
            )
            for i in range(depth)
        )
        self.final_norm = jnp.stack([jnp.ones(d_model), jnp.zeros(d_model)])
        self.head = eqx.nn.Linear(d_model, n_classes, key=keys[-1])
        self.channels = channels
        self.patch = patch

    def __call__(self, x: Float[Array, "channels length"]) -> Float[Array, " n_classes"]:
        """**Arguments:** `x`, one series with exactly `channels` channels.

        **Returns:** the logits.
        """
        if x.ndim != 2 or x.shape[0] != self.channels:
            raise ValueError(f"PatchTransformer: expected a series of shape [{self.channels}, length], got {x.shape}")
        patches = _patches(_standardise(x), self.patch, "PatchTransformer")
        n = patches.shape[1]
        if n > self.positions.shape[0]:
            raise ValueError(f"PatchTransformer: {n} patches, more than the {self.positions.shape[0]} positions")
        tokens = jnp.transpose(patches, (1, 0, 2)).reshape(n, -1)
        h = tag(tokens @ self.embedding.weight.T + self.embedding.bias + self.positions[:n], "embedding")
        for i, block in enumerate(self.blocks):
            h = block(h, f"blocks.{i}")
        pooled = tag(layer_norm(jnp.mean(h, axis=0), self.final_norm[0], self.final_norm[1], 1e-5), "pooled")
        return tag(self.head(pooled), "logits")
