"""The rule table: registering rules for primitives and composites, and the errors `cd` gives on bad input."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend.core import Primitive
from jax.interpreters import mlir

import jaxinterp as ji


def _primitive(name, fn):
    """A new primitive evaluating `fn` elementwise, with no contextual-decomposition rule of its own."""
    prim = Primitive(name)
    prim.def_impl(fn)
    prim.def_abstract_eval(lambda x: x)
    mlir.register_lowering(prim, mlir.lower_fun(fn, multiple_results=False))
    return prim


softplus_p = _primitive("test_softplus", jax.nn.softplus)
cube_p = _primitive("test_cube", lambda x: x**3)


def test_a_primitive_without_rule_is_an_error_naming_it_and_the_site_unless_fallback():
    def f(x):
        return softplus_p.bind(ji.tag(x * 2.0, "doubled"))

    x = jnp.array([0.5, -1.0])
    with pytest.raises(ji.UnsupportedOperationError, match="'test_softplus'.*'doubled'.*register_cd_rule"):
        ji.cd(f, ji.Input(0))(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rel, irr = ji.cd(f, ji.Input(0), fallback="irrelevant")(x)
    assert any("test_softplus" in str(w.message) for w in caught)
    np.testing.assert_allclose(rel + irr, f(x), rtol=1e-6)
    np.testing.assert_array_equal(rel, 0.0)


def test_registered_primitive_rule_is_used():
    seen = []

    @ji.register_cd_rule(cube_p)
    def _(eqn, x):
        seen.append(eqn.name)
        irr = eqn.bind_one(x.irr)
        return [ji.Pair(eqn.bind_one(x.rel + x.irr) - irr, irr)]

    x, mask = jnp.array([0.5, -1.0, 2.0]), jnp.array([1.0, 0.0, 1.0])
    rel, irr = ji.cd(lambda v: cube_p.bind(v) + 1.0, ji.Input(0, mask))(x)
    assert seen == ["test_cube"]
    np.testing.assert_allclose(rel + irr, x**3 + 1.0, rtol=1e-6)
    np.testing.assert_allclose(irr[1], x[1] ** 3 + 1.0, rtol=1e-6)
    assert ji.cdt.rule_table.primitive_rule("test_cube") is not None


def test_registered_composite_rule_replaces_the_primitive_walk():
    def my_norm(x):
        return ji.composite("test_unit_norm", lambda v: v / jnp.linalg.norm(v), x, note="unit")

    @ji.register_composite_rule("test_unit_norm")
    def _(eqn, x):
        assert eqn.options == {"note": "unit"}
        norm = jnp.linalg.norm(x.rel + x.irr)
        return [ji.Pair(x.rel / norm, x.irr / norm)]

    x, mask = jnp.array([3.0, 4.0]), jnp.array([1.0, 0.0])
    rel, irr = ji.cd(my_norm, ji.Input(0, mask))(x)
    np.testing.assert_allclose(rel, [0.6, 0.0])
    np.testing.assert_allclose(irr, [0.0, 0.8])
    np.testing.assert_allclose(my_norm(x), [0.6, 0.8])
    np.testing.assert_allclose(jax.grad(lambda v: my_norm(v)[0])(x), [0.128, -0.096], rtol=1e-5)


def test_an_unregistered_composite_is_decomposed_primitive_by_primitive():
    def f(x):
        return ji.composite("test_unregistered", lambda v: (jnp.tanh(v), v * 2.0), x)

    x, mask = jnp.array([0.3, -0.7]), jnp.array([1.0, 0.0])
    (rel_a, rel_b), (irr_a, _irr_b) = ji.cd(f, ji.Input(0, mask))(x)
    np.testing.assert_allclose(rel_a + irr_a, jnp.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(rel_b, 2.0 * mask * x)


def test_every_primitive_of_standard_model_code_has_a_rule():
    names = set(ji.cdt.rule_table.primitives_with_rules())
    for name in ["dot_general", "conv_general_dilated", "div", "exp", "log", "rsqrt", "pow", "reduce_max",
                 "reduce_window_max", "reduce_window_sum", "stop_gradient", "select_n", "gather", "scatter-add",
                 "cumsum", "sort", "logistic", "erf", "integer_pow", "clamp", "argmax"]:  # fmt: skip
        assert name in names, name


def test_a_raw_mask_as_source_says_what_to_write():
    with pytest.raises(TypeError, match=r"Input\(argnum, mask\).*Site\("):
        ji.cd(jnp.sin, jnp.ones(3))
    with pytest.raises(TypeError, match="Site or jaxinterp.Input"):
        ji.cd(jnp.sin, [ji.Input(0), "args.0"])
    with pytest.raises(ValueError, match="at least one source"):
        ji.cd(jnp.sin, [])


def test_a_mask_that_does_not_broadcast_names_the_site_and_both_shapes():
    f = lambda x: ji.tag(x * 2.0, "h").sum()
    with pytest.raises(ValueError, match=r"shape \(4,\).*site 'h', of shape \(3,\)"):
        ji.cd(f, ji.Site("h", jnp.ones(4)))(jnp.ones(3))
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*argument 0, of shape \(3,\)"):
        ji.cd(f, ji.Input(0, jnp.ones((2, 3))))(jnp.ones(3))
    with pytest.raises(ValueError, match="reference mean"):
        ji.cd(f, ji.Site("h", mean=jnp.ones(5)))(jnp.ones(3))


def test_an_input_on_token_ids_says_to_use_the_embedding():
    table = jnp.ones((10, 4))
    with pytest.raises(TypeError, match=r"int32 values.*Site\('embed'"):
        ji.cd(lambda ids: table[ids].sum(), ji.Input(0))(jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match="called with 1"):
        ji.cd(lambda x: x, ji.Input(2))(jnp.ones(3))


def test_nan_in_the_inputs_is_an_error_and_under_jit_on_request_and_inf_propagates():
    f = lambda x: jnp.tanh(x) * 2.0
    bad = jnp.array([0.5, jnp.nan])
    with pytest.raises(ValueError, match=r"input 0 of f \(shape \(2,\)\) contains NaN"):
        ji.cd(f, ji.Input(0))(bad)
    with pytest.raises(ValueError, match="contains NaN"):
        jax.vmap(lambda m: ji.cd(f, ji.Input(0, m))(bad))(jnp.eye(2))
    with pytest.raises(Exception, match="contains NaN"):
        jax.block_until_ready(jax.jit(ji.cd(f, ji.Input(0), check_nan=True))(bad))
    rel, irr = eqx.filter_jit(ji.cd(f, ji.Input(0, jnp.array([1.0, 0.0]))))(bad)
    assert np.isnan(irr[1]) and rel[1] == 0.0 and rel[0] + irr[0] == pytest.approx(float(f(bad)[0]))
    rel, irr = ji.cd(f, ji.Input(0, jnp.array([1.0, 0.0])))(jnp.array([jnp.inf, -jnp.inf]))
    np.testing.assert_array_equal(rel + irr, [2.0, -2.0])


def test_bad_fallback_and_rules_are_rejected():
    with pytest.raises(ValueError, match="fallback"):
        ji.cd(jnp.sin, ji.Input(0), fallback="zero")
    with pytest.raises(TypeError, match="jaxinterp.Rules"):
        ji.cd(jnp.sin, ji.Input(0), rules={"activation": "cdt"})


def test_cd_returns_a_pair_with_and_without_targets():
    f = lambda x: ji.tag(x * 3.0, "h") + 1.0
    out = ji.cd(f, ji.Input(0))(jnp.ones(2))
    assert isinstance(out, ji.Pair)
    np.testing.assert_allclose(out.total, f(jnp.ones(2)))
    targeted = ji.cd(f, ji.Input(0), targets="h")(jnp.ones(2))
    assert isinstance(targeted, ji.Pair) and set(targeted.rel) == {"h"}
    np.testing.assert_allclose(targeted.rel["h"], 3.0)
