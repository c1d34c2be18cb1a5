import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

import jaxinterp as ji
from tests.interpreter.program import X, program, reference_sites


def test_capture_equals_hand_written_reference():
    out, cache = ji.capture(program)(X)
    np.testing.assert_allclose(out, program(X), rtol=1e-6)
    expected = reference_sites(X)
    assert set(cache) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(cache[name], value, rtol=1e-6, err_msg=name)


def test_capture_under_jit_and_vmap():
    _, cache = jax.jit(ji.capture(program, "carry", "h"))(X)
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


def test_capture_on_module_under_filter_jit(getkey):
    from models import MLP

    mlp = MLP(4, [8], 3, key=getkey())
    out, cache = eqx.filter_jit(ji.capture(mlp, "layers.0.post"))(jnp.ones(4))
    np.testing.assert_allclose(out, mlp(jnp.ones(4)), rtol=1e-6)
    assert cache["layers.0.post"].shape == (8,)
