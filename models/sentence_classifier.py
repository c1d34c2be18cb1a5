"""A sentence classifier: a transformer encoder, mean pooling over real tokens, and a linear head."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jaxinterp.sites import tag

from .transformer import Transformer


class SentenceClassifier(eqx.Module):
    """`logits = W mean(hidden[real tokens]) + b` on top of an encoder.

    Mean pooling is linear, so contextual decomposition passes through it exactly.

    **Arguments (call):** `tokens` (int `[seq]`), `attention_mask` (`[seq]`, 0 for padding; all ones if omitted).

    **Returns:** logits `[classes]` (tagged `logits`; the pooled vector is tagged `pooled`).
    """

    encoder: Transformer
    weight: Float[Array, "classes d_model"]
    bias: Float[Array, " classes"]

    def __call__(self, tokens: Int[Array, " seq"], attention_mask=None) -> Float[Array, " classes"]:
        mask = jnp.ones(tokens.shape, jnp.float32) if attention_mask is None else jnp.asarray(attention_mask)
        hidden = self.encoder(tokens, attention_mask=mask)
        weights = mask.astype(hidden.dtype) / jnp.maximum(mask.sum(), 1.0)
        pooled = tag(weights @ hidden, "pooled")
        return tag(self.weight @ pooled + self.bias, "logits")


def mean_pooled_features(encoder: Transformer, tokens: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Mean-pooled hidden states for a padded batch `[batch, seq]`. **Returns:** `[batch, d_model]`."""

    def one(m, t, a):
        hidden = m(t, attention_mask=a)
        return (a[:, None] * hidden).sum(0) / jnp.maximum(a.sum(), 1.0)

    return eqx.filter_jit(jax.vmap(one, in_axes=(None, 0, 0)))(encoder, tokens, attention_mask)
