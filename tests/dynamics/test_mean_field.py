"""The simulated data sets of P31 (`jaxinterp.dynamics.mean_field`): the opinion dynamics' bimodal marginal, and the
FitzHugh-Nagumo network's deterministic limit against an independent diffrax solve."""

import dataclasses

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import dynamics
from jaxinterp.dynamics import mean_field


def _modes(samples: np.ndarray, bandwidth: float = 0.08):
    """The highest point of a Gaussian kernel density estimate on each side of 0, and the lowest density between
    them as a fraction of the lower of the two."""
    grid = np.linspace(-2.0, 2.0, 401)
    density = np.exp(-0.5 * ((grid[:, None] - samples[None, :]) / bandwidth) ** 2).sum(axis=1)
    left = np.argmax(np.where(grid < 0, density, -1.0))
    right = np.argmax(np.where(grid >= 0, density, -1.0))
    dip = density[left : right + 1].min() / min(density[left], density[right])
    return grid[left], grid[right], dip


def test_opinion_interaction_is_a_bump_around_theta2():
    distances = jnp.array([0.0, 0.2, 1.0, 1.19, 1.2, 3.0])
    values = np.asarray(mean_field.opinion_interaction(distances))
    np.testing.assert_allclose(values[1], 6.0 * np.exp(-0.01), rtol=1e-6)
    np.testing.assert_allclose(values[0], 6.0 * np.exp(-0.01 / 0.96), rtol=1e-6)
    # nearly flat at theta1 up to distance 1 and falling to 0 just before theta2 + 1 = 1.2
    np.testing.assert_allclose(values[2], 6.0 * np.exp(-0.01 / 0.36), rtol=1e-6)
    np.testing.assert_allclose(values[3], 6.0 * np.exp(-0.01 / (1 - 0.99**2)), rtol=1e-4)
    assert values[4] == 0 and values[5] == 0
    assert np.all(np.isfinite(np.asarray(jax.grad(lambda r: mean_field.opinion_interaction(r).sum())(distances))))


def test_opinion_dynamics_marginal_is_bimodal_at_the_expected_locations():
    ts, paths = dynamics.opinion_dynamics(jax.random.key(0), 2048, t1=0.5, num_times=51)
    assert ts.shape == (51,) and paths.shape == (2048, 51, 1) and paths.dtype == jnp.float32
    np.testing.assert_allclose(float(ts[-1]), 0.5)
    start = np.asarray(paths[:, 0, 0])
    assert -2.0 <= start.min() < -1.99 and 1.99 < start.max() <= 2.0
    left, right, dip = _modes(np.asarray(paths[:, -1, 0]))
    # two groups near -0.8 and +0.8 at t = 0.5 (measured over keys 0..9: left -0.96..-0.58, right 0.67..0.95, dips
    # 0.22..0.71 of the lower peak; key 0: -0.79, +0.80, dip 0.37)
    assert abs(left + 0.8) < 0.25 and abs(right - 0.8) < 0.25
    assert dip < 0.75


def test_opinion_dynamics_is_seeded_and_chunking_changes_nothing():
    key = jax.random.key(1)
    _, whole = dynamics.opinion_dynamics(key, 300, num_times=11, chunk_size=None)
    _, chunked = dynamics.opinion_dynamics(key, 300, num_times=11, chunk_size=64)
    np.testing.assert_allclose(np.asarray(whole), np.asarray(chunked), rtol=1e-6, atol=1e-6)
    _, other = dynamics.opinion_dynamics(jax.random.key(2), 300, num_times=11)
    assert not np.allclose(np.asarray(whole), np.asarray(other))


def _fitzhugh_nagumo_ode(t, x, args):
    """The FitzHugh-Nagumo network without noise, written out from the equations in the docs."""
    v, w, y = x[:, 0], x[:, 1], x[:, 2]
    transmitter = 1.0 / (1.0 + jnp.exp(-0.2 * (v - 2.0)))
    dv = v - v**3 / 3 - w + 0.5 + 1.0 * (v - 1.0) * jnp.mean(y)
    dw = 0.08 * (v + 0.7 - 0.8 * w)
    dy = transmitter * (1 - y) - y
    return jnp.stack([dv, dw, dy], axis=1)


def test_fitzhugh_nagumo_without_noise_converges_to_the_ode_solution_at_first_order():
    _, noisy = dynamics.fitzhugh_nagumo(jax.random.key(3), 64)
    initial = noisy[:, 0]
    quiet = dataclasses.replace(dynamics.FitzHughNagumoParameters(), sigma_ext=0.0, sigma_coupling=0.0, gamma=0.0)
    ts = jnp.linspace(0.0, 1.0, 101)
    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(_fitzhugh_nagumo_ode),
        diffrax.Tsit5(),
        0.0,
        1.0,
        0.01,
        initial,
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=diffrax.PIDController(rtol=1e-7, atol=1e-7),
    )
    reference = np.moveaxis(np.asarray(solution.ys), 0, 1)
    errors = []
    for substeps in (1, 10):
        times, paths = dynamics.fitzhugh_nagumo(jax.random.key(4), parameters=quiet, initial=initial, substeps=substeps)
        np.testing.assert_allclose(np.asarray(times), np.asarray(ts), atol=1e-6)
        errors.append(np.abs(np.asarray(paths) - reference).max())
    # measured: 1.0e-2 with steps of 0.01, 1.0e-3 with steps of 0.001 (Euler's first order)
    assert errors[1] < 2e-3
    assert 7 < errors[0] / errors[1] < 13


def test_fitzhugh_nagumo_initial_law_seeding_and_finiteness():
    ts, paths = dynamics.fitzhugh_nagumo(jax.random.key(5), 4096, num_times=21, t1=0.2)
    assert ts.shape == (21,) and paths.shape == (4096, 21, 3)
    assert np.all(np.isfinite(np.asarray(paths)))
    start = np.asarray(paths[:, 0])
    np.testing.assert_allclose(start.mean(0), [0.0, 0.5, 0.3], atol=0.04)
    np.testing.assert_allclose(start.var(0), [0.4, 0.4, 0.05], rtol=0.08)
    _, again = dynamics.fitzhugh_nagumo(jax.random.key(5), 4096, num_times=21, t1=0.2)
    np.testing.assert_array_equal(np.asarray(paths), np.asarray(again))


def test_simulator_argument_errors():
    with pytest.raises(ValueError, match="opinion_dynamics: num_times must be at least 2, got 1"):
        dynamics.opinion_dynamics(jax.random.key(0), 8, num_times=1)
    with pytest.raises(ValueError, match="fitzhugh_nagumo: substeps must be at least 1, got 0"):
        dynamics.fitzhugh_nagumo(jax.random.key(0), 8, substeps=0)
    with pytest.raises(ValueError, match=r"fitzhugh_nagumo: initial must be \[neurons, 3\] \(V, w, y\), got shape"):
        dynamics.fitzhugh_nagumo(jax.random.key(0), initial=jnp.zeros((4, 2)))
