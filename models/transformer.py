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

    **Fields:** sizes (`vocab_size`, `d_model`, `n_layers`, `n_heads`, `n_kv_heads`, `d_head`, `d_mlp` (0: no MLP,
    an attention-only model), `max_positions`, `type_vocab_size`), `norm` (`"layer"`, `"rms"` or `"none"`: no
    normalisation anywhere, as in compiled tracr models), `norm_eps`, `post_norm` (BERT: normalise
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
            ("norm", self.norm, ("layer", "rms", "none")),
        ]:
            if value not in allowed:
                raise ValueError(f"TransformerConfig.{field} must be one of {allowed}, got {value!r}")
        if self.norm == "none" and (self.post_norm or self.embed_norm):
            raise ValueError("TransformerConfig: post_norm and embed_norm need a norm, but norm='none'")
        if self.post_norm and not self.d_mlp:
            raise ValueError("TransformerConfig: a post-norm model needs an MLP (d_mlp > 0)")

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


def _norm(cfg: "TransformerConfig") -> "Norm | None":
    return None if cfg.norm == "none" else Norm(cfg.d_model, cfg.norm, cfg.norm_eps)


def _normed(norm: "Norm | None", x):
    return x if norm is None else norm(x)


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

    def z(self, xq, xk, xv, mask, cfg: TransformerConfig, layer: int) -> Float[Array, "seq heads d_head"]:
        """The per-head outputs before `W_O` (tagged `blocks.L.attn.z`).

        **Arguments:** `xq` (`[seq, d_model]`, read by every query head, or `[heads, seq, d_model]`, one input per
        query head), `xk` and `xv` (likewise, `[seq, d_model]` or `[kv_heads, seq, d_model]`), `mask`
        (`[1, q, k]`), `cfg`, `layer`.
        """

        def project(x, w, b):
            y = jnp.einsum("sm,mhd->shd" if x.ndim == 2 else "hsm,mhd->shd", x, w)
            return y if b is None else y + b

        q, k, v = project(xq, self.w_q, self.b_q), project(xk, self.w_k, self.b_k), project(xv, self.w_v, self.b_v)
        if cfg.positional == "rope":
            q = rotary(q, cfg.rope_theta, cfg.rope_interleaved)
            k = rotary(k, cfg.rope_theta, cfg.rope_interleaved)
        site = f"blocks.{layer}.attn"
        q, k, v = tag(q, f"{site}.q"), tag(k, f"{site}.k"), tag(v, f"{site}.v")
        return tag(attention(q, k, v, mask, pattern_site=f"{site}.pattern"), f"{site}.z")

    def __call__(self, x, mask, cfg: TransformerConfig, layer: int):
        out = jnp.einsum("shd,hdm->sm", self.z(x, x, x, mask, cfg, layer), self.w_o)
        return tag(out if self.b_o is None else out + self.b_o, f"blocks.{layer}.attn.out")


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
    """One transformer block (pre-norm, or post-norm when `cfg.post_norm`; no norms when `cfg.norm == "none"`, no
    MLP when `cfg.d_mlp == 0`)."""

    ln1: Norm | None
    attn: Attention
    ln2: Norm | None
    mlp: MLP | None

    def __init__(self, cfg: TransformerConfig, *, key):
        ka, km = jax.random.split(key)
        self.ln1 = _norm(cfg)
        self.attn = Attention(cfg, key=ka)
        self.ln2 = _norm(cfg) if cfg.d_mlp else None
        self.mlp = MLP(cfg, key=km) if cfg.d_mlp else None

    def __call__(self, x, mask, cfg: TransformerConfig, layer: int):
        site = f"blocks.{layer}"
        x = tag(x, f"{site}.resid_pre")
        if cfg.post_norm:
            mid = tag(self.ln1(x + self.attn(x, mask, cfg, layer)), f"{site}.resid_mid")
            return tag(self.ln2(mid + self.mlp(mid, cfg, layer)), f"{site}.resid_post")
        mid = tag(x + self.attn(_normed(self.ln1, x), mask, cfg, layer), f"{site}.resid_mid")
        if self.mlp is None:
            return tag(mid, f"{site}.resid_post")
        return tag(mid + self.mlp(_normed(self.ln2, mid), cfg, layer), f"{site}.resid_post")


class Transformer(eqx.Module):
    """A transformer of the family described by `cfg`, for one token sequence.

    Call it as `model(tokens, token_types=None, attention_mask=None)`:

    **Arguments:**

    - `tokens`: int `[seq]`.
    - `token_types`: int `[seq]` (BERT segment ids); zeros when omitted.
    - `attention_mask`: bool or 0/1 `[seq]`, False for padding; all True when omitted.
    - `output_positions` (keyword): positions to return the output at (an index list or array), saving the
      unembedding elsewhere; every position when omitted.

    **Returns:** logits `[seq, vocab]` when `cfg.lm_head`, else the final hidden states `[seq, d_model]` (with
    `output_positions`, `[len(output_positions), ...]`).
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
        self.ln_final = None if cfg.post_norm else _norm(cfg)
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

    def __call__(self, tokens, token_types=None, attention_mask=None, *, output_positions=None):
        if tokens.ndim != 1:
            raise ValueError(
                f"the model takes one sequence of token ids, shape [seq]; got shape {tokens.shape} "
                "(batch with jax.vmap)"
            )
        x = self.embed(tokens, token_types)
        mask = self.attention_mask(tokens.shape[0], attention_mask)
        for layer, block in enumerate(self.blocks):
            x = block(x, mask, self.cfg, layer)
        return self.readout(x, output_positions)

    def readout(self, x: Float[Array, "seq d_model"], positions=None):
        """From the last block's output to what the model returns: the final norm (tagged `ln_final`) and the
        unembedding (tagged `logits`) when the model has them; at the given `positions` only (an index array or
        list) when given."""
        if positions is not None:
            x = x[jnp.asarray(positions)]
        if self.ln_final is not None:
            x = tag(self.ln_final(x), "ln_final")
        if not self.cfg.lm_head:
            return x
        unembed = self.token_embed.T if self.unembed is None else self.unembed
        return tag(x @ unembed, "logits")

    def graph_layout(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """The forward pass as a graph of nodes writing into the residual stream and receivers reading it, for
        edge-level patching (`jaxinterp.patching.Graph`, `docs/patching.md#the-graph`).

        **Returns:** in execution order, `("send", nodes)` where nodes add their output to the residual stream
        (`embed`, then per layer `blocks.L.attn.H` for each query head and `blocks.L.mlp`) and `("read",
        receivers)` where receivers read it (`blocks.L.attn.H.q` per query head, `blocks.L.attn.G.k` and
        `blocks.L.attn.G.v` per key/value head, `blocks.L.mlp`, and `logits`, or `output` without a
        language-model head).
        """
        cfg = self._graph_config()
        layout = [("send", ("embed",))]
        for layer in range(cfg.n_layers):
            layout.append(("read", self._head_receivers(layer)))
            layout.append(("send", tuple(f"blocks.{layer}.attn.{h}" for h in range(cfg.n_heads))))
            if cfg.d_mlp:
                layout += [("read", (f"blocks.{layer}.mlp",)), ("send", (f"blocks.{layer}.mlp",))]
        layout.append(("read", ("logits" if cfg.lm_head else "output",)))
        return tuple(layout)

    def forward_graph(self, mix, tokens, token_types=None, attention_mask=None, *, output_positions=None):
        """The forward pass with every receiver's input assembled by `mix` from the nodes' outputs.

        **Arguments:**

        - `mix(receivers, outputs, constant)`: called at each `("read", receivers)` step of `graph_layout()` with
          `outputs` (`[nodes sent so far, seq, d_model]`, in layout order) and `constant` (`[seq, d_model]`, the
          attention output biases, which are in the residual stream but are no node); returns the receivers'
          inputs, `[len(receivers), seq, d_model]`. `constant + outputs.sum(0)` for every receiver is the
          ordinary forward.
        - `tokens`, `token_types`, `attention_mask`, `output_positions`: as for calling the model.

        **Returns:** what calling the model returns. Sites are tagged as in the ordinary forward, except
        `blocks.L.resid_*` and `blocks.L.attn.out`, which no receiver reads as a whole.
        """
        cfg = self._graph_config()
        outputs = [self.embed(tokens, token_types)]
        constant = jnp.zeros_like(outputs[0])
        mask = self.attention_mask(tokens.shape[0], attention_mask)
        for layer, block in enumerate(self.blocks):
            inputs = _normed(block.ln1, mix(self._head_receivers(layer), jnp.stack(outputs), constant))
            h, g = cfg.n_heads, cfg.kv_heads
            z = block.attn.z(inputs[:h], inputs[h : h + g], inputs[h + g :], mask, cfg, layer)
            outputs += list(jnp.einsum("shd,hdm->hsm", z, block.attn.w_o))
            if block.attn.b_o is not None:
                constant = constant + block.attn.b_o
            if block.mlp is not None:
                (mlp_input,) = mix((f"blocks.{layer}.mlp",), jnp.stack(outputs), constant)
                outputs.append(block.mlp(_normed(block.ln2, mlp_input), cfg, layer))
        (x,) = mix(("logits" if cfg.lm_head else "output",), jnp.stack(outputs), constant)
        return self.readout(x, output_positions)

    def _graph_config(self) -> TransformerConfig:
        if self.cfg.post_norm:
            raise ValueError(
                "a post-norm model (BERT) has no residual-stream graph: its layer norms act on sums of node outputs;"
                " use node-level methods (activation patching, cd) instead"
            )
        return self.cfg

    def _head_receivers(self, layer: int) -> tuple[str, ...]:
        site = f"blocks.{layer}.attn"
        heads, kv = range(self.cfg.n_heads), range(self.cfg.kv_heads)
        return tuple(f"{site}.{h}.q" for h in heads) + tuple(f"{site}.{g}.{p}" for p in "kv" for g in kv)


class LastPosition(eqx.Module):
    """A language model that returns its logits at the last position only, skipping the unembedding elsewhere.

    **Arguments (call):** `tokens` (int `[seq]`).

    **Returns:** logits `[1, vocab]`.

    `graph_layout()` and `forward_graph(mix, tokens)` are the wrapped model's, with the output at the last position,
    so that edge-level methods (`jaxinterp.patching.Graph`) see the same graph.
    """

    model: Transformer

    @property
    def cfg(self):
        """The wrapped model's configuration."""
        return self.model.cfg

    def __call__(self, tokens):
        return self.model(tokens, output_positions=[-1])

    def graph_layout(self):
        """The wrapped model's `graph_layout()`."""
        return self.model.graph_layout()

    def forward_graph(self, mix, tokens):
        """The wrapped model's `forward_graph(mix, tokens)` at the last position. **Returns:** logits `[1, vocab]`."""
        return self.model.forward_graph(mix, tokens, output_positions=[-1])
