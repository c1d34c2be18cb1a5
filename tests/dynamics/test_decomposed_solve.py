import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import pytest

from jaxinterp.dynamics.decomposed_solve import decompose_solution
from models.neural_ode import NeuralODE
from tests.helpers import relative_error


class LinearField(eqx.Module):
    matrix: jax.Array

    def __call__(self, t, y, args):
        return self.matrix @ y


class MLPField(eqx.Module):
    mlp: eqx.nn.MLP

    def __call__(self, t, y, args):
        return self.mlp(jnp.concatenate([y, t[None]]))


def test_linear_ode_relevant_part_is_the_solution_from_the_selected_features():
    matrix = jnp.array([[-0.5, 1.0, 0.0], [-1.0, -0.2, 0.3], [0.2, 0.0, -0.8]])
    y0, mask = jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 0.0, 1.0])
    decomposed, _ = decompose_solution(LinearField(matrix), y0, mask, 0.0, 2.0, rtol=1e-7, atol=1e-7)
    propagator = jax.scipy.linalg.expm(2.0 * matrix)
    np.testing.assert_allclose(decomposed.rel, propagator @ (y0 * mask), atol=1e-5)
    np.testing.assert_allclose(decomposed.irr, propagator @ (y0 * (1 - mask)), atol=1e-5)


@pytest.mark.slow
def test_neural_ode_rel_plus_irr_is_the_plain_solution_for_every_solver(getkey):
    field = MLPField(eqx.nn.MLP(5, 4, 16, 2, activation=jnp.tanh, key=getkey()))
    y0 = jax.random.normal(getkey(), (4,))
    for solver in (diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Bosh3()):
        for mask in (jnp.array([1.0, 0.0, 0.0, 1.0]), jnp.ones(4), jnp.zeros(4)):
            decomposed, solution = decompose_solution(field, y0, mask, 0.0, 1.5, solver=solver)
            plain = diffrax.diffeqsolve(
                diffrax.ODETerm(field),
                solver,
                0.0,
                1.5,
                None,
                y0,
                stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
            )
            final = plain.ys[-1]
            np.testing.assert_allclose(decomposed.rel + decomposed.irr, final, rtol=1e-5, atol=1e-6)
            if not mask.any():
                np.testing.assert_allclose(decomposed.rel, 0.0)
    assert int(solution.stats["num_accepted_steps"]) > 1


def test_a_neural_ode_vector_field_with_sites_decomposes_as_the_same_untagged_field(getkey):
    """The sites tagged in `models.NeuralODE`'s vector field do not change its decomposition, and on the model's steps
    (a first step of 0.01, as the model's solve takes) `rel + irr` is the model's solution."""
    model = NeuralODE(4, 16, 1, rtol=1e-5, atol=1e-5, key=getkey())
    y0, mask = jax.random.normal(getkey(), (4,)), jnp.array([1.0, 0.0, 0.0, 1.0])
    solve = lambda field: decompose_solution(field, y0, mask, 0.0, 1.0, rtol=1e-5, atol=1e-5, dt0=0.01)
    tagged, _ = solve(model.vector_field)
    untagged, _ = solve(MLPField(model.vector_field.mlp))
    np.testing.assert_allclose(tagged.rel, untagged.rel, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(tagged.irr, untagged.irr, rtol=1e-6, atol=1e-7)
    assert relative_error(tagged.rel + tagged.irr, model(y0)) < 1e-5


def test_jit_and_grad_through_the_decomposed_solve():
    matrix = jnp.array([[-0.3, 0.8], [-0.6, -0.1]])
    mask = jnp.array([1.0, 0.0])
    propagator = jax.scipy.linalg.expm(matrix)

    def relevant_norm(y0):
        decomposed, _ = decompose_solution(LinearField(matrix), y0, mask, 0.0, 1.0, rtol=1e-7, atol=1e-7)
        return jnp.sum(decomposed.rel**2)

    y0 = jnp.array([0.3, -0.7])
    np.testing.assert_allclose(eqx.filter_jit(relevant_norm)(y0), relevant_norm(y0), rtol=1e-6)
    analytic = 2 * mask * (propagator.T @ propagator @ (y0 * mask))
    np.testing.assert_allclose(jax.grad(relevant_norm)(y0), analytic, atol=1e-4)


def test_implicit_solvers_are_refused():
    import pytest

    with pytest.raises(TypeError, match="explicit Runge-Kutta"):
        decompose_solution(LinearField(jnp.eye(2)), jnp.ones(2), jnp.ones(2), 0.0, 1.0, solver=diffrax.Kvaerno5())
