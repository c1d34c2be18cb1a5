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
from ..interpreter import Interpreter, trace
from ..sites import resolve_patterns, site_names_in, tag, tag_p
from . import rule_table
from . import rules as R
from .sources import Input, Pair, Site


class UnsupportedOperationError(TypeError):
    """A decomposed value reached an operation that has no contextual-decomposition rule."""


class Data(NamedTuple):
    """A non-floating-point value computed from the data arguments (token ids, masks, indices).

    Floating-point values computed from data are `Pair`s (entirely irrelevant until a source), but integers cannot
    be split; this marker keeps track that they are data, so that what they select from parameters (an embedding
    lookup) is data too, and irrelevant, rather than a parameter to be split like a bias.
    """

    value: Any


def _plain(x):
    """The ordinary value: the total of a pair, the value of a data marker."""
    return x.value if isinstance(x, Data) else R.total(x)


def _output_pair(x) -> Pair:
    """An output of the decomposed program as a pair (a data marker or a constant is entirely irrelevant)."""
    return R.as_pair(x.value if isinstance(x, Data) else x)


def _from_data(x):
    """A value computed from data alone: floating point values become irrelevant pairs, the rest data markers."""
    return Pair(jnp.zeros_like(x), x) if jnp.issubdtype(x.dtype, jnp.inexact) else Data(x)


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


class _Decomposer(Interpreter):
    """The interpreter of `cd`: values are `Pair`s (decomposed), `Data` markers or plain arrays (parameters)."""

    def __init__(self, sources, targets: frozenset[str], rules: R.Rules, fallback, attention_inputs: set):
        super().__init__()
        self.sources, self.targets, self.rules, self.fallback = sources, targets, rules, fallback
        self.attention_inputs = attention_inputs
        self.last_site = None

    # ---- interpreter hooks
    def on_tag(self, value, name):
        self.last_site = name
        if isinstance(value, Data):
            if name in self.sources:
                raise TypeError(f"site {name!r} holds {value.value.dtype} values, which cannot be a source")
            return value
        for source in self.sources.get(name, ()):
            value = source.inject(R.as_pair(value), name)
        if name in self.targets:
            self.records[name] = R.as_pair(value)
        return value

    def enters(self, eqn, invals):
        if eqn.primitive is composite_p and rule_table.composite_rule(eqn.params["kind"]) is not None:
            return False
        return any(isinstance(v, (Pair, Data)) for v in invals) or super().enters(eqn, invals)

    def loop_values(self, values):
        return [R.as_pair(v) if jnp.issubdtype(jnp.result_type(_plain(v)), jnp.inexact) else _plain(v) for v in values]

    def concrete(self, value):
        return _plain(value)

    def apply(self, eqn, invals):
        from_data = any(isinstance(v, Data) for v in invals)
        invals = [v.value if isinstance(v, Data) else v for v in invals]
        if not any(map(R.is_pair, invals)):
            outs = super().apply(eqn, invals)
            return [_from_data(o) for o in outs] if from_data else outs
        outs = self._rule(eqn)(rule_table.Equation(eqn, self.rules, self._decompose_body), *invals)
        if self._normalisation_point(eqn, invals) in self.rules.normalise_signs:
            outs = [R.normalise_signs(o) if R.is_pair(o) else o for o in outs]
        return [o if R.is_pair(o) else _from_data(jnp.asarray(o)) for o in outs]

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
        _check_inputs(self.sources, args)
        closed, flat, rebuild = trace(_TagArguments(self.f, len(args)), args, kwargs)
        available = site_names_in(closed)
        patterns = [s.pattern if isinstance(s, Site) else f"args.{s.argnum}" for s in self.sources]
        matched = resolve_patterns(patterns, available)
        by_name: dict[str, list[Site | Input]] = {}
        for source, pattern in zip(self.sources, patterns):
            for name in matched[pattern]:
                by_name.setdefault(name, []).append(source)
        targets = resolve_patterns(self.targets, available) if self.targets is not None else {}
        target_names = [n for found in targets.values() for n in found]
        hidden = (set(by_name) | set(target_names)) & _sites_inside_composites(closed)
        if hidden:
            raise ValueError(
                f"sites {sorted(hidden)} lie inside composites that contextual decomposition treats whole "
                "(their whole-op rule does not decompose internal values); choose sites outside them"
            )
        interp = _Decomposer(by_name, frozenset(target_names), self.rules, self.fallback, _attention_inputs(closed))
        # the arrays of f are parameters (split like biases where they meet decomposed values); everything computed
        # from the data arguments starts entirely irrelevant (docs/cd.md#sources)
        n_parameters = len(jax.tree_util.tree_leaves(eqx.filter(self.f, eqx.is_array)))
        data = [_from_data(_no_nan(jnp.asarray(x), i, self.check_nan)) for i, x in enumerate(flat[n_parameters:])]
        outs = interp.eval_jaxpr(closed, *flat[:n_parameters], *data)
        if self.targets is None:
            pairs = [_output_pair(o) for o in outs]
            return Pair(rebuild([p.rel for p in pairs]), rebuild([p.irr for p in pairs]))
        records = {n: interp.records[n] for n in target_names if n in interp.records}
        return Pair({n: p.rel for n, p in records.items()}, {n: p.irr for n, p in records.items()})


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
    interp = _Decomposer({}, frozenset(), rules, fallback, _attention_inputs(closed))
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
    sources = _as_sources(sources)
    if isinstance(targets, str):
        targets = (targets,)
    if fallback not in (None, "irrelevant"):
        raise ValueError(f"fallback must be None or 'irrelevant', got {fallback!r}")
    if not isinstance(rules, R.Rules):
        raise TypeError(f"rules must be a jaxinterp.Rules, got {type(rules).__name__}")
    return Decomposed(f, sources, None if targets is None else tuple(targets), rules, fallback, bool(check_nan))
