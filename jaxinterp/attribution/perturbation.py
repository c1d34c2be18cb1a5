"""The classifier on a text with features removed, many removal patterns in one compiled batch; occlusion.

Perturbation methods (occlusion, KernelSHAP, LIME) and the faithfulness curves only ever ask one question: the
margin (or the target's probability) when some features are present and the rest removed. `logits_with` answers
it for a batch of 0/1 masks over the features in one `jax.lax.map` over chunks of `batch_size`; the batch is padded
to a multiple of 16 masks, so there is one compilation per text width, padded feature count, padded mask count and
removal.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .text import WIDTH_MULTIPLE, Classifier, Text, arrays, margin, masked_logits, pad_keep

BATCH_SIZE = 64


@eqx.filter_jit
def _logits(f, text_arrays, keeps, removal, batch_size):
    return jax.lax.map(lambda keep: masked_logits(f, text_arrays, keep, removal), keeps, batch_size=batch_size)


def logits_with(
    f: Classifier, text: Text, keeps, *, removal: str | int = "drop", batch_size: int = BATCH_SIZE
) -> jax.Array:
    """Logits `[k, classes]` of `text` with, for each row of `keeps` (`[k, n_features]`, 1 present / 0 removed),
    the absent features removed (`removal` as in `masked_logits`)."""
    keeps = jnp.asarray(keeps, jnp.float32)
    if keeps.ndim != 2 or keeps.shape[1] != text.n_features:
        raise ValueError(f"keeps must have shape [k, {text.n_features}] (one column per feature), got {keeps.shape}")
    k = keeps.shape[0]
    rows = -(-k // WIDTH_MULTIPLE) * WIDTH_MULTIPLE  # padded with all-present rows: few shapes to compile
    padded = jnp.concatenate([keeps, jnp.ones((rows - k, keeps.shape[1]), keeps.dtype)])
    return _logits(f, arrays(text), pad_keep(padded, text), removal, min(batch_size, rows))[:k]


def margins_with(f: Classifier, text: Text, keeps, target: int, competitor: int, **kwargs) -> jax.Array:
    """`logits[target] - logits[competitor]` for each row of `keeps`. **Returns:** `[k]`."""
    return margin(logits_with(f, text, keeps, **kwargs), target, competitor)


def value_function(f: Classifier, text: Text, target: int, competitor: int, **kwargs):
    """`value(masks [k, n_features]) -> margins [k]`: the form KernelSHAP and LIME estimate over."""
    return lambda masks: margins_with(f, text, masks, target, competitor, **kwargs)


def occlusion(f: Classifier, text: Text, target: int, competitor: int, **kwargs) -> np.ndarray:
    """Occlusion (Zeiler and Fergus 2014, for words): the drop of the margin when each feature alone is removed.
    **Returns:** `[n_features]`, one batch of `n_features + 1` evaluations."""
    n = text.n_features
    keeps = np.concatenate([np.ones((1, n), np.float32), 1.0 - np.eye(n, dtype=np.float32)])
    values = np.asarray(margins_with(f, text, keeps, target, competitor, **kwargs))
    return values[0] - values[1:]
