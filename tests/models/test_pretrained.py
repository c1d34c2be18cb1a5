"""Parity of the real pretrained models with their reference implementations (fixtures made by
tests/fixtures/make_reference_outputs.py with Hugging Face transformers on CPU torch)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from tests.helpers import load_fixture


def test_minilm_hidden_states_and_sentence_embeddings_match_reference(minilm):
    model, tokenizer = minilm
    ref = load_fixture("minilm_reference.npz")
    forward = eqx.filter_jit(jax.vmap(lambda m, i, t, a: m(i, t, a), in_axes=(None, 0, 0, 0)))
    hidden = forward(model, ref["input_ids"], ref["token_type_ids"], ref["attention_mask"])
    real = ref["attention_mask"][..., None].astype(bool)
    assert np.abs(np.where(real, hidden - ref["last_hidden_state"], 0)).max() <= 1e-4
    embeddings = jax.vmap(models.sentence_embedding)(hidden, ref["attention_mask"])
    np.testing.assert_allclose(embeddings, ref["sentence_embedding"], atol=1e-5)
    ids = tokenizer.encode(str(ref["texts"][0])).ids
    np.testing.assert_array_equal(ids, ref["input_ids"][0][: len(ids)])


@pytest.mark.slow
def test_smollm2_logits_match_reference_and_greedy_continuation(smollm2):
    model, tokenizer = smollm2
    ref = load_fixture("smollm2_reference.npz")
    forward = eqx.filter_jit(lambda m, t: m(t))
    for i in range(2):
        ids = tokenizer.encode(str(ref[f"prompt_{i}"])).ids
        np.testing.assert_array_equal(ids, ref[f"input_ids_{i}"])
        logits = forward(model, jnp.asarray(ids))
        assert np.abs(np.asarray(logits) - ref[f"logits_{i}"]).max() <= 1e-3
    prompt = tokenizer.encode("The capital of France is").ids
    generated = models.greedy_generate(model, jnp.asarray(prompt), 2)
    assert tokenizer.decode(list(map(int, generated[len(prompt) :]))).startswith(" Paris")


def test_missing_and_corrupt_weight_files_are_clear_errors(tmp_path):
    from jaxinterp.assets import AssetNotFoundError

    with pytest.raises(AssetNotFoundError, match="minilm"):
        models.load("minilm-l6", tmp_path / "nowhere")
    folder = tmp_path / "minilm"
    folder.mkdir()
    source = models.loading.assets.resolve("minilm-l6")
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_bytes((source / name).read_bytes())
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:1000])
    with pytest.raises(models.WeightFileError, match="model.safetensors|MiniLM"):
        models.load("minilm-l6", folder)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(models.WeightFileError, match="broken.gguf"):
        models.load("smollm2-135m", broken)
    with pytest.raises(KeyError, match="available"):
        models.load("gpt-5")
