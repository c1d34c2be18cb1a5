"""One transformer family: BERT-style encoders, GPT-2 and Llama, as equinox Modules with named sites.

Axis conventions (written once, here): a model takes ONE example; batch with `jax.vmap`. `seq` is the token axis,
`d_model` the residual width, attention heads are their own axis of `q`, `k`, `v` and `z` (`[seq, heads, d_head]`),
so "head h" is a mask over that axis. Sites tagged (TransformerLens-style names):

- `embed`: the residual stream entering block 0 (BERT: after the embedding layer norm).
- `blocks.L.resid_pre`, `blocks.L.attn.{q,k,v}` (after RoPE where used), `blocks.L.attn.pattern`
  (`[heads, q, k]`), `blocks.L.attn.z` (per-head outputs before W_O), `blocks.L.attn.out`, `blocks.L.resid_mid`,
  `blocks.L.mlp.pre` (pre-activation; the gate for gated MLPs), `blocks.L.mlp.post` (activation, times `up` for
  gated MLPs), `blocks.L.mlp.out`, `blocks.L.resid_post`.
- `ln_final` (pre-norm models), `logits` (models with a language-model head).
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jaxinterp.cdt.sources import as_data
from jaxinterp.composites import activation, attention, layer_norm, rms_norm
from jaxinterp.sites import tag


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Architecture of a transformer in the family.

    **Fields:** sizes (`vocab_size`, `d_model`, `n_layers`, `n_heads`, `n_kv_heads`, `d_head`, `d_mlp`,
    `max_positions`, `type_vocab_size`), `norm` (`"layer"` or `"rms"`), `norm_eps`, `post_norm` (BERT: normalise
    after each residual addition), `embed_norm` (BERT: layer norm on the embeddings), `activation`, `gated_mlp`
    (Llama SwiGLU), `positional` (`"learned"`, `"sinusoidal"` or `"rope"`; learned and sinusoidal embeddings are
    marked as data, `jaxinterp.as_data`), `rope_theta`, `rope_interleaved` (RoPE on adjacent
    pairs, the GGUF layout, rather than on the two halves, the Hugging Face layout), `causal`, `bias` (biases on
    the attention and MLP projections), `lm_head` (produce logits), `tie_embeddings` (the unembedding is the token
    embedding).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    d_head: int
    d_mlp: int
    n_kv_heads: int | None = None
    max_positions: int = 0
    type_vocab_size: int = 0
    norm: str = "layer"
    norm_eps: float = 1e-5
    post_norm: bool = False
    embed_norm: bool = False
    activation: str = "gelu"
    gated_mlp: bool = False
    positional: str = "learned"
    rope_theta: float = 10000.0
    rope_interleaved: bool = False
    causal: bool = True
    bias: bool = True
    lm_head: bool = True
    tie_embeddings: bool = True

    def __post_init__(self):
        for field, value, allowed in [
            ("positional", self.positional, ("learned", "sinusoidal", "rope")),
            ("norm", self.norm, ("layer", "rms")),
        ]:
            if value not in allowed:
                raise ValueError(f"TransformerConfig.{field} must be one of {allowed}, got {value!r}")

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads


# fmt: off
def bert_config(**overrides) -> TransformerConfig:
    """A BERT-style encoder config (post-LN, GELU, learned positions, token types); MiniLM-L6 sizes by default."""
    base = dict(
        vocab_size=30522, d_model=384, n_layers=6, n_heads=12, d_head=32, d_mlp=1536, max_positions=512,
        type_vocab_size=2, norm="layer", norm_eps=1e-12, post_norm=True, embed_norm=True, activation="gelu",
        causal=False, lm_head=False,
    )
    return TransformerConfig(**{**base, **overrides})


def gpt2_config(**overrides) -> TransformerConfig:
    """A GPT-2 config (pre-LN, gelu_new, learned positions, tied unembedding); GPT-2 small sizes by default."""
    base = dict(
        vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_head=64, d_mlp=3072, max_positions=1024,
        norm="layer", norm_eps=1e-5, activation="gelu_new",
    )
    return TransformerConfig(**{**base, **overrides})


def llama_config(**overrides) -> TransformerConfig:
    """A Llama config (RMSNorm, RoPE, SwiGLU, grouped-query attention, no biases); SmolLM2-135M sizes by default."""
    base = dict(
        vocab_size=49152, d_model=576, n_layers=30, n_heads=9, n_kv_heads=3, d_head=64, d_mlp=1536,
        norm="rms", norm_eps=1e-5, activation="silu", gated_mlp=True, positional="rope", rope_theta=100000.0,
        bias=False,
    )
    return TransformerConfig(**{**base, **overrides})
# fmt: on


def _normal(key, shape, scale=0.02):
    return scale * jax.random.normal(key, shape, jnp.float32)


class Norm(eqx.Module):
    """Layer norm or RMS norm over the last axis."""

    weight: Float[Array, " d"]
    bias: Float[Array, " d"] | None
    eps: float = eqx.field(static=True)

    def __init__(self, d: int, kind: str, eps: float):
        self.weight = jnp.ones(d)
        self.bias = jnp.zeros(d) if kind == "layer" else None
        self.eps = eps

    def __call__(self, x):
        if self.bias is None:
            return rms_norm(x, self.weight, self.eps)
        return layer_norm(x, self.weight, self.bias, self.eps)


def sinusoids(seq: int, d: int) -> Float[Array, "seq d"]:
    """The fixed sinusoidal positional embedding of "Attention is all you need": `sin(p / 10000^(2i/d))` in the
    even and `cos` in the odd features of position `p`."""
    angles = jnp.arange(seq, dtype=jnp.float32)[:, None] / 10000.0 ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(seq, -1)[:, :d]


def rotary(x: Float[Array, "seq heads d"], theta: float, interleaved: bool) -> Float[Array, "seq heads d"]:
    """Rotary position embedding of `x` at positions `0..seq-1`.

    **Arguments:** `x`, `theta` (the frequency base), `interleaved` (rotate adjacent pairs `(0,1), (2,3), ...`
    rather than the pairs `(i, i + d/2)`).

    **Returns:** the rotated `x`.
    """
    seq, _, d = x.shape
    freqs = theta ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    angles = jnp.arange(seq, dtype=jnp.float32)[:, None] * freqs[None, :]
    cos, sin = jnp.cos(angles)[:, None, :], jnp.sin(angles)[:, None, :]
    if interleaved:
        pairs = x.reshape(seq, x.shape[1], d // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return jnp.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(x.shape)
    a, b = x[..., : d // 2], x[..., d // 2 :]
    return jnp.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)


class Attention(eqx.Module):
    """Multi-head (grouped-query) self-attention with heads as a separate axis."""

    w_q: Float[Array, "d_model heads d_head"]
    w_k: Float[Array, "d_model kv_heads d_head"]
    w_v: Float[Array, "d_model kv_heads d_head"]
    w_o: Float[Array, "heads d_head d_model"]
    b_q: Float[Array, "heads d_head"] | None
    b_k: Float[Array, "kv_heads d_head"] | None
    b_v: Float[Array, "kv_heads d_head"] | None
    b_o: Float[Array, " d_model"] | None

    def __init__(self, cfg: TransformerConfig, *, key):
        kq, kk, kv, ko = jax.random.split(key, 4)
        d, h, kvh, dh = cfg.d_model, cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.w_q, self.w_k, self.w_v = _normal(kq, (d, h, dh)), _normal(kk, (d, kvh, dh)), _normal(kv, (d, kvh, dh))
        self.w_o = _normal(ko, (h, dh, d))
        zeros = jnp.zeros
        self.b_q, self.b_k, self.b_v, self.b_o = (
            (zeros((h, dh)), zeros((kvh, dh)), zeros((kvh, dh)), zeros(d)) if cfg.bias else (None,) * 4
        )

    def __call__(self, x, mask, cfg: TransformerConfig, layer: int):
        def project(w, b):
            y = jnp.einsum("sm,mhd->shd", x, w)
            return y if b is None else y + b

        q, k, v = project(self.w_q, self.b_q), project(self.w_k, self.b_k), project(self.w_v, self.b_v)
        if cfg.positional == "rope":
            q = rotary(q, cfg.rope_theta, cfg.rope_interleaved)
            k = rotary(k, cfg.rope_theta, cfg.rope_interleaved)
        site = f"blocks.{layer}.attn"
        q, k, v = tag(q, f"{site}.q"), tag(k, f"{site}.k"), tag(v, f"{site}.v")
        z = tag(attention(q, k, v, mask, pattern_site=f"{site}.pattern"), f"{site}.z")
        out = jnp.einsum("shd,hdm->sm", z, self.w_o)
        return tag(out if self.b_o is None else out + self.b_o, f"{site}.out")


class MLP(eqx.Module):
    """The feed-forward block: `W_out act(W_in x)`, or `W_out (act(W_gate x) * W_up x)` when gated."""

    w_in: Float[Array, "d_model d_mlp"]
    w_gate: Float[Array, "d_model d_mlp"] | None
    w_out: Float[Array, "d_mlp d_model"]
    b_in: Float[Array, " d_mlp"] | None
    b_out: Float[Array, " d_model"] | None

    def __init__(self, cfg: TransformerConfig, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.w_in = _normal(k1, (cfg.d_model, cfg.d_mlp))
        self.w_gate = _normal(k2, (cfg.d_model, cfg.d_mlp)) if cfg.gated_mlp else None
        self.w_out = _normal(k3, (cfg.d_mlp, cfg.d_model))
        self.b_in = jnp.zeros(cfg.d_mlp) if cfg.bias else None
        self.b_out = jnp.zeros(cfg.d_model) if cfg.bias else None

    def __call__(self, x, cfg: TransformerConfig, layer: int):
        site = f"blocks.{layer}.mlp"
        up = x @ self.w_in
        if self.b_in is not None:
            up = up + self.b_in
        if self.w_gate is None:
            post = activation(tag(up, f"{site}.pre"), cfg.activation)
        else:
            post = activation(tag(x @ self.w_gate, f"{site}.pre"), cfg.activation) * up
        out = tag(post, f"{site}.post") @ self.w_out
        return tag(out if self.b_out is None else out + self.b_out, f"{site}.out")


class Block(eqx.Module):
    """One transformer block (pre-norm, or post-norm when `cfg.post_norm`)."""

    ln1: Norm
    attn: Attention
    ln2: Norm
    mlp: MLP

    def __init__(self, cfg: TransformerConfig, *, key):
        ka, km = jax.random.split(key)
        self.ln1 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps)
        self.attn = Attention(cfg, key=ka)
        self.ln2 = Norm(cfg.d_model, cfg.norm, cfg.norm_eps)
        self.mlp = MLP(cfg, key=km)

    def __call__(self, x, mask, cfg: TransformerConfig, layer: int):
        site = f"blocks.{layer}"
        x = tag(x, f"{site}.resid_pre")
        if cfg.post_norm:
            mid = tag(self.ln1(x + self.attn(x, mask, cfg, layer)), f"{site}.resid_mid")
            return tag(self.ln2(mid + self.mlp(mid, cfg, layer)), f"{site}.resid_post")
        mid = tag(x + self.attn(self.ln1(x), mask, cfg, layer), f"{site}.resid_mid")
        return tag(mid + self.mlp(self.ln2(mid), cfg, layer), f"{site}.resid_post")


class Transformer(eqx.Module):
    """A transformer of the family described by `cfg`, for one token sequence.

    Call it as `model(tokens, token_types=None, attention_mask=None)`:

    **Arguments:**

    - `tokens`: int `[seq]`.
    - `token_types`: int `[seq]` (BERT segment ids); zeros when omitted.
    - `attention_mask`: bool or 0/1 `[seq]`, False for padding; all True when omitted.

    **Returns:** logits `[seq, vocab]` when `cfg.lm_head`, else the final hidden states `[seq, d_model]`.
    """

    cfg: TransformerConfig = eqx.field(static=True)
    token_embed: Float[Array, "vocab d_model"]
    position_embed: Float[Array, "positions d_model"] | None
    type_embed: Float[Array, "types d_model"] | None
    embed_ln: Norm | None
    blocks: list[Block]
    ln_final: Norm | None
    unembed: Float[Array, "d_model vocab"] | None

    def __init__(self, cfg: TransformerConfig, *, key):
        keys = jax.random.split(key, cfg.n_layers + 4)
        self.cfg = cfg
        self.token_embed = _normal(keys[0], (cfg.vocab_size, cfg.d_model))
        learned = cfg.positional == "learned"
        self.position_embed = _normal(keys[1], (cfg.max_positions, cfg.d_model)) if learned else None
        self.type_embed = _normal(keys[2], (cfg.type_vocab_size, cfg.d_model)) if cfg.type_vocab_size else None
        self.embed_ln = Norm(cfg.d_model, cfg.norm, cfg.norm_eps) if cfg.embed_norm else None
        self.blocks = [Block(cfg, key=k) for k in keys[4:]]
        self.ln_final = None if cfg.post_norm else Norm(cfg.d_model, cfg.norm, cfg.norm_eps)
        needs_unembed = cfg.lm_head and not cfg.tie_embeddings
        self.unembed = _normal(keys[3], (cfg.d_model, cfg.vocab_size)) if needs_unembed else None

    def embed(self, tokens: Int[Array, " seq"], token_types: Int[Array, " seq"] | None = None):
        """The residual stream entering block 0 (tagged `embed`)."""
        cfg = self.cfg
        seq = tokens.shape[0]
        if cfg.max_positions and seq > cfg.max_positions:
            raise ValueError(f"{seq} tokens exceed the model's {cfg.max_positions} positions")
        x = self.token_embed[tokens]
        if self.position_embed is not None:
            x = x + as_data(self.position_embed[:seq])
        elif cfg.positional == "sinusoidal":
            x = x + as_data(sinusoids(seq, cfg.d_model))
        if self.type_embed is not None:
            types = jnp.zeros_like(tokens) if token_types is None else token_types
            x = x + self.type_embed[types]
        if self.embed_ln is not None:
            x = self.embed_ln(x)
        return tag(x, "embed")

    def attention_mask(self, seq: int, attention_mask=None) -> Bool[Array, "1 seq seq"]:
        """The boolean `[1, q, k]` mask: padding keys masked out, and future keys when causal."""
        mask = jnp.ones((seq, seq), bool)
        if self.cfg.causal:
            mask = jnp.tril(mask)
        if attention_mask is not None:
            mask = mask & jnp.asarray(attention_mask, bool)[None, :]
        return mask[None]

    def __call__(self, tokens, token_types=None, attention_mask=None):
        if tokens.ndim != 1:
            raise ValueError(
                f"the model takes one sequence of token ids, shape [seq]; got shape {tokens.shape} "
                "(batch with jax.vmap)"
            )
        x = self.embed(tokens, token_types)
        mask = self.attention_mask(tokens.shape[0], attention_mask)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, self.cfg, layer)
        if self.ln_final is not None:
            x = tag(self.ln_final(x), "ln_final")
        if not self.cfg.lm_head:
            return x
        unembed = self.token_embed.T if self.unembed is None else self.unembed
        return tag(x @ unembed, "logits")
