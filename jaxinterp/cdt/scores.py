"""Scores built from a decomposition (`docs/cd.md#scores`)."""

import jax
import jax.numpy as jnp


def classification_score(rel: jax.Array, total: jax.Array, label) -> jax.Array:
    """`rel[label] - rel[closest competitor]`, the competitor being the highest other logit of `total`.

    **Arguments:** `rel`, `total` (`[..., classes]` logits: relevant part and full value), `label` (int, or
    int array broadcastable to the leading axes).

    **Returns:** the score, shaped like the leading axes.
    """
    label = jnp.asarray(label)
    n = total.shape[-1]
    others = jnp.where(jax.nn.one_hot(label, n, dtype=bool), -jnp.inf, total)
    competitor = jnp.argmax(others, axis=-1)
    pick = lambda x, i: jnp.take_along_axis(x, jnp.broadcast_to(i, x.shape[:-1])[..., None], -1)[..., 0]
    return pick(rel, label) - pick(rel, competitor)


def logit_difference(rel: jax.Array, correct, incorrect, position: int = -1) -> jax.Array:
    """Language modelling: `rel[position, correct] - rel[position, incorrect]` for `rel` of shape
    `[..., seq, vocab]`. **Returns:** shaped like the leading axes."""
    last = rel[..., position, :]
    return last[..., correct] - last[..., incorrect]
