"""The activation store (`jaxinterp.features.activation_store`): what it writes equals `capture` of each text, chunks
are shuffled and resumable, a missing or corrupt chunk is an error naming its file, and the reader's batches cover
the store."""

import json
from collections import Counter

import equinox as eqx
import jax
import numpy as np
import pytest

import jaxinterp as ji
import models
from jaxinterp import features
from tests.helpers import tiny_transformer_configs

SITES = ("blocks.0.mlp.post", "blocks.0.attn.z", "blocks.0.resid_post")


@pytest.fixture(scope="module")
def llama():
    return models.Transformer(tiny_transformer_configs()["llama"], key=jax.random.key(0))


def tokenize(texts):
    """A stand-in tokenizer: one id per character."""
    return [[ord(c) % 50 for c in text] for text in texts]


_RNG = np.random.default_rng(0)
TEXTS = ["".join(_RNG.choice(list("abcdefghijklmnopqrstuvwxyz "), int(n))) for n in _RNG.integers(3, 20, 40)]
SETTINGS = features.StoreSettings(sites=SITES, context=16, chunk_tokens=150, batch_tokens=96, model_name="tiny")


@pytest.fixture(scope="module")
def built(llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("store")
    return folder, features.build_activation_store(folder, llama, tokenize, TEXTS, SETTINGS, progress=False)


def test_the_store_holds_each_texts_activations_shuffled_within_chunks(llama, built):
    _, store = built
    lengths = [min(len(t), 16) for t in TEXTS]
    assert store.rows == sum(lengths) and store.complete and len(store.manifest["chunks"]) > 2
    assert store.width("blocks.0.attn.z") == 4 * 8 and store.width("blocks.0.mlp.post") == 64
    rows = store.rows_info()
    first = store.chunk_rows(0)
    assert not np.all(np.diff(first[:, 0] * 100 + first[:, 1]) > 0)  # not in text order
    chosen = (0, 7, 31)
    tokens = np.zeros((3, 16), np.int32)  # right-padded: the model is causal, so padding changes no earlier value
    for row, text in enumerate(chosen):
        ids = tokenize([TEXTS[text]])[0][:16]
        tokens[row, : len(ids)] = ids
    _, cache = eqx.filter_jit(lambda m, t: jax.vmap(ji.capture(m, *SITES))(t))(llama, tokens)
    loaded = {site: store.load(site) for site in SITES}
    for row, text in enumerate(chosen):
        picked = rows[:, 0] == text
        positions = rows[picked, 1]
        np.testing.assert_array_equal(np.sort(positions), np.arange(lengths[text]))
        np.testing.assert_array_equal(rows[picked, 2], tokens[row, positions])
        for site in SITES:
            expected = np.asarray(cache[site][row]).reshape(16, -1)[positions]
            np.testing.assert_allclose(loaded[site][picked], expected, atol=1e-5, rtol=1e-5)
    assert store.manifest["build"]["tokens_per_s"] > 0


def test_batches_are_shuffled_float32_and_cover_the_store(built):
    _, store = built
    batches = list(store.batches("blocks.0.resid_post", 64, seed=3, buffer_chunks=2))
    assert all(b.shape == (64, 32) and b.dtype == np.float32 for b in batches)
    assert len(batches) == store.rows // 64
    seen = np.concatenate(batches)
    everything = store.load("blocks.0.resid_post")
    # each stored row is yielded at most once (as many times as it occurs: texts may share a first character)
    assert not Counter(map(bytes, seen)) - Counter(map(bytes, everything))
    again = list(store.batches("blocks.0.resid_post", 64, seed=3, buffer_chunks=2))
    np.testing.assert_array_equal(again[0], batches[0])


def test_a_rerun_resumes_and_a_damaged_chunk_is_named(llama, built, tmp_path):
    folder, store = built
    # an interrupted build: chunk 1 was never finished
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["chunks"][1]["complete"] = False
    (folder / "manifest.json").write_text(json.dumps(manifest))
    before = store.load("blocks.0.mlp.post")
    with pytest.raises(features.StoreError, match="chunk 1 .* not built yet"):
        features.ActivationStore(folder).load("blocks.0.mlp.post")
    resumed = features.build_activation_store(folder, llama, tokenize, TEXTS, SETTINGS, progress=False)
    assert resumed.manifest["build"]["tokens"] == manifest["chunks"][1]["rows"]
    np.testing.assert_array_equal(resumed.load("blocks.0.mlp.post"), before)

    damaged = folder / "chunk_00002.site_blocks.0.mlp.post.npy"
    damaged.write_bytes(damaged.read_bytes()[:200])
    with pytest.raises(features.StoreError, match="chunk_00002.site_blocks.0.mlp.post.npy"):
        resumed.load("blocks.0.mlp.post")
    with pytest.raises(features.StoreError, match="chunk_00002"):
        features.build_activation_store(folder, llama, tokenize, TEXTS, SETTINGS, progress=False)
    damaged.unlink()
    with pytest.raises(features.StoreError, match="missing"):
        resumed.chunk(2, "blocks.0.mlp.post")
    with pytest.raises(features.StoreError, match="other settings"):
        features.build_activation_store(folder, llama, tokenize, TEXTS[:5], SETTINGS, progress=False)
    with pytest.raises(KeyError, match="no site"):
        resumed.chunk(0, "blocks.1.mlp.post")
