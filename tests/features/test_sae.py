import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import models
from jaxinterp import features


def _planted(n=2048, d_in=8, d_sae=24, active=0.08, seed=0):
    """Inputs that are sparse non-negative combinations of `d_sae` unit directions."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(d_sae, d_in))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    codes = (rng.random((n, d_sae)) < active) * rng.uniform(0.5, 1.5, (n, d_sae))
    return (codes @ directions + 0.3).astype(np.float32)


@pytest.mark.parametrize("architecture", features.SAE_ARCHITECTURES)
def test_training_reduces_the_reconstruction_loss_and_keeps_decoder_rows_unit(architecture):
    x = _planted()
    config = features.SAEConfig(
        8, 24, architecture, k=3, batch_size=128, learning_rate=3e-3, l1_coefficient=0.1, l0_coefficient=0.003,
        normalise_decoder=True, dead_feature_window=20,
    )  # fmt: skip
    sae, history = features.train_sae(x, config, key=jr.key(1), steps=100, progress=False)
    start, end = history["mse_loss"][:10].mean(), history["mse_loss"][-10:].mean()
    assert end < 0.3 * start, (architecture, start, end)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=1), 1.0, atol=1e-5)
    metrics = features.sae_metrics(sae, x)
    assert metrics["explained_variance"] > 0.5, metrics
    if architecture == "topk":
        assert metrics["l0"] <= 3
    if architecture in ("jumprelu", "batchtopk"):
        assert sae.threshold.shape == (24,) and np.all(np.asarray(sae.threshold) > 0)
    assert set(history) >= {"loss", "mse_loss", "l0", "explained_variance", "dead_features", "tokens_per_s"}
    assert history["feature_sparsity"].shape == (24,)


def test_free_decoder_rows_keep_their_initial_norm_only_when_normalised():
    x = _planted()
    config = features.SAEConfig(8, 24, "relu", batch_size=128, learning_rate=3e-3, l1_coefficient=0.1)
    sae = features.init_sae(config, key=jr.key(0))
    np.testing.assert_allclose(np.linalg.norm(np.asarray(sae.W_dec), axis=1), 0.1, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(sae.W_enc), np.asarray(sae.W_dec).T)
    # an iterable of batches, one per step, taken in order; too few is an error naming the step
    with pytest.raises(ValueError, match="ran out at step 0"):
        features.train_sae(iter([]), config, key=jr.key(0), steps=5, progress=False)
    with pytest.raises(ValueError, match=r"must be \[batch, 8\]"):
        features.train_sae([x[:4, :5]], config, key=jr.key(0), steps=1, progress=False)


def test_encode_follows_each_architecture():
    W_enc = jnp.eye(4, 6)
    common = dict(b_enc=jnp.asarray([0.0, 0.0, 0.0, 0.0, -1.0, 0.5]), W_dec=jnp.eye(6, 4), b_dec=jnp.zeros(4))
    x = jnp.asarray([[3.0, -1.0, 0.2, 2.0]])
    relu = features.SparseAutoencoder(W_enc, architecture="relu", **common)
    np.testing.assert_allclose(relu.encode(x), [[3.0, 0.0, 0.2, 2.0, 0.0, 0.5]])
    topk = features.SparseAutoencoder(W_enc, architecture="topk", k=2, **common)
    np.testing.assert_allclose(topk.encode(x), [[3.0, 0.0, 0.0, 2.0, 0.0, 0.0]])
    jump = features.SparseAutoencoder(W_enc, threshold=jnp.full(6, 0.4), architecture="jumprelu", **common)
    np.testing.assert_allclose(jump.encode(x), [[3.0, 0.0, 0.0, 2.0, 0.0, 0.5]])
    np.testing.assert_allclose(jump(x), x @ W_enc @ common["W_dec"] * 0 + jnp.asarray([[3.0, 0.0, 0.0, 2.0]]))
    with pytest.raises((ValueError, TypeError)):
        relu.encode(jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="did you mean 'topk'"):
        features.SAEConfig(4, 6, "topK")


def test_metric_formulas_on_known_answers():
    # decoder of half the identity: the reconstruction is half the input
    sae = features.SparseAutoencoder(
        jnp.eye(2), jnp.zeros(2), 0.5 * jnp.eye(2), jnp.zeros(2), apply_b_dec_to_input=False
    )
    x = np.asarray([[2.0, 0.0], [0.0, 4.0], [2.0, 4.0], [-1.0, -1.0]], np.float32)
    m = features.sae_metrics(sae, x)
    latents = np.maximum(x, 0)
    x_hat = 0.5 * latents
    assert m["l0"] == pytest.approx((1 + 1 + 2 + 0) / 4)
    assert m["l1"] == pytest.approx(latents.sum() / 4)
    assert m["mse"] == pytest.approx(np.mean(np.sum((x - x_hat) ** 2, axis=-1)))
    ev = 1 - np.sum((x - x_hat) ** 2) / np.sum((x - x.mean(0)) ** 2)
    assert m["explained_variance"] == pytest.approx(ev, rel=1e-6)
    assert m["cosine"] == pytest.approx((1 + 1 + 1 + 0) / 4, abs=1e-6)  # 0 for the input reconstructed as zero
    assert m["l2_ratio"] == pytest.approx((0.5 + 0.5 + 0.5 + 0) / 4, abs=1e-6)
    assert m["dead_fraction"] == 0.0
    np.testing.assert_allclose(m["feature_density"], [0.5, 0.5])


def test_ce_and_kl_scores_are_one_for_a_perfect_sae_and_zero_for_an_ablating_one():
    cfg = models.llama_config(vocab_size=50, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=8, d_mlp=12)
    model = models.Transformer(cfg, key=jr.key(0))
    tokens = np.random.default_rng(0).integers(0, 50, (3, 6)).astype(np.int32)
    eye = jnp.eye(16)
    perfect = features.SparseAutoencoder(
        jnp.concatenate([eye, -eye], 1), jnp.zeros(32), jnp.concatenate([eye, -eye], 0), jnp.zeros(16)
    )
    m = features.sae_metrics(perfect, model=model, site="blocks.0.resid_mid", tokens=tokens)
    assert m["ce_loss_score"] == pytest.approx(1.0, abs=1e-4)
    assert m["kl_div_with_sae"] == pytest.approx(0.0, abs=1e-6)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    zero = features.SparseAutoencoder(jnp.zeros((16, 32)), jnp.zeros(32), jnp.zeros((32, 16)), jnp.zeros(16))
    m = features.sae_metrics(zero, model=model, site="blocks.0.resid_mid", tokens=tokens)
    assert m["ce_loss_score"] == pytest.approx(0.0, abs=1e-6)
    assert m["kl_div_score"] == pytest.approx(0.0, abs=1e-6)
    assert m["dead_fraction"] == 1.0


def test_head_attribution_splits_decoder_norm_by_head():
    W_dec = jnp.asarray([[3.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    sae = features.SparseAutoencoder(W_dec.T, jnp.zeros(3), W_dec, jnp.zeros(4))
    np.testing.assert_allclose(features.head_attribution(sae, 2), [[1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    with pytest.raises(ValueError, match="divisor"):
        features.head_attribution(sae, 3)
