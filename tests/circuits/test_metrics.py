"""Circuit metrics: ROC AUC against scikit-learn, faithfulness, MIB's CPR and CMD, and the faithfulness curve."""

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from jaxinterp.circuits.metrics import (
    MIB_EDGE_FRACTIONS,
    cmd,
    cpr,
    curve_sizes,
    faithfulness,
    faithfulness_curve,
    random_baseline,
    roc_auc,
)


def test_roc_auc_equals_sklearn_on_random_cases_with_ties():
    rng = np.random.default_rng(0)
    for case in range(300):
        n = int(rng.integers(2, 40))
        labels = rng.random(n) < rng.uniform(0.1, 0.9)
        if labels.all() or not labels.any():
            labels[0] = not labels[0]
        # few distinct values, so many ties; some cases continuous
        values = rng.integers(0, 4, n).astype(float) if case % 3 else rng.normal(size=n)
        names = [f"e{i}" for i in range(n)]
        truth = {name for name, label in zip(names, labels) if label}
        missing = rng.random(n) < (0.2 if case % 2 else 0.0)  # unscored candidates count as -inf
        scores = {name: v for name, v, m in zip(names, values, missing) if not m}
        expected = roc_auc_score(labels, np.where(missing, values.min() - 1.0, values))
        assert roc_auc(scores, truth, candidates=names) == pytest.approx(expected, abs=1e-12), case


def test_roc_auc_known_answers():
    names = ["a", "b", "c", "d"]
    scores = {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0}
    assert roc_auc(scores, {"a", "b"}) == 1.0
    assert roc_auc(scores, {"c", "d"}) == 0.0
    assert roc_auc(dict.fromkeys(names, 1.0), {"a"}) == 0.5
    assert roc_auc({"a": 1.0}, {"a"}, candidates=names) == 1.0  # the unscored rank last
    assert roc_auc({"d": 1.0}, {"a"}, candidates=names) == pytest.approx(1 / 3)
    assert roc_auc(scores, {"a", "zzz"}) == 1.0  # truth outside the candidates is ignored


def test_roc_auc_errors():
    scores = {"a": 1.0, "b": 0.0}
    with pytest.raises(ValueError, match="no candidate is in the truth set"):
        roc_auc(scores, set())
    with pytest.raises(ValueError, match="no candidate is in the truth set"):
        roc_auc(scores, {"x"})
    with pytest.raises(ValueError, match="covers every candidate"):
        roc_auc(scores, {"a", "b"})
    with pytest.raises(ValueError, match="NaN"):
        roc_auc({"a": math.nan, "b": 0.0}, {"a"})
    with pytest.raises(ValueError, match="repeat"):
        roc_auc(scores, {"a"}, candidates=["a", "a", "b"])


def test_faithfulness():
    assert faithfulness(3.0, 1.0, 5.0) == 0.5
    assert isinstance(faithfulness(3.0, 1.0, 5.0), float)
    np.testing.assert_allclose(faithfulness(np.array([1.0, 5.0, 7.0]), 1.0, 5.0), [0.0, 1.0, 1.5])
    np.testing.assert_allclose(faithfulness([2.0, 2.0], [0.0, 1.0], [4.0, 3.0]), [0.5, 0.5])
    with pytest.raises(ValueError, match="m_full equals m_empty"):
        faithfulness(1.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="m_full equals m_empty"):
        faithfulness([1.0, 1.0], [0.0, 2.0], [1.0, 2.0])


def _mib_areas(percentages, faithfulnesses):
    """The loop of MIB's `evaluate_area_under_curve`, restated: (area_under, area_from_1)."""
    under = from_1 = 0.0
    for i in range(len(faithfulnesses) - 1):
        dx = percentages[i + 1] - percentages[i]
        from_1 += dx * (abs(1 - faithfulnesses[i]) + abs(1 - faithfulnesses[i + 1])) / 2
        under += dx * (faithfulnesses[i] + faithfulnesses[i + 1]) / 2
    return under, from_1


def test_cpr_and_cmd_known_answers():
    x = np.array(MIB_EDGE_FRACTIONS)
    ones = np.ones_like(x)
    assert cmd(x, ones) == 0.0
    assert cpr(x, ones) == pytest.approx(0.999)  # not normalised by the span of the fractions
    # f = x is linear, so the trapezoid rule is exact: the integral of x and of 1 - x from 0.001 to 1
    assert cpr(x, x) == pytest.approx((1 - 0.001**2) / 2)
    assert cmd(x, x) == pytest.approx((1 - 0.001) ** 2 / 2)
    assert cpr([0.0, 1.0], [0.0, 1.0]) == 0.5 and cmd([0.0, 1.0], [0.0, 1.0]) == 0.5
    # not clipped: overshooting counts in CMD, and negative faithfulness lowers CPR
    assert cmd([0.0, 1.0], [2.0, 2.0]) == 1.0
    assert cpr([0.0, 1.0], [-1.0, -1.0]) == -1.0
    assert cpr([1.0, math.e], [1.0, 1.0], log_scale=True) == pytest.approx(1.0)


def test_cpr_and_cmd_match_the_mib_loop_and_vectorise():
    rng = np.random.default_rng(1)
    curves = rng.normal(0.6, 0.5, size=(5, len(MIB_EDGE_FRACTIONS)))
    areas = np.array([_mib_areas(MIB_EDGE_FRACTIONS, list(f)) for f in curves])
    np.testing.assert_allclose(cpr(MIB_EDGE_FRACTIONS, curves), areas[:, 0], rtol=1e-12)
    np.testing.assert_allclose(cmd(MIB_EDGE_FRACTIONS, curves), areas[:, 1], rtol=1e-12)
    assert cpr(MIB_EDGE_FRACTIONS, curves[0]) == pytest.approx(areas[0, 0], rel=1e-12)


def test_cpr_and_cmd_errors():
    with pytest.raises(ValueError, match="at least two"):
        cpr([0.5], [1.0])
    with pytest.raises(ValueError, match="3 fractions"):
        cmd([0.1, 0.2, 0.3], [1.0, 1.0])
    with pytest.raises(ValueError, match="increase"):
        cpr([0.2, 0.1], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        cpr([0.0, 1.0], [1.0, 1.0], log_scale=True)


def test_curve_sizes():
    assert curve_sizes(1000).tolist() == [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]
    assert curve_sizes(32491).tolist()[:3] == [33, 65, 163]
    assert curve_sizes(32491, rounding="floor").tolist()[:3] == [32, 64, 162]
    assert curve_sizes(100, [0.07]).tolist() == [7]  # 0.07 * 100 = 7.000000000000001 in floats
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        curve_sizes(10, [1.5])


def test_faithfulness_curve_evaluates_nested_top_sets():
    n = 250
    names = [f"e{i}" for i in range(n)]
    rng = np.random.default_rng(2)
    values = rng.permutation(n).astype(float) - n / 2
    scores = dict(zip(names, values))
    order = [names[i] for i in np.argsort(-values)]
    calls = []

    def evaluate(kept):
        assert isinstance(kept, frozenset)
        calls.append(kept)
        return len(kept) / n

    fractions, sizes, f = faithfulness_curve(evaluate, scores)
    expected_sizes = [math.ceil(p * n) for p in MIB_EDGE_FRACTIONS]
    assert sizes.tolist() == expected_sizes == [1, 1, 2, 3, 5, 13, 25, 50, 125, 250]
    np.testing.assert_array_equal(fractions, MIB_EDGE_FRACTIONS)
    np.testing.assert_allclose(f, np.array(expected_sizes) / n)
    assert [len(c) for c in calls] == sorted(set(expected_sizes))  # a repeated size is evaluated once
    for size, kept in zip(sorted(set(expected_sizes)), calls):
        assert kept == frozenset(order[:size])
    assert all(a < b for a, b in itertools.pairwise(calls))  # nested


def test_faithfulness_curve_ranking_options():
    scores = {"a": 0.5, "b": -3.0, "c": 1.0}
    kept = []

    def evaluate(s):
        kept.append(s)
        return 0.0

    faithfulness_curve(evaluate, scores, fractions=(0.25, 0.5, 1.0))
    assert kept == [frozenset("c"), frozenset("ca"), frozenset("cab")]
    kept.clear()
    faithfulness_curve(evaluate, scores, fractions=(0.25, 0.5), absolute=True)
    assert kept == [frozenset("b"), frozenset("bc")]
    kept.clear()
    _, sizes, _ = faithfulness_curve(evaluate, scores, fractions=(0.0, 0.5), candidates=["d", "a", "b", "c"])
    assert sizes.tolist() == [0, 2] and kept == [frozenset(), frozenset("ca")]  # the unscored "d" ranks last
    kept.clear()
    _, sizes, _ = faithfulness_curve(evaluate, scores, fractions=(0.5,), rounding="floor")
    assert sizes.tolist() == [1]


def test_random_baseline():
    candidates = [f"e{i}" for i in range(50)]
    seen = []

    def evaluate(kept):
        seen.append(kept)
        assert kept <= set(candidates)
        return sum(int(name[1:]) for name in kept)

    mean, std = random_baseline(evaluate, candidates, sizes=[0, 5, 50], n_draws=20, seed=3)
    assert [len(s) for s in seen] == [0] * 20 + [5] * 20 + [50] * 20
    assert mean[0] == 0 and std[0] == 0
    assert mean[2] == sum(range(50)) and std[2] == 0
    assert 5 * 24.5 - 40 < mean[1] < 5 * 24.5 + 40 and std[1] > 0
    again = random_baseline(evaluate, candidates, sizes=[0, 5, 50], n_draws=20, seed=3)
    np.testing.assert_array_equal(again[0], mean)
    one = random_baseline(evaluate, candidates, sizes=[5], n_draws=1)
    assert one[1].tolist() == [0.0]
    with pytest.raises(ValueError, match="every size"):
        random_baseline(evaluate, candidates, sizes=[51])
    with pytest.raises(ValueError, match="n_draws"):
        random_baseline(evaluate, candidates, sizes=[1], n_draws=0)


def test_rank_correlation_equals_scipy_spearman():
    from scipy.stats import spearmanr

    from jaxinterp.circuits.metrics import rank_correlation

    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(3, 30))
        a, b = rng.integers(0, 5, n).astype(float), rng.normal(size=n)
        names = [f"n{i}" for i in range(n)]
        expected = spearmanr(a, b).statistic
        got = rank_correlation(dict(zip(names, a)), dict(zip(names, b)))
        assert np.isnan(expected) and np.isnan(got) or abs(got - expected) < 1e-12
