import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import models
from jaxinterp import learning


def _dual_mlp(getkey, sizes=(5, 4, 3, 2)):
    """Forward `5 -> 4 -> 3 -> 2` and feedback `2 -> 3 -> 4 -> 5`, tanh between layers."""
    forward = tuple(
        eqx.nn.Sequential([eqx.nn.Linear(a, b, key=getkey()), eqx.nn.Lambda(jnp.tanh)])
        for a, b in itertools.pairwise(sizes)
    )
    feedback = tuple(
        eqx.nn.Sequential([eqx.nn.Linear(b, a, key=getkey()), eqx.nn.Lambda(jnp.tanh)])
        for a, b in itertools.pairwise(sizes)
    )
    return forward, feedback


def _losses(stacks, x, labels):
    forward, feedback = stacks
    return learning.counter_current_losses(
        forward, feedback, x, jnp.eye(2),
        pair_loss=lambda a, c: learning.prototype_alignment_loss(a, c, labels),
        output_loss=lambda out, codes: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels)),
    )  # fmt: skip


def _is_zero(tree) -> bool:
    return all(np.all(np.asarray(leaf) == 0) for leaf in jax.tree.leaves(tree))


def test_each_local_loss_reaches_only_its_own_layers_and_the_sum_is_the_sum_of_local_updates(getkey):
    stacks = _dual_mlp(getkey)
    x = jax.random.normal(getkey(), (6, 5))
    labels = jnp.array([0, 1, 1, 0, 1, 0])
    depth = len(stacks[0])
    local_grads = [
        eqx.filter_grad(lambda s, i=i: _losses(s, x, labels)[i])(stacks) for i in range(depth + 1)
    ]  # fmt: skip
    for i, (forward_grads, feedback_grads) in enumerate(local_grads):
        # depth i < L trains forward layer i - 1 (it produces a_i) and feedback layer i (it produces c_i);
        # the top trains forward layer L - 1 only
        own_forward = {i - 1} if i < depth else {depth - 1}
        own_feedback = {i} if i < depth else set()
        for layer, grads in enumerate(forward_grads):
            assert _is_zero(grads) != (layer in own_forward), (i, "forward", layer)
        for layer, grads in enumerate(feedback_grads):
            assert _is_zero(grads) != (layer in own_feedback), (i, "feedback", layer)
    total = eqx.filter_grad(lambda s: learning.counter_current_loss(
        *s, x, jnp.eye(2),
        pair_loss=lambda a, c: learning.prototype_alignment_loss(a, c, labels),
        output_loss=lambda out, codes: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, labels)),
    )[0])(stacks)  # fmt: skip
    summed = jax.tree.map(lambda *g: sum(g), *local_grads)
    for a, b in zip(jax.tree.leaves(total), jax.tree.leaves(summed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_activations_detach_every_layer_input(getkey):
    forward, feedback = _dual_mlp(getkey)
    x = jax.random.normal(getkey(), (3, 5))
    # the last forward activation does not depend on the input through the gradient: it is detached at every layer
    grad = jax.grad(lambda v: jnp.sum(learning.counter_current_activations(forward, feedback, v, jnp.eye(2))[0][-1]))
    assert _is_zero(grad(x))
    acts, signals = learning.counter_current_activations(forward, feedback, x, jnp.eye(2))
    assert [a.shape[1:] for a in acts] == [s.shape[1:] for s in signals] == [(5,), (4,), (3,), (2,)]
    np.testing.assert_allclose(signals[0], jax.vmap(lambda t: feedback[0](feedback[1](feedback[2](t))))(jnp.eye(2)))


def test_prototype_alignment_known_answer():
    a = jnp.array([[1.0, 0.0], [0.0, 2.0]])
    prototypes = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    labels = jnp.array([0, 1])
    # A B^T = [[1, 0], [0, 2]] against Y = I: one error of 1 among four entries, divided by d = 2
    assert float(learning.prototype_alignment_loss(a, prototypes, labels, scale=1.0)) == pytest.approx(0.125)
    # unit-length rows: the inner products are cosines and match Y exactly
    assert float(learning.prototype_alignment_loss(a, prototypes, labels, normalise=True)) == pytest.approx(0.0)


def test_shape_errors(getkey):
    forward, feedback = _dual_mlp(getkey)
    x = jnp.ones((2, 5))
    with pytest.raises(ValueError, match="same depth"):
        learning.counter_current_activations(forward, feedback[:-1], x, jnp.eye(2))
    with pytest.raises(ValueError, match="depth 3") as error:
        learning.counter_current_activations(forward, feedback, x, jnp.eye(3))
    assert "feedback network's input" in str(error.value) and "feedback layer" not in str(error.value)
    with pytest.raises(ValueError, match="labels"):
        learning.prototype_alignment_loss(jnp.ones((2, 3)), jnp.ones((4, 3)), jnp.zeros(3, jnp.int32))
    with pytest.raises(ValueError, match="same batch"):
        learning.mean_squared_pair_loss(jnp.ones((2, 3)), jnp.ones((4, 3)))


def test_feedback_alignment_backward_uses_the_fixed_feedback_matrix():
    x = jnp.array([1.0, 2.0])
    weight = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    feedback = jnp.array([[2.0, -1.0], [0.0, 3.0], [1.0, 0.0]])
    g = jnp.array([1.0, -1.0, 2.0])
    out, vjp = jax.vjp(learning.feedback_alignment_dense, x, weight, feedback)
    np.testing.assert_allclose(out, weight @ x)
    grad_x, grad_weight, grad_feedback = vjp(g)
    np.testing.assert_allclose(grad_x, [4.0, -4.0])  # feedback^T g, where weight^T g would be [3, 1]
    np.testing.assert_allclose(grad_weight, jnp.outer(g, x))
    assert _is_zero(grad_feedback)


def test_feedback_alignment_rewrite_keeps_outputs_and_the_last_layer_gradient(getkey):
    mlp = models.MLP(4, [8], 3, activation="tanh", key=getkey())
    fa = learning.feedback_alignment(mlp, key=getkey())
    assert isinstance(fa.layers[0], learning.FeedbackAlignmentLinear) and isinstance(
        fa.head, learning.FeedbackAlignmentLinear
    )
    x = jax.random.normal(getkey(), (5, 4))
    np.testing.assert_allclose(jax.vmap(fa)(x), jax.vmap(mlp)(x), rtol=1e-6)

    def loss(model):
        return jnp.sum(jax.vmap(model)(x) ** 2)

    bp, fa_grads = eqx.filter_grad(loss)(mlp), eqx.filter_grad(loss)(fa)
    np.testing.assert_allclose(fa_grads.head.weight, bp.head.weight, rtol=1e-5)
    assert not np.allclose(fa_grads.layers[0].weight, bp.layers[0].weight)
    assert _is_zero(fa_grads.head.feedback)
    with pytest.raises(ValueError, match="no eqx.nn.Linear"):
        learning.feedback_alignment({"w": jnp.ones(3)}, key=getkey())


def test_dual_network_models_pair_every_depth(getkey):
    cnn = models.CounterCurrentCNN(1, 8, [2, 3], 4, key=getkey())
    images = jnp.ones((2, 1, 8, 8))
    acts, signals = learning.counter_current_activations(
        cnn.forward_layers, cnn.feedback_layers, images, cnn.class_codes()
    )
    assert acts[-1].shape == (2, 4) and signals[0].shape == (4, 1, 8, 8)
    autoencoder = models.CounterCurrentAutoencoder(1, 8, [2, 3], key=getkey())
    acts, signals = learning.counter_current_activations(
        autoencoder.forward_layers, autoencoder.feedback_layers, images, images
    )
    assert [a.shape for a in acts] == [s.shape for s in signals]
    assert acts[2].shape == (2, 3, 2, 2) and acts[-1].shape == images.shape
    with pytest.raises(ValueError, match="divisible"):
        models.CounterCurrentCNN(1, 10, [2, 3], 4, key=getkey())
    with pytest.raises(ValueError, match="unknown activation"):
        models.CounterCurrentMLP(4, [3], 2, activation="swish", key=getkey())
