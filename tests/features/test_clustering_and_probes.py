import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import features


def _planted(seed=0, k=3, per=50, d=5, spread=0.05):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 5
    labels = np.repeat(np.arange(k), per)
    return centres[labels] + spread * rng.normal(size=(k * per, d)), labels, centres


def test_kmeans_recovers_planted_clusters_and_their_centres():
    x, labels, _ = _planted()
    clusters = features.kmeans(x, 3, key=jax.random.key(0))
    found = np.asarray(clusters.labels)
    # the same partition up to relabelling: each planted cluster maps to exactly one found cluster
    assert len({int(found[labels == c][0]) for c in range(3)}) == 3
    assert all(len(set(found[labels == c])) == 1 for c in range(3))
    for c in range(3):
        np.testing.assert_allclose(clusters.centroids[found[labels == c][0]], x[labels == c].mean(0), atol=1e-4)
    np.testing.assert_allclose(
        float(clusters.inertia),
        sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in range(3)),
        rtol=1e-3,
    )


def test_one_cluster_is_the_mean_and_bad_arguments_are_refused():
    x, _, _ = _planted(k=2)
    np.testing.assert_allclose(features.kmeans(x, 1, key=jax.random.key(1)).centroids[0], x.mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="between 1 and"):
        features.kmeans(x, 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="NaN"):
        features.kmeans(np.full((4, 2), np.nan), 2, key=jax.random.key(0))


def test_difference_in_means_and_mean_pooling_over_a_mask():
    positive, negative = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 3.0]])
    np.testing.assert_allclose(features.diff_in_means(positive, negative), [1.0, 2.0])
    activations = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[True, True, False], [True, False, False]])
    np.testing.assert_allclose(features.mean_pool(activations, mask), [[1.0, 2.0], [6.0, 7.0]])
    with pytest.raises((ValueError, TypeError)):  # the shape check, or jaxtyping's where it is on
        features.mean_pool(activations, mask[:, :2])


def test_a_probe_separates_separable_classes_and_online_steps_lower_its_loss_on_new_data():
    x, labels, _ = _planted(k=3, spread=1.0)
    probe = features.fit_probe(x, labels, 3)
    assert features.probe_accuracy(probe, x, labels) == 1.0
    # a probe fitted on classes 0 and 1 only learns class 2 from the online stream
    seen = labels < 2
    probe = features.fit_probe(x[seen], labels[seen], 3, steps=100)
    new_x, new_y = x[labels == 2], labels[labels == 2]

    def loss(p):
        return float(-jnp.mean(jnp.log(p.probabilities(new_x)[:, 2])))

    before = loss(probe)
    for _ in range(5):
        probe = features.refine_probe(probe, new_x, new_y)
    assert loss(probe) < before
    with pytest.raises(ValueError, match="labels must lie"):
        features.fit_probe(x, labels + 5, 3)
