"""The SAELens round trip, against `tests/fixtures/saelens/` (made by `tests/fixtures/make_saelens_reference.py`):
SAELens loaded SAEs that we exported and reconstructed fixed inputs with them, and saved SAEs of its own."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

from jaxinterp import features

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "saelens"
SAELENS_CLASS = {"relu": "StandardSAE", "topk": "TopKSAE", "jumprelu": "JumpReLUSAE", "batchtopk": "JumpReLUSAE"}


@pytest.fixture(scope="module")
def reference():
    return np.load(FIXTURES / "reference.npz")


@pytest.mark.parametrize("architecture", ["relu", "topk", "jumprelu", "batchtopk"])
def test_saelens_reconstructs_our_exports_as_we_do_and_we_read_them_back(architecture, reference, tmp_path):
    ours, config, log_sparsity = features.load_saelens(FIXTURES / f"ours_{architecture}")
    assert str(reference[f"ours_{architecture}_saelens_class"]) == SAELENS_CLASS[architecture]
    x = jnp.asarray(reference["inputs"])
    np.testing.assert_allclose(ours.encode(x), reference[f"ours_{architecture}_latents"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours(x), reference[f"ours_{architecture}_reconstruction"], rtol=1e-5, atol=1e-6)
    assert log_sparsity.shape == (10,) and log_sparsity[0] == pytest.approx(-10.0)
    # exporting what we read writes the same files: weights, config and sparsity
    frequency = 10.0 ** log_sparsity.astype(np.float64) - 1e-10
    out = features.save_saelens(ours, tmp_path / "again", feature_sparsity=frequency, metadata=config["metadata"])
    for name in ("sae_weights.safetensors", "sparsity.safetensors"):
        before = safetensors.numpy.load_file(str(FIXTURES / f"ours_{architecture}" / name))
        after = safetensors.numpy.load_file(str(out / name))
        assert sorted(before) == sorted(after)
        for key in before:
            np.testing.assert_allclose(
                after[key], before[key], rtol=1e-6, atol=0 if name != "sparsity.safetensors" else 1e-5
            )
    assert json.loads((out / "cfg.json").read_text()) == config
    again, _, _ = features.load_saelens(out)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        if getattr(ours, name) is None:
            assert getattr(again, name) is None
        else:
            np.testing.assert_array_equal(getattr(again, name), getattr(ours, name))


@pytest.mark.parametrize("name", ["standard", "topk", "jumprelu", "batchtopk"])
def test_we_reconstruct_saelens_saes_as_saelens_does(name, reference):
    sae, config, log_sparsity = features.load_saelens(FIXTURES / f"theirs_{name}")
    x = jnp.asarray(reference["inputs"])
    latents = np.asarray(sae.encode(x))
    expected = reference[f"theirs_{name}_latents"]
    if name == "topk":
        # saved with rescale_acts_by_decoder_norm and an unnormalised decoder: the norms are folded in on reading
        assert config["rescale_acts_by_decoder_norm"] is True
        np.testing.assert_allclose(np.linalg.norm(sae.W_dec, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(latents, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sae(x), reference[f"theirs_{name}_reconstruction"], rtol=1e-5, atol=1e-5)
    assert (latents != 0).any() and (latents == 0).any()
    if name == "standard":
        np.testing.assert_array_equal(log_sparsity, reference["theirs_standard_log_sparsity"])
    if name == "batchtopk":
        assert config["architecture"] == "jumprelu" and sae.architecture == "jumprelu"
        np.testing.assert_allclose(sae.threshold, 0.3, rtol=1e-6)


def test_unsupported_folders_are_refused_clearly(tmp_path):
    sae, config, _ = features.load_saelens(FIXTURES / "theirs_standard")
    out = features.save_saelens(sae, tmp_path / "gated")
    (out / "cfg.json").write_text(json.dumps(config | {"architecture": "gated"}))
    with pytest.raises(ValueError, match="'gated' SAE"):
        features.load_saelens(out)
    (out / "cfg.json").write_text(json.dumps(config | {"normalize_activations": "layer_norm"}))
    with pytest.raises(ValueError, match="normalises its inputs"):
        features.load_saelens(out)
    with pytest.raises(FileNotFoundError, match="cfg.json"):
        features.load_saelens(tmp_path / "nothing")
