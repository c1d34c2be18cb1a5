"""What a decomposition attributes to: source and target specifications, and the (rel, irr) pair."""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Pair(NamedTuple):
    """A value split into the part due to the sources (`rel`) and the rest (`irr`); `rel + irr` is the value."""

    rel: Any
    irr: Any

    @property
    def total(self):
        return self.rel + self.irr


@dataclasses.dataclass(frozen=True)
class Site:
    """An internal source: the values at sites matching `pattern`, selected by `mask`.

    At a matching site the selected part of the value becomes relevant: `rel <- rel + mask * irr`,
    `irr <- (1 - mask) * irr`. With `mean` given (mean ablation, REFERENCE.md P1 §7) the selected irrelevant part
    is set to the reference mean instead: `irr <- mu`, `rel <- (rel + irr) - mu` where selected.

    **Arguments:**

    - `pattern`: a site name or glob, e.g. `"blocks.3.attn.z"`.
    - `mask`: 0/1 (or fractional) array broadcastable to the site's shape (numpy rules, aligned on the right);
      `None` selects everything. Use `head_mask` / `position_mask` to build one. May be a traced array, so
      `jax.vmap` over masks sweeps many sources in one call.
    - `mean`: the reference mean of the site's value (shape broadcastable to it), or `None`.
    """

    pattern: str
    mask: Any = None
    mean: Any = None

    def inject(self, value: Pair) -> Pair:
        mask = 1.0 if self.mask is None else jnp.asarray(self.mask, value.irr.dtype)
        if self.mean is None:
            return Pair(value.rel + mask * value.irr, (1 - mask) * value.irr)
        mean = jnp.asarray(self.mean, value.irr.dtype)
        total = value.rel + value.irr
        return Pair(mask * (total - mean) + (1 - mask) * value.rel, mask * mean + (1 - mask) * value.irr)


@dataclasses.dataclass(frozen=True)
class Input:
    """An input-feature source: the part of positional argument `argnum` selected by `mask` is relevant, the rest
    irrelevant. `mask` broadcasts against the argument (numpy rules); `None` makes the whole argument relevant."""

    argnum: int
    mask: Any = None

    def split(self, value) -> Pair:
        mask = 1.0 if self.mask is None else jnp.asarray(self.mask, value.dtype)
        return Pair(mask * value, (1 - mask) * value)


jax.tree_util.register_dataclass(Site, data_fields=["mask", "mean"], meta_fields=["pattern"])
jax.tree_util.register_dataclass(Input, data_fields=["mask"], meta_fields=["argnum"])


def head_mask(heads, n_heads: int) -> jax.Array:
    """A mask selecting attention heads of a `[seq, heads, d_head]` site: shape `[n_heads, 1]`.

    **Arguments:** `heads` (an index or a sequence of indices), `n_heads`.
    """
    return jnp.zeros(n_heads).at[jnp.asarray(heads)].set(1.0)[:, None]


def position_mask(positions, seq_len: int, trailing_dims: int = 1) -> jax.Array:
    """A mask selecting token positions of a site whose leading axis is the sequence: shape
    `[seq_len, 1, ..., 1]` with `trailing_dims` ones (1 for `[seq, d_model]` sites, 2 for `[seq, heads, d_head]`)."""
    mask = jnp.zeros(seq_len).at[jnp.asarray(positions)].set(1.0)
    return mask.reshape((seq_len,) + (1,) * trailing_dims)
