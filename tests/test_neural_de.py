import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxinterp.dynamics.regularisers import Heuristics
from jaxinterp.dynamics.training import RegularisationWeights, penalty
from models.latent_ode import LatentODE
from models.neural_cde import NeuralCDE
from models.neural_ode import BatchedField, MLPVectorField, NeuralODE
from models.neural_sde import DiagonalNoiseTerm, NeuralSDE


def test_neural_ode_batching_modes_and_diffrax_reference(getkey):
    key = getkey()
    y0 = jax.random.normal(getkey(), (5, 3))
    ts = jnp.linspace(0.0, 1.0, 4)
    state = NeuralODE(3, 16, 1, rtol=1e-6, atol=1e-6, batching="state", key=key)
    vmapped = NeuralODE(3, 16, 1, rtol=1e-6, atol=1e-6, batching="vmap", key=key)
    ys_state, h_state = state.solve(y0, ts)
    ys_vmap, h_vmap = vmapped.solve(y0, ts)
    assert ys_state.shape == ys_vmap.shape == (5, 4, 3)
    np.testing.assert_allclose(ys_state, ys_vmap, atol=1e-4)
    np.testing.assert_allclose(ys_state[:, 0], y0, atol=1e-6)
    assert h_state.nfe.shape == () and h_vmap.nfe.shape == (5,)
    # One solve of the whole batch takes at least as many steps as the hardest example.
    assert int(h_state.num_steps) >= int(h_vmap.num_steps.max())
    reference = jax.vmap(
        lambda y: diffrax.diffeqsolve(
            diffrax.ODETerm(vmapped.vector_field),
            diffrax.Tsit5(),
            0.0,
            1.0,
            None,
            y,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
        )
    )(y0)
    np.testing.assert_allclose(ys_vmap, reference.ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(h_vmap.num_steps, reference.stats["num_steps"])
    np.testing.assert_array_equal(h_vmap.nfe, 1 + 6 * reference.stats["num_steps"])
    with pytest.raises(ValueError, match="batching"):
        NeuralODE(3, 16, 1, batching="loop", key=key)


def test_vector_field_is_a_plain_traceable_module(getkey):
    field = MLPVectorField(3, 8, 1, key=getkey())
    jaxpr = jax.make_jaxpr(field)(jnp.asarray(0.5), jnp.ones(3), None)
    assert jaxpr.out_avals[0].shape == (3,)
    matrix = MLPVectorField(3, 8, 1, out_shape=(3, 2), squash=True, key=getkey())
    assert matrix(jnp.asarray(0.0), jnp.ones(3)).shape == (3, 2)


def test_neural_cde_batching_modes_agree(getkey):
    ts = jnp.linspace(0.0, 1.0, 9)
    values = jax.random.normal(getkey(), (3, 9, 2))
    xs = jnp.concatenate([jnp.broadcast_to(ts[None, :, None], (3, 9, 1)), values], axis=-1)
    xs = xs.at[2].set(1.0)  # a constant path: dX = 0, so z stays at its initial value
    key = getkey()
    state = NeuralCDE(3, 6, 2, 16, 1, rtol=1e-6, atol=1e-6, batching="state", key=key)
    vmapped = NeuralCDE(3, 6, 2, 16, 1, rtol=1e-6, atol=1e-6, batching="vmap", key=key)
    out_state, _ = state.solve(ts, xs)
    out_vmap, h = vmapped.solve(ts, xs)
    assert out_state.shape == (3, 2) and h.nfe.shape == (3,)
    np.testing.assert_allclose(out_state, out_vmap, atol=1e-4)
    expected = state.readout(state.initial(xs[2, 0]))
    np.testing.assert_allclose(out_state[2], expected, atol=1e-6)
    np.testing.assert_allclose(out_vmap[2], expected, atol=1e-6)


def test_neural_sde_samples(getkey):
    ts = jnp.linspace(0.0, 1.0, 6)
    y0 = jnp.ones((4, 2))
    key, model_key = getkey(), getkey()
    model = NeuralSDE(2, 8, 1, key=model_key)
    ys, heuristics = model.solve(y0, ts, key=key)
    assert ys.shape == (4, 6, 2)
    np.testing.assert_allclose(ys[:, 0], y0, atol=1e-6)
    np.testing.assert_array_equal(ys, model(y0, ts, key=key))
    assert float(heuristics.error) > 0
    assert not np.allclose(ys, model(y0, ts, key=getkey()))
    per_example = NeuralSDE(2, 8, 1, batching="vmap", key=model_key)
    ys_vmap, h_vmap = per_example.solve(y0, ts, key=key)
    assert ys_vmap.shape == (4, 6, 2) and h_vmap.error.shape == (4,)
    np.testing.assert_allclose(ys_vmap[:, 0], y0, atol=1e-6)


def test_neural_sde_adaptive_solve_converges_to_a_fine_fixed_step_solve():
    """Same Brownian path: the adaptive solve (revisiting rejected steps, as the noise is not commutative) approaches
    a fixed-step Heun solve with 4,000 steps as the tolerance shrinks."""
    ts = jnp.linspace(0.0, 1.0, 5)
    y0 = jnp.full((4, 2), 0.5)
    key, model_key = jax.random.key(7), jax.random.key(1)
    model = NeuralSDE(2, 16, 1, noise_scale=0.5, brownian_tol=1e-5, key=model_key)
    brownian = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-5, shape=y0.shape, key=key)
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(BatchedField(model.drift)), DiagonalNoiseTerm(BatchedField(model.diffusion), brownian)
    )
    saveat = diffrax.SaveAt(ts=ts)
    reference = diffrax.diffeqsolve(terms, diffrax.Heun(), 0.0, 1.0, 1 / 4000, y0, saveat=saveat, max_steps=4001)
    reference = reference.ys.swapaxes(0, 1)
    errors = []
    for tol in (1e-2, 1e-3, 1e-4):
        adaptive = NeuralSDE(2, 16, 1, noise_scale=0.5, rtol=tol, atol=tol, brownian_tol=1e-5, key=model_key)
        errors.append(float(jnp.max(jnp.abs(adaptive(y0, ts, key=key) - reference))))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02, errors


def test_latent_ode_shapes_and_mask(getkey):
    ts = jnp.linspace(0.0, 2.0, 12)
    xs = jax.random.normal(getkey(), (3, 12, 2))
    mask = jnp.zeros((3, 12), bool).at[:, :4].set(True)
    model_key, key = getkey(), getkey()
    model = LatentODE(2, 4, 8, 16, 1, t0=0.0, t1=2.0, key=model_key)
    predictions, mean, logstd, _ = model.solve(ts, xs, mask, key=key)
    assert predictions.shape == (3, 12, 2) and mean.shape == (3, 4) and logstd.shape == (3, 4)
    changed = xs.at[:, 6:].set(100.0)
    np.testing.assert_allclose(model(ts, changed, mask, key=key), predictions, atol=1e-5)


def test_regularisation_weights_follow_schedules():
    weights = RegularisationWeights(error=optax.linear_schedule(1.0, 0.0, 10), stiffness=0.5)
    np.testing.assert_allclose(weights.at(0), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(weights.at(5), [0.5, 0.5, 0.0])
    heuristics = Heuristics(
        error=jnp.array([1.0, 3.0]),
        stiffness=jnp.array([4.0, 4.0]),
        stiffness_integral=jnp.array([1.0, 1.0]),
        num_steps=jnp.array([1, 1]),
        num_accepted_steps=jnp.array([1, 1]),
        num_rejected_steps=jnp.array([0, 0]),
        nfe=jnp.array([7, 7]),
    )
    np.testing.assert_allclose(penalty(heuristics, weights.at(5)), 0.5 * 2.0 + 0.5 * 4.0)
