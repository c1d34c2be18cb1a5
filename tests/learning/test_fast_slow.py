import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import models
from jaxinterp import learning
from jaxinterp.training import train
from tests.helpers import tree_allclose


def _toy_task(key, which: str, n: int = 64):
    """Two linearly separable two-class tasks on 2-D inputs that conflict for a learner that forgets: task "A" is
    decided by `x_1`; in task "B" the label is decided by `x_2`, and `x_1` is anti-correlated with it, so plain
    fine-tuning on B flips the sign of the weight that A needs. One weight vector solves both."""
    label_key, noise_key, other_key = jr.split(key, 3)
    labels = jr.bernoulli(label_key, 0.5, (n,)).astype(jnp.int32)
    sign = 2.0 * labels - 1.0
    noise = 0.3 * jr.normal(noise_key, (n, 2))
    if which == "A":
        inputs = jnp.stack([1.5 * sign, jr.normal(other_key, (n,))], axis=1) + noise * jnp.array([1.0, 0.0])
    else:
        inputs = jnp.stack([-0.5 * sign, 2.0 * sign], axis=1) + noise
    return inputs, labels


def _loss(model, batch, key):
    inputs, labels = batch
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(inputs), labels))


def _example_loss(model, example):
    inputs, label = example
    return optax.softmax_cross_entropy_with_integer_labels(model(inputs), label)


def _accuracy(model, batch):
    inputs, labels = batch
    return float(jnp.mean(jnp.argmax(jax.vmap(model)(inputs), axis=1) == labels))


_OPTIMISER = optax.adam(0.05)


def test_fast_slow_weights_forget_the_first_toy_task_less_than_fine_tuning():
    task_a, task_b = _toy_task(jr.key(1), "A"), _toy_task(jr.key(2), "B")
    test_a = _toy_task(jr.key(3), "A", n=400)
    test_b = _toy_task(jr.key(4), "B", n=400)
    initial = models.MLP(2, [], 2, key=jr.key(0))
    fixed = lambda batch: lambda step: batch

    tuned, _ = train(initial, _loss, fixed(task_a), _OPTIMISER, steps=150, key=jr.key(5), progress=False)
    assert _accuracy(tuned, test_a) > 0.95
    tuned, _ = train(tuned, _loss, fixed(task_b), _OPTIMISER, steps=150, key=jr.key(6), progress=False)

    slow, importance = initial, learning.zero_importance(initial)
    for index, task in enumerate((task_a, task_b)):
        slow, importance, _, history = learning.learn_task(
            slow, importance, _loss, _example_loss, task, fixed(task), _OPTIMISER, steps=150, key=jr.key(5 + index),
            strength=0.1, floor=0.1, normalise=True, progress=False,
        )  # fmt: skip
        assert history["penalty"][0] == 0.0  # the fast weights start at the slow weights
    fine_tuning_a, fast_slow_a = _accuracy(tuned, test_a), _accuracy(slow, test_a)
    assert fine_tuning_a < 0.75, "the toy must make plain fine-tuning forget task A"
    assert fast_slow_a > 0.9 and fast_slow_a - fine_tuning_a > 0.2
    assert _accuracy(slow, test_b) > 0.9 and _accuracy(tuned, test_b) > 0.9


def test_consolidation_without_fast_learning_leaves_the_slow_weights_unchanged():
    slow = models.MLP(5, [7], 3, key=jr.key(0))
    shapes = learning.zero_importance(slow)
    keys = iter(jr.split(jr.key(1), 2 * len(jax.tree.leaves(shapes))))
    importance = jax.tree.map(lambda z: jr.uniform(next(keys), z.shape), shapes)
    task_importance = jax.tree.map(lambda z: jr.uniform(next(keys), z.shape), shapes)
    for rate in (1.0, 0.3):
        consolidated, summed = learning.consolidate(slow, slow, importance, task_importance, rate=rate)
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(consolidated), jax.tree.leaves(slow))), (
            "fast weights equal to the slow ones must leave the slow weights exactly as they were"
        )
        assert tree_allclose(summed, jax.tree.map(jnp.add, importance, task_importance))
    assert jax.tree.structure(consolidated) == jax.tree.structure(slow)


def test_consolidation_is_the_precision_weighted_merge():
    slow, fast = {"w": jnp.zeros(4)}, {"w": jnp.ones(4)}
    importance, task_importance = {"w": jnp.array([0.0, 1.0, 3.0, 1.0])}, {"w": jnp.array([1.0, 1.0, 1.0, 0.0])}
    merged, summed = learning.consolidate(slow, fast, importance, task_importance, floor=1e-6)
    np.testing.assert_allclose(merged["w"], [1.0, 0.5, 0.25, 1e-6 / (1 + 1e-6)], rtol=1e-5)
    np.testing.assert_allclose(summed["w"], [1.0, 2.0, 4.0, 1.0])
    half, _ = learning.consolidate(slow, fast, importance, task_importance, rate=0.5, floor=1e-6)
    np.testing.assert_allclose(half["w"], 0.5 * merged["w"], rtol=1e-5)
    nothing_learned_before, _ = learning.consolidate(slow, fast, {"w": jnp.zeros(4)}, task_importance)
    np.testing.assert_allclose(nothing_learned_before["w"], fast["w"])


def test_diagonal_fisher_is_the_mean_squared_per_example_gradient():
    rng = np.random.default_rng(0)
    x, y, w = rng.normal(size=(6, 3)), rng.normal(size=6), rng.normal(size=3)
    model = {"w": jnp.asarray(w, dtype=jnp.float32)}
    squared_error = lambda m, example: 0.5 * (m["w"] @ example[0] - example[1]) ** 2
    examples = (jnp.asarray(x, dtype=jnp.float32), jnp.asarray(y, dtype=jnp.float32))
    expected = np.mean(((x @ w - y)[:, None] * x) ** 2, axis=0)
    np.testing.assert_allclose(learning.diagonal_fisher(model, squared_error, examples)["w"], expected, rtol=1e-4)
    normalised = learning.diagonal_fisher(model, squared_error, examples, normalise=True)["w"]
    np.testing.assert_allclose(normalised, expected / expected.mean(), rtol=1e-4)


def test_anchor_penalty_value_gradient_and_fast_weight_loss():
    anchor = models.MLP(3, [4], 2, key=jr.key(0))
    moved = jax.tree.map(lambda a: a + 0.5 if eqx.is_inexact_array(a) else a, anchor)
    importance = jax.tree.map(lambda z: z + 2.0, learning.zero_importance(anchor))
    assert float(learning.anchor_penalty(anchor, anchor, importance)) == 0.0
    count = sum(leaf.size for leaf in jax.tree.leaves(importance))
    np.testing.assert_allclose(learning.anchor_penalty(moved, anchor, importance), 0.5 * 2.0 * 0.25 * count, rtol=1e-5)
    grads = eqx.filter_grad(lambda m: learning.anchor_penalty(m, anchor, importance))(moved)
    assert all(np.allclose(g, 1.0) for g in jax.tree.leaves(grads))  # importance * (theta - phi) = 2 * 0.5

    inputs, labels = jnp.ones((5, 3)), jnp.zeros(5, dtype=jnp.int32)
    fast_loss = learning.fast_weight_loss(_loss, 3.0)
    assert learning.fast_weight_loss(_loss, 3.0) is fast_loss  # one loss per (loss_fn, strength): one compilation
    params = eqx.filter(anchor, eqx.is_inexact_array)
    total, metrics = fast_loss(moved, ((inputs, labels), params, importance), jr.key(0))
    np.testing.assert_allclose(total, metrics["task_loss"] + 3.0 * metrics["penalty"], rtol=1e-6)
    np.testing.assert_allclose(metrics["task_loss"], _loss(moved, (inputs, labels), None), rtol=1e-6)


def test_fast_adapt_starts_at_the_slow_weights_and_is_held_by_the_penalty():
    slow = models.MLP(2, [], 2, key=jr.key(0))
    task = _toy_task(jr.key(2), "B")
    heavy = jax.tree.map(lambda z: z + 1e4, learning.zero_importance(slow))
    free, _ = learning.fast_adapt(slow, _loss, lambda step: task, _OPTIMISER, steps=40, key=jr.key(1), progress=False)
    held, history = learning.fast_adapt(
        slow, _loss, lambda step: task, _OPTIMISER, steps=40, key=jr.key(1), importance=heavy, strength=1.0,
        progress=False,
    )  # fmt: skip
    distance = lambda m: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(m), jax.tree.leaves(slow)))
    assert distance(held) < 0.1 * distance(free)
    assert set(history) >= {"loss", "task_loss", "penalty"}


def test_bad_arguments_raise_clear_errors():
    slow = models.MLP(3, [4], 2, key=jr.key(0))
    zero = learning.zero_importance(slow)
    other = learning.zero_importance(models.MLP(3, [5], 2, key=jr.key(0)))
    with pytest.raises(ValueError, match="structure"):
        learning.consolidate(slow, models.MLP(3, [5], 2, key=jr.key(1)), zero, zero)
    with pytest.raises(ValueError, match="shape"):
        learning.consolidate({"w": jnp.zeros(3)}, {"w": jnp.zeros(4)}, {"w": jnp.zeros(3)}, {"w": jnp.zeros(3)})
    with pytest.raises(ValueError, match="structure"):
        learning.consolidate(slow, slow, {"w": jnp.zeros(3)}, zero)
    with pytest.raises(ValueError, match="non-negative"):
        learning.consolidate(slow, slow, jax.tree.map(lambda z: z - 1.0, zero), zero)
    for rate in (0.0, 1.5):
        with pytest.raises(ValueError, match="rate"):
            learning.consolidate(slow, slow, zero, zero, rate=rate)
    with pytest.raises(ValueError, match="floor"):
        learning.consolidate(slow, slow, zero, zero, floor=0.0)
    with pytest.raises(ValueError, match="strength"):
        learning.fast_weight_loss(_loss, -1.0)
    with pytest.raises(ValueError, match="importance must have the structure"):
        learning.fast_adapt(slow, _loss, lambda step: None, _OPTIMISER, steps=1, key=jr.key(0), importance=other)
    with pytest.raises(ValueError, match="first axis"):
        learning.diagonal_fisher(slow, _example_loss, (jnp.ones((4, 3)), jnp.zeros(3, dtype=jnp.int32)))
    with pytest.raises(TypeError, match="scalar"):
        learning.fast_weight_loss(lambda m, b, k: (0.0, {}), 1.0)(slow, (None, zero, zero), jr.key(0))
