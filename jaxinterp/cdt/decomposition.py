"""`cd`: contextual decomposition as a function transformation."""

import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from .. import _compat
from ..composites import ACTIVATIONS, composite_p, options_of
from ..interpreter import Interpreter, trace
from ..sites import resolve_patterns, site_names_in, tag, tag_p
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


def _is_pair(x) -> bool:
    return isinstance(x, Pair)


def _plain(x):
    """The ordinary value: the total of a pair, the value of a data marker."""
    if isinstance(x, Data):
        return x.value
    return x.rel + x.irr if _is_pair(x) else x


def _as_pair(x) -> Pair:
    """A value as a pair; a constant (not derived from any source) is entirely irrelevant."""
    return x if _is_pair(x) else Pair(jnp.zeros_like(_plain(x)), _plain(x))


def _from_data(x):
    """An output computed from data: floating point values become irrelevant pairs, the rest data markers."""
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
            for sub in _compat.sub_jaxprs(eqn):
                walk(sub, inside or eqn.primitive is composite_p)

    walk(closed.jaxpr, False)
    return names


COMPOSITES_WITH_RULES = frozenset({"activation", "layer_norm", "rms_norm", "attention"})


class _Decomposer(Interpreter):
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
            value = source.inject(_as_pair(value))
        if name in self.targets:
            self.records[name] = _as_pair(value)
        return value

    def enters(self, eqn, invals):
        if eqn.primitive is composite_p and eqn.params["kind"] in COMPOSITES_WITH_RULES:
            return False
        return any(isinstance(v, (Pair, Data)) for v in invals) or super().enters(eqn, invals)

    def loop_values(self, values):
        return [_as_pair(v) if jnp.issubdtype(jnp.result_type(_plain(v)), jnp.inexact) else _plain(v) for v in values]

    def concrete(self, value):
        return _plain(value)

    def apply(self, eqn, invals):
        from_data = any(isinstance(v, Data) for v in invals)
        invals = [v.value if isinstance(v, Data) else v for v in invals]
        if not any(map(_is_pair, invals)):
            outs = super().apply(eqn, invals)
            return [_from_data(o) for o in outs] if from_data else outs
        outs = self._rule(eqn, invals)
        if self._normalisation_point(eqn, invals) in self.rules.normalize_signs:
            outs = [R.normalize_signs(o) if _is_pair(o) else o for o in outs]
        return [o if _is_pair(o) else _from_data(o) for o in outs]

    # ---- rules
    def _normalisation_point(self, eqn, invals) -> str | None:
        if eqn.primitive is composite_p:
            kind = eqn.params["kind"]
            return "norm" if kind in ("layer_norm", "rms_norm") else kind
        if eqn.primitive.name in ("add", "add_any", "sub"):
            if all(map(_is_pair, invals)):
                return "residual"
            return "attention_input" if eqn.outvars[0] in self.attention_inputs else "linear"
        return None

    def _bind(self, eqn, *args):
        return _compat.bind_equation(eqn, args)

    def _rule(self, eqn, invals) -> list:
        name = eqn.primitive.name
        if eqn.primitive is composite_p:
            return self._composite(eqn, invals)
        if name in R.LINEAR_IN_FIRST and not any(map(_is_pair, invals[1:])):
            x, rest = invals[0], invals[1:]
            return [Pair(r, i) for r, i in zip(self._bind(eqn, x.rel, *rest), self._bind(eqn, x.irr, *rest))]
        if name in R.FROM_TOTALS:
            return self._bind(eqn, *map(_plain, invals))
        if name in R.NONLINEAR_UNARY and len(invals) == 1:
            return [R.activation_rule(lambda v: self._bind(eqn, v)[0], invals[0], self.rules.activation)]
        if name in ("add", "add_any", "sub"):
            return [self._add(name, *invals)]
        if name in ("mul", "dot_general", "conv_general_dilated"):
            return [self._product(eqn, *invals)]
        if name == "div" and not _is_pair(invals[1]):
            x = invals[0]
            return [Pair(*(self._bind(eqn, p, invals[1])[0] for p in x))]
        if name in R.NONLINEAR_WITH_CONSTANT and sum(map(_is_pair, invals)) == 1:
            k = next(j for j, v in enumerate(invals) if _is_pair(v))

            def f(v):
                args = list(invals)
                args[k] = v
                return self._bind(eqn, *args)[0]

            return [R.activation_rule(f, invals[k], self.rules.activation)]
        if name in ("concatenate", "select_n", "pad", "dynamic_update_slice", "clamp"):
            return self._structural(eqn, invals)
        return self._unsupported(eqn, invals)

    def _add(self, name, a, b) -> Pair:
        sign = -1.0 if name == "sub" else 1.0
        if _is_pair(a) and _is_pair(b):
            return Pair(a.rel + sign * b.rel, a.irr + sign * b.irr)
        if _is_pair(a):
            return R.split_bias(a, sign * b, self.rules)
        split = R.split_bias(b, a * sign, self.rules)
        return Pair(sign * split.rel, sign * split.irr)

    def _product(self, eqn, a, b) -> Pair:
        def op(x, y):
            return self._bind(eqn, x, y)[0]

        if _is_pair(a) and _is_pair(b):
            return R.product_rule(op, a, b)
        if _is_pair(a):
            return Pair(op(a.rel, b), op(a.irr, b))
        return Pair(op(a, b.rel), op(a, b.irr))

    def _structural(self, eqn, invals) -> list:
        """Operations that route values without arithmetic: decompose each operand (constants are irrelevant)
        and route both parts; `select_n`'s predicate and `pad`'s padding value follow their totals."""
        name = eqn.primitive.name
        if name == "select_n":
            pred, cases = _plain(invals[0]), [_as_pair(c) for c in invals[1:]]
            return [Pair(*(self._bind(eqn, pred, *(c[j] for c in cases))[0] for j in (0, 1)))]
        if name == "pad":
            x, value = _as_pair(invals[0]), _plain(invals[1])
            return [Pair(self._bind(eqn, x.rel, jnp.zeros_like(value))[0], self._bind(eqn, x.irr, value)[0])]
        if name == "dynamic_update_slice":
            operand, update, *idx = invals
            operand, update, idx = _as_pair(operand), _as_pair(update), [_plain(i) for i in idx]
            return [Pair(*(self._bind(eqn, operand[j], update[j], *idx)[0] for j in (0, 1)))]
        if name == "clamp" and not _is_pair(invals[0]) and not _is_pair(invals[2]):
            lo, x, hi = invals
            return [R.activation_rule(lambda v: self._bind(eqn, lo, v, hi)[0], x, self.rules.activation)]
        if name == "concatenate":
            parts = [_as_pair(v) for v in invals]
            return [Pair(*(self._bind(eqn, *(p[j] for p in parts))[0] for j in (0, 1)))]
        return self._unsupported(eqn, invals)

    def _composite(self, eqn, invals) -> list:
        kind, options = eqn.params["kind"], options_of(eqn)
        x = invals[0]
        if kind == "activation" and _is_pair(x):
            fn = ACTIVATIONS[options["function"]]
            return [R.activation_rule(fn, x, self.rules.activation)]
        if kind in ("layer_norm", "rms_norm") and _is_pair(x) and not any(map(_is_pair, invals[1:])):
            if kind == "layer_norm":
                return [R.layer_norm_rule(x, invals[1], invals[2], options["eps"], self.rules)]
            return [R.rms_norm_rule(x, invals[1], options["eps"])]
        if kind == "attention" and not _is_pair(invals[3]):
            q, k, v = (_as_pair(t) for t in invals[:3])
            return [R.attention_rule(q, k, v, invals[3], options["scale"], self.rules.attention)]
        return self.eval_jaxpr(eqn.params["jaxpr"], *invals)

    def _unsupported(self, eqn, invals) -> list:
        where = f" (after site {self.last_site!r})" if self.last_site else ""
        if self.fallback != "irrelevant":
            raise UnsupportedOperationError(
                f"contextual decomposition has no rule for the primitive {eqn.primitive.name!r}{where} with "
                f"{sum(map(_is_pair, invals))} decomposed operand(s). Mark the surrounding operation as a composite "
                "(jaxinterp.composites), or pass fallback='irrelevant' to credit its output to the irrelevant part."
            )
        warnings.warn(
            f"cd: no rule for {eqn.primitive.name!r}{where}; its output is credited to the irrelevant part",
            stacklevel=2,
        )
        return [_as_pair(o) for o in self._bind(eqn, *map(_plain, invals))]


class _TagArguments(eqx.Module):
    """`f` with each positional argument tagged `args.<i>`, so input-feature sources are ordinary sites."""

    f: Callable
    n_args: int = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        tagged = [
            tag(a, f"args.{i}") if i < self.n_args and eqx.is_inexact_array(a) else a for i, a in enumerate(args)
        ]
        return self.f(*tagged, **kwargs)


class Decomposed(eqx.Module):
    """`f` transformed to return `(rel, irr)`; made by :func:`cd`. An equinox Module, so `eqx.filter_jit` treats
    the arrays of `f` and of the source masks as arguments."""

    f: Callable
    sources: tuple[Site, ...]
    targets: tuple[str, ...] | None = eqx.field(static=True)
    rules: R.Rules = eqx.field(static=True)
    fallback: str | None = eqx.field(static=True)

    def __call__(self, *args, **kwargs):
        closed, flat, rebuild = trace(_TagArguments(self.f, len(args)), args, kwargs)
        available = site_names_in(closed)
        by_name: dict[str, list[Site]] = {}
        matched = resolve_patterns([s.pattern for s in self.sources], available)
        for source in self.sources:
            for name in matched[source.pattern]:
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
        # from the data arguments starts entirely irrelevant, as in REFERENCE.md P1 §7
        n_parameters = len(jax.tree_util.tree_leaves(eqx.filter(self.f, eqx.is_array)))
        inputs = flat[:n_parameters] + [_from_data(jnp.asarray(x)) for x in flat[n_parameters:]]
        outs = interp.eval_jaxpr(closed, *inputs)
        if self.targets is None:
            pairs = [_as_pair(o) for o in outs]
            return rebuild([p.rel for p in pairs]), rebuild([p.irr for p in pairs])
        records = {n: interp.records[n] for n in target_names if n in interp.records}
        return {n: p.rel for n, p in records.items()}, {n: p.irr for n, p in records.items()}


def propagate(f: Callable, *args, rules: R.Rules = R.Rules(), fallback: str | None = None):
    """Evaluate `f` on arguments that are already decomposed.

    Where `cd` splits ordinary inputs into parts, `propagate` carries given parts through `f`: it is the step to
    chain decompositions, for example through the stages of an ODE solver.

    **Arguments:** `f`; `*args`, pytrees whose leaves are arrays or `Pair(rel, irr)`; `rules`; `fallback`.

    **Returns:** `f`'s output with every array leaf a `Pair` (a constant output is entirely irrelevant).
    """
    is_pair = lambda x: isinstance(x, Pair)
    totals = jax.tree_util.tree_map(_plain, args, is_leaf=is_pair)
    closed, flat, rebuild = trace(f, totals, {})
    keep = lambda x: is_pair(x) or eqx.is_array(x)
    leaves = jax.tree_util.tree_leaves(eqx.filter((f, args, {}), keep, is_leaf=is_pair), is_leaf=is_pair)
    if len(leaves) != len(flat):
        raise ValueError("propagate: the decomposed arguments do not line up with the traced inputs")
    interp = _Decomposer({}, frozenset(), rules, fallback, _attention_inputs(closed))
    return rebuild([_as_pair(o) for o in interp.eval_jaxpr(closed, *leaves)])


def cd(
    f: Callable,
    sources: Site | Input | Sequence[Site | Input],
    targets: str | Sequence[str] | None = None,
    rules: R.Rules = R.Rules(),
    fallback: str | None = None,
) -> Decomposed:
    """Contextual decomposition (CD-T, REFERENCE.md P1) of `f` into the contribution of `sources`.

    **Arguments:**

    - `f`: a function of arrays: an equinox Module, a plain function (with `lax.scan`/`while_loop` inside), a
      Flax `apply`. Composites marked with `jaxinterp.composites` get whole-op rules; the rest is decomposed
      primitive by primitive.
    - `sources`: one or more of `Site(pattern, mask, mean)` (an internal component, e.g. a head of
      `blocks.3.attn.z`, or token positions of `embed`) and `Input(argnum, mask)` (features of an argument).
    - `targets`: site patterns to decompose, or `None` for `f`'s output.
    - `rules`: the rule variants (`Rules(activation=..., attention=..., normalize_signs=...)`).
    - `fallback`: `None` to raise on an operation without a rule, or `"irrelevant"` to credit its output to the
      irrelevant part (totals stay exact) with a warning.

    **Returns:** a function with `f`'s signature returning `(rel, irr)`, each shaped like `f`'s output, or dicts
    `{site_name: array}` when `targets` is given; `rel + irr` equals the ordinary value. It composes with
    `jax.jit` (or `eqx.filter_jit`), `jax.vmap` (over source masks, inputs) and `jax.grad`.
    """
    if isinstance(sources, (Site, Input)):
        sources = [sources]
    sites = tuple(Site(f"args.{s.argnum}", s.mask) if isinstance(s, Input) else s for s in sources)
    if not sites:
        raise ValueError("cd needs at least one source")
    if isinstance(targets, str):
        targets = (targets,)
    return Decomposed(f, sites, None if targets is None else tuple(targets), rules, fallback)
