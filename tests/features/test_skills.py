import jax
import numpy as np
import pytest

from jaxinterp import features


def test_the_skill_basis_is_orthonormal_and_finds_planted_axes_of_variation():
    rng = np.random.default_rng(0)
    axes = np.linalg.qr(rng.normal(size=(16, 3)))[0].T  # three orthonormal planted directions
    coefficients = rng.normal(size=(500, 3)) * np.array([5.0, 3.0, 2.0])
    pooled = 1.0 + coefficients @ axes + 0.01 * rng.normal(size=(500, 16))
    basis = features.skill_basis(pooled, 3)
    np.testing.assert_allclose(basis.directions @ basis.directions.T, np.eye(3), atol=1e-5)
    np.testing.assert_allclose(np.abs(basis.directions @ axes.T), np.eye(3), atol=0.03)
    np.testing.assert_allclose(basis.scale, coefficients.std(0, ddof=1), rtol=0.02)
    assert np.all(np.diff(np.asarray(basis.explained)) <= 0) and float(basis.explained.sum()) <= 1.0
    scores = basis.scores(pooled)
    np.testing.assert_allclose(np.abs(np.corrcoef(scores.T, coefficients.T)[:3, 3:]), np.eye(3), atol=0.03)


def test_the_basis_is_orthonormal_for_many_random_activation_sets():
    def error(key):
        pooled = jax.random.normal(key, (40, 12)) * jax.random.uniform(key, (12,), minval=0.1, maxval=3.0)
        directions = features.skill_basis(pooled, 6).directions
        return np.abs(np.asarray(directions @ directions.T) - np.eye(6)).max()

    assert max(error(k) for k in jax.random.split(jax.random.key(0), 50)) < 1e-5


def test_selection_along_a_direction_and_for_coverage():
    scores = np.array([[0.0, 5.0], [3.0, 0.0], [-4.0, 1.0], [1.0, -2.0], [2.0, 2.0], [-1.0, -3.0]])
    np.testing.assert_array_equal(features.select_along(scores[:, 0], 2), [1, 4])
    np.testing.assert_array_equal(features.select_along(scores[:, 0], 2, sign=-1), [2, 5])
    covered = features.select_for_coverage(scores, 4)
    # the highest and lowest on direction 0, then on direction 1
    np.testing.assert_array_equal(covered, [1, 2, 0, 5])
    assert len(set(features.select_for_coverage(scores, 6).tolist())) == 6
    with pytest.raises(ValueError, match="size"):
        features.select_along(scores[:, 0], 7)
