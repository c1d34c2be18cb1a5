"""`capture` and `intervene` against hand-written references on thousands of random cases, in one compiled vmap.

Random programs are hard to draw as pytrees, so the cases share one program, with sites at top level, inside a
nested `jax.jit`, inside a `custom_jvp` function, inside a `lax.scan` and inside a `lax.while_loop`, and differ in
its random arrays: weights, inputs, the while loop's trip count, which entries of each site to patch and the values
patched in. Every case is drawn with NumPy from its own seed; a failure names the worst case and its seed.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxinterp as ji
from tests.helpers import assert_cases_within, draw_cases

STEPS, WIDTH, MAX_GROWTH_STEPS = 5, 4, 4
SITES = ("h", "inner", "softplus", "carry", "grown")
CASES = 2000
FAMILY_SEEDS = {"capture": 5_000_000, "intervene": 6_000_000, "identity": 7_000_000, "custom rules": 8_000_000}


def seeds(family: str, n: int = CASES) -> list[int]:
    return list(range(FAMILY_SEEDS[family], FAMILY_SEEDS[family] + n))


def relative_error(a, b):
    """`max|a - b| / max|b|`, traceable."""
    return jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12)


# ------------------------------------------------------------------------------ the program family
@jax.custom_jvp
def softplus(z):
    """`log(1 + e^z)` with a site inside a `custom_jvp` function (whose rule is the true derivative)."""
    return ji.tag(jnp.logaddexp(z, 0.0), "softplus")


softplus.defjvp(lambda primals, tangents: (softplus(primals[0]), jax.nn.sigmoid(primals[0]) * tangents[0]))


def program(params, x, while_loop: bool = True):
    """`x` is `[STEPS, WIDTH]`; `params` holds `w`, `b`, `scale`, `decay`, `growth` and the integer `steps`.

    With `while_loop=False` the program ends after the scan: JAX cannot differentiate a `while_loop` in reverse
    mode, so the `jax.grad` checks use that member of the family (and forward mode covers the whole program)."""
    h = ji.tag(jnp.sin(x @ params["w"] + params["b"]), "h")
    h = jax.jit(lambda z, s: ji.tag(z * s, "inner"))(h, params["scale"])
    h = softplus(h)

    def body(carry, h_t):
        carry = ji.tag(jnp.tanh(params["decay"] * carry + h_t), "carry")
        return carry, carry**2

    last, squares = lax.scan(body, jnp.zeros(WIDTH), h)
    if not while_loop:
        return last + squares.sum(0)

    def grow(state):
        i, v = state
        return i + 1, ji.tag(v * params["growth"] + 0.1, "grown")

    _, grown = lax.while_loop(lambda state: state[0] < params["steps"], grow, (0, last))
    return grown + squares.sum(0)


def by_hand(params, x, patch=None, while_loop: bool = True):
    """`program` written out with Python loops, and `patch(name, value)` applied where `program` tags `name`.

    **Returns:** the output and the dict of site values (`carry` stacked over the scan's steps, `grown` from the
    while loop's last iteration).
    """
    patch = patch or (lambda name, value: value)
    h = patch("h", jnp.sin(x @ params["w"] + params["b"]))
    inner = patch("inner", h * params["scale"])
    softplus_out = patch("softplus", jnp.logaddexp(inner, 0.0))
    carry, carries, total = jnp.zeros(WIDTH), [], 0.0
    for t in range(STEPS):
        carry = patch("carry", jnp.tanh(params["decay"] * carry + softplus_out[t]))
        carries.append(carry)
        total = total + carry**2
    sites = {"h": h, "inner": inner, "softplus": softplus_out, "carry": jnp.stack(carries)}
    if not while_loop:
        return carry + total, sites
    grown = carry
    for i in range(MAX_GROWTH_STEPS):
        grown = jnp.where(i < params["steps"], patch("grown", grown * params["growth"] + 0.1), grown)
    return grown + total, {**sites, "grown": grown}


# the shape of each site's value (inside the scan and the while loop: one iteration's)
SITE_SHAPES = {
    "h": (STEPS, WIDTH),
    "inner": (STEPS, WIDTH),
    "softplus": (STEPS, WIDTH),
    "carry": (WIDTH,),
    "grown": (WIDTH,),
}


def draw_case(rng):
    """Random parameters and input (the while loop runs 1 to `MAX_GROWTH_STEPS` times), a cotangent for the output,
    a direction for the input, and per site a 0/1 patch mask (all zero, no patch, in about a third of the cases)
    and the values to patch in."""
    normal = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    params = {
        "w": normal(WIDTH, WIDTH) / 2,
        "b": normal(WIDTH),
        "scale": normal(WIDTH),
        "decay": np.float32(rng.uniform(-1, 1)),
        "growth": np.float32(rng.uniform(0.5, 1.1)),
        "steps": np.int32(rng.integers(1, MAX_GROWTH_STEPS + 1)),
    }
    masks = {name: (rng.random(shape) < rng.random()) & (rng.random() < 2 / 3) for name, shape in SITE_SHAPES.items()}
    values = {name: normal(*shape) for name, shape in SITE_SHAPES.items()}
    return params, normal(STEPS, WIDTH), normal(WIDTH), normal(STEPS, WIDTH), masks, values


def patcher(masks, values):
    """The rewrite of each site: `where(mask, value, site)`."""
    return {name: (lambda v, name=name: jnp.where(masks[name], values[name], v)) for name in SITES}


# ------------------------------------------------------------------------------ the checks
@eqx.filter_jit
@eqx.filter_vmap
def check_capture(params, x):
    """Per site and for the output: the relative error of `capture` against `by_hand`."""
    out, cache = ji.capture(program)(params, x)
    expected_out, expected = by_hand(params, x)
    return jnp.stack(
        [relative_error(cache[name], expected[name]) for name in SITES] + [relative_error(out, expected_out)]
    )


def test_capture_returns_what_a_hand_written_reference_computes():
    """Every site's value exactly; the output to rounding (`by_hand` sums the squares in another order)."""
    case_seeds = seeds("capture")
    params, x, *_ = draw_cases(draw_case, case_seeds)
    errors = check_capture(params, x)
    for j, name in enumerate(SITES):
        assert_cases_within(errors[:, j], 0.0, case_seeds, f"capture: site {name}")
    assert_cases_within(errors[:, -1], 1e-6, case_seeds, "capture: output")


def gradients(f, params, x, cotangent, mode: str):
    """The derivative of `f(params, x)` along the output `cotangent` (`mode="reverse"`, `jax.grad`, with respect to
    `x` and the floating-point parameters), or along the input direction `cotangent` for `x` (`"forward"`,
    `jax.jvp`)."""
    if mode == "reverse":
        return jax.tree_util.tree_leaves(eqx.filter_grad(lambda args: jnp.vdot(f(*args), cotangent))((params, x)))
    return [jax.jvp(lambda v: f(params, v), (x,), (cotangent,))[1]]


def rewritten(edits, while_loop: bool):
    """`program` under `intervene(..., edits)`, and the same rewrite written by hand (`by_hand`)."""
    present = {name: fn for name, fn in edits.items() if while_loop or name != "grown"}
    patched = ji.intervene(functools.partial(program, while_loop=while_loop), present)

    def hand(params, x):
        return by_hand(params, x, lambda name, value: edits[name](value), while_loop)[0]

    return patched, hand


@eqx.filter_jit
@eqx.filter_vmap
def check_intervene(params, x, cotangent, direction, masks, values):
    """The relative errors of the patched output (with and without the while loop), of its gradient (`jax.grad`,
    the program without its while loop) and of its forward derivative (`jax.jvp`, the whole program) against the
    hand-written patched function."""
    edits = patcher(masks, values)
    errors = []
    for while_loop in (True, False):
        patched, hand = rewritten(edits, while_loop)
        errors.append(relative_error(patched(params, x), hand(params, x)))
    for mode, while_loop, seed in (("reverse", False, cotangent), ("forward", True, direction)):
        patched, hand = rewritten(edits, while_loop)
        pairs = zip(gradients(patched, params, x, seed, mode), gradients(hand, params, x, seed, mode))
        errors += [relative_error(g, g_by_hand) for g, g_by_hand in pairs]
    return jnp.stack(errors)


def test_intervene_equals_the_hand_rewritten_function_and_its_derivatives(float64):
    """In float64: in float32 a few cases in a thousand differ by rounding alone, up to 3e-5 relative (the scalar
    derivative with respect to `decay`, seed 6001428, is a sum that nearly cancels); float64 agrees to 1e-13."""
    case_seeds = seeds("intervene")
    errors = check_intervene(*float64(draw_cases(draw_case, case_seeds)))
    assert_cases_within(errors[:, :2], 1e-12, case_seeds, "intervene: output")
    assert_cases_within(errors[:, 2:-1], 1e-10, case_seeds, "intervene: jax.grad")
    assert_cases_within(errors[:, -1], 1e-10, case_seeds, "intervene: jax.jvp")


@eqx.filter_jit
@eqx.filter_vmap
def check_identity(params, x, cotangent, direction):
    """`max|f - program|` for the identity intervention and for `capture`'s output `f`, and the relative errors
    of their derivatives (`jax.grad` without the while loop, `jax.jvp` with it) against the program's."""
    identity = ji.intervene(program, {"*": lambda v: v})
    captured = lambda p, v: ji.capture(program)(p, v)[0]
    no_loop = functools.partial(program, while_loop=False)
    identity_no_loop = ji.intervene(no_loop, {"*": lambda v: v})
    captured_no_loop = lambda p, v: ji.capture(no_loop)(p, v)[0]
    reference = program(params, x)
    differences = jnp.stack(
        [jnp.max(jnp.abs(identity(params, x) - reference)), jnp.max(jnp.abs(captured(params, x) - reference))]
    )
    errors = []
    for f, g, seed, mode in (
        (identity_no_loop, no_loop, cotangent, "reverse"),
        (captured_no_loop, no_loop, cotangent, "reverse"),
        (identity, program, direction, "forward"),
        (captured, program, direction, "forward"),
    ):
        pairs = zip(gradients(f, params, x, seed, mode), gradients(g, params, x, seed, mode))
        errors += [relative_error(a, b) for a, b in pairs]
    return differences, jnp.stack(errors)


def test_identity_intervention_and_capture_leave_output_and_derivatives_unchanged(float64):
    """The outputs are bitwise the program's. The derivatives agree to rounding: the interpreter evaluates
    `softplus`'s body (it holds a site) rather than calling its custom JVP rule, which is the true derivative
    computed another way (see `test_custom_derivative_rules_around_a_site_are_kept` for a rule that is not)."""
    case_seeds = seeds("identity")
    params, x, cotangent, direction, *_ = float64(draw_cases(draw_case, case_seeds))
    differences, errors = check_identity(params, x, cotangent, direction)
    assert_cases_within(differences, 0.0, case_seeds, "identity intervention / capture: output vs program")
    assert_cases_within(errors, 1e-10, case_seeds, "identity intervention / capture: derivatives vs program's")


# ------------------------------------------------------------------------------ custom derivative rules
@jax.custom_jvp
def straight_through_round(z):
    """`round(z)`, differentiated as the identity (a straight-through estimator), with a site inside."""
    return ji.tag(jnp.round(z), "rounded")


straight_through_round.defjvp(lambda primals, tangents: (straight_through_round(primals[0]), tangents[0]))


@jax.custom_vjp
def clip_gradient(z):
    """The identity, whose backward pass clips the cotangent to [-1, 1], with a site inside."""
    return ji.tag(z * 1.0, "clipped")


clip_gradient.defvjp(lambda z: (clip_gradient(z), None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))


CUSTOM_RULE_PROGRAMS = {
    "custom_jvp": lambda w, x: jnp.sum(jnp.tanh(straight_through_round(ji.tag(3.0 * x @ w, "pre"))) ** 2),
    "custom_vjp": lambda w, x: jnp.sum(clip_gradient(ji.tag(3.0 * x @ w, "pre")) ** 2),
}


@eqx.filter_jit
@eqx.filter_vmap
def check_custom_rules(w, x):
    """Per program of `CUSTOM_RULE_PROGRAMS`: the relative error of the gradient of an intervention outside the custom
    function (which enters it, since it holds a site, but rewrites nothing there) and of `capture`'s output against
    the program's gradient (which its custom rule defines)."""
    errors = []
    for f in CUSTOM_RULE_PROGRAMS.values():
        expected = jax.grad(f, argnums=(0, 1))(w, x)
        for wrapped in (ji.intervene(f, {"pre": lambda v: v}), lambda w, x, f=f: ji.capture(f)(w, x)[0]):
            got = jax.grad(wrapped, argnums=(0, 1))(w, x)
            errors += [relative_error(a, b) for a, b in zip(got, expected)]
    return jnp.stack(errors)


@functools.cache
def custom_rule_errors():
    def draw(rng):
        return rng.standard_normal((WIDTH, WIDTH)).astype(np.float32), rng.standard_normal(WIDTH).astype(np.float32)

    case_seeds = seeds("custom rules", 1000)
    return check_custom_rules(*draw_cases(draw, case_seeds)), case_seeds


@pytest.mark.parametrize("kind", sorted(CUSTOM_RULE_PROGRAMS))
def test_custom_derivative_rules_around_a_site_are_kept(kind):
    errors, case_seeds = custom_rule_errors()
    j = list(CUSTOM_RULE_PROGRAMS).index(kind)
    assert_cases_within(errors[:, 4 * j : 4 * j + 4], 1e-5, case_seeds, f"{kind}: gradient vs the custom rule's")
