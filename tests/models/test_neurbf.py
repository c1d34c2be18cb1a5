import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp
from models.neurbf import SIREN, FourierFeatureMLP, GridField, NeuRBF, kernel_centres, parameter_count


def _single_kernel(centre, shape):
    model = NeuRBF(
        centre[None],
        1.0,
        1,
        n_features=1,
        n_neighbours=1,
        rbf_frequency_range=None,
        normalise=False,
        hidden_sizes=(),
        decoder_frequency_range=None,
        key=jax.random.key(0),
    )
    return eqx.tree_at(lambda m: (m.shapes, m.weights), model, (shape[None], jnp.ones((1, 1))))


def test_neurbf_interpolates_a_single_radial_basis_exactly(getkey):
    """A target that is one inverse-quadratic basis, `a / (1 + |A (x - c)|^2) + b`, is reproduced to rounding by a
    one-kernel NeuRBF at `c` with shape `A` once its linear read-out is fitted to samples of the target."""
    centre = jax.random.uniform(getkey(), (2,), minval=0.2, maxval=0.8)
    shape = 4.0 * jnp.eye(2) + jax.random.normal(getkey(), (2, 2))
    a, b = 1.7, -0.3

    def target(x):
        return a / (1.0 + jnp.sum(jnp.square(shape @ (x - centre)))) + b

    model = _single_kernel(centre, shape)
    train_points = jax.random.uniform(getkey(), (32, 2))
    _, cache = jax.vmap(jaxinterp.capture(model, "features"))(train_points)
    design = jnp.concatenate([cache["features"], jnp.ones((32, 1))], axis=1)
    solution = jnp.linalg.lstsq(design, jax.vmap(target)(train_points))[0]
    fitted = eqx.tree_at(
        lambda m: (m.decoder.layers[0].weight, m.decoder.layers[0].bias),
        model,
        (solution[:1][None], solution[1:]),
    )
    test_points = jax.random.uniform(getkey(), (200, 2))
    np.testing.assert_allclose(jax.vmap(fitted)(test_points)[:, 0], jax.vmap(target)(test_points), atol=2e-5)
    np.testing.assert_allclose(solution, [a, b], rtol=1e-4)


def test_neurbf_features_are_the_sinusoid_composition_of_the_nearest_bases(getkey):
    centres = jax.random.uniform(getkey(), (10, 2))
    model = NeuRBF(centres, 0.2, 3, n_features=5, n_neighbours=3, grid_resolutions=(4, 8), key=getkey())
    x = jnp.array([0.4, 0.7])
    _, cache = jaxinterp.capture(model, "rbf.*", "grid.features")(x)
    nearest = np.argsort(np.sum((np.asarray(centres) - np.asarray(x)) ** 2, axis=1))[:3]
    phi = 1.0 / (1.0 + np.sum((np.asarray(x) - np.asarray(centres)[nearest]) ** 2, axis=1) / 0.2**2)
    phi = phi / phi.sum()
    omega = np.exp2(np.linspace(-3, 12, 5))
    expected = np.sum(np.asarray(model.weights)[nearest] * np.sin(phi[:, None] * omega[None]), axis=0)
    np.testing.assert_allclose(np.sort(cache["rbf.neighbours"]), np.sort(phi), rtol=1e-5)
    np.testing.assert_allclose(cache["rbf.features"], expected, rtol=1e-4, atol=1e-9)
    assert cache["grid.features"].shape == (4,)


def test_cd_capture_and_intervene_on_neurbf(getkey):
    model = NeuRBF(jax.random.uniform(getkey(), (12, 2)), 0.2, 3, n_features=4, grid_resolutions=(4,), key=getkey())
    model = eqx.tree_at(lambda m: m.weights, model, jax.random.normal(getkey(), model.weights.shape))
    x = jnp.array([0.25, 0.6])
    rel, irr = jaxinterp.cd(model, jaxinterp.Site("rbf.features"))(x)
    np.testing.assert_allclose(rel + irr, model(x), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(jnp.abs(rel))) > 1e-3
    without_grid = jaxinterp.intervene(model, {"grid.features": lambda v: jnp.zeros_like(v)})(x)
    zeroed = eqx.tree_at(lambda m: m.grid.values, model, tuple(jnp.zeros_like(v) for v in model.grid.values))
    np.testing.assert_allclose(without_grid, zeroed(x), rtol=1e-6)


def test_fields_batch_and_count_their_parameters(getkey):
    in_dim = 3
    points = jax.random.uniform(getkey(), (5, in_dim))
    fields = [
        NeuRBF(jax.random.uniform(getkey(), (8, in_dim)), 0.3, 2, grid_resolutions=(3, 5), key=getkey()),
        GridField(in_dim, 2, (3, 5), key=getkey()),
        FourierFeatureMLP(in_dim, 2, (8, 8), n_frequencies=6, key=getkey()),
        SIREN(in_dim, 2, (8, 8), key=getkey()),
    ]
    for field in fields:
        out = jax.vmap(field)(points)
        assert out.shape == (5, 2) and bool(jnp.all(jnp.isfinite(out)))
        leaves = jax.tree.leaves(eqx.filter(field, eqx.is_inexact_array))
        fixed = 6 * in_dim if isinstance(field, FourierFeatureMLP) else 0
        assert parameter_count(field) == sum(leaf.size for leaf in leaves) - fixed
        assert parameter_count(eqx.filter_eval_shape(lambda f=field: f)) == parameter_count(field)
    with pytest.raises((ValueError, TypeError), match="one point"):
        fields[0](points)


def test_kernel_centres_gather_where_the_importance_is():
    rng = np.random.default_rng(0)
    points = rng.random((1000, 2))
    importance = (points[:, 0] > 0.5).astype(float)
    centres, widths = kernel_centres(points, importance, 20)
    assert centres.shape == (20, 2) and widths.shape == (20,) and np.all(widths > 0)
    assert np.mean(centres[:, 0] > 0.5) >= 0.9
    with pytest.raises(ValueError, match="n_kernels"):
        kernel_centres(points, importance, 0)
