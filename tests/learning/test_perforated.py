import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import models
from jaxinterp import learning, train


def _mse(model, batch, key):
    inputs, targets = batch
    return 0.5 * jnp.mean(jnp.sum((jax.vmap(model)(inputs) - targets) ** 2, axis=-1))


def _regression(key, n=256):
    """Inputs in [-1, 1]^2 and a target, sin(3 x_0), that a linear model leaves a large, structured residual of."""
    x = jr.uniform(key, (n, 2), minval=-1.0, maxval=1.0)
    return x, jnp.sin(3.0 * x[:, :1])


def _with_trained_dendrite_scales(model, key):
    """`model` with one dendrite round whose output weights are non-zero (as after a neuron phase)."""
    model = learning.add_dendrites(model, key=key)
    layers = learning.perforated_layers(model)
    scales = [jr.normal(jr.fold_in(key, i), lay.dendrite_scales[0].shape) for i, lay in enumerate(layers)]
    return eqx.tree_at(lambda m: [lay.dendrite_scales[0] for lay in learning.perforated_layers(m)], model, scales)


def test_adding_dendrites_leaves_outputs_and_loss_exactly_unchanged(getkey):
    model = models.PerforatedMLP(5, [7, 6], 3, key=getkey())
    x = jr.normal(getkey(), (32, 5))
    batch = (x, jr.normal(getkey(), (32, 3)))
    for _ in range(2):  # first from no dendrites, then on top of a round with non-zero output weights
        grown = learning.add_dendrites(model, key=getkey())
        assert [lay.num_dendrites for lay in grown.layers] == [lay.num_dendrites + 1 for lay in model.layers]
        assert np.array_equal(jax.vmap(grown)(x), jax.vmap(model)(x))
        assert _mse(grown, batch, None) == _mse(model, batch, None)
        model = _with_trained_dendrite_scales(model, getkey())
    assert not np.array_equal(jax.vmap(model)(x), jax.vmap(models.PerforatedMLP(5, [7, 6], 3, key=getkey()))(x))


def test_neuron_errors_are_the_per_example_residuals_of_a_linear_model(getkey):
    model = models.PerforatedMLP(2, [], 1, key=getkey())
    x, y = _regression(getkey(), n=16)
    (errors,) = learning.neuron_errors(model, _mse, (x, y), getkey())
    np.testing.assert_allclose(errors, jax.vmap(model)(x) - y, rtol=1e-5, atol=1e-6)


def test_dendrite_correlation_known_answers(getkey):
    errors = jr.normal(getkey(), (200, 3))
    np.testing.assert_allclose(learning.dendrite_correlation(-2.0 * errors + 1.0, errors), 1.0, rtol=1e-5)
    np.testing.assert_allclose(learning.dendrite_correlation(errors, 1e-6 * errors), 1.0, rtol=1e-4)  # size-free
    assert np.all(learning.dendrite_correlation(jnp.ones((200, 3)), errors) < 1e-3)  # a constant node
    assert np.all(learning.dendrite_correlation(errors, jnp.zeros((200, 3))) == 0.0)  # a dead neuron
    with pytest.raises((ValueError, TypeError)):
        learning.dendrite_correlation(errors, errors[:, :2])
    with pytest.raises(ValueError, match="two examples"):
        learning.dendrite_correlation(errors[:1], errors[:1])


def test_training_a_dendrite_raises_its_correlation_with_the_residual_and_freezes_the_rest(getkey):
    model = models.PerforatedMLP(2, [], 1, key=getkey())
    x, y = _regression(getkey())
    held_out = _regression(getkey())
    # the best linear fit first, so that what remains is the nonlinear residual
    model, _ = train(model, _mse, lambda step: (x, y), optax.adam(0.05), steps=200, key=getkey(), progress=False)
    model = learning.add_dendrites(_with_trained_dendrite_scales(model, getkey()), key=getkey())
    objective = learning.dendrite_objective(_mse)
    trained, history = train(
        model, objective, lambda step: (x, y), learning.phase_optimiser(model, optax.adam(0.05), "dendrites"),
        steps=150, key=getkey(), has_aux=True, progress=False,
    )  # fmt: skip

    def held_out_score(m):
        return float(objective(m, held_out, jr.key(0))[1]["correlation"])

    random_scores = [held_out_score(learning.add_dendrites(model, key=getkey())) for _ in range(5)]
    assert history["correlation"][-1] > history["correlation"][0]
    assert held_out_score(trained) > max(random_scores) + 0.1
    before, after = model.layers[0], trained.layers[0]
    for name in ("weight", "bias"):
        assert np.array_equal(getattr(after, name), getattr(before, name))
    for name in ("dendrite_weights", "dendrite_biases", "dendrite_scales"):
        assert np.array_equal(getattr(after, name)[0], getattr(before, name)[0])  # the older round
    assert np.array_equal(after.dendrite_scales[1], before.dendrite_scales[1])  # still zero: same function
    assert not np.array_equal(after.dendrite_weights[1], before.dendrite_weights[1])

    retrained, _ = train(
        trained, _mse, lambda step: (x, y), learning.phase_optimiser(trained, optax.adam(0.01), "neurons"),
        steps=5, key=getkey(), progress=False,
    )  # fmt: skip
    for name in ("dendrite_weights", "dendrite_biases"):
        assert all(map(np.array_equal, getattr(retrained.layers[0], name), getattr(after, name)))
    assert not np.array_equal(retrained.layers[0].dendrite_scales[1], after.dendrite_scales[1])
    assert not np.array_equal(retrained.layers[0].weight, after.weight)


def test_perforated_training_alternates_phases_and_grows_the_model(getkey):
    model = models.PerforatedMLP(2, [3], 1, key=getkey())
    x, y = _regression(getkey(), n=64)
    trained, phases = learning.perforated_training(
        model, _mse, lambda step: (x, y), optax.adam(0.01), rounds=1, neuron_steps=[3, 2], dendrite_steps=2,
        key=getkey(), evaluate=lambda m: {"loss_now": float(_mse(m, (x, y), None))}, progress=False,
    )  # fmt: skip
    assert [(p["phase"], p["round"]) for p in phases] == [("neurons", 0), ("dendrites", 1), ("neurons", 1)]
    assert [p["steps"] for p in phases] == [3, 2, 2]
    assert all("loss_now" in p for p in phases if p["phase"] == "neurons")
    assert all(0.0 <= p["correlation_end"] <= 1.0 for p in phases if p["phase"] == "dendrites")
    assert [lay.num_dendrites for lay in trained.layers] == [1, 1]
    with pytest.raises(ValueError, match="neuron_steps"):
        learning.perforated_training(
            model, _mse, lambda step: (x, y), optax.adam(0.01), rounds=2, neuron_steps=[3, 2], dendrite_steps=2,
            key=getkey(),
        )  # fmt: skip


def test_phase_labels_and_errors(getkey):
    model = learning.add_dendrites(learning.add_dendrites(models.PerforatedMLP(4, [3], 2, key=getkey()), key=getkey()),
                                   key=getkey())  # fmt: skip
    dendrites = learning.phase_labels(model, "dendrites").layers[0]
    assert (dendrites.weight, dendrites.dendrite_weights, dendrites.dendrite_scales) == (
        "frozen", ("frozen", "train"), ("frozen", "frozen"),
    )  # fmt: skip
    neurons = learning.phase_labels(model, "neurons").layers[1]
    assert (neurons.bias, neurons.dendrite_biases, neurons.dendrite_scales) == (
        "train", ("frozen", "frozen"), ("train", "train"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="unknown phase"):
        learning.phase_labels(model, "axons")
    with pytest.raises(ValueError, match="no perforated layers"):
        learning.add_dendrites(models.MLP(4, [3], 2, key=getkey()), key=getkey())
    with pytest.raises(ValueError, match="add_dendrites first"):
        learning.dendrite_objective(_mse)(models.PerforatedMLP(2, [], 1, key=getkey()), _regression(getkey()), getkey())
    with pytest.raises(ValueError, match="input of shape"):
        model.layers[0](jnp.ones(5))
    with pytest.raises(ValueError, match="dendrite activation"):
        models.PerforatedLinear(3, 2, "spiky", key=getkey())
