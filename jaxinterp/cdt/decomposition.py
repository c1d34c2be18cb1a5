"""`cd`: contextual decomposition as a function transformation, and `propagate`, its step on decomposed values."""

import typing
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import _compat
from ..composites import composite_p
from ..interpreter import Interpreter, contains, trace
from ..sites import UnknownSiteError, resolve_patterns, site_names_in, tag, tag_p
from . import rule_table
from . import rules as R
from .sources import Input, Pair, Site, data_p


class UnsupportedOperationError(TypeError):
    """A decomposed value reached an operation that has no contextual-decomposition rule."""


class Data(NamedTuple):
    """A value computed from the data arguments alone, before any source has acted on it.

    It is entirely irrelevant, so it is computed plainly (no rule runs on it, which also makes everything upstream
    of the first source cost one ordinary evaluation). The marker keeps track that it is data: where it meets a
    decomposed value it enters as an irrelevant part (`Pair(0, value)`), where it meets a parameter the result is
    data again (an embedding lookup by token ids), and a parameter added to it is data too, never split like a bias.
    Integer data (token ids, masks, indices) never becomes a pair.
    """

    value: Any


def _plain(x):
    """The ordinary value: the total of a pair, the value of a data marker."""
    return x.value if isinstance(x, Data) else R.total(x)


def _output_pair(x) -> Pair:
    """An output of the decomposed program as a pair (a data marker or a constant is entirely irrelevant)."""
    return R.as_pair(x.value if isinstance(x, Data) else x)


def _entering(x):
    """A value as a rule sees it: floating-point data as an irrelevant pair, integer data as a plain array."""
    if not isinstance(x, Data):
        return x
    return R.as_pair(x.value) if R.is_inexact(x.value) else x.value


def _attention_inputs(closed) -> set:
    """The variables whose values feed an attention composite, traced back through site tags."""
    found = set()

    def walk(jaxpr):
        tagged_from = {eqn.outvars[0]: eqn.invars[0] for eqn in jaxpr.eqns if eqn.primitive is tag_p}
        for eqn in jaxpr.eqns:
            if eqn.primitive is composite_p and eqn.params["kind"] == "attention":
                for var in eqn.invars[:3]:
                    while var in tagged_from:
                        var = tagged_from[var]
                    found.add(var)
            for sub in _compat.sub_jaxprs(eqn):
                walk(sub)

    walk(closed.jaxpr)
    return found


def _sites_inside_composites(closed) -> set[str]:
    names = set()

    def walk(jaxpr, inside):
        for eqn in jaxpr.eqns:
            if eqn.primitive is tag_p and inside:
                names.add(eqn.params["name"])
            inner = inside or (eqn.primitive is composite_p and rule_table.composite_rule(eqn.params["kind"]))
            for sub in _compat.sub_jaxprs(eqn):
                walk(sub, inner)

    walk(closed.jaxpr, False)
    return names


def _normalised_sites(rules: R.Rules, available: list[str]) -> frozenset[str]:
    """The names of the sites where `rules` normalises signs; an unmatched pattern is an error."""
    names = set()
    for pattern in sorted(rules.normalised_sites):
        try:
            names.update(*resolve_patterns([pattern], available).values())
        except UnknownSiteError as error:
            raise UnknownSiteError(
                f"Rules(normalise_signs=...) names {pattern!r}, which is neither a kind of operation "
                f"({', '.join(sorted(R.NORMALISATION_POINTS))}) nor a site pattern of the function: {error}"
            ) from None
    return frozenset(names)


class _KnownTotal(Pair):
    """A pair whose total is the forward's value, known in advance: `rel` is carried, `irr = total - rel`, and rules
    read the total rather than adding the parts (so it is computed once for many source sets, not per set)."""

    @property
    def total(self):
        known = self.__dict__.get("known_total")
        return self.rel + self.irr if known is None else known


def _with_total(rel, total) -> _KnownTotal:
    # where the relevant part is the whole value, the irrelevant part is exactly zero (also for infinities)
    pair = _KnownTotal(rel, jnp.where(rel == total, 0.0, total - rel))
    pair.known_total = total
    return pair


def forward_values(closed, inputs: list) -> dict:
    """Evaluate `closed` plainly. **Returns:** the value of every variable of its top level (inputs included)."""
    plain = Interpreter()
    env = dict(zip(closed.jaxpr.constvars, closed.consts))
    env.update(zip(closed.jaxpr.invars, map(_plain, inputs)))
    for eqn in closed.jaxpr.eqns:
        invals = [v.val if isinstance(v, _compat.Literal) else env[v] for v in eqn.invars]
        env.update(zip(eqn.outvars, plain.eval_eqn(eqn, invals)))
    return env


class _Decomposer(Interpreter):
    """The interpreter of `cd`: values are `Pair`s (decomposed), `Data` markers or plain arrays (parameters).

    With `totals` (the forward's values of the top-level variables, from `forward_values`), nothing is recomputed
    before the first source, and with `one_stream` each decomposed value carries only `rel`, its total being the
    forward's (`_KnownTotal`): exact where every rule keeps `rel + irr` equal to the total."""

    def __init__(self, sources, targets, rules: R.Rules, fallback, closed, totals=None, one_stream=False):
        super().__init__()
        self.sources, self.targets, self.rules, self.fallback = sources, frozenset(targets or ()), rules, fallback
        self.attention_inputs = _attention_inputs(closed)
        self.normalised_sites = _normalised_sites(rules, site_names_in(closed))
        self.totals, self.one_stream = totals or {}, one_stream
        self.last_site = None

    def _cached(self, eqn) -> list | None:
        """The forward's values of `eqn`'s outputs, when known and when nothing inside `eqn` (a site, a value marked
        as data) needs evaluating here."""
        if not eqn.outvars or not all(v in self.totals for v in eqn.outvars):
            return None
        if any(contains(sub, tag_p) or contains(sub, data_p) for sub in _compat.sub_jaxprs(eqn)):
            return None
        return [self.totals[v] for v in eqn.outvars]

    def _carry_totals(self, eqn, invals, outs) -> list:
        """One-stream outputs: each decomposed output with the forward's value as its total."""
        if not any(map(R.is_pair, outs)):
            return outs
        totals = self._cached(eqn) or _compat.bind_equation(eqn, [R.total(v) for v in invals])
        return [_with_total(o.rel, t) if R.is_pair(o) else o for o, t in zip(outs, totals)]

    # ---- interpreter hooks
    def on_tag(self, value, name):
        self.last_site = name
        if isinstance(value, Data):
            if not R.is_inexact(value.value):
                if name in self.sources:
                    raise TypeError(f"site {name!r} holds {value.value.dtype} values, which cannot be a source")
                return value
            if name not in self.sources:
                if name in self.targets:  # recorded, while what follows stays plain data
                    self.records[name] = R.as_pair(value.value)
                return value
            value = R.as_pair(value.value)
        forward = R.total(value) if self.one_stream else None
        if name in self.normalised_sites and R.is_pair(value):
            value = R.normalise_signs(value)
        for source in self.sources.get(name, ()):
            value = source.inject(R.as_pair(value), name)
        if forward is not None and R.is_pair(value):
            value = _with_total(value.rel, forward)
        if name in self.targets:
            self.records[name] = R.as_pair(value)
        return value

    def enters(self, eqn, invals):
        if eqn.primitive is composite_p and rule_table.composite_rule(eqn.params["kind"]) is not None:
            return False
        if not any(map(R.is_pair, invals)) and self._cached(eqn) is not None:
            return False
        inside_data = any(contains(sub, data_p) for sub in _compat.sub_jaxprs(eqn))
        return any(isinstance(v, (Pair, Data)) for v in invals) or inside_data or super().enters(eqn, invals)

    def loop_values(self, values):
        # plain pairs across loop and branch boundaries (a known total does not survive a carry)
        return [
            Pair(v.rel, v.irr) if R.is_pair(v) else R.as_pair(_plain(v)) if R.is_inexact(_plain(v)) else _plain(v)
            for v in values
        ]

    def concrete(self, value):
        return _plain(value)

    def apply(self, eqn, invals):
        if eqn.primitive is data_p:
            return [invals[0] if isinstance(invals[0], (Pair, Data)) else Data(invals[0])]
        if not any(map(R.is_pair, invals)):
            outs = self._cached(eqn) or super().apply(eqn, [_plain(v) for v in invals])
            return [Data(o) for o in outs] if any(isinstance(v, Data) for v in invals) else outs
        invals = [_entering(v) for v in invals]
        outs = self._rule(eqn)(rule_table.Equation(eqn, self.rules, self._decompose_body), *invals)
        if self._normalisation_point(eqn, invals) in self.rules.normalised_kinds:
            outs = [R.normalise_signs(o) if R.is_pair(o) else o for o in outs]
        if self.one_stream:
            outs = self._carry_totals(eqn, invals, outs)
        return [o if R.is_pair(o) else Data(jnp.asarray(o)) for o in outs]

    # ---- rules
    def _rule(self, eqn) -> Callable:
        if eqn.primitive is composite_p:
            return rule_table.composite_rule(eqn.params["kind"])
        rule = rule_table.primitive_rule(eqn.primitive.name)
        return self._unsupported if rule is None else rule

    def _decompose_body(self, eqn, operands) -> list:
        return self.eval_jaxpr(eqn.params["jaxpr"], *operands)

    def _normalisation_point(self, eqn, invals) -> str | None:
        if eqn.primitive is composite_p:
            kind = eqn.params["kind"]
            return "norm" if kind in ("layer_norm", "rms_norm") else kind
        if eqn.primitive.name in ("add", "add_any", "sub"):
            if all(map(R.is_pair, invals)):
                return "residual"
            return "attention_input" if eqn.outvars[0] in self.attention_inputs else "linear"
        return None

    def _unsupported(self, eqn: rule_table.Equation, *operands) -> list:
        where = f" (after site {self.last_site!r})" if self.last_site else ""
        if self.fallback != "irrelevant":
            raise UnsupportedOperationError(
                f"contextual decomposition has no rule for the primitive {eqn.name!r}{where} with "
                f"{sum(map(R.is_pair, operands))} decomposed operand(s). Register one with "
                "jaxinterp.register_cd_rule, mark the surrounding operation as a composite (jaxinterp.composite), or "
                "pass fallback='irrelevant' to credit its output to the irrelevant part."
            )
        warnings.warn(
            f"cd: no rule for {eqn.name!r}{where}; its output is credited to the irrelevant part", stacklevel=2
        )
        return eqn.bind(*map(R.total, operands))


class _TagArguments(eqx.Module):
    """`f` with each floating-point positional argument tagged `args.<i>`, so that input-feature sources are
    ordinary sites."""

    f: Callable
    n_args: int = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        tagged = [tag(a, f"args.{i}") if i < self.n_args and eqx.is_inexact_array(a) else a for i, a in enumerate(args)]
        return self.f(*tagged, **kwargs)


def _check_inputs(sources, args) -> None:
    for source in sources:
        if not isinstance(source, Input):
            continue
        if source.argnum >= len(args):
            raise ValueError(f"Input({source.argnum}) selects an argument, but f was called with {len(args)}")
        value = args[source.argnum]
        if not eqx.is_inexact_array(value):
            kind = getattr(value, "dtype", type(value).__name__)
            raise TypeError(
                f"Input({source.argnum}) selects argument {source.argnum}, which holds {kind} values: integer data "
                "such as token ids cannot be split into parts. Make what they select the source instead, e.g. "
                "jaxinterp.Site('embed', jaxinterp.position_mask(positions, seq_len)) for token positions."
            )


def _no_nan(x, index: int, at_run_time: bool):
    """`x`, checked for NaN: at once when its value is known, at run time (also under `jit`, at the price of a host
    callback in the compiled program) when `at_run_time` is set, else not at all."""
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        return x
    message = f"cd: input {index} of f (shape {x.shape}) contains NaN"
    if _compat.is_concrete(x):
        if np.isnan(np.asarray(x)).any():  # numpy, so that nothing is staged into an enclosing trace
            raise ValueError(message)
        return x
    return eqx.error_if(x, jnp.isnan(x).any(), message) if at_run_time else x


class Decomposed(eqx.Module):
    """`f` transformed to return `Pair(rel, irr)`; made by `cd`. An equinox Module, so `eqx.filter_jit` treats
    the arrays of `f` and of the source masks as arguments."""

    f: Callable
    sources: tuple[Site | Input, ...]
    targets: tuple[str, ...] | None = eqx.field(static=True)
    rules: R.Rules = eqx.field(static=True)
    fallback: str | None = eqx.field(static=True)
    check_nan: bool = eqx.field(static=True, default=False)

    def __call__(self, *args, **kwargs) -> Pair:
        program = Program.trace(self.f, self.sources, self.targets, args, kwargs, self.check_nan)
        # exact rules: one forward gives every total, and only the relevant part is carried (docs/cd.md#sweeps)
        totals = forward_values(program.closed, program.inputs) if self.rules.exact else None
        interp = _Decomposer(
            program.sources, program.targets, self.rules, self.fallback, program.closed, totals, self.rules.exact
        )
        return program.parts(interp.eval_jaxpr(program.closed, *program.inputs), interp.records)


def _match_sources(sources, available) -> dict[str, list]:
    """The sources acting at each site name (a pattern may match several sites)."""
    patterns = [s.pattern if isinstance(s, Site) else f"args.{s.argnum}" for s in sources]
    matched = resolve_patterns(patterns, available)
    by_name: dict[str, list[Site | Input]] = {}
    for source, pattern in zip(sources, patterns):
        for name in matched[pattern]:
            by_name.setdefault(name, []).append(source)
    return by_name


class Program(NamedTuple):
    """`f` traced for decomposition: its jaxpr, inputs (parameters, then data markers), and the sources and targets
    resolved to site names. Shared by `cd` and `cd_sweep`."""

    closed: Any
    inputs: list
    rebuild: Callable
    available: tuple[str, ...]
    sources: dict[str, list]
    targets: tuple[str, ...] | None

    @classmethod
    def trace(cls, f, sources, targets, args, kwargs, check_nan: bool) -> "Program":
        """Trace `f(*args, **kwargs)` and match `sources` (Sites/Inputs) and `targets` (patterns or `None`)."""
        _check_inputs(sources, args)
        closed, flat, rebuild = trace(_TagArguments(f, len(args)), args, kwargs)
        available = tuple(site_names_in(closed))
        by_name = _match_sources(sources, available)
        target_names = None
        if targets is not None:
            found = resolve_patterns(targets, available).values()
            target_names = tuple(dict.fromkeys(n for names in found for n in names))
        hidden = (set(by_name) | set(target_names or ())) & _sites_inside_composites(closed)
        if hidden:
            raise ValueError(
                f"sites {sorted(hidden)} lie inside composites that contextual decomposition treats whole "
                "(their whole-op rule does not decompose internal values); choose sites outside them"
            )
        # the arrays of f are parameters (split like biases where they meet decomposed values); everything computed
        # from the data arguments starts entirely irrelevant (docs/cd.md#sources)
        n_parameters = len(jax.tree_util.tree_leaves(eqx.filter(f, eqx.is_array)))
        data = [Data(_no_nan(jnp.asarray(x), i, check_nan)) for i, x in enumerate(flat[n_parameters:])]
        return cls(closed, [*flat[:n_parameters], *data], rebuild, available, by_name, target_names)

    def with_sources(self, sources) -> "Program":
        """The same program with other sources (Sites/Inputs), matched against its sites."""
        return self._replace(sources=_match_sources(sources, self.available))

    def parts(self, outs: list, records: dict) -> Pair:
        """The decomposition the caller asked for, from the interpreter's outputs and records: `f`'s output
        structure, or a dict over the target sites."""
        if self.targets is None:
            pairs = [_output_pair(o) for o in outs]
            return Pair(self.rebuild([p.rel for p in pairs]), self.rebuild([p.irr for p in pairs]))
        found = {n: records[n] for n in self.targets if n in records}
        return Pair({n: p.rel for n, p in found.items()}, {n: p.irr for n, p in found.items()})


def propagate(f: Callable, *args, rules: R.Rules = R.Rules(), fallback: str | None = None):
    """Evaluate `f` on arguments that are already decomposed.

    Where `cd` splits ordinary inputs into parts, `propagate` carries given parts through `f`: it is the step to
    chain decompositions, for example through the stages of an ODE solver.

    **Arguments:** `f`; `*args`, pytrees whose leaves are arrays or `Pair(rel, irr)`; `rules`; `fallback`.

    **Returns:** `f`'s output with every array leaf a `Pair` (a constant output is entirely irrelevant).
    """
    totals = jax.tree_util.tree_map(_plain, args, is_leaf=R.is_pair)
    closed, flat, rebuild = trace(f, totals, {})
    keep = lambda x: R.is_pair(x) or eqx.is_array(x)
    leaves = jax.tree_util.tree_leaves(eqx.filter((f, args, {}), keep, is_leaf=R.is_pair), is_leaf=R.is_pair)
    if len(leaves) != len(flat):
        raise ValueError("propagate: the decomposed arguments do not line up with the traced inputs")
    interp = _Decomposer({}, frozenset(), rules, fallback, closed)
    return rebuild([_output_pair(o) for o in interp.eval_jaxpr(closed, *leaves)])


def _as_sources(sources) -> tuple[Site | Input, ...]:
    if isinstance(sources, (Site, Input)):
        return (sources,)
    if isinstance(sources, (list, tuple)) and all(isinstance(s, (Site, Input)) for s in sources):
        if not sources:
            raise ValueError("cd needs at least one source")
        return tuple(sources)
    shown = type(sources).__name__ + (f" of shape {sources.shape}" if hasattr(sources, "shape") else "")
    raise TypeError(
        f"cd's sources must be jaxinterp.Site or jaxinterp.Input objects (or a list of them), got a {shown}. "
        "To make features of an argument relevant, write jaxinterp.Input(argnum, mask); for part of a named site, "
        "jaxinterp.Site('blocks.0.attn.z', mask) (see jaxinterp.site_names(f, *args) for the names)."
    )


@typing.no_type_check  # cd checks its own arguments, with errors that say what to write instead
def cd(
    f: Callable,
    sources: Site | Input | Sequence[Site | Input],
    targets: str | Sequence[str] | None = None,
    rules: R.Rules = R.Rules(),
    fallback: str | None = None,
    check_nan: bool = False,
) -> Decomposed:
    """Contextual decomposition (CD-T, paper P1; `docs/cd.md`) of `f` into the contribution of `sources`.

    **Arguments:**

    - `f`: any function of arrays: an equinox Module, a plain `jax.numpy` function (with `lax.scan`/`while_loop`
      inside), a Flax `apply`. Every primitive that standard model code emits has a rule; composites marked with
      `jaxinterp.composite` (layer norm, RMS norm, attention, activations in `models`) get whole-op rules.
    - `sources`: one or more of `Site(pattern, mask, mean)` (an internal component, e.g. a head of
      `blocks.3.attn.z`, or token positions of `embed`) and `Input(argnum, mask)` (features of a floating-point
      argument).
    - `targets`: site patterns to decompose, or `None` for `f`'s output.
    - `rules`: the rule variants (`Rules(activation=..., attention=..., normalise_signs=...)`).
    - `fallback`: `None` to raise `UnsupportedOperationError` on an operation without a rule, or `"irrelevant"` to
      credit its output to the irrelevant part (totals stay exact) with a warning.
    - `check_nan`: also check traced inputs (under `jit`, `vmap`) for NaN at run time. Inputs with known values are
      always checked; the run-time check adds a host callback, which keeps the compiled program out of JAX's
      persistent compilation cache.

    **Returns:** a function with `f`'s signature returning `Pair(rel, irr)` (a named tuple: `rel, irr = ...`
    unpacks it, `.total` adds the parts). Without `targets`, `rel` and `irr` have the structure of `f`'s output;
    with `targets`, each is a dict `{site_name: array}` over the matched sites. `rel + irr` equals the ordinary
    value. It composes with `jax.jit` (or `eqx.filter_jit`), `jax.vmap` (over source masks, inputs) and
    `jax.grad`. A NaN in a floating-point input raises `ValueError` when the input's value is known (outside
    `jit`), and under `jit` with `check_nan=True`; otherwise it propagates into both parts. Infinities propagate as
    IEEE arithmetic does.
    """
    targets = checked_options(targets, rules, fallback)
    return Decomposed(f, _as_sources(sources), targets, rules, fallback, bool(check_nan))


def checked_options(targets, rules, fallback) -> tuple[str, ...] | None:
    """The options `cd` and `cd_sweep` share, checked. **Returns:** the target patterns as a tuple (or `None`)."""
    if fallback not in (None, "irrelevant"):
        raise ValueError(f"fallback must be None or 'irrelevant', got {fallback!r}")
    if not isinstance(rules, R.Rules):
        raise TypeError(f"rules must be a jaxinterp.Rules, got {type(rules).__name__}")
    return (targets,) if isinstance(targets, str) else None if targets is None else tuple(targets)
