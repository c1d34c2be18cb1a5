import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from jaxinterp import features
from tests.helpers import tiny_transformer_configs


@pytest.fixture(scope="module")
def llama():
    return models.Transformer(tiny_transformer_configs()["llama"], key=jax.random.key(0))


TOKENS = jnp.array([3, 14, 15, 9, 2, 6])
SITE = "blocks.0.resid_post"


def test_a_zero_direction_leaves_the_logits_unchanged_and_a_direction_adds_at_the_site(llama):
    plain = llama(TOKENS)
    steered = features.steer(llama, {SITE: jnp.zeros(32)}, 5.0)(TOKENS)
    np.testing.assert_array_equal(steered, plain)
    direction = jax.random.normal(jax.random.key(1), (32,))
    by_hand = ji.intervene(llama, {SITE: lambda x: x + 2.5 * direction})(TOKENS)
    np.testing.assert_allclose(features.steer(llama, {SITE: direction}, 2.5)(TOKENS), by_hand, rtol=1e-6)
    assert not np.allclose(by_hand, plain)
    # steering only the last position leaves the logits of every earlier position as they were (causal model)
    last = features.steer(llama, {SITE: direction}, 2.5, positions=jnp.array([5]))(TOKENS)
    np.testing.assert_allclose(last[:5], plain[:5], rtol=1e-6)
    with pytest.raises((ValueError, TypeError)):  # the shape check, or jaxtyping's where it is on
        features.steer(llama, {SITE: jnp.zeros((2, 32))})


def test_gact_with_one_direction_is_act():
    rng = np.random.default_rng(0)
    concept, baseline = rng.normal(1.0, 1.0, (40, 8)), rng.normal(0.0, 1.0, (30, 8))
    gact = features.fit_gact(concept, baseline, 1, key=jax.random.key(0))
    act = features.act_direction(concept, baseline)
    prompts = rng.normal(size=(5, 8))
    np.testing.assert_allclose(gact.direction(prompts), np.broadcast_to(act, (5, 8)), rtol=1e-5, atol=1e-6)


def test_gact_directions_are_cluster_centroids_the_probe_picks_them_and_refinement_is_a_running_mean():
    rng = np.random.default_rng(1)
    offsets = np.array([[4.0, 0, 0, 0], [0, 0, 4.0, 0]])
    labels = np.repeat([0, 1], 30)
    concept = offsets[labels] + 0.1 * rng.normal(size=(60, 4))
    baseline = 0.1 * rng.normal(size=(50, 4))
    gact = features.fit_gact(concept, baseline, 2, key=jax.random.key(0))
    order = np.argsort(np.asarray(gact.directions[:, 0]))[::-1]  # the direction along the first axis first
    np.testing.assert_allclose(gact.directions[order], offsets - baseline.mean(0), atol=0.05)
    picked = np.asarray(gact.weights(concept)).argmax(1)
    assert np.mean(picked == order[labels]) == 1.0
    new = offsets[[0, 0]] + 1.0  # two new examples, both nearest the first direction
    refined = features.refine_gact(gact, new, baseline.mean(0))
    first = order[0]
    expected = (gact.directions[first] * gact.counts[first] + (new - baseline.mean(0)).sum(0)) / (
        gact.counts[first] + 2
    )
    np.testing.assert_allclose(refined.directions[first], expected, rtol=1e-5)
    np.testing.assert_array_equal(refined.directions[order[1]], gact.directions[order[1]])


def test_the_strength_search_reaches_its_kl_target_on_a_model(llama):
    direction = jax.random.normal(jax.random.key(2), (32,))
    plain = llama(TOKENS)[-1]

    @jax.jit
    def divergence(alpha):
        return features.kl_divergence(plain, features.steer(llama, {SITE: direction}, alpha)(TOKENS)[-1])

    assert float(divergence(0.0)) == pytest.approx(0.0, abs=1e-7)
    # the final RMSNorm bounds the effect of any strength: aim below that bound
    ceiling = float(divergence(1e4))
    for target in (0.2 * ceiling, 0.6 * ceiling):
        strength = features.strength_for_divergence(divergence, target, initial=0.1)
        assert abs(strength.divergence - target) <= 0.02 * target
        assert float(divergence(strength.alpha)) == pytest.approx(strength.divergence, rel=1e-5)
    with pytest.raises(RuntimeError, match="stays below"):
        features.strength_for_divergence(lambda a: 0.0, 0.1, max_evaluations=5)


def test_the_direction_detector_of_act_on_separable_data():
    rng = np.random.default_rng(3)
    concept, baseline = rng.normal(2.0, 0.3, (20, 3)), rng.normal(-2.0, 0.3, (20, 3))
    direction = features.act_direction(concept, baseline)
    assert features.direction_accuracy(direction, concept, baseline, concept + 0.1, baseline - 0.1) == 1.0
    assert features.direction_accuracy(-direction, concept, baseline, concept, baseline) == 0.0
