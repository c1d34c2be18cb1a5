import itertools

import numpy as np
import pytest
from scipy.stats import ortho_group

from jaxinterp import compare


def _representations(n=60, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8))
    y = np.tanh(x @ rng.normal(size=(8, 5))) + 0.3 * rng.normal(size=(n, 5))
    return x, y


@pytest.mark.parametrize("unbiased", [False, True])
def test_cka_is_invariant_to_orthogonal_transforms_and_isotropic_scaling(unbiased):
    x, y = _representations()
    rotation = ortho_group.rvs(5, random_state=1)
    for measure in (compare.linear_cka, compare.rbf_cka):
        value = measure(x, y, unbiased=unbiased)
        assert 0.05 < value < 0.99
        np.testing.assert_allclose(measure(x, 3.7 * y @ rotation, unbiased=unbiased), value, rtol=1e-9)
        np.testing.assert_allclose(measure(0.2 * x, y, unbiased=unbiased), value, rtol=1e-9)
    # linear CKA is not invariant to an invertible linear map that is not orthogonal
    stretch = np.diag([10.0, 1.0, 1.0, 1.0, 0.1])
    assert abs(compare.linear_cka(x, y @ stretch) - compare.linear_cka(x, y)) > 1e-2


def test_linear_cka_equals_the_direct_formula_and_is_one_for_identical_representations():
    x, y = _representations()
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    direct = hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))
    np.testing.assert_allclose(compare.linear_cka(x, y), direct, rtol=1e-10)
    np.testing.assert_allclose(compare.cka(k, l), direct, rtol=1e-10)
    np.testing.assert_allclose(compare.hsic(k, l), hsic(k, l), rtol=1e-10)
    assert compare.linear_cka(x, x) == pytest.approx(1.0)
    assert compare.linear_cka(x, np.ones((n, 3))) == 0.0


def test_unbiased_hsic_equals_its_u_statistic_definition():
    rng = np.random.default_rng(0)
    n = 7
    x, y = rng.normal(size=(n, 3)), rng.normal(size=(n, 2))
    k, l = compare.rbf_gram(x), y @ y.T

    def mean_over(count):
        tuples = list(itertools.permutations(range(n), count))
        return lambda term: np.mean([term(*t) for t in tuples])

    pairs, triples, quadruples = mean_over(2), mean_over(3), mean_over(4)
    definition = (
        pairs(lambda i, j: k[i, j] * l[i, j])
        + quadruples(lambda i, j, q, r: k[i, j] * l[q, r])
        - 2 * triples(lambda i, j, q: k[i, j] * l[i, q])
    )
    np.testing.assert_allclose(compare.hsic_unbiased(k, l), definition, rtol=1e-10)


def test_minibatch_cka_of_one_batch_is_the_unbiased_cka_and_is_stable_across_batch_sizes():
    x, y = _representations(n=600)
    np.testing.assert_allclose(compare.minibatch_cka([(x, y)]), compare.linear_cka(x, y, unbiased=True), rtol=1e-12)
    small = compare.minibatch_cka((x[i : i + 50], y[i : i + 50]) for i in range(0, 600, 50))
    large = compare.minibatch_cka((x[i : i + 200], y[i : i + 200]) for i in range(0, 600, 200))
    assert abs(small - large) < 0.03 and abs(small - compare.linear_cka(x, y)) < 0.05


def test_bad_inputs_are_named():
    x, y = _representations()
    with pytest.raises(ValueError, match="same examples, but have 60 and 59 rows"):
        compare.linear_cka(x, y[:59])
    with pytest.raises(ValueError, match="at least 4 are needed"):
        compare.hsic_unbiased(np.eye(3), np.eye(3))
    y = y.copy()
    y[5, 2] = np.inf
    with pytest.raises(ValueError, match=r"rbf_cka: y has 1 non-finite values .* at index \(5, 2\)"):
        compare.rbf_cka(x, y)
    with pytest.raises(ValueError, match="batches holds no batches"):
        compare.minibatch_cka([])
