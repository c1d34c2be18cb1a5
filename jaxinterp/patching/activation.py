"""Activation patching sweeps: one site's value replaced by its value from another run, for every layer and every
index of the swept axes, in one compiled call (`docs/patching.md#activation-patching`)."""

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from ..capture import capture
from ..intervene import intervene
from ..sharding import check_mesh, map_items
from ..sites import resolve_patterns, site_names


class SiteKind(NamedTuple):
    """A kind of site of the transformer family: its glob pattern (one site per layer) and the names of its axes."""

    pattern: str
    axes: tuple[str, ...]


# the axes of one example's value at each site kind (docs/sites.md#site-names); "model" axes are never swept
SITE_KINDS = {
    "resid_pre": SiteKind("blocks.*.resid_pre", ("pos", "model")),
    "resid_mid": SiteKind("blocks.*.resid_mid", ("pos", "model")),
    "resid_post": SiteKind("blocks.*.resid_post", ("pos", "model")),
    "attn_out": SiteKind("blocks.*.attn.out", ("pos", "model")),
    "mlp_out": SiteKind("blocks.*.mlp.out", ("pos", "model")),
    "head_out": SiteKind("blocks.*.attn.z", ("pos", "head", "model")),
    "head_q": SiteKind("blocks.*.attn.q", ("pos", "head", "model")),
    "head_k": SiteKind("blocks.*.attn.k", ("pos", "head", "model")),
    "head_v": SiteKind("blocks.*.attn.v", ("pos", "head", "model")),
    "head_pattern": SiteKind("blocks.*.attn.pattern", ("head", "dest", "src")),
}

# which axes each `by` sweeps, in the order of the result's axes after the layer axis (TransformerLens's order)
SWEEPS = {
    "all_pos": ("head",),
    "pos": ("pos", "head"),
    "dest_src": ("head", "dest", "src"),
}


def _layer_of(name: str) -> int:
    return int(re.match(r"blocks\.(\d+)\.", name).group(1))


def _swept_axes(kind: str, by: str) -> tuple[str, ...]:
    if kind not in SITE_KINDS:
        raise ValueError(f"unknown site kind {kind!r}; choose one of {sorted(SITE_KINDS)}")
    if by not in SWEEPS:
        raise ValueError(f"unknown sweep {by!r}; choose one of {sorted(SWEEPS)}")
    axes = SITE_KINDS[kind].axes
    if by == "dest_src" and kind != "head_pattern":
        raise ValueError(f"by='dest_src' sweeps attention patterns only (kind='head_pattern'), not {kind!r}")
    if by == "pos" and "pos" not in axes:
        raise ValueError(f"{kind!r} has no position axis to sweep; use by='all_pos' or by='dest_src'")
    return tuple(axis for axis in SWEEPS[by] if axis in axes)


def _patch_mask(axes: tuple[str, ...], shape: tuple[int, ...], swept: tuple[str, ...], index: jax.Array):
    """Boolean mask over one example's site value, True at the entries patch `index` (one id per swept axis)
    replaces."""
    mask = jnp.ones(shape, bool)
    for i, axis in enumerate(swept):
        position = axes.index(axis)
        hit = jnp.arange(shape[position]) == index[i]
        mask = mask & hit.reshape([-1 if a == position else 1 for a in range(len(shape))])
    return mask


def activation_sweep(
    f: Callable,
    inputs: Sequence[jax.Array],
    patch_inputs: Sequence[jax.Array],
    metric: Callable[[jax.Array], jax.Array],
    kind: str,
    *,
    by: str = "all_pos",
    batch_size: int | None = 64,
    mesh: Mesh | None = None,
) -> jax.Array:
    """Activation patching at every layer's site of one kind, swept over heads, positions or pattern entries.

    For each layer and each index of the swept axes, `f` runs on `inputs` with that part of the site's value
    replaced by its value in the run on `patch_inputs`, and `metric` scores the outputs. A layer's patches are one
    `vmap`, in chunks of `batch_size`; what is computed before the patched site does not depend on the patch, so
    `vmap` computes it once per chunk rather than once per patch.

    **Arguments:**

    - `f`: a model of ONE example (a function of arrays that tags the transformer family's sites).
    - `inputs`, `patch_inputs`: tuples of `f`'s positional arguments, each with a leading batch axis (the same
      batch size in both). TransformerLens's "denoising" sweeps are `inputs=corrupted`, `patch_inputs=clean`.
    - `metric`: `metric(outputs) -> scalar`, `outputs` batched like `vmap(f)(*inputs)`.
    - `kind`: one of `SITE_KINDS` (`"resid_pre"`, `"resid_mid"`, `"resid_post"`, `"attn_out"`, `"mlp_out"`,
      `"head_out"` (the head outputs `z`), `"head_q"`, `"head_k"`, `"head_v"`, `"head_pattern"`).
    - `by`: `"all_pos"` (a head at every position at once, or the whole site for the residual kinds), `"pos"`
      (one position, and one head for head kinds) or `"dest_src"` (one entry of one head's attention pattern).
    - `batch_size`: patches evaluated together (memory grows with it); `None` for all of a layer's at once.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` (`jaxinterp.sharding.mesh()`) to split each layer's patches
      across its devices, the weights replicated (`batch_size` is then per device); `None`: one device.

    **Returns:** the metric of every patched run, `[layers, *swept]`: `[layers]` for a residual kind over all
    positions, `[layers, pos]` by position, `[layers, heads]` for heads over all positions, `[layers, pos, heads]`
    by position, `[layers, heads, dest, src]` for pattern entries (TransformerLens's layouts).
    """
    inputs, patch_inputs = tuple(inputs), tuple(patch_inputs)
    swept = _swept_axes(kind, by)
    kind_axes = SITE_KINDS[kind].axes
    example = tuple(a[0] for a in inputs)
    names = resolve_patterns([SITE_KINDS[kind].pattern], site_names(f, *example))[SITE_KINDS[kind].pattern]
    names = sorted(names, key=_layer_of)

    return _sweep(f, metric, tuple(names), kind_axes, swept, batch_size, check_mesh(mesh), inputs, patch_inputs)


@eqx.filter_jit
def _sweep(f, metric, names, kind_axes, swept, batch_size, mesh, inputs, patch_inputs):
    """The compiled sweep (one compilation per model structure, metric, kind and sizes)."""
    _, patched_values = jax.vmap(capture(f, *names))(*patch_inputs)
    per_layer = []
    for name in names:
        value = patched_values[name]
        shape = value.shape[1:]
        sizes = [shape[kind_axes.index(axis)] for axis in swept]
        if sizes:
            grid = jnp.stack([g.ravel() for g in jnp.meshgrid(*map(jnp.arange, sizes), indexing="ij")], -1)
        else:
            grid = jnp.zeros((1, 0), int)

        def patched_metric(index, name=name, value=value, shape=shape):
            mask = _patch_mask(kind_axes, shape, swept, index)

            def one(args, replacement):
                return intervene(f, {name: lambda x: jnp.where(mask, replacement, x)})(*args)

            return metric(jax.vmap(one)(inputs, value))

        per_layer.append(map_items(patched_metric, grid, batch_size=batch_size, mesh=mesh).reshape(sizes))
    return jnp.stack(per_layer)
