"""Truncated signatures and signature MMD (`jaxinterp.dynamics.signatures`, `jaxinterp.dynamics.signature_kernels`):
closed forms, Chen's identity, parity with iisignature, and the MMD's behaviour on identical, equal-law and shifted
sets of paths."""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import dynamics
from jaxinterp.dynamics import signatures

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "signature_reference.npz"
CASES = ("d3_n4", "d2_n6", "d4_n3", "d2_n4_basepoint")


def _tensor_power(vector: np.ndarray, k: int) -> np.ndarray:
    out = np.ones(())
    for _ in range(k):
        out = np.multiply.outer(out, vector)
    return out


def _brownian_paths(key, n, length=16, channels=1, scale=0.3):
    increments = scale * jax.random.normal(key, (n, length - 1, channels)) / math.sqrt(length - 1)
    return jnp.concatenate([jnp.zeros((n, 1, channels)), jnp.cumsum(increments, axis=1)], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# signatures


def test_straight_line_signature_is_the_tensor_exponential_of_its_increment():
    rng = np.random.default_rng(0)
    start, increment = rng.normal(size=3), rng.normal(size=3)
    # collinear points, unevenly spaced and with a step backwards: the signature depends only on the increment
    fractions = np.array([0.0, 0.1, 0.45, 0.3, 0.8, 1.0])
    path = (start + fractions[:, None] * increment).astype(np.float32)
    depth = 5
    levels = signatures.split_levels(dynamics.signature(path, depth), depth)
    for k, level in enumerate(levels, start=1):
        expected = _tensor_power(increment, k) / math.factorial(k)
        np.testing.assert_allclose(np.asarray(level), expected, rtol=1e-5, atol=1e-6, err_msg=f"level {k}")


def test_chens_identity_for_a_concatenation():
    key_a, key_b = jax.random.split(jax.random.key(1))
    depth = 4
    first = jax.random.normal(key_a, (3, 5, 2)).cumsum(axis=1)
    steps = jax.random.normal(key_b, (3, 6, 2)).cumsum(axis=1)
    second = first[:, -1:] + jnp.concatenate([jnp.zeros((3, 1, 2)), steps], axis=1)  # starts where `first` ends
    joined = jnp.concatenate([first, second[:, 1:]], axis=1)
    combined = dynamics.signature_combine(dynamics.signature(first, depth), dynamics.signature(second, depth), depth)
    expected = dynamics.signature(joined, depth)
    np.testing.assert_allclose(np.asarray(combined), np.asarray(expected), rtol=1e-5, atol=1e-5)
    # the signature does not see translations, so the second piece may start anywhere
    moved = dynamics.signature_combine(dynamics.signature(first, depth), dynamics.signature(second + 3.0, depth), depth)
    np.testing.assert_allclose(np.asarray(moved), np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_signature_matches_iisignature_to_float32_rounding(case):
    reference = np.load(REFERENCE)
    paths, depth = reference[f"{case}/paths"], int(reference[f"{case}/depth"])
    computed = dynamics.signature(paths, depth, basepoint=case.endswith("basepoint"))
    assert computed.dtype == jnp.float32 and computed.shape == reference[f"{case}/signature"].shape
    # measured: at most 2.1e-6 absolute, 1.5e-6 relative to 1 + |coordinate| (coordinates up to 21)
    np.testing.assert_allclose(np.asarray(computed), reference[f"{case}/signature"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES)
def test_logsignature_matches_iisignature_expanded_log_signature(case, float64):
    reference = np.load(REFERENCE)
    paths, depth = reference[f"{case}/paths"].astype(np.float64), int(reference[f"{case}/depth"])
    computed = dynamics.logsignature(paths, depth, basepoint=case.endswith("basepoint"))
    # in float64 (the log's alternating series cancels large terms, which float32 rounds: up to 6e-5 there)
    np.testing.assert_allclose(np.asarray(computed), reference[f"{case}/logsignature"], rtol=1e-12, atol=1e-12)


def test_batch_axes_jit_and_a_one_point_path():
    paths = jax.random.normal(jax.random.key(2), (2, 3, 6, 2)).cumsum(axis=-2)
    batched = jax.jit(dynamics.signature, static_argnums=1)(paths, 3)
    assert batched.shape == (2, 3, dynamics.signature_size(2, 3)) == (2, 3, 14)
    looped = np.stack([[np.asarray(dynamics.signature(p, 3)) for p in row] for row in paths])
    np.testing.assert_allclose(np.asarray(batched), looped, rtol=1e-6, atol=1e-6)
    assert np.all(np.asarray(dynamics.signature(paths[0, 0, :1], 3)) == 0.0)


def test_signature_gradient_matches_finite_differences(float64):
    path = jax.random.normal(jax.random.key(3), (5, 2), dtype=jnp.float64).cumsum(axis=0)
    weights = jax.random.normal(jax.random.key(4), (dynamics.signature_size(2, 4),), dtype=jnp.float64)

    def functional(p):
        return jnp.dot(weights, dynamics.signature(p, 4))

    gradient = jax.grad(functional)(path)
    step = 1e-6
    for index in [(0, 0), (2, 1), (4, 0)]:
        bump = jnp.zeros_like(path).at[index].set(step)
        finite = (functional(path + bump) - functional(path - bump)) / (2 * step)
        assert abs(float(gradient[index]) - float(finite)) < 1e-7


def test_time_augmentation_and_basepoint():
    path = jnp.array([[0.5], [1.0], [0.2], [0.7]])
    augmented = dynamics.augment_path(path, add_time=True, basepoint=True)
    np.testing.assert_allclose(
        np.asarray(augmented), [[0.0, 0.0], [0.0, 0.5], [1 / 3, 1.0], [2 / 3, 0.2], [1.0, 0.7]], rtol=1e-6
    )
    level_1 = dynamics.signature(path, 2, add_time=True, times=jnp.array([0.0, 1.0, 3.0, 4.0]))[:2]
    np.testing.assert_allclose(np.asarray(level_1), [4.0, 0.2], rtol=1e-6)
    # a given basepoint is prepended with the first time as its time coordinate
    start = jnp.array([2.0])
    with_point = dynamics.signature(path, 3, add_time=True, basepoint=start)
    by_hand = dynamics.signature(
        jnp.concatenate([start[None], path]), 3, add_time=True, times=jnp.array([0, 0, 1 / 3, 2 / 3, 1.0])
    )
    np.testing.assert_allclose(np.asarray(with_point), np.asarray(by_hand), rtol=1e-6, atol=1e-7)


def test_signature_argument_errors():
    path = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="signature: depth must be a positive int, got 0"):
        dynamics.signature(path, 0)
    with pytest.raises(ValueError, match="times were given but add_time is False"):
        dynamics.signature(path, 2, times=jnp.arange(4.0))
    with pytest.raises(ValueError, match="times have length 3, the path 4"):
        dynamics.signature(path, 2, add_time=True, times=jnp.arange(3.0))
    with pytest.raises(ValueError, match=r"basepoint has shape \(3,\), expected \[..., 2\]"):
        dynamics.signature(path, 2, basepoint=jnp.zeros(3))
    with pytest.raises(ValueError, match="signature_combine: 5 coordinates is no signature of depth 2"):
        dynamics.signature_combine(jnp.zeros(5), jnp.zeros(5), 2)


# ---------------------------------------------------------------------------------------------------------------
# signature MMD


def _mmd_by_definition(gram_xx, gram_yy, gram_xy, unbiased):
    n, m = len(gram_xx), len(gram_yy)
    if unbiased:
        xx = sum(gram_xx[i, j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        yy = sum(gram_yy[i, j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    else:
        xx, yy = gram_xx.sum() / n**2, gram_yy.sum() / m**2
    return xx + yy - 2 * gram_xy.sum() / (n * m)


@pytest.mark.parametrize("unbiased", [True, False])
def test_linear_mmd_in_feature_space_equals_the_gram_matrix_definition(unbiased, float64):
    x = _brownian_paths(jax.random.key(5), 7, channels=2)
    y = _brownian_paths(jax.random.key(6), 9, channels=2) + 0.1
    weights = jnp.array([1.0, 0.5, 2.0])
    sx = dynamics.signature(x, 3, add_time=True, basepoint=True)
    sy = dynamics.signature(y, 3, add_time=True, basepoint=True)
    grams = [
        np.asarray(dynamics.signature_kernel_matrix(a, b, 3, level_weights=weights))
        for a, b in ((sx, sx), (sy, sy), (sx, sy))
    ]
    expected = _mmd_by_definition(*grams, unbiased)
    fast = dynamics.signature_mmd_squared(
        x, y, 3, unbiased=unbiased, level_weights=weights, add_time=True, basepoint=True
    )
    assert abs(float(fast) - expected) < 1e-12 * max(1.0, abs(expected))
    assert abs(float(dynamics.mmd_squared(*grams, unbiased=unbiased)) - expected) < 1e-12


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_mmd_of_identical_sets_is_zero(kernel):
    x = _brownian_paths(jax.random.key(7), 32, channels=2)
    value = dynamics.signature_mmd_squared(x, x, 4, unbiased=False, kernel=kernel, add_time=True, basepoint=True)
    # measured: |value| < 1e-7 (linear), 0 (rbf)
    assert abs(float(value)) < 1e-6


def test_unbiased_mmd_is_near_zero_on_average_for_two_samples_of_one_law():
    keys = jax.random.split(jax.random.key(8), (40, 2))

    def estimates(pair):
        x, y = _brownian_paths(pair[0], 24), _brownian_paths(pair[1], 24)
        options = dict(add_time=True, basepoint=True)
        return (
            dynamics.signature_mmd_squared(x, y, 4, unbiased=True, **options),
            dynamics.signature_mmd_squared(x, y, 4, unbiased=False, **options),
            dynamics.signature_mmd_squared(x, y + 0.2, 4, unbiased=True, **options),
        )

    unbiased, biased, shifted = (np.asarray(v) for v in jax.jit(jax.vmap(estimates))(keys))
    standard_error = unbiased.std(ddof=1) / np.sqrt(len(unbiased))
    # measured: mean 2.0e-3 with standard error 3.1e-3 (biased: 1.6e-2, shifted by 0.2: 1.1e-1)
    assert abs(unbiased.mean()) < 3 * standard_error
    assert np.all(biased >= 0) and np.all(biased > unbiased)
    assert shifted.mean() > 10 * standard_error


def test_mmd_grows_monotonically_with_a_mean_shift_seen_through_the_basepoint():
    x = _brownian_paths(jax.random.key(9), 64)
    y = _brownian_paths(jax.random.key(10), 64)
    shifts = [0.0, 0.1, 0.25, 0.5, 1.0]
    for kernel in ("linear", "rbf"):
        values = [
            float(
                dynamics.signature_mmd_squared(x, y + s, 4, kernel=kernel, bandwidth=1.0, add_time=True, basepoint=True)
            )
            for s in shifts
        ]
        assert np.all(np.diff(values) > 0), (kernel, values)
        assert abs(values[0]) < 0.05 * values[-1]
    # without a basepoint the signature is blind to where a path starts, so a constant shift changes nothing
    blind = [float(dynamics.signature_mmd_squared(x, y + s, 4, add_time=True)) for s in shifts]
    np.testing.assert_allclose(blind, blind[0], rtol=1e-3, atol=1e-7)


def test_level_weights_select_levels():
    x = _brownian_paths(jax.random.key(11), 16, channels=2)
    y = _brownian_paths(jax.random.key(12), 16, channels=2) * 1.5
    only_first = dynamics.signature_mmd_squared(x, y, 3, unbiased=False, level_weights=jnp.array([1.0, 0.0, 0.0]))
    mean_increment_gap = (x[:, -1] - x[:, 0]).mean(0) - (y[:, -1] - y[:, 0]).mean(0)
    expected = jnp.sum(mean_increment_gap**2)
    np.testing.assert_allclose(float(only_first), float(expected), rtol=1e-5)


def test_mmd_is_differentiable_in_the_paths():
    x = _brownian_paths(jax.random.key(13), 8)
    y = _brownian_paths(jax.random.key(14), 8) + 0.3
    for kernel in ("linear", "rbf"):
        gradient = jax.grad(dynamics.signature_mmd_squared)(x, y, 3, kernel=kernel, basepoint=True)
        assert gradient.shape == x.shape and np.all(np.isfinite(np.asarray(gradient)))
        assert float(jnp.abs(gradient).max()) > 0


def test_mmd_argument_errors():
    x = jnp.zeros((3, 4, 1))
    with pytest.raises(ValueError, match="unknown kernel 'cosine'; expected one of linear, rbf"):
        dynamics.signature_mmd_squared(x, x, 2, kernel="cosine")
    with pytest.raises(ValueError, match=r"level_weights must have one weight per level 1..2, got shape \(3,\)"):
        dynamics.signature_mmd_squared(x, x, 2, level_weights=jnp.ones(3))
    with pytest.raises(ValueError, match="the unbiased MMD needs at least 2 samples in each set, got 1 and 3"):
        dynamics.signature_mmd_squared(x[:1], x, 2)
