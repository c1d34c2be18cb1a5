"""The directed chain SDE generator (P31) and the SDE-GAN (P22): the chain's law for a linear drift against its
exact Gaussian law, and the discriminator's Lipschitz control (weight clipping, gradient penalty)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from models import SDEGAN, DirectedChainSDE, train_sde_gan
from models.sde_gan import clip_weights, gradient_penalty, weights_within_clip


def _linear(weights, bias) -> eqx.nn.Linear:
    layer = eqx.nn.Linear(len(weights), 1, key=jax.random.key(0))
    return eqx.tree_at(lambda m: (m.weight, m.bias), layer, (jnp.asarray([weights]), jnp.asarray([bias])))


def _exact_chain_law(ts, theta, kappa, sigma, m0, v0, mean, cov, links):
    """Mean and covariance over the grid of each generated link of the Euler-discretised linear directed chain SDE
    `dX = (-theta X + kappa X~) dt + sigma dB`, `X_0 ~ N(m0, v0)`, given the first link's Gaussian law: every link is
    `X = a X_0 + K X~ + S xi` with independent `X_0`, `X~`, `xi`."""
    h = np.diff(ts)
    n = len(ts)
    a, k, s = np.zeros(n), np.zeros((n, n)), np.zeros((n, n - 1))
    a[0] = 1.0
    for i in range(n - 1):
        a[i + 1] = (1 - theta * h[i]) * a[i]
        k[i + 1] = (1 - theta * h[i]) * k[i]
        k[i + 1, i] += kappa * h[i]
        s[i + 1] = (1 - theta * h[i]) * s[i]
        s[i + 1, i] += sigma * np.sqrt(h[i])
    laws = []
    for _ in range(links):
        mean = a * m0 + k @ mean
        cov = v0 * np.outer(a, a) + k @ cov @ k.T + s @ s.T
        laws.append((mean, cov))
    return laws


def test_directed_chain_with_a_linear_drift_has_the_exact_gaussian_law_of_the_linear_chain_sde():
    theta, kappa, sigma, m0, v0 = 1.5, 2.0, 0.5, 0.3, 0.2
    model = DirectedChainSDE(1, 4, 1, noise_size=1, key=jax.random.key(0))
    # b(t, x, x~) = -theta x + kappa x~ and sigma(t, x, x~) = sigma: the inputs are [t, x, x~]
    model = eqx.tree_at(
        lambda m: (m.drift, m.diffusion), model, (_linear([0.0, -theta, kappa], 0.0), _linear([0.0, 0.0, 0.0], sigma))
    )
    ts = np.linspace(0.0, 1.0, 21)
    n, links = 8000, 3
    rng = np.random.default_rng(0)
    # the first (real) link: y_0 + 0.7 W_t with y_0 ~ N(-0.5, 0.1)
    increments = rng.normal(size=(n, len(ts) - 1)) * np.sqrt(np.diff(ts))
    first = (
        -0.5
        + np.sqrt(0.1) * rng.normal(size=(n, 1))
        + 0.7 * np.concatenate([np.zeros((n, 1)), increments.cumsum(1)], 1)
    )
    first_cov = 0.1 + 0.49 * np.minimum.outer(ts, ts)
    initials = m0 + np.sqrt(v0) * rng.normal(size=(links, n, 1))
    generated = model.chain(
        jnp.asarray(ts, jnp.float32),
        jnp.asarray(first[..., None], jnp.float32),
        jnp.asarray(initials, jnp.float32),
        key=jax.random.key(1),
    )
    laws = _exact_chain_law(ts, theta, kappa, sigma, m0, v0, np.full(len(ts), -0.5), first_cov, links)
    for link, (mean, cov) in zip(np.asarray(generated, np.float64)[..., 0], laws):
        std = np.sqrt(np.diag(cov))
        np.testing.assert_allclose(link.mean(0), mean, atol=5 * std.max() / np.sqrt(n))
        np.testing.assert_allclose(link.var(0), np.diag(cov), rtol=5 * np.sqrt(2 / n), atol=1e-6)
        np.testing.assert_allclose(
            np.cov(link[:, 10], link[:, 20])[0, 1], cov[10, 20], atol=5 * cov[20, 20] / np.sqrt(n)
        )
    # the neighbour matters: without the neighbour term the final variance would be a third of the generated one
    no_neighbour = _exact_chain_law(ts, theta, 0.0, sigma, m0, v0, np.full(len(ts), -0.5), first_cov, 1)[0][1]
    assert link[:, -1].var() > 2 * no_neighbour[-1, -1]


def test_directed_chain_rejects_a_batched_neighbour():
    model = DirectedChainSDE(2, 4, 1, key=jax.random.key(0))
    with pytest.raises((ValueError, TypeError), match="neighbour"):
        model(jnp.linspace(0, 1, 5), jnp.zeros((3, 5, 2)), jnp.zeros(2), key=jax.random.key(1))


def _scaled_discriminator(gan: SDEGAN, factor: float) -> SDEGAN:
    is_linear = lambda x: isinstance(x, eqx.nn.Linear)
    scale = lambda m: eqx.tree_at(lambda l: l.weight, m, m.weight * factor) if is_linear(m) else m
    return eqx.tree_at(lambda g: g.discriminator, gan, jax.tree.map(scale, gan.discriminator, is_leaf=is_linear))


def test_sde_gan_weight_clipping_holds_through_training_and_bounds_the_critic():
    ts = jnp.linspace(0.0, 1.0, 6)
    gan = SDEGAN(1, 4, 8, 1, key=jax.random.key(0))
    assert gan.lipschitz == "clip" and weights_within_clip(gan.discriminator)
    loud = _scaled_discriminator(gan, 30.0)
    assert not weights_within_clip(loud.discriminator)
    assert weights_within_clip(clip_weights(loud.discriminator))
    data = jax.random.normal(jax.random.key(1), (16, 6, 1))
    trained, history = train_sde_gan(
        gan, ts, data, steps=2, batch_size=8, key=jax.random.key(2), discriminator_lr=1.0, progress=False
    )
    assert np.all(np.isfinite(history["loss"])) and weights_within_clip(trained.discriminator)
    # a clipped critic's input gradients stay far below those of the unclipped, scaled-up one
    grads = eqx.filter_jit(lambda d: jax.vmap(jax.grad(lambda y: d(ts, y)))(data))
    clipped_norm = float(jnp.max(jnp.linalg.norm(grads(trained.discriminator).reshape(16, -1), axis=1)))
    loud_norm = float(jnp.max(jnp.linalg.norm(grads(loud.discriminator).reshape(16, -1), axis=1)))
    assert clipped_norm < loud_norm / 10


def test_sde_gan_gradient_penalty_enters_the_loss_is_zero_for_a_unit_gradient_critic_and_descends():
    ts = jnp.linspace(0.0, 1.0, 5)
    gan = _scaled_discriminator(SDEGAN(1, 4, 8, 1, lipschitz="gradient_penalty", key=jax.random.key(0)), 4.0)
    data = jax.random.normal(jax.random.key(1), (16, 5, 1))
    key = jax.random.key(5)
    sample_key, penalty_key = jax.random.split(key)
    fake = eqx.filter_jit(gan.sample)(ts, 16, key=sample_key)
    penalty = eqx.filter_jit(lambda d: gradient_penalty(d, ts, data, fake, key=penalty_key))
    score = eqx.filter_jit(lambda d, y: jax.vmap(d, in_axes=(None, 0))(ts, y))
    expected = (
        jnp.mean(score(gan.discriminator, fake))
        - jnp.mean(score(gan.discriminator, data))
        + 10.0 * penalty(gan.discriminator)
    )
    np.testing.assert_allclose(eqx.filter_jit(gan.loss)(ts, data, key=key), expected, rtol=1e-5)
    # D(y) = y_0 (the path's value at time 0) has an input gradient of norm one everywhere: no penalty
    assert float(penalty(lambda ts, y: y[0, 0])) < 1e-8
    optimiser = optax.adam(3e-2)

    @eqx.filter_jit
    def descend(critic, state):
        grads = eqx.filter_grad(penalty)(critic)
        updates, state = optimiser.update(grads, state)
        return eqx.apply_updates(critic, updates), state

    critic, state = gan.discriminator, optimiser.init(eqx.filter(gan.discriminator, eqx.is_inexact_array))
    before = float(penalty(critic))
    for _ in range(15):
        critic, state = descend(critic, state)
    assert before > 1.0 and float(penalty(critic)) < before / 4
    with pytest.raises(ValueError, match="lipschitz"):
        SDEGAN(1, 4, 8, 1, lipschitz="spectral", key=jax.random.key(0))
