"""Scores of generated paths: marginal distances and modes, the discriminative and the predictive score."""

import jax
import numpy as np
import pytest

from jaxinterp.dynamics import discriminative_score, marginal_modes, marginal_wasserstein, predictive_score


def test_marginal_wasserstein_of_a_translation_is_the_shift():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(500, 4, 2))
    shift = np.array([0.0, 0.5, 1.0, 2.0])[None, :, None]
    np.testing.assert_allclose(marginal_wasserstein(real, real + shift), np.broadcast_to(shift[0], (4, 2)), atol=1e-6)
    with pytest.raises((ValueError, TypeError), match="paths"):
        marginal_wasserstein(real[0], real[0])


def test_marginal_modes_finds_both_modes_of_a_mixture_and_one_of_a_gaussian():
    rng = np.random.default_rng(1)
    mixture = np.concatenate([rng.normal(-0.8, 0.15, 1000), rng.normal(0.8, 0.15, 600)])
    modes = marginal_modes(mixture)
    assert len(modes) == 2 and np.all(np.abs(modes - np.array([-0.8, 0.8])) < 0.1)
    assert len(marginal_modes(rng.normal(0.3, 1.0, 2000))) == 1
    with pytest.raises(ValueError, match="finite"):
        marginal_modes(np.array([0.0, np.nan]))


def test_discriminative_and_predictive_scores_tell_a_different_law_from_the_same():
    rng = np.random.default_rng(2)

    def ar_paths(n, phi):
        x = np.zeros((n, 8, 1), np.float32)
        for i in range(1, 8):
            x[:, i] = phi * x[:, i - 1] + 0.3 * rng.normal(size=(n, 1))
        return x

    real, same, other = ar_paths(200, 0.9), ar_paths(200, 0.9), ar_paths(200, -0.9) + 1.0
    key = jax.random.key(0)
    assert discriminative_score(real, same, key=key, steps=60) < 0.1
    assert discriminative_score(real, other, key=key, steps=60) > 0.4
    # trained on paths of the right law the predictor beats one trained on the wrong law
    assert predictive_score(same, real, key=key, steps=60) < 0.8 * predictive_score(other, real, key=key, steps=60)
