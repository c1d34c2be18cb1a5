"""The formulas of contextual decomposition: how an operation splits its output into relevant and irrelevant parts.

`Rules` chooses among the published variants; the functions below are the formulas themselves, written once and used
by the rule table (`jaxinterp.cdt.rule_table`). Every formula keeps `rel + irr` equal to the ordinary output.
The formulas and their sources are stated in `docs/cd.md`.
"""

import dataclasses
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet

import jax
import jax.numpy as jnp
from jax import lax

from ..composites import attention_pattern, repeat_kv
from .sources import Pair

NORMALISATION_POINTS = frozenset({"linear", "attention_input", "attention", "residual", "norm", "activation"})
BERT_NORMALISATION_POINTS = frozenset({"linear", "attention", "residual", "norm"})
GPT2_NORMALISATION_SITES = frozenset({"blocks.*.mlp.pre", "blocks.*.mlp.out", "blocks.*.resid_post"})


@dataclasses.dataclass(frozen=True)
class Rules:
    """Which variant of each rule to use (`docs/cd.md`).

    **Fields:**

    - `activation`: the form of the rule for elementwise nonlinear functions `f`: `"cdt"` (CD-T: `irr' = f(irr)`,
      `rel' = f(rel + irr) - f(irr)`), `"acd"` (the mirror: `rel' = f(rel) - f(0)`, `irr' = f(rel + irr) - rel'`), or
      `"shapley"` (original CD's two-ordering average).
    - `attention`: `"frozen"` (BERT CD-T: the pattern is computed from the totals and held fixed) or
      `"decomposed"` (the GPT-2 circuit form: the pattern itself is split).
    - `normalise_signs`: where to resolve sign conflicts between `rel` and `irr` (`docs/cd.md#sign-conflict-normalisation`),
      a set whose entries are kinds of operation or site patterns:

      - kinds: `"linear"` (after a bias is added), `"attention_input"` (after the bias of a query, key or value
        projection that feeds an attention composite), `"attention"` (after a head mixes values), `"residual"`
        (after two decomposed values are added), `"norm"` (after layer/RMS norm), `"activation"`;
      - any other entry is a site pattern (`"blocks.*.mlp.out"`): the pair is normalised as it passes each matching
        tagged site, before any source there acts on it. A pattern that matches no site of `f` is an error.

      `True` means the official BERT choice `{"linear", "attention", "residual", "norm"}`, `False` none (the
      default).
    - `bias_split`: `"exact"` (the relevant part gets `bias |rel| / (|rel| + |irr|)`, the irrelevant part the rest,
      all of it where both parts are zero, so `rel + irr` is exact) or `"official"` (each part gets
      `bias |part| / (|rel| + |irr| + tol)`, as published, which loses `bias tol / (|rel| + |irr| + tol)`).
    - `tol`: the stabiliser of the published bias split.

    The presets `Rules.official_bert()` and `Rules.official_gpt2()` reproduce the official CD-T code.
    """

    activation: str = "cdt"
    attention: str = "frozen"
    normalise_signs: bool | AbstractSet[str] = False
    bias_split: str = "exact"
    tol: float = 1e-8

    def __post_init__(self):
        points = self.normalise_signs
        if isinstance(points, bool):
            points = BERT_NORMALISATION_POINTS if points else frozenset()
        if isinstance(points, str) or not all(isinstance(p, str) and p for p in points):
            raise TypeError(
                "normalise_signs is True, False or a set of operation kinds and site patterns (non-empty strings), "
                f"got {self.normalise_signs!r}"
            )
        object.__setattr__(self, "normalise_signs", frozenset(points))
        if self.activation not in ("cdt", "acd", "shapley"):
            raise ValueError(f"activation rule must be 'cdt', 'acd' or 'shapley', got {self.activation!r}")
        if self.attention not in ("frozen", "decomposed"):
            raise ValueError(f"attention rule must be 'frozen' or 'decomposed', got {self.attention!r}")
        if self.bias_split not in ("exact", "official"):
            raise ValueError(f"bias_split must be 'exact' or 'official', got {self.bias_split!r}")

    @property
    def normalised_kinds(self) -> frozenset[str]:
        """The kinds of operation after which signs are normalised."""
        return self.normalise_signs & NORMALISATION_POINTS

    @property
    def normalised_sites(self) -> frozenset[str]:
        """The site patterns at which signs are normalised."""
        return self.normalise_signs - NORMALISATION_POINTS

    @property
    def exact(self) -> bool:
        """Whether every rule keeps `rel + irr` equal to the ordinary value to rounding (the official bias split
        does not: it drops `bias * tol / (|rel| + |irr| + tol)`)."""
        return self.bias_split == "exact"

    @classmethod
    def official_bert(cls) -> "Rules":
        """The official CD-T code for BERT (GitHub `adelaidehsu/CD_Circuit`, `pyfunctions/cdt_basic.py`,
        `prop_encoder` / `prop_layer`, and `cdt_source_to_target.py`, `prop_BERT_hh`): attention pattern frozen at
        the totals, CD-T activation rule, biases split by magnitude as published, signs normalised after every
        bias, head mixing, residual sum and layer norm."""
        return cls(normalise_signs=True, bias_split="official")

    @classmethod
    def official_gpt2(cls) -> "Rules":
        """The official CD-T circuit code for GPT-2 (GitHub `adelaidehsu/CD_Circuit`,
        `pyfunctions/cdt_source_to_target.py`, `prop_GPT` / `prop_GPT_layer`): decomposed attention (the relevant
        pattern from the relevant queries and keys), CD-T activation rule, biases split by magnitude as published,
        and signs normalised only after the MLP input projection (`blocks.*.mlp.pre`), the MLP output projection
        (`blocks.*.mlp.out`) and the block's final residual sum (`blocks.*.resid_post`), not after the attention
        output projection nor the attention residual sum. Needs a model tagging those sites (the `models`
        transformer family does). The official layer-norm rule uses eps 1e-8 whatever the model's eps; this preset
        uses the model's own, so the parts add up to the forward (they agree where the model's eps is 1e-8)."""
        return cls(attention="decomposed", normalise_signs=GPT2_NORMALISATION_SITES, bias_split="official")


def is_inexact(x) -> bool:
    """Whether `x` (an array, an abstract value, a dtype or a Python number) holds floating-point values."""
    return jnp.issubdtype(jnp.result_type(x), jnp.inexact)


def is_pair(x) -> bool:
    """Whether `x` is a decomposed value (a `Pair`)."""
    return isinstance(x, Pair)


def total(x):
    """The ordinary value of `x`: `rel + irr` for a pair, `x` itself for a constant."""
    return x.total if is_pair(x) else x


def as_pair(x) -> Pair:
    """`x` as a pair; a constant (not derived from any source) is entirely irrelevant."""
    return x if is_pair(x) else Pair(jnp.zeros_like(x), x)


def normalise_signs(x: Pair) -> Pair:
    """Where `rel` and `irr` have opposite signs, give the sum to the larger in magnitude, zero to the other."""
    conflict = x.rel * x.irr < 0
    rel_wins = jnp.abs(x.rel) >= jnp.abs(x.irr)
    summed = total(x)
    rel = jnp.where(conflict, jnp.where(rel_wins, summed, 0.0), x.rel)
    irr = jnp.where(conflict, jnp.where(rel_wins, 0.0, summed), x.irr)
    return Pair(rel, irr)


def bias_shares(x: Pair, bias, rules: Rules) -> Pair:
    """The parts of `bias` that go to `rel` and to `irr`, in proportion to their magnitudes (`rules.bias_split`)."""
    a_rel, a_irr = jnp.abs(x.rel), jnp.abs(x.irr)
    if rules.bias_split == "official":
        denom = a_rel + a_irr + rules.tol
        return Pair(bias * a_rel / denom, bias * a_irr / denom)
    # exact: weight |rel| / (|rel| + |irr|), with no stabiliser, so an irrelevant part of 1e-17 instead of 0 moves
    # the weight by about 1e-17 / |rel|, not by tol / |rel| (a one-stream decomposition, whose irrelevant part is
    # total - rel, then agrees with two streams to rounding); at most 1 in floating point, so each share has the
    # sign of the bias and is no larger; where both parts are zero the bias is irrelevant
    summed = a_rel + a_irr
    weight = jnp.where(summed > 0, a_rel / jnp.where(summed > 0, summed, 1.0), 0.0)
    rel_share = bias * weight
    return Pair(rel_share, bias - rel_share)


def split_bias(x: Pair, bias, rules: Rules) -> Pair:
    """`x + bias` with the bias shared by magnitude (see `bias_shares`)."""
    share = bias_shares(x, bias, rules)
    return Pair(x.rel + share.rel, x.irr + share.irr)


def _all_zero(parts: Sequence, shape) -> jax.Array | None:
    """Where every array of `parts` is exactly zero, broadcast to `shape`; `None` if they do not broadcast to it."""
    try:
        zero = jnp.broadcast_to(parts[0] == 0, shape)
        for part in parts[1:]:
            zero = zero & jnp.broadcast_to(part == 0, shape)
    except ValueError:
        return None
    return zero


def nonlinear_rule(f: Callable, operands: Sequence, variant: str, *, elementwise: bool = True) -> Pair:
    """A nonlinear function `f(*operands)` of decomposed operands (`Pair`s) and constants (held fixed).

    `"cdt"`: `irr' = f(irrelevant parts)`, `rel' = f(totals) - irr'`; `"acd"`: `rel' = f(relevant parts) - f(0)`
    (ACD's `f(rel)` for the ReLU it was written for; without the `- f(0)`, a function with `f(0) != 0` would create
    relevance where no source is), `irr' = f(totals) - rel'`; `"shapley"`:
    `rel' = [(f(rel) - f(0)) + (f(totals) - f(irr))] / 2`.

    For an elementwise `f`, where the part the variant's formula makes zero by construction is exactly zero in every
    decomposed operand (`rel` for CD-T and Shapley, `irr` for ACD), it stays exactly zero: compiled code may round
    `f(0 + irr)` and `f(irr)` differently, and the decomposition would amplify that noise layer by layer.
    Where `f` of a part alone is not finite although `f` of the totals is (the part lies outside `f`'s domain, as
    `rsqrt(0)` for a variance that is all relevant), the output goes to the other part: to `rel` for CD-T and
    Shapley, to `irr` for ACD.

    **Returns:** the decomposed output.
    """
    pairs = [o for o in operands if is_pair(o)]

    def at(part: str):
        return f(*(getattr(o, part) if is_pair(o) else o for o in operands))

    out = f(*(total(o) for o in operands))
    outside_domain = lambda part: jnp.isfinite(out) & ~jnp.isfinite(part)
    if variant == "acd":
        # f(rel) - f(0): ACD's f(rel) for the ReLU it was written for, and no relevance without a source when f(0) != 0
        zeros = f(*(jnp.zeros_like(o.rel) if is_pair(o) else o for o in operands))
        irr = out - (at("rel") - zeros)
        irr = jnp.where(outside_domain(irr), out, irr)
        zero = _all_zero([p.irr for p in pairs], out.shape) if elementwise else None
        if zero is not None:
            irr = jnp.where(zero, 0.0, irr)
        return Pair(out - irr, irr)
    if variant == "cdt":
        rel = out - at("irr")
    else:
        zeros = f(*(jnp.zeros_like(o.rel) if is_pair(o) else o for o in operands))
        rel = 0.5 * ((at("rel") - zeros) + (out - at("irr")))
    rel = jnp.where(outside_domain(rel), out, rel)
    zero = _all_zero([p.rel for p in pairs], out.shape) if elementwise else None
    if zero is not None:
        rel = jnp.where(zero, 0.0, rel)
    return Pair(rel, out - rel)


def activation_rule(f: Callable, x: Pair, variant: str) -> Pair:
    """An elementwise activation `f` of one decomposed value: `nonlinear_rule(f, [x], variant)`."""
    return nonlinear_rule(f, [x], variant)


def product_rule(op: Callable, a: Pair, b: Pair) -> Pair:
    """A bilinear `op(a, b)` of two decomposed values: every term touching a relevant part is relevant."""
    irr = op(a.irr, b.irr)
    return Pair(op(a.rel, b.rel + b.irr) + op(a.irr, b.rel), irr)


def selection_rule(f: Callable, operands: Sequence) -> list:
    """A piecewise-linear selection `f` (max, min, sort, max pooling) of decomposed operands and constants.

    The outputs take the parts of the elements selected at the totals: `rel' = J_f(total) rel` (the derivative of
    `f` at the totals, applied to the relevant parts; ties share equally), `irr' = f(total) - rel'`. Exact, since a
    selection is positively homogeneous, `f(t) = J_f(t) t`.

    **Returns:** the list of outputs: pairs for floating-point outputs, plain arrays for integer ones (indices).
    """
    positions = [k for k, o in enumerate(operands) if is_pair(o)]
    totals = [total(o) for o in operands]

    def of_pairs(*values):
        args = list(totals)
        for k, v in zip(positions, values):
            args[k] = v
        return f(*args)

    outs, rels = jax.jvp(of_pairs, [totals[k] for k in positions], [operands[k].rel for k in positions])
    return [Pair(r, o - r) if jnp.issubdtype(o.dtype, jnp.inexact) else o for o, r in zip(outs, rels)]


def layer_norm_rule(x: Pair, weight, bias, eps: float, rules: Rules) -> Pair:
    """Layer norm: each part centred by its own mean, scaled by the total's standard deviation; the bias shared
    by the magnitudes of the input parts (as in `split_bias`). The arithmetic follows `composites.layer_norm`
    operation for operation, so the totals round as the forward does."""
    summed = total(x)
    var = jnp.mean(jnp.square(summed - jnp.mean(summed, axis=-1, keepdims=True)), axis=-1, keepdims=True)
    inverse_std = lax.rsqrt(var + eps)
    share = bias_shares(x, bias, rules)
    return Pair(*((p - jnp.mean(p, axis=-1, keepdims=True)) * inverse_std * weight + b for p, b in zip(x, share)))


def rms_norm_rule(x: Pair, weight, eps: float) -> Pair:
    """RMS norm: both parts divided by the total's root mean square."""
    summed = total(x)
    scale = lax.rsqrt(jnp.mean(jnp.square(summed), axis=-1, keepdims=True) + eps) * weight
    return Pair(x.rel * scale, x.irr * scale)


def attention_rule(q: Pair, k: Pair, v: Pair, mask, scale: float, variant: str) -> Pair:
    """Softmax attention on decomposed `q`, `k`, `v` (`[..., len, heads, d_head]`).

    `"frozen"`: `P` from the totals, `z_rel = P v_rel`, `z_irr = P v_irr`. `"decomposed"`: `P_rel` from
    `q_rel k_rel^T`, `z_rel = P_rel v_rel`, `z_irr = P_total v_total - z_rel`.
    """
    n_heads = q.rel.shape[-2]

    def mix(pattern, values):
        return jnp.einsum("...hqk,...khd->...qhd", pattern, repeat_kv(values, n_heads))

    pattern = attention_pattern(total(q), total(k), mask, scale)
    if variant == "frozen":
        return Pair(mix(pattern, v.rel), mix(pattern, v.irr))
    pattern_rel = attention_pattern(q.rel, k.rel, mask, scale)
    rel = mix(pattern_rel, v.rel)
    return Pair(rel, mix(pattern, total(v)) - rel)
