import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp
from models import FNO, ConvolutionalOperator, SpectralConvolution


def _band_limited(n: int) -> jnp.ndarray:
    """A periodic function with wavenumbers up to 5, sampled on `n` points of [0, 1)."""
    x = jnp.arange(n) / n
    return (jnp.sin(2 * jnp.pi * x) + 0.5 * jnp.cos(6 * jnp.pi * x) + 0.3 * jnp.sin(10 * jnp.pi * x + 1.0))[None]


def test_fno_is_discretisation_invariant_on_a_band_limited_input(getkey):
    """The spectral convolution of a band-limited function is the same function on every grid (to rounding); the
    whole FNO differs between grids only by what its activations alias, within 2e-3 of its output's size."""
    model = FNO(1, 1, width=16, modes=8, depth=3, ndim=1, grid="periodic", key=getkey())
    spectral = eqx.filter_jit(model.spectral[0])
    coarse = jnp.tile(_band_limited(64), (16, 1))
    fine = jnp.tile(_band_limited(256), (16, 1))
    np.testing.assert_allclose(spectral(fine)[:, ::4], spectral(coarse), atol=1e-5)
    out64, out256 = eqx.filter_jit(model)(_band_limited(64)), eqx.filter_jit(model)(_band_limited(256))
    assert float(jnp.max(jnp.abs(out256[:, ::4] - out64)) / jnp.max(jnp.abs(out256))) < 2e-3
    # in 2-D, on a vertex grid with padding, the FNO runs on any grid and keeps its output's shape
    model2 = FNO(1, 1, width=4, modes=3, depth=2, ndim=2, grid="vertex", padding=0.125, key=getkey())
    assert eqx.filter_eval_shape(model2, jnp.ones((1, 17, 17))).shape == (1, 17, 17)
    assert eqx.filter_eval_shape(model2, jnp.ones((1, 9, 9))).shape == (1, 9, 9)


def test_spectral_convolution_in_2d_is_exact_across_grids(getkey):
    layer = SpectralConvolution(2, 3, 4, 2, key=getkey())

    def f(n):
        x = jnp.arange(n) / n
        X, Y = jnp.meshgrid(x, x, indexing="ij")
        return jnp.stack([jnp.sin(2 * jnp.pi * (X + 2 * Y)), jnp.cos(2 * jnp.pi * (3 * X - Y))])

    layer_jit = eqx.filter_jit(layer)
    np.testing.assert_allclose(layer_jit(f(32))[:, ::2, ::2], layer_jit(f(16)), atol=1e-5)
    # the layer is linear, so `cd` through its Fourier transforms gives the layer of the selected part exactly
    mask = jnp.zeros((2, 16, 16)).at[0].set(1.0)
    rel, irr = eqx.filter_jit(jaxinterp.cd(layer, jaxinterp.Input(0, mask)))(f(16))
    np.testing.assert_allclose(rel, layer_jit(f(16) * mask), atol=1e-5)
    np.testing.assert_allclose(irr, layer_jit(f(16) * (1 - mask)), atol=1e-5)
    with pytest.raises(ValueError, match="fewer than 2 \\* modes"):
        layer(jnp.ones((2, 6, 6)))


def test_convolutional_operator_resamples_its_kernels(getkey):
    model = ConvolutionalOperator(
        1, 1, width=2, kernel_size=3, depth=1, ndim=1, grid="periodic", base_points=16, key=getkey()
    )
    kernel = jnp.array([[[1.0, 3.0, -1.0]]])
    np.testing.assert_allclose(model.resampled_kernel(kernel, 2.0), [[[0.5, 1.0, 1.5, 0.5, -0.5]]], rtol=1e-6)
    np.testing.assert_allclose(model.resampled_kernel(kernel, 1.0), kernel)
    assert model.scale(64) == 4.0 and eqx.filter_eval_shape(model, jnp.ones((1, 64))).shape == (1, 64)
    with pytest.raises(ValueError, match="even integer"):
        model(jnp.ones((1, 24)))
    # on the training grid the operator and the plain CNN are one network
    x = _band_limited(16)
    np.testing.assert_array_equal(eqx.filter_jit(model)(x), eqx.filter_jit(model)(x, resample=False))


def test_capture_intervene_and_cd_on_the_neural_operators(getkey):
    model = FNO(1, 1, width=8, modes=4, depth=2, ndim=1, grid="periodic", key=getkey())
    a = _band_limited(32)
    out, sites = eqx.filter_jit(jaxinterp.capture(model, "lift", "layers.*"))(a)
    np.testing.assert_allclose(sites["layers.0.spectral"], model.spectral[0](sites["lift"]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        sites["layers.1.post"], sites["layers.1.spectral"] + sites["layers.1.pointwise"], atol=1e-6
    )
    # without the Fourier paths the operator is pointwise (it sees its input and the grid coordinates at each point),
    # so two inputs equal on a stretch of the grid give equal outputs there
    local = eqx.filter_jit(jaxinterp.intervene(model, {"layers.*.spectral": lambda k: jnp.zeros_like(k)}))
    b = a.at[:, 5:].set(0.0)
    np.testing.assert_allclose(local(a)[:, :5], local(b)[:, :5], rtol=1e-6)
    assert float(jnp.max(jnp.abs(eqx.filter_jit(model)(a)[:, :5] - eqx.filter_jit(model)(b)[:, :5]))) > 1e-4
    mask = (jnp.arange(32) < 16).astype(jnp.float32)[None]
    rel, irr = eqx.filter_jit(jaxinterp.cd(model, jaxinterp.Input(0, mask)))(a)
    np.testing.assert_allclose(rel + irr, out, rtol=1e-5, atol=1e-6)
    cnn = ConvolutionalOperator(
        1, 1, width=4, kernel_size=3, depth=2, ndim=2, grid="vertex", base_points=9, key=getkey()
    )
    grid = jnp.ones((1, 17, 17))
    rel, irr = eqx.filter_jit(jaxinterp.cd(cnn, jaxinterp.Input(0, None)))(grid)
    np.testing.assert_allclose(rel + irr, eqx.filter_jit(cnn)(grid), rtol=1e-5, atol=1e-6)
    assert "layers.1.pre" in jaxinterp.site_names(cnn, grid)
