import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji


def test_composites_match_plain_maths(getkey):
    x = jax.random.normal(getkey(), (5, 8))
    w, b = jax.random.normal(getkey(), (8,)), jax.random.normal(getkey(), (8,))
    mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(ji.layer_norm(x, w, b, 1e-5), (x - mean) / jnp.sqrt(var + 1e-5) * w + b, rtol=1e-5)
    rms = jnp.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(ji.rms_norm(x, w, 1e-6), x / rms * w, rtol=1e-5)
    np.testing.assert_allclose(ji.activation(x, "gelu_new"), jax.nn.gelu(x, approximate=True), rtol=1e-6)
    g = jax.grad(lambda x: ji.layer_norm(x, w, b, 1e-5).sum() ** 2)(x)
    g_ref = jax.grad(
        lambda x: ((x - x.mean(-1, keepdims=True)) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b).sum() ** 2
    )(x)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4)
    batched = jax.vmap(lambda r: ji.layer_norm(r, w, b, 1e-5))(x)
    np.testing.assert_allclose(batched, ji.layer_norm(x, w, b, 1e-5), rtol=1e-6)
