import equinox as eqx
import flax.linen as nn
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from jax import lax

import jaxinterp as ji
import models
from tests.helpers import load_fixture, relative_error, relative_size, tiny_transformer_configs

SEQ = 6


@pytest.mark.slow
@settings(max_examples=8, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["bert", "gpt2", "llama"]),
    seed=st.integers(0, 2**16),
    positions=st.sets(st.integers(0, SEQ - 1), min_size=1, max_size=SEQ),
    attention=st.sampled_from(["frozen", "decomposed"]),
    activation=st.sampled_from(["cdt", "acd", "shapley"]),
)
def test_transformers_rel_plus_irr_is_the_forward(kind, seed, positions, attention, activation):
    key_model, key_tokens = jax.random.split(jax.random.key(seed))
    model = models.Transformer(tiny_transformer_configs()[kind], key=key_model)
    tokens = jax.random.randint(key_tokens, (SEQ,), 0, 50)
    rules = ji.Rules(attention=attention, activation=activation)
    source = ji.Site("embed", ji.position_mask(sorted(positions), SEQ))
    rel, irr = ji.cd(model, source, rules=rules)(tokens)
    assert relative_error(rel + irr, model(tokens)) <= 1e-5
    # an all-ones source leaves nothing irrelevant under the official bias split (the exact split gives a bias
    # meeting an all-zero value to the irrelevant part)
    official = ji.Rules(attention=attention, activation=activation, bias_split="official")
    # (the official split also drops bias * tol / |part| at every bias, so its totals are looser than 1e-5)
    rel_all, irr_all = ji.cd(model, ji.Site("embed"), rules=official)(tokens)
    assert relative_size(irr_all, model(tokens)) <= 1e-5
    assert relative_error(rel_all, model(tokens)) <= 1e-3


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["mlp", "cnn", "gru", "lstm", "flax"]))
def test_small_models_rel_plus_irr_is_the_forward(seed, kind):
    key_model, key_x, key_mask = jax.random.split(jax.random.key(seed), 3)
    if kind == "mlp":
        f, x = models.MLP(6, [16, 16], 3, activation="gelu", key=key_model), jax.random.normal(key_x, (6,))
    elif kind == "cnn":
        f, x = models.CNN(1, 8, [4, 4], 3, key=key_model), jax.random.normal(key_x, (1, 8, 8))
    elif kind in ("gru", "lstm"):
        cls = models.GRUClassifier if kind == "gru" else models.LSTMClassifier
        f, x = cls(5, 8, 2, embed=False, key=key_model), jax.random.normal(key_x, (7, 5))
    else:
        net = nn.Sequential([nn.Dense(12), nn.relu, nn.Dense(12), nn.tanh, nn.Dense(2)])
        params = net.init(key_model, jnp.ones(6))
        f, x = (lambda v: net.apply(params, v)), jax.random.normal(key_x, (6,))
    mask = jax.random.bernoulli(key_mask, 0.5, x.shape).astype(jnp.float32)
    rel, irr = ji.cd(f, ji.Input(0, mask))(x)
    assert relative_error(rel + irr, f(x)) <= 1e-5
    if kind in ("mlp", "cnn", "flax"):
        rel, irr = ji.cd(f, ji.Input(0), rules=ji.Rules(bias_split="official"))(x)
        assert relative_size(irr, f(x)) <= 1e-6


def test_plain_functions_with_scan_and_while_loop():
    def f(x):
        def body(c, xi):
            return jnp.tanh(0.7 * c + xi), c

        carry, ys = lax.scan(body, jnp.zeros(3), x)
        _, grown = lax.while_loop(lambda s: s[0] < 4, lambda s: (s[0] + 1, s[1] * 1.1 + 0.1), (0, carry))
        return grown + ys.sum(0)

    x = jax.random.normal(jax.random.key(0), (5, 3))
    for t in range(5):
        rel, irr = ji.cd(f, ji.Input(0, jnp.zeros((5, 1)).at[t].set(1.0)))(x)
        assert relative_error(rel + irr, f(x)) <= 1e-5
    rel, _ = ji.cd(f, ji.Input(0, jnp.zeros((5, 1))))(x)
    assert float(jnp.max(jnp.abs(rel))) == 0.0


# ------------------------------------------------------------------------------------------- MiniLM, BERT CD-T
@pytest.fixture(scope="module")
def minilm_cdt(minilm):
    """MiniLM with the token ids and outputs of the official CD-T code (tests/fixtures/minilm_cdt_reference.npz)."""
    ref = load_fixture("minilm_cdt_reference.npz")
    return minilm[0], jnp.asarray(ref["input_ids"]), ref


def explicit_bert_cdt(model, tokens, positions):
    """BERT 'vanilla' CD-T written out layer by layer from docs/cd.md, independently of the interpreter, with the
    exact bias split (the relevant part takes `b |r| / (|r| + |i|)`, the irrelevant part the rest), so that the frozen attention pattern is computed from the true totals, as the official code does."""
    cfg = model.cfg
    x = model.embed(tokens)
    select = jnp.zeros((tokens.shape[0], 1), x.dtype).at[jnp.asarray(positions)].set(1.0)
    rel, irr = x * select, x * (1 - select)

    def share(r, i):
        summed = jnp.abs(r) + jnp.abs(i)
        return jnp.where(summed > 0, jnp.abs(r) / jnp.where(summed > 0, summed, 1.0), 0.0)

    def linear(r, i, w, b):
        rw, iw = r @ w, i @ w
        rel_share = b * share(rw, iw)
        return rw + rel_share, iw + (b - rel_share)

    def layer_norm(r, i, ln):
        total = r + i
        std = jnp.sqrt(total.var(-1, keepdims=True) + ln.eps)
        rel_share = ln.bias * share(r, i)
        centred = lambda p: (p - p.mean(-1, keepdims=True)) / std * ln.weight
        return centred(r) + rel_share, centred(i) + (ln.bias - rel_share)

    for block in model.blocks:
        a = block.attn
        total = rel + irr
        q = total @ a.w_q.reshape(cfg.d_model, -1) + a.b_q.reshape(-1)
        k = total @ a.w_k.reshape(cfg.d_model, -1) + a.b_k.reshape(-1)
        heads = lambda t: t.reshape(t.shape[0], cfg.n_heads, cfg.d_head).transpose(1, 0, 2)
        pattern = jax.nn.softmax(heads(q) @ heads(k).transpose(0, 2, 1) / np.sqrt(cfg.d_head), axis=-1)
        v_rel, v_irr = linear(rel, irr, a.w_v.reshape(cfg.d_model, -1), a.b_v.reshape(-1))
        mix = lambda v, pattern=pattern, heads=heads: (
            (pattern @ heads(v)).transpose(1, 0, 2).reshape(tokens.shape[0], -1)
        )
        o_rel, o_irr = linear(mix(v_rel), mix(v_irr), a.w_o.reshape(-1, cfg.d_model), a.b_o)
        rel, irr = layer_norm(rel + o_rel, irr + o_irr, block.ln1)
        h_rel, h_irr = linear(rel, irr, block.mlp.w_in, block.mlp.b_in)
        gelu = lambda v: jax.nn.gelu(v, approximate=False)
        h_rel, h_irr = gelu(h_rel + h_irr) - gelu(h_irr), gelu(h_irr)
        m_rel, m_irr = linear(h_rel, h_irr, block.mlp.w_out, block.mlp.b_out)
        rel, irr = layer_norm(rel + m_rel, irr + m_irr, block.ln2)
    return rel, irr


def test_minilm_matches_an_explicit_layer_by_layer_bert_cdt(minilm_cdt, float64):
    model, tokens = float64(minilm_cdt[0]), minilm_cdt[1]
    for positions in ([1, 2], [5], list(range(8, 14))):
        rel, irr = ji.cd(model, ji.Site("embed", ji.position_mask(positions, tokens.shape[0])))(tokens)
        ref_rel, ref_irr = explicit_bert_cdt(model, tokens, positions)
        assert float(jnp.max(jnp.abs(rel - ref_rel))) <= 1e-5
        assert float(jnp.max(jnp.abs(irr - ref_irr))) <= 1e-5


def test_minilm_matches_the_official_cdt_code(minilm_cdt, float64):
    """`Rules.official_bert()` against the official code run in float64 (its sign normalisation is discontinuous,
    so a float32 run differs from it by up to 1e-4 of the scale), after every layer."""
    model, tokens, ref = minilm_cdt
    model = float64(model)
    source = ji.Site("embed", ji.position_mask(ref["source_positions"], tokens.shape[0]))
    layers = [f"blocks.{i}.resid_post" for i in range(6)]
    rel, irr = ji.cd(model, source, targets=layers, rules=ji.Rules.official_bert())(tokens)
    for i, name in enumerate(layers):
        assert relative_error(rel[name], ref["rel_layers_float64"][i]) <= 1e-5, name
        assert relative_error(irr[name], ref["irr_layers_float64"][i]) <= 1e-5, name
    # complete up to what the published bias split drops (bias * tol / (|rel| + |irr| + tol) at each bias)
    assert relative_error(rel[layers[-1]] + irr[layers[-1]], model(tokens)) <= 1e-5


@pytest.mark.slow
def test_vmap_over_all_72_head_masks_equals_separate_calls(minilm_cdt, float64):
    model, tokens = float64(minilm_cdt[0]), minilm_cdt[1]
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    masks = jnp.eye(n_layers * n_heads).reshape(-1, n_layers, n_heads, 1)

    def decompose(m, mask):
        sources = [ji.Site(f"blocks.{layer}.attn.z", mask[layer]) for layer in range(n_layers)]
        return ji.cd(m, sources)(tokens)[0]

    swept = eqx.filter_jit(jax.vmap(decompose, in_axes=(None, 0)))(model, masks)
    single = eqx.filter_jit(decompose)
    for h in range(n_layers * n_heads):
        np.testing.assert_allclose(swept[h], single(model, masks[h]), rtol=1e-9, atol=1e-9, err_msg=f"head {h}")


def test_source_heads_to_target_head(minilm_cdt):
    model, tokens, _ = minilm_cdt
    source = ji.Site("blocks.1.attn.z", ji.head_mask(4, 12))
    rel, irr = eqx.filter_jit(ji.cd(model, source, targets="blocks.3.attn.z"))(tokens)
    _, cache = ji.capture(model, "blocks.3.attn.z")(tokens)
    z = cache["blocks.3.attn.z"]
    np.testing.assert_allclose(rel["blocks.3.attn.z"] + irr["blocks.3.attn.z"], z, atol=1e-5)
    assert float(jnp.abs(rel["blocks.3.attn.z"]).max()) > 0


# ------------------------------------------------------------------------------------------- composability
def test_jit_and_grad_match_finite_differences(getkey):
    mlp = models.MLP(4, [8], 2, activation="tanh", key=getkey())
    x = jax.random.normal(getkey(), (4,))

    def score(x):
        rel, _ = ji.cd(mlp, ji.Input(0, jnp.array([1.0, 1.0, 0.0, 0.0])))(x)
        return rel[0] - rel[1]

    np.testing.assert_allclose(jax.jit(score)(x), score(x), rtol=1e-6)
    grad = jax.grad(score)(x)
    assert bool(jnp.isfinite(grad).all())
    eps = 1e-3
    for j in range(4):
        step = jnp.zeros(4).at[j].set(eps)
        numeric = (score(x + step) - score(x - step)) / (2 * eps)
        np.testing.assert_allclose(grad[j], numeric, rtol=2e-2, atol=2e-3)


def test_mean_ablation_source():
    f = lambda x: ji.tag(x * 2.0, "h") * 3.0
    x, mean = jnp.array([1.0, 2.0]), jnp.array([0.5, 0.5])
    rel, irr = ji.cd(f, ji.Site("h", mean=mean))(x)
    np.testing.assert_allclose(irr, mean * 3.0)
    np.testing.assert_allclose(rel + irr, f(x))


def test_unknown_source_site_and_bad_rules():
    with pytest.raises(ji.UnknownSiteError, match="Closest sites: h"):
        ji.cd(lambda x: ji.tag(x, "h"), ji.Site("hh"))(jnp.ones(2))
    with pytest.raises(ValueError, match="activation rule"):
        ji.Rules(activation="relu")


def test_classification_and_logit_difference_scores():
    rel = jnp.array([2.0, 0.5, -1.0])
    total = jnp.array([3.0, 1.0, 2.5])
    assert float(ji.classification_score(rel, total, 0)) == pytest.approx(2.0 - (-1.0))
    assert float(ji.classification_score(rel, total, 2)) == pytest.approx(-1.0 - 2.0)
    logits = jnp.arange(12.0).reshape(2, 6)
    assert float(ji.logit_difference(logits, 4, 1)) == pytest.approx(3.0)


def test_values_computed_before_an_internal_source_are_irrelevant_not_biases():
    """A residual stream computed before the source is data, entirely irrelevant (docs/cd.md#sources: r = 0,
    i = everything until the source); only parameters are split like biases."""
    bias = jnp.array([0.5, -1.0])

    def f(x):
        h = ji.tag(jnp.tanh(x) * 2.0, "h")
        return h + x + bias

    x = jnp.array([0.3, -2.0])
    rel, irr = ji.cd(f, ji.Site("h"))(x)
    h = jnp.tanh(x) * 2.0
    share = bias * jnp.abs(h) / (jnp.abs(h) + jnp.abs(x) + 1e-8)
    np.testing.assert_allclose(rel, h + share, rtol=1e-6)
    np.testing.assert_allclose(irr, x + bias - share, rtol=1e-6)


def test_an_embedding_lookup_of_data_is_irrelevant_until_the_source(getkey):
    """Token ids are data: the embeddings they select are irrelevant, so a head of any layer can be the only
    source, and adding all-zero sources below it changes nothing."""
    model = models.Transformer(tiny_transformer_configs()["gpt2"], key=getkey())
    tokens = jnp.arange(SEQ)
    head = ji.Site("blocks.1.attn.z", ji.head_mask(2, 4))
    alone = ji.cd(model, head)(tokens)
    with_zero_sources = ji.cd(model, [ji.Site("embed", 0.0), ji.Site("blocks.0.attn.z", 0.0), head])(tokens)
    np.testing.assert_allclose(alone[0], with_zero_sources[0], atol=1e-6)
    _, _before = ji.cd(model, head, targets="blocks.1.resid_pre")(tokens)
    rel_before, _ = ji.cd(model, head, targets="blocks.1.resid_pre")(tokens)
    assert float(jnp.abs(rel_before["blocks.1.resid_pre"]).max()) == 0.0
