import numpy as np
import pytest
import scipy.linalg

from jaxinterp.generative_metrics import frechet_distance, kernel_distance, nearest_neighbour_distances


def test_frechet_distance_matches_the_matrix_square_root_formula():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))
    b = 0.5 + rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b).real
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(cov_a + cov_b - 2 * root)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_of_large_gaussian_samples_approaches_the_closed_form():
    rng = np.random.default_rng(1)
    n = 50_000
    mean_a, mean_b = np.zeros(3), np.array([1.0, -0.5, 0.0])
    std_a, std_b = np.array([1.0, 2.0, 0.5]), np.array([1.5, 1.0, 0.5])
    a = mean_a + std_a * rng.normal(size=(n, 3))
    b = mean_b + std_b * rng.normal(size=(n, 3))
    # Diagonal covariances commute: FID = |dmu|^2 + sum (s_a - s_b)^2 = 1.25 + 1.25.
    exact = np.sum((mean_a - mean_b) ** 2) + np.sum((std_a - std_b) ** 2)
    # Sample means and standard deviations are off by O(1/sqrt(n)) ~ 0.005 per coordinate.
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.05)


def _mmd2_unbiased(x, y):
    d = x.shape[1]
    m = x.shape[0]

    def k(u, v):
        return (u @ v / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kernel_distance_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 4))
    y = 0.3 + rng.normal(size=(30, 4))
    value, spread = kernel_distance(x, y, num_subsets=3, subset_size=30)
    # Subsets of the full size are permutations, and the statistic does not depend on order.
    assert value == pytest.approx(_mmd2_unbiased(x, y), rel=1e-10)
    assert spread == pytest.approx(0.0, abs=1e-10)


def test_kernel_distance_is_unbiased_for_equal_distributions_and_positive_for_different_ones():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2000, 8))
    y = rng.normal(size=(2000, 8))
    z = 0.5 + rng.normal(size=(2000, 8))
    same, same_spread = kernel_distance(x, y, num_subsets=100, subset_size=200)
    different, _ = kernel_distance(x, z, num_subsets=100, subset_size=200)
    # The mean of 100 subset estimates has standard error spread / 10.
    assert abs(same) < 4 * same_spread / 10
    assert different > 10 * same_spread


def test_nearest_neighbour_distances_match_brute_force_and_find_copies():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=(500, 16))
    samples = np.concatenate([rng.normal(size=(40, 16)), reference[[7, 123, 499]]])
    distances, indices = nearest_neighbour_distances(samples, reference, chunk_size=16)
    brute = np.linalg.norm(samples[:, None, :] - reference[None, :, :], axis=-1)
    np.testing.assert_allclose(distances, brute.min(axis=1), rtol=1e-7, atol=1e-6)
    np.testing.assert_array_equal(indices, brute.argmin(axis=1))
    np.testing.assert_array_equal(indices[-3:], [7, 123, 499])
    np.testing.assert_allclose(distances[-3:], 0.0, atol=1e-6)
