"""Contextual-decomposition rules: how each operation splits its output into relevant and irrelevant parts.

Formulas from REFERENCE.md P1 (CD-T and its predecessors). Every rule keeps `rel + irr` equal to the ordinary output.
Whole-op rules act on the composites that models mark (`jaxinterp.composites`); the primitive rules cover
everything else. An operation none of whose inputs is decomposed is evaluated normally.
"""

import dataclasses

import jax.numpy as jnp
from jax import lax

from ..composites import attention_pattern, repeat_kv
from .sources import Pair


NORMALIZATION_POINTS = frozenset({"linear", "attention_input", "attention", "residual", "norm", "activation"})
BERT_NORMALIZATION_POINTS = frozenset({"linear", "attention", "residual", "norm"})


@dataclasses.dataclass(frozen=True)
class Rules:
    """Which variant of each rule to use.

    **Fields:**

    - `activation`: `"cdt"` (CD-T: `irr' = f(irr)`, `rel' = f(rel + irr) - f(irr)`), `"acd"` (the mirror:
      `rel' = f(rel)`, `irr' = f(rel + irr) - f(rel)`), or `"shapley"` (original CD's two-ordering average).
    - `attention`: `"frozen"` (BERT CD-T: the pattern is computed from the totals and held fixed) or
      `"decomposed"` (the GPT-2 circuit form: the pattern itself is split).
    - `normalize_signs`: where to resolve sign conflicts between `rel` and `irr` (REFERENCE.md P1 §6): a set of
      points among `"linear"` (after a bias is added), `"attention_input"` (after the bias of a query, key or value
      projection that feeds an attention composite), `"attention"` (after a head mixes values), `"residual"`
      (after two decomposed values are added), `"norm"` (after layer/RMS norm) and `"activation"`; `True` means
      the official BERT CD-T choice `{"linear", "attention", "residual", "norm"}`, `False` none (the default, as in
      the official GPT-2 circuit code's attention path).
    - `bias_split`: `"exact"` (the irrelevant part takes what the relevant part does not, so `rel + irr` is exact
      even where both parts are zero) or `"official"` (REFERENCE.md P1 §1 as written: each part gets
      `bias |part| / (|rel| + |irr| + tol)`, which loses the bias where both parts are zero).
    - `tol`: the stabiliser in the magnitude-proportional bias split.
    """

    activation: str = "cdt"
    attention: str = "frozen"
    normalize_signs: bool | frozenset[str] = False
    bias_split: str = "exact"
    tol: float = 1e-8

    def __post_init__(self):
        points = {True: BERT_NORMALIZATION_POINTS, False: frozenset()}.get(self.normalize_signs, self.normalize_signs)
        unknown = set(points) - NORMALIZATION_POINTS
        if unknown:
            raise ValueError(f"unknown sign-normalisation points {sorted(unknown)}; choose from {sorted(NORMALIZATION_POINTS)}")
        object.__setattr__(self, "normalize_signs", frozenset(points))
        if self.activation not in ("cdt", "acd", "shapley"):
            raise ValueError(f"activation rule must be 'cdt', 'acd' or 'shapley', got {self.activation!r}")
        if self.attention not in ("frozen", "decomposed"):
            raise ValueError(f"attention rule must be 'frozen' or 'decomposed', got {self.attention!r}")
        if self.bias_split not in ("exact", "official"):
            raise ValueError(f"bias_split must be 'exact' or 'official', got {self.bias_split!r}")


# ------------------------------------------------------------------------------------------------ elementary rules
def normalize_signs(x: Pair) -> Pair:
    """Where `rel` and `irr` have opposite signs, give the sum to the larger in magnitude, zero to the other."""
    conflict = x.rel * x.irr < 0
    rel_wins = jnp.abs(x.rel) >= jnp.abs(x.irr)
    total = x.rel + x.irr
    rel = jnp.where(conflict, jnp.where(rel_wins, total, 0.0), x.rel)
    irr = jnp.where(conflict, jnp.where(rel_wins, 0.0, total), x.irr)
    return Pair(rel, irr)


def bias_shares(x: Pair, bias, rules: "Rules") -> Pair:
    """The parts of `bias` that go to `rel` and to `irr`, in proportion to their magnitudes (`rules.bias_split`)."""
    a_rel, a_irr = jnp.abs(x.rel), jnp.abs(x.irr)
    denom = a_rel + a_irr + rules.tol
    rel_share = bias * a_rel / denom
    return Pair(rel_share, bias - rel_share if rules.bias_split == "exact" else bias * a_irr / denom)


def split_bias(x: Pair, bias, rules: "Rules") -> Pair:
    """`x + bias` with the bias shared by magnitude (see `bias_shares`)."""
    share = bias_shares(x, bias, rules)
    return Pair(x.rel + share.rel, x.irr + share.irr)


def activation_rule(f, x: Pair, variant: str) -> Pair:
    """An elementwise nonlinearity `f` applied to a decomposed value, in the chosen `variant`.

    Where the part the variant's formula gives zero by construction is exactly zero (`rel` for CD-T and Shapley,
    `irr` for ACD), it stays exactly zero: compiled code may round `f(0 + irr)` and `f(irr)` differently, and
    the decomposition would amplify that noise layer by layer.
    """
    total = f(x.rel + x.irr)
    if variant == "acd":
        rel = f(x.rel)
        irr = jnp.where(x.irr == 0, 0.0, total - rel)
        return Pair(total - irr, irr)
    if variant == "cdt":
        rel = total - f(x.irr)
    else:
        rel = 0.5 * ((f(x.rel) - f(jnp.zeros_like(x.rel))) + (total - f(x.irr)))
    rel = jnp.where(x.rel == 0, 0.0, rel)
    return Pair(rel, total - rel)


def product_rule(op, a: Pair, b: Pair) -> Pair:
    """A bilinear `op(a, b)` of two decomposed values: every term touching a relevant part is relevant."""
    irr = op(a.irr, b.irr)
    return Pair(op(a.rel, b.rel + b.irr) + op(a.irr, b.rel), irr)


def layer_norm_rule(x: Pair, weight, bias, eps: float, rules: "Rules") -> Pair:
    """Layer norm: each part centred by its own mean, scaled by the total's standard deviation; the bias shared
    by the magnitudes of the input parts (as in `split_bias`). The arithmetic follows `composites.layer_norm`
    operation for operation, so the totals round as the forward does."""
    total = x.rel + x.irr
    var = jnp.mean(jnp.square(total - jnp.mean(total, axis=-1, keepdims=True)), axis=-1, keepdims=True)
    inverse_std = lax.rsqrt(var + eps)
    share = bias_shares(x, bias, rules)
    return Pair(*((p - jnp.mean(p, axis=-1, keepdims=True)) * inverse_std * weight + b for p, b in zip(x, share)))


def rms_norm_rule(x: Pair, weight, eps: float) -> Pair:
    """RMS norm: both parts divided by the total's root mean square."""
    total = x.rel + x.irr
    scale = lax.rsqrt(jnp.mean(jnp.square(total), axis=-1, keepdims=True) + eps) * weight
    return Pair(x.rel * scale, x.irr * scale)


def attention_rule(q: Pair, k: Pair, v: Pair, mask, scale: float, variant: str) -> Pair:
    """Softmax attention on decomposed `q`, `k`, `v` (`[..., len, heads, d_head]`).

    `"frozen"`: `P` from the totals, `z_rel = P v_rel`, `z_irr = P v_irr`. `"decomposed"`: `P_rel` from
    `q_rel k_rel^T`, `z_rel = P_rel v_rel`, `z_irr = P_total v_total - z_rel`.
    """
    n_heads = q.rel.shape[-2]

    def mix(pattern, values):
        return jnp.einsum("...hqk,...khd->...qhd", pattern, repeat_kv(values, n_heads))

    pattern = attention_pattern(q.rel + q.irr, k.rel + k.irr, mask, scale)
    if variant == "frozen":
        return Pair(mix(pattern, v.rel), mix(pattern, v.irr))
    pattern_rel = attention_pattern(q.rel, k.rel, mask, scale)
    rel = mix(pattern_rel, v.rel)
    return Pair(rel, mix(pattern, v.rel + v.irr) - rel)


# ----------------------------------------------------------------------------------------------- primitive tables
# Linear in the first operand, every other operand a constant (indices, shapes): apply to both parts.
LINEAR_IN_FIRST = frozenset(
    {
        "neg", "reshape", "transpose", "broadcast_in_dim", "squeeze", "expand_dims", "slice", "dynamic_slice",
        "gather", "rev", "reduce_sum", "convert_element_type", "copy", "copy_p", "cumsum", "reduce_precision",
        "real", "imag", "conj", "split", "sharding_constraint", "optimization_barrier",
    }
)
# Elementwise nonlinear functions of one decomposed operand: the activation rule.
NONLINEAR_UNARY = frozenset(
    {
        "exp", "exp2", "log", "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "sqrt", "rsqrt", "cbrt",
        "erf", "erfc", "erf_inv", "integer_pow", "square", "abs", "atan", "sinh", "cosh", "asinh", "acosh",
        "atanh", "asin", "acos", "floor", "ceil", "round", "sign",
    }
)
# Discrete results: computed from the totals, they carry no decomposition.
FROM_TOTALS = frozenset(
    {
        "eq", "ne", "lt", "le", "gt", "ge", "argmax", "argmin", "reduce_max", "reduce_min", "reduce_and",
        "reduce_or", "is_finite", "and", "or", "not", "xor", "stop_gradient", "population_count", "sort",
    }
)
# Binary elementwise functions that are nonlinear in a decomposed operand when the other one is a constant.
NONLINEAR_WITH_CONSTANT = frozenset({"max", "min", "pow", "div", "atan2", "rem", "nextafter", "clamp"})
