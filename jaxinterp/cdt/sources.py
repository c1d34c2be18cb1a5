"""What a decomposition attributes to: source and target specifications, and the (rel, irr) pair."""

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from .. import _compat

data_p = _compat.define_identity_primitive("jaxinterp_as_data")


class Pair(NamedTuple):
    """A value split into the part due to the sources (`rel`) and the rest (`irr`); `rel + irr` is the value."""

    rel: Any
    irr: Any

    @property
    def total(self):
        """`rel + irr` (leaf by leaf where the parts are dicts over target sites, or other pytrees)."""
        return jax.tree_util.tree_map(lambda r, i: r + i, self.rel, self.irr)


def as_data(x: ArrayLike) -> jax.Array:
    """Mark `x` as part of the input rather than a parameter of the model.

    `cd` treats values computed from the data arguments as entirely irrelevant and splits parameters that meet
    them like biases. A model's fixed positional embeddings (a slice of a learned table, or sinusoids) are input
    information, not a bias: marked with `as_data`, they start entirely irrelevant, like the token embeddings
    (the official CD-T code does the same). Elsewhere `as_data` is the identity, at no cost once compiled.

    **Returns:** `x`, unchanged.
    """
    return data_p.bind(jnp.asarray(x))


@dataclasses.dataclass(frozen=True)
class Site:
    """An internal source: the values at sites matching `pattern`, selected by `mask`.

    At a matching site the selected part of the value becomes relevant: `rel <- rel + mask * irr`,
    `irr <- (1 - mask) * irr`. With `mean` given (mean ablation, `docs/cd.md#sources`) the selected irrelevant part
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

    def inject(self, value: Pair, name: str) -> Pair:
        """Make the selected part of `value` (the pair at site `name`) relevant. **Returns:** the new pair."""
        return _select(value, self.mask, self.mean, f"site {name!r}")


@dataclasses.dataclass(frozen=True)
class Input:
    """An input-feature source: the part of positional argument `argnum` selected by `mask` is relevant, the rest
    irrelevant. `mask` broadcasts against the argument (numpy rules); `None` makes the whole argument relevant."""

    argnum: int
    mask: Any = None

    def __post_init__(self):
        if not isinstance(self.argnum, int) or self.argnum < 0:
            raise TypeError(f"Input(argnum, mask): argnum is the index of a positional argument, got {self.argnum!r}")

    def inject(self, value: Pair, name: str) -> Pair:
        """Make the selected part of `value` (the argument, traced as site `name`) relevant. **Returns:** the new
        pair."""
        return _select(value, self.mask, None, f"argument {self.argnum}")


def _checked(array, value, what: str, field: str):
    array = jnp.asarray(array, value.irr.dtype)
    try:
        shape = jnp.broadcast_shapes(array.shape, value.irr.shape)
    except ValueError:
        shape = None
    if shape != value.irr.shape:
        raise ValueError(
            f"the {field} of shape {array.shape} does not broadcast to {what}, of shape {value.irr.shape} "
            "(numpy rules, aligned on the right: e.g. [seq, 1] selects positions of a [seq, d_model] site)"
        )
    return array


def _select(value: Pair, mask, mean, what: str) -> Pair:
    """`rel <- rel + mask * irr`, `irr <- (1 - mask) * irr`, or with a reference mean, `irr <- mean` and
    `rel <- total - mean` where selected."""
    mask = 1.0 if mask is None else _checked(mask, value, what, "source mask")
    if mean is None:
        # `where` rather than a product for 0/1 masks, so that an infinite value moves whole instead of as 0 * inf
        moved = jnp.where(mask == 0, 0.0, mask * value.irr)
        return Pair(value.rel + moved, jnp.where(mask == 1, 0.0, (1 - mask) * value.irr))
    mean = _checked(mean, value, what, "reference mean")
    summed = value.total
    return Pair(mask * (summed - mean) + (1 - mask) * value.rel, mask * mean + (1 - mask) * value.irr)


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
