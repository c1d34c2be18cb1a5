import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.stats import ortho_group

from jaxinterp import compare
from models.mlp import MLP


def test_relative_representations_are_invariant_to_rotations_and_rescaling_of_the_latent_space():
    rng = np.random.default_rng(0)
    latents = jnp.asarray(rng.normal(size=(50, 6)), dtype=jnp.float32)
    anchors = latents[:10]
    rotation = jnp.asarray(ortho_group.rvs(6, random_state=0), dtype=jnp.float32)
    relative = compare.relative_representation(latents, anchors)
    assert relative.shape == (50, 10)
    np.testing.assert_allclose(jnp.diagonal(relative[:10]), 1.0, atol=1e-6)
    moved = compare.relative_representation(4.0 * latents @ rotation, 4.0 * anchors @ rotation)
    np.testing.assert_allclose(moved, relative, atol=1e-5)
    # a non-isometric map changes the angles
    stretched = compare.relative_representation(latents * jnp.arange(1.0, 7.0), anchors * jnp.arange(1.0, 7.0))
    assert float(jnp.max(jnp.abs(stretched - relative))) > 0.1
    with pytest.raises(ValueError, match="share the latent width d"):
        compare.relative_representation(latents, anchors[:, :5])


def test_stitching_a_rotated_encoder_to_a_relative_decoder_is_exact_and_an_absolute_one_is_not():
    inputs = jr.normal(jr.key(0), (40, 12))
    encoder = MLP(12, (16,), 6, activation="tanh", key=jr.key(1))
    rotation = jnp.asarray(ortho_group.rvs(6, random_state=2), dtype=jnp.float32)
    rotated = eqx.tree_at(lambda m: (m.head.weight, m.head.bias), encoder, (
        2.0 * rotation @ encoder.head.weight, 2.0 * rotation @ encoder.head.bias
    ))  # fmt: skip
    anchors = inputs[compare.select_anchors(inputs, 8, key=jr.key(3))]
    relative_decoder = MLP(8, (), 3, key=jr.key(4))
    absolute_decoder = MLP(6, (), 3, key=jr.key(5))
    original = jax.vmap(compare.stitch(encoder, relative_decoder, anchors))(inputs)
    stitched = jax.vmap(compare.stitch(rotated, relative_decoder, anchors))(inputs)
    np.testing.assert_allclose(stitched, original, atol=1e-5)
    absolute = jax.vmap(compare.stitch(encoder, absolute_decoder))(inputs)
    absolute_stitched = jax.vmap(compare.stitch(rotated, absolute_decoder))(inputs)
    assert float(jnp.max(jnp.abs(absolute_stitched - absolute))) > 0.1


def test_anchor_strategies():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 3))
    labels = np.repeat(np.arange(4), 50)
    random = compare.select_anchors(points, 20, key=jr.key(0))
    assert len(set(random.tolist())) == 20
    np.testing.assert_array_equal(random, compare.select_anchors(points, 20, key=jr.key(0)))
    by_class = compare.select_anchors(points, 10, strategy="by_class", labels=labels, key=jr.key(0))
    assert np.bincount(labels[by_class]).tolist() == [3, 3, 2, 2] and len(set(by_class.tolist())) == 10
    points[17] = 100.0  # an outlier is the first point farthest-point sampling adds
    farthest = compare.select_anchors(points, 5, strategy="farthest_point", key=jr.key(0))
    assert 17 in farthest[:2].tolist() and len(set(farthest.tolist())) == 5
    chosen = points[farthest]
    nearest_gap = min(np.linalg.norm(a - b) for i, a in enumerate(chosen) for b in chosen[i + 1 :])
    assert nearest_gap > np.median(np.linalg.norm(points[random[:5], None] - points[random[5:10]], axis=-1))
    with pytest.raises(ValueError, match="needs labels"):
        compare.select_anchors(points, 4, strategy="by_class", key=jr.key(0))
    with pytest.raises(ValueError, match="class 0 has 5 examples, fewer than the 10 asked"):
        compare.select_anchors(points[45:], 40, strategy="by_class", labels=labels[45:], key=jr.key(0))
