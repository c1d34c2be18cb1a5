import numpy as np
import pytest
from scipy.stats import ortho_group

from jaxinterp import compare


def _simplex_etf(k=4, d=7, seed=0):
    """`k` class means forming a simplex ETF in `d` dimensions, plus an offset (the global mean)."""
    frame = np.sqrt(k / (k - 1)) * (np.eye(k) - np.ones((k, k)) / k)
    basis = ortho_group.rvs(d, random_state=seed)[:k]
    return 2.5 * frame @ basis


def test_the_metrics_of_a_collapsed_simplex_etf_are_zero():
    means = _simplex_etf()
    offset = np.linspace(-1.0, 1.0, 7)
    labels = np.repeat(np.arange(4), 30)
    features = means[labels] + offset
    metrics = compare.collapse_metrics(features, labels, classifier=0.3 * means, bias=-0.3 * means @ offset)
    assert metrics["nc1"] == pytest.approx(0.0, abs=1e-12)
    for name in ("nc2_equinorm", "nc2_equiangular", "nc2_max_angle", "nc2_etf_distance", "nc3", "nc4"):
        assert metrics[name] == pytest.approx(0.0, abs=1e-10), name
    assert metrics["nc2_max_abs_cosine"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(metrics["mean_norms"], 2.5)
    np.testing.assert_allclose(metrics["classifier_mean_cosines"], 1.0)
    assert metrics["counts"] == [30] * 4


def test_the_metrics_of_a_perturbed_etf_are_not_zero():
    rng = np.random.default_rng(0)
    means = _simplex_etf()
    labels = np.repeat(np.arange(4), 30)
    features = means[labels] + 0.3 * rng.normal(size=(120, 7))
    skewed = means.copy()
    skewed[0] *= 1.5
    skewed[1] += 0.5 * skewed[2]
    metrics = compare.collapse_metrics(features, labels, classifier=skewed + 0.5 * rng.normal(size=(4, 7)))
    assert metrics["nc1"] > 1e-3 and metrics["nc3"] > 1e-2
    assert compare.nc4(features + 1.5 * rng.normal(size=(120, 7)), skewed, None, means) > 0
    spread = compare.nc2(skewed)
    assert all(spread[name] > 1e-2 for name in ("equinorm", "equiangular", "max_angle", "etf_distance"))
    # isotropic within-class noise of variance s^2: NC1 = s^2 Tr(S_B^+) / K, with S_B's 3 nonzero eigenvalues
    # 2.5^2 / 3 for this ETF, i.e. 0.36 s^2
    assert metrics["nc1"] == pytest.approx(0.36 * 0.3**2, rel=0.25)
    assert compare.nc1(means[labels] + rng.normal(size=(120, 7)), labels) == pytest.approx(0.36, rel=0.25)


def test_orthogonal_means_of_unequal_lengths_for_the_imbalanced_bias_free_case():
    basis = ortho_group.rvs(6, random_state=0)[:3]
    means = np.array([[3.0], [2.0], [1.0]]) * basis
    labels = np.repeat(np.arange(3), [30, 20, 10])
    metrics = compare.collapse_metrics(means[labels], labels, np.array([[0.5], [1.0], [2.0]]) * basis, centre="none")
    np.testing.assert_allclose(metrics["classifier_mean_cosines"], 1.0)  # aligned, though not proportional
    assert metrics["nc3"] > 0.1 and metrics["nc4"] == 0.0
    np.testing.assert_allclose(metrics["mean_norms"], [3.0, 2.0, 1.0])
    result = compare.nc2(means, centre="none")
    assert result["max_abs_cosine"] == pytest.approx(0.0, abs=1e-12)
    assert result["equinorm"] > 0.3
    centred = compare.nc2(means)  # centring orthogonal means of unequal lengths does not give a simplex ETF
    assert centred["etf_distance"] > 0.05


def test_bad_inputs_are_named():
    features = np.zeros((6, 2))
    with pytest.raises(ValueError, match=r"classes \[1\] have no examples"):
        compare.nc1(features, np.array([0, 0, 2, 2, 0, 2]))
    with pytest.raises(ValueError, match="labels must be integers"):
        compare.class_means(features, np.zeros(5, dtype=int))
    with pytest.raises(ValueError, match="centre must be one of"):
        compare.nc2(np.eye(3), centre="mean")
    with pytest.raises(ValueError, match="classifier and means must both be"):
        compare.nc3(np.eye(3), np.eye(4)[:3])
