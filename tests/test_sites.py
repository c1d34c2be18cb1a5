import equinox as eqx
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

import jaxinterp as ji


def program(x):
    """Tags at top level, inside a nested jit, a custom_jvp (relu), a custom_vjp, a scan and a while loop."""
    h = ji.tag(jnp.sin(x), "h")
    h = jax.jit(lambda z: ji.tag(z * 2.0, "inner"))(h)
    h = jax.nn.relu(ji.tag(h - 0.5, "pre_relu"))
    h = clip_gradient(ji.tag(h, "before_vjp"))

    def body(carry, xi):
        carry = ji.tag(carry * 0.5 + xi, "carry")
        return carry, carry**2

    last, ys = lax.scan(body, jnp.zeros(()), h)
    return last + ys.sum()


@jax.custom_vjp
def clip_gradient(x):
    return x


clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (jnp.clip(g, -1.0, 1.0),))


def reference_sites(x):
    h = jnp.sin(x)
    inner = h * 2.0
    pre = inner - 0.5
    post = jnp.maximum(pre, 0.0)
    carries, carry = [], 0.0
    for xi in post:
        carry = carry * 0.5 + xi
        carries.append(carry)
    return {"h": h, "inner": inner, "pre_relu": pre, "before_vjp": post, "carry": jnp.stack(carries)}


X = jnp.array([0.3, 1.2, -0.7, 2.0])


def test_capture_equals_hand_written_reference():
    out, cache = ji.capture(program)(X)
    np.testing.assert_allclose(out, program(X), rtol=1e-6)
    expected = reference_sites(X)
    assert set(cache) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(cache[name], value, rtol=1e-6, err_msg=name)


def test_capture_under_jit_and_vmap():
    out, cache = jax.jit(ji.capture(program, "carry", "h"))(X)
    np.testing.assert_allclose(cache["carry"], reference_sites(X)["carry"], rtol=1e-6)
    batch = jnp.stack([X, X * 2, -X])
    outs, caches = jax.vmap(ji.capture(program, "inner"))(batch)
    for row, x in enumerate(batch):
        np.testing.assert_allclose(caches["inner"][row], reference_sites(x)["inner"], rtol=1e-6)
        np.testing.assert_allclose(outs[row], program(x), rtol=1e-6)


def test_capture_glob_patterns_span_dots():
    def f(x):
        for layer in range(3):
            x = ji.tag(x + layer, f"blocks.{layer}.attn.z")
            x = ji.tag(x * 2, f"blocks.{layer}.mlp.out")
        return x

    _, cache = ji.capture(f, "blocks.*.attn.z")(jnp.ones(2))
    assert list(cache) == ["blocks.0.attn.z", "blocks.1.attn.z", "blocks.2.attn.z"]
    np.testing.assert_allclose(cache["blocks.1.attn.z"], (1 + 0) * 2 + 1)


def test_capture_inside_while_loop_keeps_last_iteration():
    def f(x):
        def body(state):
            i, v = state
            return i + 1, ji.tag(v * 2.0, "doubled")

        return lax.while_loop(lambda s: s[0] < 3, body, (0, x))[1]

    out, cache = ji.capture(f)(jnp.float32(1.5))
    assert out == 12.0 and cache["doubled"] == 12.0


def test_intervene_matches_rewritten_function_and_grad():
    patched = ji.intervene(program, {"inner": lambda v: v * 3.0})

    def by_hand(x):
        post = clip_gradient(jnp.maximum(jnp.sin(x) * 2.0 * 3.0 - 0.5, 0.0))
        carry, total = 0.0, 0.0
        for xi in post:
            carry = carry * 0.5 + xi
            total = total + carry**2
        return carry + total

    np.testing.assert_allclose(patched(X), by_hand(X), rtol=1e-5)
    np.testing.assert_allclose(jax.grad(patched)(X), jax.grad(by_hand)(X), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jax.jit(patched)(X), by_hand(X), rtol=1e-5)


def test_intervene_receives_site_name_and_vmaps_over_what_to_patch():
    seen = []

    def record(value, name):
        seen.append(name)
        return value

    ji.intervene(program, {"*": record})(X)
    assert seen == ["h", "inner", "pre_relu", "before_vjp", "carry"]

    def zero_one(i):
        return ji.intervene(program, {"h": lambda v: v.at[i].set(0.0)})(X)

    swept = jax.vmap(zero_one)(jnp.arange(4))
    looped = jnp.stack([zero_one(i) for i in range(4)])
    np.testing.assert_allclose(swept, looped, rtol=1e-6)


def test_unknown_site_names_the_closest():
    with pytest.raises(ji.UnknownSiteError, match="Closest sites: carry"):
        ji.capture(program, "carr")(X)
    with pytest.raises(ji.UnknownSiteError, match="inner"):
        ji.intervene(program, {"iner": lambda v: v})(X)


def test_intervention_must_keep_shape():
    with pytest.raises(ValueError, match="shape"):
        ji.intervene(program, {"h": lambda v: v[:2]})(X)


def test_site_names_lists_in_program_order():
    assert ji.site_names(program, X) == ["h", "inner", "pre_relu", "before_vjp", "carry"]


def test_tag_is_free_under_jit():
    f = jax.jit(lambda x: ji.tag(x, "a") * 2)
    assert "jaxinterp_tag" not in f.lower(X).as_text()


def test_composites_match_plain_maths(getkey):
    x = jax.random.normal(getkey(), (5, 8))
    w, b = jax.random.normal(getkey(), (8,)), jax.random.normal(getkey(), (8,))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ji.layer_norm(x, w, b, 1e-5), (x - mean) / jnp.sqrt(var + 1e-5) * w + b, rtol=1e-5)
    rms = jnp.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(ji.rms_norm(x, w, 1e-6), x / rms * w, rtol=1e-5)
    np.testing.assert_allclose(ji.activation(x, "gelu_new"), jax.nn.gelu(x, approximate=True), rtol=1e-6)
    g = jax.grad(lambda x: ji.layer_norm(x, w, b, 1e-5).sum() ** 2)(x)
    g_ref = jax.grad(lambda x: ((x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b).sum() ** 2)(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4)
    batched = jax.vmap(lambda r: ji.layer_norm(r, w, b, 1e-5))(x)
    np.testing.assert_allclose(batched, ji.layer_norm(x, w, b, 1e-5), rtol=1e-6)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, st.integers(1, 6), elements=st.floats(-3, 3, width=32)))
def test_identity_intervention_and_capture_preserve_output(x):
    x = jnp.asarray(x)
    np.testing.assert_allclose(ji.intervene(program, {"*": lambda v: v})(x), program(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ji.capture(program)(x)[0], program(x), rtol=1e-6, atol=1e-6)


def test_capture_on_module_under_filter_jit(getkey):
    from models import MLP

    mlp = MLP(4, [8], 3, key=getkey())
    out, cache = eqx.filter_jit(ji.capture(mlp, "layers.0.post"))(jnp.ones(4))
    np.testing.assert_allclose(out, mlp(jnp.ones(4)), rtol=1e-6)
    assert cache["layers.0.post"].shape == (8,)
