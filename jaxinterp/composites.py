"""Marked composite operations: layer norm, RMS norm, softmax attention and elementwise activations.

A model calls these instead of writing the maths inline. Executed, compiled, differentiated or batched they are
exactly that maths; in a traced program they stay one equation (`composite_p`, with `kind` and static `options`)
so that contextual decomposition can apply a whole-op rule to them (`docs/cd.md`), which a primitive-by-primitive
walk could not express. Everything else in a model is decomposed primitive by primitive. `composite` marks any
other operation; `jaxinterp.register_composite_rule` gives it a rule.
"""

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from . import _compat
from .sites import tag

composite_p = _compat.define_call_primitive("jaxinterp_composite")

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
}


def _mark(kind: str, fn, *args, **options):
    closed = jax.make_jaxpr(fn)(*args)
    return composite_p.bind(*args, jaxpr=closed, kind=kind, options=tuple(sorted(options.items())))


def composite(kind: str, fn: Callable, *args: jax.Array, **options):
    """Evaluate `fn(*args)` as one marked operation of kind `kind`.

    Executed, compiled, differentiated or batched, this is `fn(*args)`; in a traced program it is one equation that
    contextual decomposition hands to the rule registered for `kind` (`jaxinterp.register_composite_rule`), or
    decomposes primitive by primitive if there is none.

    **Arguments:**

    - `kind`: the composite's name, e.g. `"my_norm"`.
    - `fn`: a function of the arrays `args` returning an array or a tuple of arrays.
    - `*args`: arrays.
    - `**options`: static, hashable settings the rule reads as `eqn.options` (an `eps`, say).

    **Returns:** `fn(*args)`.
    """
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"a composite kind is a non-empty string, got {kind!r}")
    single = {}

    def flat_fn(*a):
        out = fn(*a)
        single["yes"] = not isinstance(out, (tuple, list))
        return [out] if single["yes"] else list(out)

    outs = _mark(kind, flat_fn, *args, **options)
    return outs[0] if single["yes"] else tuple(outs)


def activation(x: jax.Array, kind: str) -> jax.Array:
    """An elementwise activation marked as one operation.

    **Arguments:**

    - `x`: any array.
    - `kind`: one of `"relu"`, `"gelu"` (exact erf form), `"gelu_new"` (tanh approximation), `"silu"`, `"tanh"`,
      `"sigmoid"`.

    **Returns:** the activation of `x`.
    """
    if kind not in ACTIVATIONS:
        raise ValueError(f"unknown activation {kind!r}; choose one of {sorted(ACTIVATIONS)}")
    fn = ACTIVATIONS[kind]
    (out,) = _mark("activation", lambda v: [fn(v)], x, function=kind)
    return out


def layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    """Layer normalisation over the last axis, marked as one operation.

    **Arguments:** `x` (`[..., d]`), `weight` and `bias` (`[d]`), `eps` (added to the variance).

    **Returns:** `(x - mean) / sqrt(var + eps) * weight + bias`.
    """

    def fn(x, weight, bias):
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return [(x - mean) * jax.lax.rsqrt(var + eps) * weight + bias]

    (out,) = _mark("layer_norm", fn, x, weight, bias, eps=float(eps))
    return out


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """RMS normalisation over the last axis (Llama), marked as one operation.

    **Arguments:** `x` (`[..., d]`), `weight` (`[d]`), `eps`.

    **Returns:** `x / sqrt(mean(x^2) + eps) * weight`.
    """

    def fn(x, weight):
        return [x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + eps) * weight]

    (out,) = _mark("rms_norm", fn, x, weight, eps=float(eps))
    return out


def attention_pattern(q: jax.Array, k: jax.Array, mask: jax.Array, scale: float) -> jax.Array:
    """Softmax attention probabilities (plain maths, unmarked).

    **Arguments:** `q` (`[..., q_len, n_heads, d_head]`), `k` (`[..., k_len, n_kv_heads, d_head]`, with
    `n_heads` a multiple of `n_kv_heads`: grouped-query attention repeats each key head), `mask` (bool,
    broadcastable to `[..., n_heads, q_len, k_len]`, True where attending is allowed), `scale`.

    **Returns:** the pattern, `[..., n_heads, q_len, k_len]`.
    """
    k = repeat_kv(k, q.shape[-2])
    scores = jnp.einsum("...qhd,...khd->...hqk", q, k) * scale
    scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


def repeat_kv(x: jax.Array, n_heads: int) -> jax.Array:
    """Repeat the key/value heads of `x` (`[..., len, n_kv_heads, d]`) to `n_heads` (grouped-query attention)."""
    n_kv = x.shape[-2]
    if n_heads % n_kv:
        raise ValueError(f"{n_heads} query heads cannot share {n_kv} key/value heads evenly")
    return jnp.repeat(x, n_heads // n_kv, axis=-2) if n_heads != n_kv else x


def attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, *, pattern_site: str | None = None):
    """Scaled dot-product softmax attention, marked as one operation; heads stay a separate axis.

    **Arguments:**

    - `q`: `[..., q_len, n_heads, d_head]`.
    - `k`, `v`: `[..., k_len, n_kv_heads, d_head]`.
    - `mask`: bool, broadcastable to `[..., n_heads, q_len, k_len]`; True where attending is allowed.
    - `pattern_site`: if given, the attention probabilities are tagged under this site name.

    **Returns:** `z`, `[..., q_len, n_heads, d_head]`, per-head outputs before the output projection.
    """
    scale = 1.0 / math.sqrt(q.shape[-1])

    def fn(q, k, v, mask):
        pattern = attention_pattern(q, k, mask, scale)
        if pattern_site is not None:
            pattern = tag(pattern, pattern_site)
        return [jnp.einsum("...hqk,...khd->...qhd", pattern, repeat_kv(v, q.shape[-2]))]

    (out,) = _mark("attention", fn, q, k, v, mask, scale=scale)
    return out
