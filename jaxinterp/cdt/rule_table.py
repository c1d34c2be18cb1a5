"""The rule table of contextual decomposition: one rule per primitive, one per marked composite.

A rule is a function `rule(eqn, *operands) -> list` that receives the equation being decomposed (an `Equation`:
its primitive, parameters and the chosen `Rules`, and `eqn.bind(*arrays)` to evaluate the primitive on plain
arrays) and its operands, each a `Pair(rel, irr)` (a decomposed value) or a plain array (a constant: a parameter,
an index, a mask). It returns the list of outputs: `Pair`s, or plain arrays where an output carries no
decomposition (plain floating-point outputs count as entirely irrelevant, integer and boolean ones as data).
A rule is only called when at least one operand is decomposed; otherwise the equation is evaluated normally.

Every primitive that standard model code emits has a default rule below, grouped by the idea it follows
(`docs/cd.md`); `register_cd_rule` and `register_composite_rule` add or replace rules.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp

from .. import _compat
from ..composites import ACTIVATIONS
from . import rules as R
from .sources import Pair

Rule = Callable[..., list]


class Equation:
    """One equation of a traced program, as a rule sees it.

    **Attributes:**

    - `primitive`: the `jax.extend.core.Primitive`; `name` its name.
    - `params`: the equation's parameters (for a composite: `kind`, `options`, the body `jaxpr`).
    - `rules`: the `Rules` variants chosen by the caller of `cd`.
    - `out_dtypes`: the dtypes of the outputs.
    """

    def __init__(self, eqn, rules: R.Rules, decompose_body: Callable):
        self._eqn = eqn
        self._decompose_body = decompose_body
        self.primitive = eqn.primitive
        self.name = eqn.primitive.name
        self.params = eqn.params
        self.rules = rules
        self.out_dtypes = tuple(var.aval.dtype for var in eqn.outvars)

    def bind(self, *args) -> list:
        """Evaluate the primitive, with its parameters, on plain arrays. **Returns:** the list of outputs."""
        return _compat.bind_equation(self._eqn, args)

    def bind_one(self, *args):
        """`bind` for a primitive with a single output: **Returns:** that output."""
        return self.bind(*args)[0]

    @property
    def options(self) -> dict:
        """The static options a composite was marked with (e.g. `{"eps": 1e-5}` for a layer norm)."""
        return dict(self.params.get("options", ()))

    def decompose_body(self, *operands) -> list:
        """Decompose a composite's body primitive by primitive: what a composite rule falls back to when its
        whole-op formula does not apply (say, decomposed weights)."""
        return self._decompose_body(self._eqn, operands)


_PRIMITIVE_RULES: dict[str, Rule] = {}
_COMPOSITE_RULES: dict[str, Rule] = {}


def _key(primitive) -> str:
    name = getattr(primitive, "name", primitive)
    if not isinstance(name, str):
        raise TypeError(f"a rule is registered for a primitive or its name, got {primitive!r}")
    return name


def register_cd_rule(primitive, rule: Rule | None = None):
    """Register the contextual-decomposition rule of a primitive, replacing any earlier one.

    **Arguments:**

    - `primitive`: a `jax.extend.core.Primitive` or its name (`"exp"`, `"my_primitive"`).
    - `rule`: `rule(eqn, *operands) -> list of outputs` (see `jaxinterp.cdt.rule_table`); if left out,
      `register_cd_rule` is a decorator.

    **Returns:** the rule.

    ```python
    @jaxinterp.register_cd_rule("cumlogsumexp")
    def _(eqn, x):
        out = eqn.bind_one(x.rel + x.irr)
        irr = eqn.bind_one(x.irr)
        return [jaxinterp.Pair(out - irr, irr)]
    ```
    """
    if rule is None:
        return lambda fn: register_cd_rule(primitive, fn)
    _PRIMITIVE_RULES[_key(primitive)] = rule
    return rule


def register_composite_rule(kind: str, rule: Rule | None = None):
    """Register the whole-op rule of a composite marked with `jaxinterp.composite(kind, ...)`.

    **Arguments:**

    - `kind`: the composite's kind.
    - `rule`: `rule(eqn, *operands) -> list of outputs`, where `eqn.options` holds the composite's static options
      and `eqn.decompose_body(*operands)` decomposes its body primitive by primitive; a decorator if left out.

    **Returns:** the rule.
    """
    if rule is None:
        return lambda fn: register_composite_rule(kind, fn)
    if not isinstance(kind, str) or not kind:
        raise TypeError(f"a composite kind is a non-empty string, got {kind!r}")
    _COMPOSITE_RULES[kind] = rule
    return rule


def primitive_rule(name: str) -> Rule | None:
    """The rule registered for the primitive called `name`, or `None`."""
    return _PRIMITIVE_RULES.get(name)


def composite_rule(kind: str) -> Rule | None:
    """The whole-op rule registered for the composite kind `kind`, or `None`."""
    return _COMPOSITE_RULES.get(kind)


def primitives_with_rules() -> list[str]:
    """The names of every primitive that has a rule, sorted."""
    return sorted(_PRIMITIVE_RULES)


def _register_all(names: Sequence[str], rule: Rule) -> None:
    for name in names:
        register_cd_rule(name, rule)


# ------------------------------------------------------------------------------------------------ linear routing
def linear(eqn: Equation, *operands) -> list:
    """Operations linear in their floating-point operands jointly (reshapes, slices, gathers, sums, concatenation,
    padding, selection by a predicate, scatters): applied to the relevant parts and to the irrelevant parts.
    Floating-point constants are irrelevant (zero in the relevant pass); integer and boolean operands (indices,
    predicates) are used as they are in both. An integer or boolean output is computed from the totals."""
    if not all(map(R.is_inexact, eqn.out_dtypes)):
        return eqn.bind(*map(R.total, operands))

    def part(name):
        return [
            getattr(o, name) if R.is_pair(o) else (o if name == "irr" or not R.is_inexact(o) else jnp.zeros_like(o))
            for o in operands
        ]

    return [Pair(r, i) for r, i in zip(eqn.bind(*part("rel")), eqn.bind(*part("irr")))]


_register_all(
    [
        "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "slice", "dynamic_slice",
        "gather", "rev", "reduce_sum", "convert_element_type", "copy", "copy_p", "cumsum", "reduce_precision",
        "real", "imag", "conj", "complex", "fft", "split", "sharding_constraint", "optimization_barrier", "concatenate", "stack", "pad",
        "select_n", "dynamic_update_slice", "scatter", "scatter-add", "scatter_add", "reduce_window_sum",
        "mesh_cast", "reshard", *_compat.EQUINOX_ROUTING,
    ],
    linear,
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ sums and biases
def add(eqn: Equation, a, b) -> list:
    """`a + b` (or `a - b`): two decomposed values add part by part; a constant (a bias, any parameter) added to a
    decomposed value is shared between its parts by magnitude (`rules.bias_split`)."""
    sign = -1.0 if eqn.name == "sub" else 1.0
    if R.is_pair(a) and R.is_pair(b):
        return [Pair(a.rel + sign * b.rel, a.irr + sign * b.irr)]
    if R.is_pair(a):
        return [R.split_bias(a, sign * b, eqn.rules)]
    split = R.split_bias(b, sign * a, eqn.rules)
    return [Pair(sign * split.rel, sign * split.irr)]


_register_all(["add", "add_any", "sub"], add)


# ------------------------------------------------------------------------------------------------ products
def bilinear(eqn: Equation, a, b) -> list:
    """Products (`mul`, `dot_general`, `conv_general_dilated`): with one decomposed operand, linear; with two, the
    product rule (every term touching a relevant part is relevant)."""
    if R.is_pair(a) and R.is_pair(b):
        return [R.product_rule(eqn.bind_one, a, b)]
    if R.is_pair(a):
        return [Pair(eqn.bind_one(a.rel, b), eqn.bind_one(a.irr, b))]
    return [Pair(eqn.bind_one(a, b.rel), eqn.bind_one(a, b.irr))]


_register_all(["mul", "dot_general", "conv_general_dilated"], bilinear)


def divide(eqn: Equation, a, b) -> list:
    """`a / b`: by a constant, linear; a decomposed value over a decomposed one, the denominator taken from its
    total (`rel' = a_rel / b`, `irr' = a_irr / b`, as CD-T's layer norm takes the variance from the total); a
    constant over a decomposed value, the elementwise nonlinear rule."""
    if not R.is_pair(b):
        return [Pair(eqn.bind_one(a.rel, b), eqn.bind_one(a.irr, b))]
    if not R.is_pair(a):
        return elementwise(eqn, a, b)
    denominator = R.total(b)
    return [Pair(eqn.bind_one(a.rel, denominator), eqn.bind_one(a.irr, denominator))]


register_cd_rule("div", divide)


# ------------------------------------------------------------------------------------------------ nonlinear
def elementwise(eqn: Equation, *operands) -> list:
    """Elementwise nonlinear functions of one or more decomposed operands, constants held fixed: the activation
    rule in the form `rules.activation` chooses (CD-T by default: `irr' = f(irr)`, `rel' = f(total) - irr'`)."""
    return [R.nonlinear_rule(eqn.bind_one, operands, eqn.rules.activation)]


_register_all(
    [
        "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "sqrt", "rsqrt", "cbrt",
        "erf", "erfc", "erf_inv", "integer_pow", "square", "abs", "atan", "sinh", "cosh", "asinh", "acosh",
        "atanh", "asin", "acos", "floor", "ceil", "round", "sign", "lgamma", "digamma", "bessel_i0e", "bessel_i1e",
        "max", "min", "pow", "atan2", "rem", "nextafter", "clamp", "reciprocal", "logaddexp",
    ],
    elementwise,
)  # fmt: skip


def nonlinear(eqn: Equation, *operands) -> list:
    """Nonlinear primitives that are not elementwise (`reduce_prod`, `cumprod`, `cumlogsumexp`): the same forms
    as `elementwise`, applied to the whole operation."""
    return [R.nonlinear_rule(eqn.bind_one, operands, eqn.rules.activation, elementwise=False)]


_register_all(["reduce_prod", "cumprod", "cumlogsumexp"], nonlinear)


def selection(eqn: Equation, *operands) -> list:
    """Selections (`reduce_max`, `reduce_min`, max pooling, `sort`, `cummax`, `cummin`, `top_k`): the outputs take the
    parts of the elements selected at the totals (see `rules.selection_rule`)."""
    return R.selection_rule(eqn.bind, operands)


_register_all(
    ["reduce_max", "reduce_min", "reduce_window_max", "reduce_window_min", "sort", "cummax", "cummin", "top_k"],
    selection,
)


def from_totals(eqn: Equation, *operands) -> list:
    """Values computed from the totals that carry no decomposition: discrete results (comparisons, `argmax`,
    logical operations; they are data) and `stop_gradient` (a constant of the computation, so entirely
    irrelevant: a softmax's stabilising shift then cancels)."""
    return eqn.bind(*map(R.total, operands))


_register_all(
    [
        "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin", "reduce_and", "reduce_or", "reduce_xor",
        "is_finite", "and", "or", "not", "xor", "stop_gradient", "population_count", "bitcast_convert_type",
        "shift_left", "shift_right_logical", "shift_right_arithmetic", "clz", "unvmap_any", "unvmap_all",
        "unvmap_max",
    ],
    from_totals,
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ composites
@register_composite_rule("activation")
def _activation(eqn: Equation, x) -> list:
    """The activation composite: `elementwise` with the composite's function."""
    return [R.activation_rule(ACTIVATIONS[eqn.options["function"]], R.as_pair(x), eqn.rules.activation)]


@register_composite_rule("layer_norm")
def _layer_norm(eqn: Equation, x, weight, bias) -> list:
    """CD-T's layer norm (variance from the total, each part centred by its own mean, the bias split by the
    magnitudes of the input parts); decomposed weights fall back to the body."""
    if R.is_pair(weight) or R.is_pair(bias) or not R.is_pair(x):
        return eqn.decompose_body(x, weight, bias)
    return [R.layer_norm_rule(x, weight, bias, eqn.options["eps"], eqn.rules)]


@register_composite_rule("rms_norm")
def _rms_norm(eqn: Equation, x, weight) -> list:
    """RMS norm: both parts divided by the total's root mean square; decomposed weights fall back to the body."""
    if R.is_pair(weight) or not R.is_pair(x):
        return eqn.decompose_body(x, weight)
    return [R.rms_norm_rule(x, weight, eqn.options["eps"])]


@register_composite_rule("attention")
def _attention(eqn: Equation, q, k, v, mask) -> list:
    """Softmax attention, frozen or decomposed (`rules.attention`); a decomposed mask falls back to the body."""
    if R.is_pair(mask):
        return eqn.decompose_body(q, k, v, mask)
    q, k, v = (R.as_pair(t) for t in (q, k, v))
    return [R.attention_rule(q, k, v, mask, eqn.options["scale"], eqn.rules.attention)]
