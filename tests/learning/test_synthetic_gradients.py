import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from jax.flatten_util import ravel_pytree

import models
from jaxinterp import learning
from jaxinterp.learning import boundary_gradients, synthetic_gradient_quality
from jaxinterp.training import train


def _squared_error(output, target):
    return 0.5 * jnp.sum((output - target) ** 2)


def _tree_max_difference(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _lstm_problem(getkey, time=6):
    cortex = models.CorticalLSTM(3, 5, 2, key=getkey())
    inputs = jr.normal(getkey(), (4, time, 3))
    targets = jr.normal(getkey(), (4, time, 2))
    weights = jnp.linspace(0.5, 1.5, time)
    common = {"initial_state": cortex.initial_state(), "step_loss": _squared_error, "step_weights": weights}
    return cortex, inputs, targets, common


def _linear_step(params, state, x):
    state = params["recurrent"] @ state + params["input"] @ x
    return state, params["readout"] @ state


def _linear_problem(getkey, size=4):
    """A linear recurrent cell (a `Partial` of a plain function) whose input arrives at step 0 only: the gradient of
    the loss of steps 2 and 3 with respect to the state after step 1 is exactly `future_gradient @ state`."""
    recurrent = 0.8 * jnp.linalg.qr(jr.normal(getkey(), (size, size)))[0]
    params = {"recurrent": recurrent, "input": jnp.eye(size), "readout": jr.normal(getkey(), (3, size))}
    cell = jax.tree_util.Partial(_linear_step, params)
    readout_gram = params["readout"].T @ params["readout"]
    future_gradient = sum(
        jnp.linalg.matrix_power(recurrent, j).T @ readout_gram @ jnp.linalg.matrix_power(recurrent, j) for j in (1, 2)
    )

    def batch(key, n=64):
        inputs = jnp.zeros((n, 4, size)).at[:, 0].set(jr.normal(key, (n, size)))
        return inputs, jnp.zeros((n, 4, 3))

    return cell, jnp.zeros(size), future_gradient, batch


def test_truncated_bptt_with_a_window_covering_the_sequence_is_full_bptt(getkey):
    cortex, inputs, targets, common = _lstm_problem(getkey)

    def full(c):
        return learning.bptt_loss(c, inputs, targets, **common)[0]

    def truncated(window):
        return lambda c: learning.truncated_bptt_loss(c, inputs, targets, window=window, **common)[0]

    full_value, full_grad = eqx.filter_jit(eqx.filter_value_and_grad(full))(cortex)
    for window in (6,):
        value, grad = eqx.filter_jit(eqx.filter_value_and_grad(truncated(window)))(cortex)
        assert value == pytest.approx(float(full_value), rel=1e-6)
        assert _tree_max_difference(grad, full_grad) < 1e-6
    value, grad = eqx.filter_jit(eqx.filter_value_and_grad(truncated(2)))(cortex)
    assert value == pytest.approx(float(full_value), rel=1e-6)
    assert _tree_max_difference(grad, full_grad) > 1e-3


def test_loss_matches_the_outputs_of_run_sequence(getkey):
    cortex, inputs, targets, common = _lstm_problem(getkey, time=5)
    states, outputs = learning.run_sequence(cortex, inputs, initial_state=cortex.initial_state())
    assert outputs.shape == (4, 5, 2) and states[0].shape == (4, 5)
    expected = jnp.mean(jnp.sum(common["step_weights"] * 0.5 * jnp.sum((outputs - targets) ** 2, -1), -1))
    loss, metrics = learning.bptt_loss(cortex, inputs, targets, **common)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5) and float(metrics["task_loss"]) == float(loss)


def test_a_zero_synthesiser_gives_the_truncated_gradient_and_learns(getkey):
    cortex, inputs, targets, common = _lstm_problem(getkey, time=7)
    cerebellum = models.Cerebellum(10, (8,), key=getkey())

    def synthetic(pair):
        return learning.synthetic_gradient_loss(pair[0], pair[1], inputs, targets, window=3, **common)

    (objective, metrics), grads = eqx.filter_jit(eqx.filter_value_and_grad(synthetic, has_aux=True))(
        (cortex, cerebellum)
    )
    truncated = eqx.filter_jit(
        eqx.filter_grad(lambda c: learning.truncated_bptt_loss(c, inputs, targets, window=3, **common)[0])
    )(cortex)
    assert _tree_max_difference(grads[0], truncated) < 1e-6
    task = learning.bptt_loss(cortex, inputs, targets, **common)[0]
    assert float(metrics["task_loss"]) == pytest.approx(float(task), rel=1e-6)
    assert metrics["synthesiser_loss"] > 0
    assert float(objective) == pytest.approx(float(metrics["task_loss"] + metrics["synthesiser_loss"]), rel=1e-6)
    assert float(jnp.max(jnp.abs(grads[1].network.head.weight))) > 0


def test_the_exact_future_gradient_as_synthesiser_recovers_full_bptt(getkey):
    cell, initial_state, future_gradient, batch = _linear_problem(getkey)
    inputs, targets = batch(getkey())
    oracle = models.Cerebellum(4, (), key=getkey())
    oracle = eqx.tree_at(lambda c: c.network.head.weight, oracle, future_gradient)
    common = {"initial_state": initial_state, "step_loss": _squared_error}

    def synthetic(c):
        return learning.synthetic_gradient_loss(c, oracle, inputs, targets, window=2, scale=1.0, **common)

    grads, metrics = eqx.filter_grad(synthetic, has_aux=True)(cell)
    full = eqx.filter_grad(lambda c: learning.bptt_loss(c, inputs, targets, **common)[0])(cell)
    truncated = eqx.filter_grad(
        lambda c: learning.truncated_bptt_loss(c, inputs, targets, window=2, **common)[0]
    )(cell)  # fmt: skip
    assert _tree_max_difference(grads, full) < 1e-4 * (
        1 + _tree_max_difference(full, jax.tree.map(jnp.zeros_like, full))
    )
    assert _tree_max_difference(truncated, full) > 1e-2
    assert float(metrics["synthesiser_loss"]) < 1e-8


def test_boundary_gradients_are_the_exact_future_gradients(getkey):
    cell, initial_state, future_gradient, batch = _linear_problem(getkey)
    inputs, targets = batch(getkey(), 8)
    common = {"initial_state": initial_state, "step_loss": _squared_error}
    states, gradients = boundary_gradients(cell, inputs, targets, window=2, **common)
    assert states.shape == gradients.shape == (8, 1, 4)
    run_states, _ = learning.run_sequence(cell, inputs[:, :2], initial_state=initial_state)
    np.testing.assert_allclose(states[:, 0], run_states, rtol=1e-6)
    np.testing.assert_allclose(gradients[:, 0], states[:, 0] @ future_gradient.T, rtol=1e-4, atol=1e-6)
    oracle = models.Cerebellum(4, (), key=getkey())
    exact = synthetic_gradient_quality(eqx.tree_at(lambda c: c.network.head.weight, oracle, future_gradient),
                                       states, gradients, scale=0.5)  # fmt: skip
    np.testing.assert_allclose(exact["cosine"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(exact["relative_error"], 0.0, atol=1e-5)
    np.testing.assert_allclose(exact["injected_relative_error"], 0.5, rtol=1e-5)
    np.testing.assert_allclose(exact["norm_ratio"], 1.0, rtol=1e-5)
    zero = synthetic_gradient_quality(oracle, states, gradients)
    assert float(zero["cosine"][0]) == 0.0 and float(zero["relative_error"][0]) == pytest.approx(1.0)


def test_boundary_gradients_of_an_lstm_match_full_bptt(getkey):
    """Nudging the state at each boundary of the full-BPTT run: the gradient with respect to the nudge is what
    `boundary_gradients` returns, and a window covering the sequence has no boundary."""
    cortex, inputs, targets, common = _lstm_problem(getkey, time=4)
    states, gradients = boundary_gradients(cortex, inputs, targets, window=2, **common)
    assert states.shape == gradients.shape == (4, 1, 10)
    _, unravel = ravel_pytree(common["initial_state"])

    def later_loss(flat, xs, ys):
        rest = {**common, "initial_state": unravel(flat), "step_weights": common["step_weights"][2:]}
        return learning.bptt_loss(cortex, xs[None, 2:], ys[None, 2:], **rest)[0]

    expected = jax.jit(jax.vmap(jax.grad(later_loss)))(states[:, 0], inputs, targets)
    np.testing.assert_allclose(gradients[:, 0], expected, rtol=1e-5, atol=1e-7)
    assert boundary_gradients(cortex, inputs, targets, window=4, **common)[0].shape == (4, 0, 10)


def test_a_linear_synthesiser_converges_to_the_true_gradient(getkey):
    cell, initial_state, future_gradient, batch = _linear_problem(getkey)
    common = {"initial_state": initial_state, "step_loss": _squared_error, "window": 2, "discount": 1.0}

    def loss_fn(cerebellum, data, key):
        return learning.synthetic_gradient_loss(cell, cerebellum, *data, **common)

    data_key = getkey()
    cerebellum = models.Cerebellum(4, (), key=getkey())
    held_out_inputs, _ = batch(getkey(), 256)
    states, _ = learning.run_sequence(cell, held_out_inputs[:, :2], initial_state=initial_state)
    true_gradients = states @ future_gradient.T

    def relative_error(c):
        predicted = jax.vmap(c)(states)
        return float(jnp.linalg.norm(predicted - true_gradients) / jnp.linalg.norm(true_gradients))

    trained, history = train(
        cerebellum, loss_fn, lambda step: batch(jr.fold_in(data_key, step)), optax.adam(0.03), steps=1000,
        key=getkey(), has_aux=True, progress=False,
    )  # fmt: skip
    assert relative_error(cerebellum) == pytest.approx(1.0)
    assert relative_error(trained) < 0.03
    np.testing.assert_allclose(trained.network.head.weight, future_gradient, atol=0.05)
    assert history["synthesiser_loss"][-1] < 1e-3 * history["synthesiser_loss"][0]


def test_bad_arguments_raise_clear_errors(getkey):
    cortex, inputs, targets, common = _lstm_problem(getkey)
    with pytest.raises(ValueError, match="window must be a positive integer"):
        learning.truncated_bptt_loss(cortex, inputs, targets, window=0, **common)
    with pytest.raises(ValueError, match="targets must be"):
        learning.bptt_loss(cortex, inputs, targets[:, :3], **common)
    with pytest.raises(ValueError, match="step_weights must have shape"):
        learning.bptt_loss(cortex, inputs, targets, **{**common, "step_weights": jnp.ones(4)})
    with pytest.raises(ValueError, match="inputs must be"):
        learning.bptt_loss(cortex, inputs[0, 0], targets, **common)
    with pytest.raises(TypeError, match="cell"):
        learning.bptt_loss("lstm", inputs, targets, **common)
    with pytest.raises(TypeError, match="synthesiser"):
        learning.synthetic_gradient_loss(cortex, None, inputs, targets, window=2, **common)
    with pytest.raises(ValueError, match="flattened state of shape"):
        models.Cerebellum(10, key=getkey())(jnp.zeros(5))
