import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp
from models.mvpa import MVPAttention, MVPFormer, PatchTransformer, channel_relations


@pytest.fixture(scope="module")
def model():
    return MVPFormer(4, 3, d_model=16, n_heads=2, depth=2, max_time_offset=5, key=jax.random.key(0))


def test_mvpa_is_equivariant_to_channel_permutations(model):
    """Permuting the channels permutes every token site the same way and leaves the logits unchanged; checked for
    a batch of random permutations inside one compiled vmap."""
    x = jax.random.normal(jax.random.key(1), (5, 24))
    perms = jax.vmap(lambda k: jax.random.permutation(k, 5))(jax.random.split(jax.random.key(2), 8))
    sites = ("embedding", "blocks.1.out")
    logits, cache = jaxinterp.capture(model, *sites)(x)

    @jax.jit
    def permuted(perm):
        return jaxinterp.capture(model, *sites)(x[perm])

    out, caches = jax.vmap(permuted)(perms)
    np.testing.assert_allclose(out, jnp.broadcast_to(logits, out.shape), atol=2e-5)
    for site in sites:
        np.testing.assert_allclose(caches[site], jax.vmap(lambda p, site=site: cache[site][p])(perms), atol=2e-5)
    assert float(jnp.max(jnp.abs(cache["blocks.1.out"][0] - cache["blocks.1.out"][1]))) > 1e-3


def test_ordered_channel_relations_break_the_symmetry():
    ordered = MVPFormer(4, 3, d_model=16, n_heads=2, depth=1, max_channel_offset=3, key=jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (5, 24))
    assert float(jnp.max(jnp.abs(ordered(x[::-1][jnp.array([1, 0, 2, 3, 4])]) - ordered(x)))) > 1e-4
    np.testing.assert_array_equal(channel_relations(3, 1), [[0, 1, 1], [1, 0, 1], [1, 1, 0]])


def test_mvpa_reads_any_channel_count_and_splits_the_three_terms(model):
    for channels in (1, 7):
        x = jax.random.normal(jax.random.key(channels), (channels, 21))
        logits, cache = jaxinterp.capture(model, "blocks.0.attention.*")(x)
        tokens = channels * 5
        assert logits.shape == (3,)
        for term in ("content", "temporal", "spatial", "pattern"):
            assert cache[f"blocks.0.attention.{term}"].shape == (2, tokens, tokens)
        np.testing.assert_allclose(jnp.sum(cache["blocks.0.attention.pattern"], -1), 1.0, rtol=1e-5)
    without_space = jaxinterp.intervene(model, {"blocks.*.attention.spatial": lambda s: jnp.zeros_like(s)})(x)
    assert float(jnp.max(jnp.abs(without_space - logits))) > 1e-5


def test_causal_mvpa_does_not_look_ahead():
    attention = MVPAttention(16, 2, max_time_offset=4, causal=True, key=jax.random.key(5))
    tokens = jax.random.normal(jax.random.key(6), (3, 6, 16))
    later = tokens.at[:, 4:].set(jax.random.normal(jax.random.key(9), (3, 2, 16)))
    before, after = jax.jit(jax.vmap(attention))(jnp.stack([tokens, later]))
    np.testing.assert_allclose(before[:, :4], after[:, :4], atol=1e-5)
    assert float(jnp.max(jnp.abs(before[:, 4:] - after[:, 4:]))) > 1e-3


def test_cd_splits_mvpa_by_channel_and_the_standard_transformer_checks_its_channels():
    x = jax.random.normal(jax.random.key(7), (4, 24))
    mask = jnp.array([1.0, 0.0, 0.0, 0.0])[:, None]
    standard = PatchTransformer(4, 4, 3, 6, d_model=16, n_heads=2, depth=1, key=jax.random.key(8))
    shallow = MVPFormer(4, 3, d_model=16, n_heads=2, depth=1, max_time_offset=5, key=jax.random.key(0))
    rel, irr = jaxinterp.cd(shallow, jaxinterp.Input(0, mask))(x)
    np.testing.assert_allclose(rel + irr, shallow(x), rtol=1e-4, atol=1e-5)
    assert float(jnp.max(jnp.abs(rel))) > 1e-4
    with pytest.raises((ValueError, TypeError), match="shape"):
        standard(x[:3])
