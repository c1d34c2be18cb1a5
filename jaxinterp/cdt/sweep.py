"""`cd_sweep`: score many source sets in one call, at about the cost of one forward each.

Every rule keeps `rel + irr` equal to the ordinary value, and that value is the same for every source set. A sweep
therefore evaluates the forward once, keeps its values, and for each source set carries only the relevant part,
reading each total from the forward (the irrelevant part is `total - rel`). Everything upstream of a set's sources
is entirely irrelevant, so each set starts where its sources are: a head source at layer L costs the layers from
L on. Source sets are evaluated under `jax.vmap` in chunks sized from a memory budget (`docs/cd.md#sweeps`).
"""

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from .. import _compat
from ..sharding import check_mesh, map_items
from ..sites import tag_p
from . import rules as R
from .decomposition import Data, Program, _Decomposer, _plain, checked_options, forward_values
from .sources import Input, Pair, Site, head_mask, position_mask

DEFAULT_MEMORY_BUDGET = 2**30


@dataclasses.dataclass(frozen=True)
class SourceStack:
    """`n` source sets of one structure: source set `i` is `[Site(s.pattern, s.mask[i], s.mean) for s in sites]`.

    **Arguments:**

    - `sites`: `Site`s whose masks all have a leading axis of the same length `n` (the rest broadcasts to the
      site, as for `cd`); a reference `mean` (mean ablation) is shared by the `n` sets.
    - `labels`: one label per set (what it selects), or `None` for `0..n-1`.

    Make one with `SourceStack.at(pattern, masks)`, or with `every_head`, `every_position`, `every_span`.
    """

    sites: Site | Input | Sequence[Site | Input]
    labels: Sequence | None = None

    def __post_init__(self):
        sites = (self.sites,) if isinstance(self.sites, (Site, Input)) else tuple(self.sites)
        if any(isinstance(s, Input) for s in sites):
            raise TypeError(
                "a SourceStack takes jaxinterp.Site sources; for features of argument k, stack masks at its site: "
                "jaxinterp.SourceStack.at('args.k', masks)"
            )
        if not sites or not all(isinstance(s, Site) and s.mask is not None for s in sites):
            raise TypeError("a SourceStack needs one or more jaxinterp.Site with stacked masks (leading axis n)")
        sizes = {jnp.shape(s.mask)[0] if jnp.ndim(s.mask) else None for s in sites}
        if len(sizes) != 1 or None in sizes:
            raise ValueError(f"the masks of a SourceStack need one leading axis of the same length, got sizes {sizes}")
        (size,) = sizes
        labels = tuple(range(size)) if self.labels is None else tuple(self.labels)
        if len(labels) != size:
            raise ValueError(f"{len(labels)} labels for {size} source sets")
        object.__setattr__(self, "sites", sites)
        object.__setattr__(self, "labels", labels)

    @classmethod
    def at(cls, pattern: str, masks, mean=None, labels: Sequence | None = None) -> "SourceStack":
        """`len(masks)` source sets at the sites matching `pattern`: set `i` is `Site(pattern, masks[i], mean)`."""
        return cls((Site(pattern, jnp.asarray(masks), mean),), labels)

    @property
    def size(self) -> int:
        """The number of source sets."""
        return len(self.labels)


jax.tree_util.register_dataclass(SourceStack, data_fields=["sites"], meta_fields=["labels"])


def every_head(n_layers: int, n_heads: int, site: str = "blocks.{layer}.attn.z") -> list[SourceStack]:
    """Every attention head as its own source set: one stack per layer, label `(layer, head)`.

    **Arguments:** `n_layers`, `n_heads`, `site` (the per-head site, `{layer}` filled in; its value is
    `[seq, heads, d_head]`).
    """
    masks = jax.vmap(lambda h: head_mask(h, n_heads))(jnp.arange(n_heads))
    return [
        SourceStack.at(site.format(layer=layer), masks, labels=[(layer, h) for h in range(n_heads)])
        for layer in range(n_layers)
    ]


def every_position(seq_len: int, site: str = "embed", trailing_dims: int = 1) -> SourceStack:
    """Every token position as its own source set, label the position. `trailing_dims` as in `position_mask`."""
    masks = jax.vmap(lambda p: position_mask(p, seq_len, trailing_dims))(jnp.arange(seq_len))
    return SourceStack.at(site, masks, labels=range(seq_len))


def every_span(seq_len: int, max_width: int, site: str = "embed", trailing_dims: int = 1) -> SourceStack:
    """Every span of `1..max_width` consecutive positions as a source set, label `(start, stop)` (stop excluded),
    ordered by width, then start."""
    if max_width < 1:
        raise ValueError(f"max_width must be at least 1, got {max_width}")
    spans = [(a, a + w) for w in range(1, min(max_width, seq_len) + 1) for a in range(seq_len - w + 1)]
    cover = np.zeros((len(spans), seq_len), np.float32)
    for i, (a, b) in enumerate(spans):
        cover[i, a:b] = 1.0
    return SourceStack.at(site, jnp.asarray(cover).reshape((len(spans), seq_len) + (1,) * trailing_dims), labels=spans)


def _nbytes(aval) -> int:
    return math.prod(aval.shape) * np.dtype(aval.dtype).itemsize if hasattr(aval, "shape") else 0


def bytes_per_source_set(closed, n_parameters: int, n_outputs_bytes: int) -> int:
    """An estimate of the memory one more source set in a chunk takes: a few of the largest values computed from the
    data (the carried part, the temporaries of the rule that made it, and its consumer's) plus the stacked result.
    Values of the parameters alone (a transposed embedding matrix) are the same for every set and not counted."""
    from_data = set(closed.jaxpr.invars[n_parameters:])
    largest = 0

    def largest_inside(jaxpr) -> int:
        sizes = [_nbytes(v.aval) for eqn in jaxpr.eqns for v in eqn.outvars if R.is_inexact(v.aval)]
        inner = [largest_inside(sub) for eqn in jaxpr.eqns for sub in _compat.sub_jaxprs(eqn)]
        return max(sizes + inner + [0])

    for eqn in closed.jaxpr.eqns:
        if any(v in from_data for v in eqn.invars if not isinstance(v, _compat.Literal)):
            from_data.update(eqn.outvars)
            sizes = [_nbytes(v.aval) for v in eqn.outvars if R.is_inexact(v.aval)]
            largest = max([largest, *sizes, *(largest_inside(sub) for sub in _compat.sub_jaxprs(eqn))])
    return 6 * largest + 2 * n_outputs_bytes


class Swept(eqx.Module):
    """`f` transformed to return the stacked parts of many source sets; made by `cd_sweep`."""

    f: Any
    stacks: tuple[SourceStack, ...]
    targets: tuple[str, ...] | None = eqx.field(static=True)
    rules: R.Rules = eqx.field(static=True)
    fallback: str | None = eqx.field(static=True)
    memory_budget: int = eqx.field(static=True)
    one_stream: bool = eqx.field(static=True)
    mesh: Mesh | None = eqx.field(static=True, default=None)

    @property
    def labels(self) -> list:
        """The label of each source set, in the order of the results."""
        return [label for stack in self.stacks for label in stack.labels]

    def _program(self, args, kwargs) -> Program:
        templates = [Site(s.pattern) for stack in self.stacks for s in stack.sites]
        return Program.trace(self.f, templates, self.targets, args, kwargs, check_nan=False)

    def chunk_sizes(self, *args, **kwargs) -> list[int]:
        """How many source sets of each stack are evaluated together under the memory budget (traced, not run)."""
        per_set = self._bytes_per_set(self._program(args, kwargs))
        return [self._chunk(stack, per_set) for stack in self.stacks]

    def _bytes_per_set(self, program: Program) -> int:
        if self.targets is None:
            out_bytes = sum(_nbytes(v.aval) for v in program.closed.jaxpr.outvars)
        else:
            out_bytes = sum(_nbytes(aval) for name, aval in _tagged_values(program.closed) if name in program.targets)
        n_parameters = len(program.closed.jaxpr.invars) - sum(isinstance(x, Data) for x in program.inputs)
        return max(1, bytes_per_source_set(program.closed, n_parameters, out_bytes))

    def _chunk(self, stack: SourceStack, per_set: int) -> int:
        return int(max(1, min(stack.size, self.memory_budget // per_set)))

    def __call__(self, *args, **kwargs) -> Pair:
        program = self._program(args, kwargs)
        totals = forward_values(program.closed, program.inputs)
        forward = _forward_parts(program, totals) if self.one_stream else None
        per_set = self._bytes_per_set(program)
        results = []
        for stack in self.stacks:

            def one_set(masks, stack=stack):
                sites = [Site(s.pattern, m, s.mean) for s, m in zip(stack.sites, masks)]
                run = program.with_sources(sites)
                interp = _Decomposer(
                    run.sources, run.targets, self.rules, self.fallback, run.closed, totals, self.one_stream
                )
                parts = run.parts(interp.eval_jaxpr(run.closed, *run.inputs), interp.records)
                return parts if forward is None else parts.rel  # one stream: irr from the forward, below

            masks = tuple(jnp.asarray(s.mask) for s in stack.sites)
            results.append(map_items(one_set, masks, batch_size=self._chunk(stack, per_set), mesh=self.mesh))
        stacked = jax.tree_util.tree_map(lambda *parts: jnp.concatenate(parts), *results)
        if forward is None:
            return stacked
        return Pair(stacked, jax.tree_util.tree_map(lambda t, r: t - r, forward, stacked))


def _forward_parts(program: Program, totals: dict):
    """The forward's values of what the decomposition returns: `f`'s output, or the target sites' values (those
    tagged at the top level of the program; `None` where a target lies inside a loop or a called function)."""
    read = lambda v: v.val if isinstance(v, _compat.Literal) else totals[v]
    if program.targets is None:
        return program.rebuild([_plain(read(v)) for v in program.closed.jaxpr.outvars])
    tagged = {e.params["name"]: e.outvars[0] for e in program.closed.jaxpr.eqns if e.primitive is tag_p}
    if not set(program.targets) <= set(tagged):
        return None
    # integer sites are not decomposed (cd records none), so they are not among the results
    return {name: totals[tagged[name]] for name in program.targets if R.is_inexact(tagged[name].aval)}


def _tagged_values(closed) -> list:
    """`(site name, abstract value)` of every tag of `closed`, sub-programs included."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive is tag_p:
                found.append((eqn.params["name"], eqn.outvars[0].aval))
            for sub in _compat.sub_jaxprs(eqn):
                walk(sub)

    walk(closed.jaxpr)
    return found


@typing.no_type_check  # cd_sweep checks its own arguments
def cd_sweep(
    f,
    sources: SourceStack | Sequence[SourceStack],
    targets: str | Sequence[str] | None = None,
    rules: R.Rules = R.Rules(),
    fallback: str | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    streams: int | None = None,
    mesh: Mesh | None = None,
) -> Swept:
    """Contextual decomposition of `f` for many source sets at once (`docs/cd.md#sweeps`).

    **Arguments:**

    - `f`, `targets`, `rules`, `fallback`: as for `jaxinterp.cd`.
    - `sources`: one or more `SourceStack`s (`every_head`, `every_position`, `every_span`, `SourceStack.at`).
    - `memory_budget`: bytes the source sets evaluated together may take; the chunk size of each stack follows from
      the sizes of `f`'s values (`Swept.chunk_sizes` tells it). The stacked results are kept whole. Under a
      `jax.vmap` over inputs the budget is per example.
    - `streams`: `1` to carry only the relevant part per set (the irrelevant part is the forward's value minus it),
      `2` to carry both; `None` chooses 1 for exact rules and 2 for the published bias split, whose parts do not
      add up to the forward.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` (`jaxinterp.sharding.mesh()`) to split the source sets across
      its devices with the weights replicated (`docs/sharding.md`); the memory budget is then per device. `None`:
      one device.

    **Returns:** a function with `f`'s signature returning `Pair(rel, irr)` whose leaves have a leading axis over
    the source sets of all stacks, in order (`Swept.labels`): entry `i` equals `cd(f, source set i, ...)`. Composes
    with `jit` and `vmap` as `cd` does.
    """
    stacks = (sources,) if isinstance(sources, SourceStack) else sources
    stacks = tuple(stacks) if isinstance(stacks, (list, tuple)) else (stacks,)
    if not stacks or not all(isinstance(s, SourceStack) for s in stacks):
        raise TypeError(
            "cd_sweep's sources are jaxinterp.SourceStack objects (e.g. jaxinterp.every_head(n_layers, n_heads), "
            "jaxinterp.every_position(seq_len), jaxinterp.SourceStack.at('embed', masks)); for one source set use cd"
        )
    targets = checked_options(targets, rules, fallback)
    if streams not in (None, 1, 2):
        raise ValueError(f"streams must be 1, 2 or None, got {streams!r}")
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, (int, np.integer)) or memory_budget <= 0:
        raise ValueError(f"memory_budget is a positive number of bytes, got {memory_budget!r}")
    if streams == 1 and not rules.exact:
        raise ValueError(
            "streams=1 needs exact rules: the published bias split does not keep rel + irr equal to the forward, so "
            "one stream would not equal cd; use streams=2 (or None)"
        )
    one_stream = rules.exact if streams is None else streams == 1
    return Swept(f, stacks, targets, rules, fallback, memory_budget, one_stream, check_mesh(mesh))
