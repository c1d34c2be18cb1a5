import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jaxtyping import TypeCheckError

import models
from jaxinterp import neurons


def _tiny_model(key):
    cfg = models.llama_config(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=8, d_mlp=12)
    return models.Transformer(cfg, key=key)


def _tokens(seed=0, texts=13, seq=7):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 50, (texts, seq)).astype(np.int32)
    mask = np.ones((texts, seq), bool)
    mask[::3, 5:] = False  # padding at the end of every third text
    return tokens, mask


def _dense(model, tokens, site="blocks.0.mlp.post"):
    from jaxinterp import capture

    return np.asarray(jax.vmap(lambda t: capture(model, site)(t)[1][site])(jnp.asarray(tokens)))


def test_top_contexts_equal_a_dense_sort_and_skip_padding(getkey):
    """Streamed over uneven batches (the last one padded), the top-k of every unit equals the top-k of the dense
    activations over unmasked tokens, with the right texts and positions; densities are counted over unmasked
    tokens."""
    model = _tiny_model(getkey())
    tokens, mask = _tokens()
    found = neurons.top_contexts(model, "blocks.0.mlp.post", tokens, mask, k=5, batch_size=4, progress=False)
    acts = _dense(model, tokens)  # [texts, seq, units]
    flat = np.where(mask[..., None], acts, -np.inf).reshape(-1, acts.shape[-1])
    for unit in range(acts.shape[-1]):
        order = np.argsort(-flat[:, unit])[:5]
        np.testing.assert_allclose(found.values[unit], flat[order, unit], rtol=1e-5)
        np.testing.assert_allclose(acts[found.texts[unit], found.positions[unit], unit], found.values[unit], rtol=1e-5)
    assert mask[found.texts, found.positions].all()
    np.testing.assert_allclose(found.density, ((acts > 0) & mask[..., None]).sum((0, 1)) / mask.sum(), rtol=1e-6)
    assert found.tokens == mask.sum()


def test_per_text_lists_each_text_once_and_quantile_bands_rise(getkey):
    """With `per_text`, a unit's top texts are distinct and their values are each text's maximum; the quantile
    samples are real active activations, ordered band by band, and fill every band when there are enough."""
    model = _tiny_model(getkey())
    tokens, mask = _tokens(texts=40)
    found = neurons.top_contexts(
        model, ["blocks.0.mlp.post"], tokens, mask, k=4, bands=3, per_band=2, per_text=True, batch_size=16,
        threshold=-1.0, progress=False,
    )["blocks.0.mlp.post"]  # fmt: skip
    acts = _dense(model, tokens)
    per_text_max = np.where(mask[..., None], acts, -np.inf).max(axis=1)  # [texts, units]
    for unit in range(acts.shape[-1]):
        assert len(set(found.texts[unit])) == 4
        np.testing.assert_allclose(found.values[unit], np.sort(per_text_max[:, unit])[::-1][:4], rtol=1e-5)
    samples = found.sample_values
    assert not np.isnan(samples).any()  # 40 texts, 6 reservoir places: every band filled
    flat = samples.reshape(samples.shape[0], -1)
    assert np.all(np.diff(flat, axis=1) >= 0)
    np.testing.assert_allclose(
        samples, per_text_max[found.sample_texts, np.arange(acts.shape[-1])[:, None, None]], rtol=1e-5
    )


def test_transform_sees_the_site_and_errors_are_clear(getkey):
    """A transform (here: two units' sum and difference) defines the units; bad inputs are refused by name."""
    model = _tiny_model(getkey())
    tokens, mask = _tokens()
    mixed = neurons.top_contexts(
        model, "blocks.0.mlp.post", tokens, mask, k=3, transform=lambda post: post[:, :2] @ jnp.array([[1, 1], [1, -1.0]]),
        progress=False,
    )  # fmt: skip
    acts = _dense(model, tokens)[..., :2] @ np.array([[1, 1], [1, -1.0]])
    assert mixed.num_units == 2
    np.testing.assert_allclose(mixed.values[:, 0], np.where(mask[..., None], acts, -np.inf).max(axis=(0, 1)), rtol=1e-5)
    with pytest.raises(ValueError, match="not captured"):
        neurons.top_contexts(model, "blocks.*.mlp.post", tokens, progress=False)
    with pytest.raises((ValueError, TypeCheckError)):  # the annotations are checked first in the tests
        neurons.top_contexts(model, "blocks.0.mlp.post", tokens[0], progress=False)
    with pytest.raises((ValueError, TypeCheckError)):
        neurons.top_contexts(model, "blocks.0.mlp.post", tokens, mask[:, :3], progress=False)
    with pytest.raises(ValueError, match=r"\[seq, units\]"):
        neurons.top_contexts(model, "blocks.0.mlp.post", tokens, transform=lambda p: p.sum(), progress=False)


def test_context_window():
    tokens = np.arange(12).reshape(2, 6)
    mask = np.array([[1, 1, 1, 1, 0, 0], [1] * 6], bool)
    assert neurons.context_window(tokens, mask, 0, 2, before=5, after=5) == ([0, 1], 2, [3])
    assert neurons.context_window(tokens, mask, 1, 3, before=1, after=1) == ([8], 9, [10])
    with pytest.raises(ValueError, match="padding"):
        neurons.context_window(tokens, mask, 0, 4)
