import itertools

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.dynamics.regularisers import (
    HeuristicsSolver,
    evaluations_per_step,
    solve_with_heuristics,
    supports_stiffness,
)
from jaxinterp.dynamics.training import RegularisationWeights, fit
from models.neural_ode import NeuralODE

A = np.array([[-1.0, 2.0], [-2.0, -1.0]])
Y0 = np.array([1.0, 0.5])
RTOL, ATOL = 1e-4, 1e-6


def _linear_term():
    return diffrax.ODETerm(lambda t, y, a: a @ y)


def _rk_step_by_hand(tableau, a, y0, h):
    """One explicit Runge-Kutta step of `y' = a y` in numpy: stage increments, stage points, solution, error."""
    stages = tableau.num_stages
    ks, gs = [], []
    for i in range(stages):
        row = np.zeros(0) if i == 0 else np.asarray(tableau.a_lower[i - 1], dtype=np.float64)
        g = y0 + sum(row[j] * ks[j] for j in range(i))
        gs.append(g)
        ks.append(h * (a @ g))
    y1 = y0 + sum(tableau.b_sol[i] * ks[i] for i in range(stages))
    error = sum(tableau.b_error[i] * ks[i] for i in range(stages))
    return ks, gs, y1, error


def _heuristics_by_hand(tableau, a, y0, ts):
    """`sum_j E_j h_j`, `max_j rho_j` and `sum_j rho_j h_j` over the steps between consecutive `ts`."""
    error_sum, stiffness, stiffness_sum = 0.0, 0.0, 0.0
    y = y0
    for t0, t1 in itertools.pairwise(ts):
        h = t1 - t0
        ks, gs, y1, error = _rk_step_by_hand(tableau, a, y, h)
        scale = ATOL + RTOL * np.maximum(np.abs(y), np.abs(y1))
        e = np.sqrt(np.mean((error / scale) ** 2))
        rho = np.linalg.norm(ks[-1] - ks[-2]) / (h * np.linalg.norm(gs[-1] - gs[-2]))
        error_sum += e * h
        stiffness = max(stiffness, rho)
        stiffness_sum += rho * h
        y = y1
    return error_sum, stiffness, stiffness_sum


@pytest.mark.parametrize("solver", [diffrax.Tsit5(), diffrax.Dopri5()], ids=["tsit5", "dopri5"])
def test_error_estimate_matches_hand_computation_on_linear_ode(solver):
    with jax.enable_x64(True):
        sol, h = solve_with_heuristics(
            _linear_term(),
            solver,
            0.0,
            3.0,
            2.0,  # far too large: the first steps are rejected and must not count
            jnp.asarray(Y0),
            jnp.asarray(A),
            stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
            saveat=diffrax.SaveAt(steps=True),
        )
        assert int(h.num_rejected_steps) > 0
        accepted = int(h.num_accepted_steps)
        ts = np.concatenate([[0.0], np.asarray(sol.ts[:accepted])])
        error, stiffness, stiffness_sum = _heuristics_by_hand(solver.tableau, A, Y0, ts)
        np.testing.assert_allclose(float(h.error), error, rtol=1e-10)
        np.testing.assert_allclose(float(h.stiffness), stiffness, rtol=1e-10)
        np.testing.assert_allclose(float(h.stiffness_integral), stiffness_sum, rtol=1e-10)
        assert int(h.nfe) == 1 + 6 * int(h.num_steps)


def test_stiffness_of_scalar_linear_ode_is_its_rate_and_nfe_is_counted():
    calls = []

    def field(t, y, a):
        jax.debug.callback(lambda: calls.append(1))
        return a * y

    _, h = solve_with_heuristics(
        diffrax.ODETerm(field),
        diffrax.Tsit5(),
        0.0,
        2.0,
        None,
        jnp.array([1.0, -0.5]),
        -7.0,
        stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
    )
    np.testing.assert_allclose(float(h.stiffness), 7.0, rtol=1e-4)
    np.testing.assert_allclose(float(h.stiffness_integral), 14.0, rtol=1e-4)
    assert int(h.num_rejected_steps) == 0
    assert len(calls) == int(h.nfe) == 1 + 6 * int(h.num_steps)


def test_constant_steps_use_the_given_tolerances():
    with jax.enable_x64(True):
        ts = np.linspace(0.0, 3.0, 16)
        _, h = solve_with_heuristics(
            _linear_term(),
            diffrax.Tsit5(),
            0.0,
            3.0,
            0.2,
            jnp.asarray(Y0),
            jnp.asarray(A),
            stepsize_controller=diffrax.ConstantStepSize(),
            rtol=RTOL,
            atol=ATOL,
        )
        error, _, _ = _heuristics_by_hand(diffrax.Tsit5().tableau, A, Y0, ts)
        np.testing.assert_allclose(float(h.error), error, rtol=1e-10)
        assert int(h.num_steps) == 15


def _mlp_field(params, t, y):
    w1, b1, w2 = params
    return w2 @ jnp.tanh(w1 @ y + b1)


@pytest.mark.slow
def test_regulariser_gradients_match_finite_differences():
    with jax.enable_x64(True):
        keys = jax.random.split(jax.random.key(0), 3)
        params = (
            jax.random.normal(keys[0], (8, 2), jnp.float64),
            jax.random.normal(keys[1], (8,), jnp.float64),
            0.5 * jax.random.normal(keys[2], (2, 8), jnp.float64),
        )
        term = diffrax.ODETerm(lambda t, y, p: _mlp_field(p, t, y))
        y0 = jnp.array([1.0, -0.3])
        controller = diffrax.PIDController(rtol=1e-3, atol=1e-5)
        sol, h = solve_with_heuristics(
            term,
            diffrax.Tsit5(),
            0.0,
            2.0,
            0.1,
            y0,
            params,
            stepsize_controller=controller,
            saveat=diffrax.SaveAt(steps=True),
        )
        steps = jnp.concatenate([jnp.zeros(1), sol.ts[: int(h.num_accepted_steps)]])

        def regularisers(h):
            return jnp.stack([h.error, h.stiffness, h.stiffness_integral])

        def adaptive(p):
            _, h = solve_with_heuristics(term, diffrax.Tsit5(), 0.0, 2.0, 0.1, y0, p, stepsize_controller=controller)
            return regularisers(h)

        def frozen(p):
            # The same accepted steps, fixed: the derivative diffrax's discrete adjoint computes.
            _, h = solve_with_heuristics(
                term,
                diffrax.Tsit5(),
                0.0,
                2.0,
                None,
                y0,
                p,
                stepsize_controller=diffrax.StepTo(steps),
                rtol=1e-3,
                atol=1e-5,
            )
            return regularisers(h)

        direction = jax.tree.map(lambda x: jax.random.normal(jax.random.key(1), x.shape, x.dtype), params)
        jacobian = jax.jacrev(adaptive)(params)
        directional = sum(jnp.tensordot(j, d, axes=d.ndim) for j, d in zip(jacobian, direction))
        eps = 1e-6
        plus = jax.tree.map(lambda p, d: p + eps * d, params, direction)
        minus = jax.tree.map(lambda p, d: p - eps * d, params, direction)
        fd = (frozen(plus) - frozen(minus)) / (2 * eps)
        assert np.all(np.abs(np.asarray(directional)) > 1e-3)
        np.testing.assert_allclose(directional, fd, rtol=1e-5)


def test_sde_solver_with_error_estimate(getkey):
    bm = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-3, shape=(2,), key=getkey(), levy_area=diffrax.SpaceTimeLevyArea)
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(lambda t, y, a: -y), diffrax.ControlTerm(lambda t, y, a: 0.2 * jnp.diag(y), bm)
    )
    _, h = solve_with_heuristics(
        terms,
        diffrax.SPaRK(),
        0.0,
        1.0,
        0.05,
        jnp.array([1.0, 0.5]),
        None,
        stepsize_controller=diffrax.PIDController(rtol=1e-2, atol=1e-3),
    )
    assert float(h.error) > 0
    assert float(h.stiffness) == 0
    assert int(h.num_rejected_steps) > 0
    assert int(h.num_accepted_steps) + int(h.num_rejected_steps) == int(h.num_steps)
    assert int(h.nfe) == 3 * int(h.num_steps)
    assert evaluations_per_step(diffrax.Heun()) == (2, 0)
    assert evaluations_per_step(diffrax.ReversibleHeun()) == (1, 1)
    assert evaluations_per_step(diffrax.HalfSolver(diffrax.Heun())) == (6, 0)


def test_stiffness_needs_a_suitable_solver():
    assert supports_stiffness(diffrax.Tsit5()) and supports_stiffness(diffrax.Dopri5())
    assert not supports_stiffness(diffrax.Heun())
    with pytest.raises(ValueError, match="stiffness"):
        HeuristicsSolver(diffrax.Heun(), 1e-3, 1e-6, stiffness=True)
    with pytest.raises(ValueError, match="PIDController"):
        solve_with_heuristics(
            _linear_term(),
            diffrax.Tsit5(),
            0.0,
            1.0,
            0.1,
            jnp.ones(2),
            jnp.asarray(A, jnp.float32),
            stepsize_controller=diffrax.ConstantStepSize(),
        )


@pytest.mark.slow
def test_regularised_fit_lowers_nfe():
    """Fit y(1) = 1.5 R y(0) (R a rotation by 2 radians) with and without the error regulariser."""
    angle = 2.0
    rotation = jnp.array([[jnp.cos(angle), -jnp.sin(angle)], [jnp.sin(angle), jnp.cos(angle)]])
    x = jax.random.normal(jax.random.key(0), (64, 2))
    target = 1.5 * x @ rotation.T

    def loss_fn(model, batch, key):
        y1, h = model.solve_batch(batch[0])
        return jnp.mean((y1 - batch[1]) ** 2), h

    def batches():
        while True:
            yield x, target

    optimiser = optax.adam(1e-2)
    nfe, error = {}, {}
    for weight in (0.0, 1.0):
        model = NeuralODE(2, 32, 1, rtol=1e-5, atol=1e-5, key=jax.random.key(3))
        model, history = fit(
            model,
            loss_fn,
            batches(),
            optimiser,
            num_steps=150,
            weights=RegularisationWeights(error=weight),
            key=jax.random.key(4),
            progress=False,
        )
        assert history["task_loss"][-1] < 0.05 * history["task_loss"][0]
        _, heuristics = model.solve_batch(x)
        nfe[weight], error[weight] = int(heuristics.nfe), float(heuristics.error)
    assert nfe[1.0] < nfe[0.0], nfe
    assert error[1.0] < 0.8 * error[0.0], error
