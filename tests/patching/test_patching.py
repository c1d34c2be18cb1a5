"""Activation patching, the residual-stream graph, path patching, EAP and EAP-IG against hand computations."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from jaxinterp import patching

SIZES = dict(vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_head=8, max_positions=16)


def perturbed(cfg, seed=0, scale=0.2):
    """A random model of `cfg` with every array (norm weights and biases too) perturbed away from its init."""
    model = models.Transformer(cfg, key=jax.random.key(seed))
    leaves, treedef = jax.tree_util.tree_flatten(model)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [a + scale * jax.random.normal(k, a.shape) if eqx.is_inexact_array(a) else a for a, k in zip(leaves, keys)]
    return jax.tree_util.tree_unflatten(treedef, leaves)


@pytest.fixture(scope="module")
def gpt():
    return perturbed(models.gpt2_config(**SIZES, d_mlp=64))


@pytest.fixture(scope="module")
def batches():
    clean = jax.random.randint(jax.random.key(2), (3, 7), 0, 40)
    corrupted = jax.random.randint(jax.random.key(3), (3, 7), 0, 40)
    return (clean,), (corrupted,)


def logit_difference(logits):
    return (logits[:, -1, 3] - logits[:, -1, 5]).mean()


def test_sweep_arguments_are_checked(gpt, batches):
    clean, corrupted = batches
    with pytest.raises(ValueError, match="choose one of"):
        patching.activation_sweep(gpt, corrupted, clean, logit_difference, "head_zz")
    with pytest.raises(ValueError, match="no position axis"):
        patching.activation_sweep(gpt, corrupted, clean, logit_difference, "head_pattern", by="pos")


def test_the_graph_forward_is_the_model_and_all_ablated_edges_give_the_corrupted_run(gpt, batches):
    clean, corrupted = batches
    graph = patching.Graph.of(gpt)
    # 1 + 4 + 1 + 4 + 1 nodes; receivers 12 + 1 + 12 + 1 + 1; edges 12 + 5 + 6 * 12 + 10 + 11
    assert (len(graph.nodes), len(graph.receivers), len(graph.edges)) == (11, 27, 110)
    tokens, other = clean[0][0], corrupted[0][0]
    np.testing.assert_allclose(patching.run_graph(gpt, (tokens,)), gpt(tokens), rtol=1e-5, atol=1e-5)
    ablated = patching.node_outputs(gpt, (other,))
    everything_ablated = patching.run_graph(gpt, (tokens,), np.zeros(graph.valid.shape), ablated)
    np.testing.assert_allclose(everything_ablated, gpt(other), rtol=1e-4, atol=1e-4)
    with pytest.raises(KeyError, match="closest"):
        graph.node("blocks.0.attn.9")
    with pytest.raises(ValueError, match="computed after"):
        graph.edge_mask([("blocks.1.mlp", "blocks.0.mlp")])


def test_batched_edge_patching_equals_a_loop_of_single_patches(gpt, batches):
    clean, corrupted = batches
    graph = patching.Graph.of(gpt)
    effects = patching.edge_patching(gpt, clean, corrupted, logit_difference, batch_size=16)
    ablated = patching.ablation_values(gpt, corrupted, "resample")
    evaluate = jax.jit(patching.masked_metric(gpt, clean, ablated, logit_difference, graph))
    full = evaluate(graph.valid.astype(np.float32))
    chosen = [0, 7, 33, 64, 109]
    masks = graph.single_edge_masks([graph.edges[i] for i in chosen])
    looped = [evaluate(mask) - full for mask in masks]
    np.testing.assert_allclose(effects[np.asarray(chosen)], looped, rtol=1e-4, atol=1e-5)


def test_path_patching_equals_the_two_step_procedure_by_hand(gpt, batches):
    clean, corrupted = batches
    _, clean_cache = jax.vmap(ji.capture(gpt, "blocks.*"))(*clean)
    _, corrupted_cache = jax.vmap(ji.capture(gpt, "blocks.*"))(*corrupted)
    w_o = gpt.blocks[0].attn.w_o
    head = 2
    # the sender's change along its own direct path: (z_corrupted - z_clean) of head 2, layer 0, through W_O
    delta = jnp.einsum("bsd,dm->bsm", (corrupted_cache["blocks.0.attn.z"] - clean_cache["blocks.0.attn.z"])[:, :, head],
                       w_o[head])  # fmt: skip
    # receiver: the logits; the final residual moves by delta, everything else stays clean
    final = clean_cache["blocks.1.resid_post"] + delta
    by_hand = logit_difference(jax.vmap(gpt.readout)(final)) - logit_difference(jax.vmap(gpt)(*clean))
    effects = patching.path_patching(gpt, clean, corrupted, logit_difference, receivers=("logits",),
                                     senders=["blocks.0.attn.2"])  # fmt: skip
    np.testing.assert_allclose(effects[0], by_hand, rtol=1e-4, atol=1e-5)
    # receiver: the query input of head 1 in layer 1; its query is recomputed from the moved residual and patched
    block = gpt.blocks[1]
    moved = clean_cache["blocks.1.resid_pre"] + delta
    query = jnp.einsum("bsm,md->bsd", jax.vmap(block.ln1)(moved), block.attn.w_q[:, 1]) + block.attn.b_q[1]
    patched = jax.vmap(lambda t, q: ji.intervene(gpt, {"blocks.1.attn.q": lambda x: x.at[:, 1].set(q)})(t))
    by_hand = logit_difference(patched(clean[0], query)) - logit_difference(jax.vmap(gpt)(*clean))
    effects = patching.path_patching(gpt, clean, corrupted, logit_difference, receivers=("blocks.1.attn.1.q",),
                                     senders=["blocks.0.attn.2"])  # fmt: skip
    np.testing.assert_allclose(effects[0], by_hand, rtol=1e-4, atol=1e-5)


def test_eap_is_the_first_order_term_of_exact_edge_patching(gpt, batches):
    clean, corrupted = batches
    graph = patching.Graph.of(gpt)
    scores = patching.eap(gpt, clean, corrupted, logit_difference)
    ablated = patching.ablation_values(gpt, corrupted, "resample")
    evaluate = jax.jit(patching.masked_metric(gpt, clean, ablated, logit_difference, graph))
    valid = graph.valid.astype(np.float32)
    t = 1e-3
    for i in [0, 12, 40, 80, 109]:
        u, r = graph.node(graph.edges[i][0]), graph.receiver(graph.edges[i][1])
        step = valid.copy()
        step[u, r] = 1 - t
        back = valid.copy()
        back[u, r] = 1 + t
        # the derivative of the edge's patching effect along removing it, by central differences
        taylor = (evaluate(step) - evaluate(back)) / (2 * t)
        np.testing.assert_allclose(scores[i], taylor, rtol=2e-2, atol=2e-3)


def test_eap_ig_approaches_exact_patching_where_the_path_is_linear():
    # the heads and MLPs write nothing, so the only path to the logits is the edge from embed, and the logits'
    # input moves on a straight line as the embeddings do; the metric (a log-probability) is not linear
    model = perturbed(models.gpt2_config(**{**SIZES, "n_layers": 1}, d_mlp=64), seed=5, scale=0.5)
    for block in range(1):
        model = eqx.tree_at(
            lambda m, b=block: m.blocks[b].attn.w_o, model, jnp.zeros_like(model.blocks[block].attn.w_o)
        )
        model = eqx.tree_at(
            lambda m, b=block: m.blocks[b].attn.b_o, model, jnp.zeros_like(model.blocks[block].attn.b_o)
        )
        model = eqx.tree_at(
            lambda m, b=block: m.blocks[b].mlp.w_out, model, jnp.zeros_like(model.blocks[block].mlp.w_out)
        )
        model = eqx.tree_at(
            lambda m, b=block: m.blocks[b].mlp.b_out, model, jnp.zeros_like(model.blocks[block].mlp.b_out)
        )
    clean = (jax.random.randint(jax.random.key(7), (2, 5), 0, 40),)
    corrupted = (jax.random.randint(jax.random.key(8), (2, 5), 0, 40),)

    def log_probability(logits):
        return jax.nn.log_softmax(logits[:, -1])[:, 3].mean()

    graph = patching.Graph.of(model)
    edge = graph.edges.index(("embed", "logits"))
    exact = patching.edge_patching(model, clean, corrupted, log_probability, [("embed", "logits")])[0]
    errors = [abs(float(patching.eap(model, clean, corrupted, log_probability, steps=m)[edge] - exact))
              for m in (1, 4, 16)]  # fmt: skip
    assert errors[0] > 10 * errors[2], errors
    assert errors[1] > errors[2]
    assert errors[2] < 1e-3 * max(1.0, abs(float(exact))), errors


def test_grouped_query_attention_keeps_its_key_value_heads():
    model = perturbed(models.llama_config(vocab_size=40, d_model=36, n_layers=2, n_heads=6, n_kv_heads=2, d_head=6,
                                          d_mlp=40), seed=3)  # fmt: skip
    graph = patching.Graph.of(model)
    assert "blocks.1.attn.1.k" in graph.receivers and "blocks.1.attn.2.k" not in graph.receivers
    clean = (jax.random.randint(jax.random.key(2), (2, 6), 0, 40),)
    corrupted = (jax.random.randint(jax.random.key(3), (2, 6), 0, 40),)
    swept = patching.activation_sweep(model, corrupted, clean, logit_difference, "head_k", by="pos")
    assert swept.shape == (2, 6, 2)
    tokens = clean[0][0]
    np.testing.assert_allclose(patching.run_graph(model, (tokens,)), model(tokens), rtol=1e-5, atol=1e-5)
    # the edge into a key/value head's key input, patched exactly, equals patching that head's keys by hand
    effect = patching.path_patching(model, clean, corrupted, logit_difference, receivers=("blocks.1.attn.1.k",),
                                    senders=["embed"])[0]  # fmt: skip
    _, corrupted_cache = jax.vmap(ji.capture(model, "embed"))(*corrupted)
    _, clean_cache = jax.vmap(ji.capture(model, "blocks.1.resid_pre"))(*clean)
    _, clean_embed = jax.vmap(ji.capture(model, "embed"))(*clean)
    moved = clean_cache["blocks.1.resid_pre"] + corrupted_cache["embed"] - clean_embed["embed"]
    block = model.blocks[1]
    keys = jax.vmap(lambda x: models.transformer.rotary(
        jnp.einsum("sm,mhd->shd", block.ln1(x), block.attn.w_k), model.cfg.rope_theta, False))(moved)  # fmt: skip
    patched = jax.vmap(lambda t, k: ji.intervene(model, {"blocks.1.attn.k": lambda x: x.at[:, 1].set(k[:, 1])})(t))
    by_hand = logit_difference(patched(clean[0], keys)) - logit_difference(jax.vmap(model)(*clean))
    np.testing.assert_allclose(effect, by_hand, rtol=1e-4, atol=1e-5)


def test_a_post_norm_model_has_no_graph():
    model = models.Transformer(models.bert_config(vocab_size=30, d_model=16, n_layers=1, n_heads=2, d_head=8,
                                                  d_mlp=32, max_positions=8), key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="post-norm"):
        patching.Graph.of(model)


def test_output_positions_compute_the_same_logits_at_fewer_positions(gpt, batches):
    tokens = batches[0][0][0]
    full = gpt(tokens)
    np.testing.assert_allclose(gpt(tokens, output_positions=[-1, 2]), full[jnp.array([-1, 2])], rtol=1e-6)
    graph_last = patching.run_graph(gpt, (tokens,))  # the graph forward without positions is the whole output
    np.testing.assert_allclose(graph_last, full, rtol=1e-5, atol=1e-5)


def test_a_position_resolved_mask_ablates_a_sender_at_one_position(gpt, batches):
    tokens = batches[0][0][0]
    graph = patching.Graph.of(gpt)
    mask = np.broadcast_to(graph.valid[..., None], graph.valid.shape + (tokens.shape[0],)).astype(np.float32).copy()
    mask[graph.node("embed"), :, 3] = 0.0  # the embeddings at position 3 reach no receiver (zero ablation)
    by_mask = patching.run_graph(gpt, (tokens,), mask)
    by_hand = ji.intervene(gpt, {"embed": lambda x: x.at[3].set(0.0)})(tokens)
    np.testing.assert_allclose(by_mask, by_hand, rtol=1e-5, atol=1e-5)
