import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings

import jaxinterp as ji
from tests.interpreter.program import X, clip_gradient, program


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


def test_intervention_must_keep_shape():
    with pytest.raises(ValueError, match="shape"):
        ji.intervene(program, {"h": lambda v: v[:2]})(X)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True)
@given(hnp.arrays(np.float32, st.integers(1, 6), elements=st.floats(-3, 3, width=32)))
def test_identity_intervention_and_capture_preserve_output(x):
    x = jnp.asarray(x)
    np.testing.assert_allclose(ji.intervene(program, {"*": lambda v: v})(x), program(x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ji.capture(program)(x)[0], program(x), rtol=1e-6, atol=1e-6)
