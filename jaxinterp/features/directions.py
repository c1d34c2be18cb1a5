"""Concept directions from labelled activations: mean pooling over a sequence and difference-in-means."""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float


def mean_pool(
    activations: Float[ArrayLike, "*batch seq d"], mask: Bool[ArrayLike, "*batch seq"] | None = None
) -> Float[Array, "*batch d"]:
    """The mean of `activations` over the sequence axis, over the positions where `mask` is true (all when `None`).

    **Returns:** `[*batch, d]`; a row whose mask is all false is zero.
    """
    activations = jnp.asarray(activations)
    if activations.ndim < 2:
        raise ValueError(f"mean_pool: activations must be [..., seq, d]; got shape {activations.shape}")
    if mask is None:
        return activations.mean(-2)
    mask = jnp.asarray(mask, activations.dtype)
    if mask.shape != activations.shape[:-1]:
        raise ValueError(f"mean_pool: mask shape {mask.shape} does not match activations {activations.shape[:-1]}")
    total = (activations * mask[..., None]).sum(-2)
    return total / jnp.maximum(mask.sum(-1), 1.0)[..., None]


def _rows(x, name: str, where: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{where}: {name} must be a non-empty [n, d] array; got shape {x.shape}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{where}: {name} contains NaN or infinite values")
    return x


def diff_in_means(positive: Float[ArrayLike, "n d"], negative: Float[ArrayLike, "m d"]) -> Float[Array, " d"]:
    """The difference-in-means direction `mean(positive) - mean(negative)`: activations of examples that show a
    concept minus those that do not, at one site. Not normalised: added at the site with strength 1, it moves the
    negative examples' mean onto the positive ones'.

    **Returns:** `[d]`.
    """
    positive = _rows(positive, "positive", "diff_in_means")
    negative = _rows(negative, "negative", "diff_in_means")
    if positive.shape[1] != negative.shape[1]:
        raise ValueError(f"diff_in_means: widths differ: positive {positive.shape}, negative {negative.shape}")
    return positive.mean(0) - negative.mean(0)
