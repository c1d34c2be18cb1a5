import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from jaxtyping import Array

from jaxinterp.training import minibatches, train


class Affine(eqx.Module):
    weight: Array
    bias: Array
    scale: Array  # an integer array: held fixed by the loop

    def __call__(self, x):
        return self.scale * (x @ self.weight + self.bias)


def _affine():
    return Affine(0.1 * jr.normal(jr.key(0), (3,)), jnp.zeros(()), jnp.array(1))


def _regression_data(noise=0.1):
    x = jr.normal(jr.key(1), (128, 3))
    y = x @ jnp.array([1.5, -2.0, 0.5]) + 0.3 + noise * jr.normal(jr.key(2), (128,))
    return x, y


def _noisy_loss(model, batch, key):
    """Mean squared error plus a key-dependent term, so that the loss key changes the gradient."""
    x, y = batch
    mse = jnp.mean((jax.vmap(model)(x) - y) ** 2)
    draw = jr.normal(key)
    return mse + 0.01 * draw * jnp.sum(model.weight), {"mse": mse, "draw": draw}


def _optimiser():
    schedule = optax.linear_schedule(0.0, 5e-2, 3)
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


OPTIMISER = _optimiser()


def _run(steps, *, seed=3, **kwargs):
    return train(
        _affine(),
        _noisy_loss,
        minibatches(_regression_data(), 8, key=jr.key(seed + 100)),
        OPTIMISER,
        steps=steps,
        key=jr.key(seed),
        has_aux=True,
        ema_decay=0.9,
        progress=False,
        **kwargs,
    )


def _arrays(model):
    return [np.asarray(leaf) for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_array))]


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    uninterrupted, full = _run(7)
    checkpoint = tmp_path / "run" / "state.eqx"
    interrupted, first = _run(4, checkpoint=checkpoint, checkpoint_every=3)
    resumed, second = _run(7, checkpoint=checkpoint, checkpoint_every=3)

    assert first["start_step"] == 0 and second["start_step"] == 4
    assert len(first["loss"]) == 4 and len(second["loss"]) == 7 == len(full["loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(_arrays(interrupted), _arrays(uninterrupted)))
    for a, b in zip(_arrays(resumed), _arrays(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    for name in ("loss", "mse", "draw"):
        np.testing.assert_array_equal(second[name], full[name])
        np.testing.assert_array_equal(second[name][:4], first[name])
    assert list(tmp_path.joinpath("run").iterdir()) == [checkpoint]

    again, third = _run(7, checkpoint=checkpoint)
    assert third["start_step"] == 7 and len(third["loss"]) == 7
    for a, b in zip(_arrays(again), _arrays(uninterrupted)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="past the 5 steps"):
        _run(5, checkpoint=checkpoint)


def test_step_randomness_comes_from_fold_in_of_the_key_and_step():
    _, history = _run(5)
    expected = [float(jr.normal(jr.fold_in(jr.key(3), i))) for i in range(5)]
    np.testing.assert_array_equal(history["draw"], np.asarray(expected, np.float32))

    same_model, same = _run(5)
    other_model, other = _run(5, seed=4)
    np.testing.assert_array_equal(same["loss"], history["loss"])
    assert not np.array_equal(other["loss"], history["loss"])
    assert not np.array_equal(_arrays(other_model)[0], _arrays(same_model)[0])


def test_minibatches_draw_with_replacement_from_fold_in():
    x, y = _regression_data()
    batches = minibatches((x, y), 16, key=jr.key(5))
    for step in (0, 7):
        index = jr.randint(jr.fold_in(jr.key(5), step), (16,), 0, 128)
        bx, by = batches(step)
        np.testing.assert_array_equal(bx, x[index])
        np.testing.assert_array_equal(by, y[index])
    assert not np.array_equal(batches(0)[0], batches(1)[0])
    with pytest.raises(ValueError, match="first axis"):
        minibatches((x, y[:5]), 4, key=jr.key(0))


def test_moving_average_matches_a_hand_computed_one():
    """SGD on 0.5 (w - 2)^2: w_n = w_(n-1) - lr (w_(n-1) - 2) and ema_n = d ema_(n-1) + (1 - d) w_n, ema_0 = w_0."""
    lr, decay, steps = 0.3, 0.8, 6

    def loss(w, batch, key):
        return 0.5 * jnp.sum((w - 2.0) ** 2)

    w, ema = 0.0, 0.0
    for _ in range(steps):
        w = w - lr * (w - 2.0)
        ema = decay * ema + (1 - decay) * w
    settings = {"steps": steps, "key": jr.key(0), "progress": False}
    last, history = train(jnp.zeros(1), loss, lambda step: None, optax.sgd(lr), **settings)
    average, _ = train(jnp.zeros(1), loss, lambda step: None, optax.sgd(lr), ema_decay=decay, **settings)
    np.testing.assert_allclose(last, [w], rtol=1e-6)
    np.testing.assert_allclose(average, [ema], rtol=1e-6)
    assert len(history["loss"]) == steps and history["first_step_s"] > 0 and history["wall_time_s"] > 0


def test_linear_regression_converges_to_least_squares():
    x, y = _regression_data(noise=0.3)

    def loss(model, batch, key):
        inputs, targets = batch
        return jnp.mean((jax.vmap(model)(inputs) - targets) ** 2)

    model, history = train(_affine(), loss, lambda step: (x, y), optax.adam(0.05), steps=400, key=jr.key(0))
    design = np.concatenate([np.asarray(x), np.ones((128, 1))], axis=1)
    solution = np.linalg.lstsq(design, np.asarray(y), rcond=None)[0]
    np.testing.assert_allclose(model.weight, solution[:3], atol=1e-3)
    np.testing.assert_allclose(model.bias, solution[3], atol=1e-3)
    assert model.scale.dtype == jnp.int32 and int(model.scale) == 1
    assert history["loss"][-1] < 0.1 * history["loss"][0]


def test_unreadable_checkpoints_raise_naming_the_file(tmp_path):
    garbage = tmp_path / "garbage.eqx"
    garbage.write_bytes(b"\x00\x01 not a checkpoint")
    with pytest.raises(ValueError, match="garbage.eqx"):
        _run(3, checkpoint=garbage)

    good = tmp_path / "good.eqx"
    _run(2, checkpoint=good)
    truncated = tmp_path / "truncated.eqx"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(ValueError, match="truncated.eqx"):
        _run(3, checkpoint=truncated)

    def other_model_loss(model, batch, key):
        return jnp.sum(model**2)

    with pytest.raises(ValueError, match="good.eqx.*different model"):
        train(jnp.ones(5), other_model_loss, lambda step: None, OPTIMISER, steps=3, key=jr.key(3), checkpoint=good)
    with pytest.raises(ValueError, match="good.eqx.*different key"):
        _run(3, seed=9, checkpoint=good)


def test_non_finite_loss_raises_at_its_step():
    def loss(w, step, key):
        return jnp.where(step == 13, jnp.nan, jnp.sum(w**2))

    settings = {"steps": 20, "key": jr.key(0), "progress": False}
    with pytest.raises(FloatingPointError, match="at step 13"):
        train(jnp.ones(2), loss, jnp.asarray, optax.sgd(0.1), **settings)
    _, history = train(jnp.ones(2), loss, jnp.asarray, optax.sgd(0.1), check_finite=False, **settings)
    assert np.isnan(history["loss"][13]) and np.isfinite(history["loss"][12])


def test_invalid_arguments_are_rejected():
    def loss(w, batch, key):
        return jnp.sum(w**2)

    settings = {"key": jr.key(0), "progress": False}
    with pytest.raises(ValueError, match="steps"):
        train(jnp.ones(2), loss, lambda step: None, optax.sgd(0.1), steps=-1, **settings)
    with pytest.raises(TypeError, match="batches"):
        train(jnp.ones(2), loss, [None, None], optax.sgd(0.1), steps=2, **settings)
    with pytest.raises(ValueError, match="ema_decay"):
        train(jnp.ones(2), loss, lambda step: None, optax.sgd(0.1), steps=2, ema_decay=1.5, **settings)
    with pytest.raises(ValueError, match="no inexact"):
        train(jnp.ones(2, int), loss, lambda step: None, optax.sgd(0.1), steps=2, **settings)
    with pytest.raises(TypeError, match="has_aux=True"):
        train(jnp.ones(2), lambda w, b, k: (loss(w, b, k), {}), lambda step: None, optax.sgd(0.1), steps=2, **settings)
    with pytest.raises(ValueError, match="scalar"):
        train(jnp.ones(2), lambda w, b, k: w**2, lambda step: None, optax.sgd(0.1), steps=2, **settings)
    model, history = train(jnp.ones(2), loss, lambda step: None, optax.sgd(0.1), steps=0, **settings)
    np.testing.assert_array_equal(model, jnp.ones(2))
    assert history["start_step"] == 0 and "loss" not in history
