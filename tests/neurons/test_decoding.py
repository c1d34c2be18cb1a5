"""`jaxinterp.neurons`: decoding MLP neurons through the final norm and the unembedding (P39), searching them by
token, and clamping them."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from jaxinterp import neurons

VOCAB, D_MODEL, LAYERS, D_MLP = 3000, 32, 3, 64
PLANTED_LAYER, PLANTED_NEURON, PLANTED_TOKEN = 1, 17, 1234


def _random_norm(model, key, *, bias: bool):
    """The model with a final norm whose weight (and bias) are far from the identity."""
    k1, k2 = jax.random.split(key)
    weight = jax.random.uniform(k1, (D_MODEL,), minval=0.3, maxval=3.0)
    if not bias:
        return eqx.tree_at(lambda m: m.ln_final.weight, model, weight)
    return eqx.tree_at(
        lambda m: (m.ln_final.weight, m.ln_final.bias), model, (weight, jax.random.normal(k2, (D_MODEL,)))
    )


@pytest.fixture(scope="module")
def llama():
    """A small random Llama-shaped model (tied embeddings, RMSNorm with a random weight) in which neuron 17 of
    layer 1 writes token 1234's unembedding direction, divided by the final norm's weight."""
    cfg = models.llama_config(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=LAYERS, n_heads=4, n_kv_heads=2, d_head=8, d_mlp=D_MLP
    )
    model = _random_norm(models.Transformer(cfg, key=jax.random.key(0)), jax.random.key(1), bias=False)
    direction = 3.0 * model.token_embed[PLANTED_TOKEN] / model.ln_final.weight
    w_out = model.blocks[PLANTED_LAYER].mlp.w_out.at[PLANTED_NEURON].set(direction)
    return eqx.tree_at(lambda m: m.blocks[PLANTED_LAYER].mlp.w_out, model, w_out)


@pytest.fixture(scope="module")
def decoded(llama):
    return neurons.decode_neurons(llama, k=10)


def _dense_top(logits, k):
    values, ids = jax.lax.top_k(logits, k)
    low, low_ids = jax.lax.top_k(-logits, k)
    return ids, values, low_ids, -low


def test_the_planted_neuron_decodes_to_its_token_first(llama, decoded):
    assert decoded.top_ids.shape == decoded.bottom_ids.shape == (LAYERS, D_MLP, 10)
    assert decoded.top_ids.dtype == jnp.int32 and decoded.layers == (0, 1, 2)
    assert int(decoded.top_ids[PLANTED_LAYER, PLANTED_NEURON, 0]) == PLANTED_TOKEN
    # the final norm's weight is applied: the logit is (a * g) . u = 3 |u|^2 for u the token's unembedding
    u = llama.token_embed[PLANTED_TOKEN]
    np.testing.assert_allclose(decoded.top_logits[PLANTED_LAYER, PLANTED_NEURON, 0], 3.0 * u @ u, rtol=1e-5)


def test_decoding_equals_the_dense_computation_chunked_or_not(llama, decoded):
    """Every neuron: the chunked two-stage selection equals `lax.top_k` of the full logits `(a * g) @ W_U`."""
    directions = jnp.stack([block.mlp.w_out for block in llama.blocks])
    dense = (directions * llama.ln_final.weight) @ llama.token_embed.T
    ids, values, low_ids, low = _dense_top(dense, 10)
    np.testing.assert_array_equal(decoded.top_ids, ids)
    np.testing.assert_array_equal(decoded.bottom_ids, low_ids)
    np.testing.assert_allclose(decoded.top_logits, values, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(decoded.bottom_logits, low, rtol=1e-5, atol=1e-7)
    for kwargs in ({"chunk_size": 7}, {"chunk_size": LAYERS * D_MLP}, {"memory_bytes": 5 * 8 * VOCAB}):
        chunked = neurons.decode_neurons(llama, k=10, **kwargs)
        np.testing.assert_array_equal(chunked.top_ids, decoded.top_ids)
        np.testing.assert_array_equal(chunked.bottom_ids, decoded.bottom_ids)
        # a matrix product of another height may round differently in the last place
        np.testing.assert_allclose(chunked.top_logits, decoded.top_logits, rtol=1e-6)
        np.testing.assert_allclose(chunked.bottom_logits, decoded.bottom_logits, rtol=1e-6)


@pytest.mark.parametrize("k", [3, 12])  # 12: 2 * 12 * 128 > 3000 columns, so one `lax.top_k` over the row
def test_bottom_k_is_the_top_k_of_the_negation(llama, k):
    directions = neurons.neuron_directions(llama, [0, 2])
    projection = neurons.readout(llama)
    decoded = neurons.decode_directions(directions, projection, k, chunk_size=50)
    negated = neurons.decode_directions(-directions, projection, k, bottom_k=0)
    assert negated.bottom_ids.shape == (2, D_MLP, 0)
    np.testing.assert_array_equal(decoded.bottom_ids, negated.top_ids)
    np.testing.assert_allclose(decoded.bottom_logits, -negated.top_logits, rtol=1e-6)
    assert bool(jnp.all(jnp.diff(decoded.top_logits, axis=-1) <= 0))
    assert bool(jnp.all(jnp.diff(decoded.bottom_logits, axis=-1) >= 0))


def test_a_layer_norm_model_is_mean_centred_and_scaled_without_its_bias():
    cfg = models.gpt2_config(
        vocab_size=VOCAB, d_model=D_MODEL, n_layers=2, n_heads=4, d_head=8, d_mlp=D_MLP, max_positions=16,
        tie_embeddings=False,
    )  # fmt: skip
    model = _random_norm(models.Transformer(cfg, key=jax.random.key(2)), jax.random.key(3), bias=True)
    projection = neurons.readout(model)
    assert projection.centre and projection.unembed is model.unembed
    directions = neurons.neuron_directions(model)
    centred = directions - directions.mean(-1, keepdims=True)
    dense = (centred * model.ln_final.weight) @ model.unembed
    decoded = neurons.decode_neurons(model, k=4)
    np.testing.assert_array_equal(decoded.top_ids, jax.lax.top_k(dense, 4)[1])
    np.testing.assert_allclose(decoded.top_logits, jax.lax.top_k(dense, 4)[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(neurons.neuron_logits(model, 1, 5), dense[1, 5], rtol=1e-5, atol=1e-7)
    # the other weight vectors: the columns of W_in; a GPT-2 MLP has no gate
    up = neurons.decode_neurons(model, k=4, weights="in", layers=1)
    np.testing.assert_array_equal(
        up.top_ids[0], neurons.decode_directions(model.blocks[1].mlp.w_in.T, projection, 4)[0]
    )
    with pytest.raises(ValueError, match="not gated, so it has no W_gate"):
        neurons.decode_neurons(model, weights="gate")


def test_clamping_the_planted_neuron_moves_the_output_toward_its_tokens(llama):
    tokens = jnp.array([5, 99, 2048, 7, 300, 42])
    effect = neurons.clamp_effect(llama, tokens, PLANTED_LAYER, PLANTED_NEURON, 20.0, positions=[2, -1], k=5)
    assert int(effect.top_ids[0]) == PLANTED_TOKEN and effect.top_shift.shape == (6,)
    for p in (2, 5):
        assert float(effect.top_shift[p]) > 0.1 and float(effect.bottom_shift[p]) < 0 and float(effect.kl[p]) > 0
    np.testing.assert_allclose(jnp.log(effect.top_mass_clamped / effect.top_mass), effect.top_shift, rtol=1e-4)
    # a causal model: the positions before the first clamped one see nothing
    np.testing.assert_allclose(effect.top_shift[:2], 0.0, atol=1e-6)
    np.testing.assert_allclose(effect.kl[:2], 0.0, atol=1e-6)
    # `clamp` is the intervention itself: held at its own clean value, the neuron changes nothing
    clamped = neurons.clamp(llama, PLANTED_LAYER, PLANTED_NEURON, 20.0, positions=[2, -1])
    assert int(jnp.argmax(eqx.filter_jit(clamped)(tokens)[-1])) == PLANTED_TOKEN
    clean, sites = ji.capture(llama, f"blocks.{PLANTED_LAYER}.mlp.post")(tokens)
    own = sites[f"blocks.{PLANTED_LAYER}.mlp.post"][2, PLANTED_NEURON]
    same = neurons.clamp(llama, PLANTED_LAYER, PLANTED_NEURON, own, positions=2)(tokens)
    np.testing.assert_allclose(same, clean, rtol=1e-6, atol=1e-7)


def test_search_by_token_finds_the_planted_neuron_first(llama, decoded):
    hits = neurons.search_token(decoded, PLANTED_TOKEN)
    assert (int(hits.layers[0]), int(hits.neurons[0]), int(hits.ranks[0])) == (PLANTED_LAYER, PLANTED_NEURON, 0)
    assert len(hits.layers) >= 1 and np.all(np.diff(hits.ranks) >= 0)
    for layer, neuron, rank, logit, _ in zip(*hits):
        assert int(decoded.top_ids[list(decoded.layers).index(layer), neuron, rank]) == PLANTED_TOKEN
        np.testing.assert_allclose(decoded.top_logits[list(decoded.layers).index(layer), neuron, rank], logit)
    strongest = neurons.top_neurons_for_token(llama, PLANTED_TOKEN, n=5)
    assert (int(strongest.layers[0]), int(strongest.neurons[0]), int(strongest.ranks[0])) == (1, 17, 0)
    assert np.all(np.diff(strongest.logits) <= 0)
    dense = neurons.neuron_logits(llama, int(strongest.layers[1]), int(strongest.neurons[1]))
    assert int(strongest.ranks[1]) == int(jnp.sum(dense > dense[PLANTED_TOKEN]))
    # by z-score among each neuron's logits over the vocabulary: the planted neuron still first, and z as defined
    standardised = neurons.top_neurons_for_token(llama, PLANTED_TOKEN, n=4, score="z")
    assert (int(standardised.layers[0]), int(standardised.neurons[0])) == (PLANTED_LAYER, PLANTED_NEURON)
    for layer, neuron, logit, z in zip(
        standardised.layers, standardised.neurons, standardised.logits, standardised.scores
    ):
        dense = neurons.neuron_logits(llama, int(layer), int(neuron))
        np.testing.assert_allclose(z, (dense[PLANTED_TOKEN] - dense.mean()) / dense.std(), rtol=1e-4)
        np.testing.assert_allclose(logit, dense[PLANTED_TOKEN], rtol=1e-5)
    # only layers 0 and 2: the planted neuron is not there
    elsewhere = neurons.top_neurons_for_token(llama, PLANTED_TOKEN, n=3, layers=[0, 2])
    assert set(elsewhere.layers.tolist()) <= {0, 2}
    # the bottom lists: a token that some neuron ranks last
    last = int(decoded.bottom_ids[2, 3, 0])
    bottom = neurons.search_token(decoded, last, bottom=True)
    assert int(bottom.ranks[0]) == 0 and np.all(np.diff(bottom.ranks) >= 0)
    assert neurons.search_token(neurons.decode_neurons(llama, k=1, layers=0), PLANTED_TOKEN).layers.size == 0


def test_bad_input_is_refused_with_what_and_where(llama, decoded):
    with pytest.raises(ValueError, match=r"unknown layer 3: the model has 3 layers, 0 to 2"):
        neurons.decode_neurons(llama, layers=[0, 3])
    with pytest.raises(ValueError, match=r"unknown layer -1"):
        neurons.clamp(llama, -1, 0, 1.0)
    with pytest.raises(ValueError, match=r"neuron 64 of layer 1 is out of range: the layer has 64 neurons, 0 to 63"):
        neurons.neuron_logits(llama, 1, 64)
    with pytest.raises(ValueError, match=r"clamp_effect: neuron -2 of layer 0 is out of range"):
        neurons.clamp_effect(llama, jnp.arange(3), 0, -2, 1.0)
    with pytest.raises(ValueError, match=r"position 9 is out of range for 4 tokens"):
        neurons.clamp(llama, 0, 0, 1.0, positions=9)(jnp.arange(4))
    with pytest.raises(ValueError, match=r"k must be an integer from 1 to 3000, got 0"):
        neurons.decode_neurons(llama, k=0)
    with pytest.raises(ValueError, match=r"weights must be one of \('out', 'in', 'gate'\)"):
        neurons.decode_neurons(llama, weights="down")
    with pytest.raises(ValueError, match=r"directions must be \[..., d_model\] with d_model = 32"):
        neurons.decode_directions(jnp.ones((4, 31)), neurons.readout(llama))
    with pytest.raises(ValueError, match=r"token must be a token id, an integer from 0 below 3000, got 3000"):
        neurons.top_neurons_for_token(llama, VOCAB)
    with pytest.raises(ValueError, match=r"needs the neurons of decode_neurons"):
        neurons.search_token(neurons.decode_directions(jnp.ones((2, D_MODEL)), neurons.readout(llama)), 0)
    with pytest.raises(ValueError, match=r"score must be one of \('logit', 'z'\)"):
        neurons.top_neurons_for_token(llama, 0, score="rank")
    with pytest.raises(ValueError, match=r"memory_bytes must be a positive integer"):
        neurons.decode_neurons(llama, memory_bytes=0)


@pytest.mark.parametrize("config", ["bert", "llama_encoder"])
def test_a_model_without_a_language_model_head_is_refused(config):
    small = dict(vocab_size=50, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    cfg = (
        models.bert_config(**small, max_positions=8)
        if config == "bert"
        else models.llama_config(**small, lm_head=False)
    )
    model = models.Transformer(cfg, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"has no language-model head \(cfg.lm_head is False\)"):
        neurons.decode_neurons(model)


@pytest.mark.slow
def test_smollm2_decodes_as_the_dense_computation_and_clamping_moves_a_real_prompt(smollm2):
    model, tokenizer = smollm2
    layers = (0, 29)
    decoded = neurons.decode_neurons(model, k=10, layers=layers)
    assert decoded.top_ids.shape == decoded.bottom_logits.shape == (2, 1536, 10)
    projection = neurons.readout(model)
    assert projection.unembed.shape == (576, 49152) and not projection.centre
    for i, layer in enumerate(layers):
        for neuron in (0, 700, 1535):
            ids, values, low_ids, low = _dense_top(neurons.neuron_logits(model, layer, neuron), 10)
            np.testing.assert_array_equal(decoded.top_ids[i, neuron], ids)
            np.testing.assert_array_equal(decoded.bottom_ids[i, neuron], low_ids)
            np.testing.assert_allclose(decoded.top_logits[i, neuron], values, rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(decoded.bottom_logits[i, neuron], low, rtol=1e-4, atol=1e-5)
    # the last layer's neuron with the strongest top token, clamped high at the last position of a real prompt
    neuron = int(jnp.argmax(decoded.top_logits[1, :, 0]))
    tokens = jnp.asarray(tokenizer.encode("My favourite thing to do on a sunny day is").ids)
    effect = neurons.clamp_effect(model, tokens, 29, neuron, 10.0, positions=-1)
    np.testing.assert_array_equal(effect.top_ids, decoded.top_ids[1, neuron])
    assert float(effect.top_shift[-1]) > 0 and float(effect.kl[-1]) > 0
    np.testing.assert_allclose(effect.kl[:-1], 0.0, atol=1e-5)
