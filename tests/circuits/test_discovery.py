"""Circuit discovery recovers circuits planted in models built here."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from jaxinterp import circuits, patching

PLANTED = {"blocks.0.attn.1", "blocks.1.attn.2"}


def planted_model():
    """A 2-layer attention-only model in which only two heads write into the residual stream."""
    cfg = models.gpt2_config(vocab_size=30, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=0, max_positions=8)
    model = models.Transformer(cfg, key=jax.random.key(0))
    model = jax.tree_util.tree_map(lambda a: 8 * a if eqx.is_inexact_array(a) else a, model)
    for layer, head in [(0, 1), (1, 2)]:
        w_o = model.blocks[layer].attn.w_o
        keep = (jnp.arange(4) == head)[:, None, None]
        model = eqx.tree_at(lambda m, layer=layer: m.blocks[layer].attn.w_o, model, jnp.where(keep, w_o, 0.0))
    return model


def batches(n=6):
    clean = jax.random.randint(jax.random.key(1), (n, 6), 0, 30)
    corrupted = jax.random.randint(jax.random.key(2), (n, 6), 0, 30)
    return (clean,), (corrupted,)


@pytest.mark.parametrize("target_score", ["dot", "l1"])
def test_cdt_discovery_recovers_the_planted_heads(target_score):
    model = planted_model()
    clean, reference = batches()
    full = jax.vmap(model)(*clean)
    kl = circuits.kl_to_model(full)
    found = circuits.cdt_circuit(
        model, clean, reference, score=lambda rel: jnp.abs(rel[:, -1, :]).mean(), metric=lambda lg: -kl(lg),
        nodes=circuits.transformer_nodes(2, 4), top_k=2, prune_tolerance=1e-3, rules=ji.Rules(),
        target_score=target_score,
    )  # fmt: skip
    assert set(found.nodes) == PLANTED
    heads = [f"blocks.{layer}.attn.{h}" for layer in range(2) for h in range(4)]
    assert circuits.roc_auc(found.scores, PLANTED, heads) == 1.0


def test_cdt_pruning_stays_within_its_tolerance_of_the_unpruned_circuit():
    model = planted_model()
    clean, reference = batches()
    kl = circuits.kl_to_model(jax.vmap(model)(*clean))
    common = dict(score=lambda rel: jnp.abs(rel[:, -1, :]).mean(), metric=lambda lg: -kl(lg), top_k=8,
                  keep_fraction=0.0, nodes=circuits.transformer_nodes(2, 4), rules=ji.Rules())  # fmt: skip
    whole = circuits.cdt_circuit(model, clean, reference, prune=False, **common)
    for tolerance in (0.0, 0.05, 0.5):
        pruned = circuits.cdt_circuit(model, clean, reference, prune_tolerance=tolerance, **common)
        assert set(pruned.nodes) <= set(whole.nodes)
        span = abs(pruned.info["metric_full"] - pruned.info["metric_empty"])
        assert pruned.info["metric"] >= whole.info["metric"] - tolerance * span - 1e-6
    assert len(pruned.nodes) < len(whole.nodes)  # a loose tolerance drops nodes
    with np.testing.assert_raises(ValueError):
        circuits.cdt_circuit(model, clean, reference, prune_tolerance=1.5, **common)


def test_acdc_keeps_exactly_the_edges_the_planted_heads_use():
    model = planted_model()
    clean, corrupted = batches()
    found = circuits.acdc(model, clean, corrupted, threshold=1e-4, ablation="zero")
    senders = {s for s, _ in found.edges}
    # under zero ablation the embeddings and both planted heads carry everything the logits see
    assert senders <= PLANTED | {"embed"} and PLANTED <= senders
    graph = patching.Graph.of(model)
    metric = circuits.kl_to_model(jax.vmap(model)(*clean))
    ablated = patching.ablation_values(model, corrupted, "zero")
    evaluate = patching.masked_metric(model, clean, ablated, metric, graph)
    assert float(evaluate(graph.edge_mask(found.edges))) < 1e-3 * len(graph.edges)


def test_ranked_eap_scores_make_a_circuit_of_the_top_edges():
    model = planted_model()
    clean, corrupted = batches()
    graph = patching.Graph.of(model)
    scores = patching.eap(model, clean, corrupted, lambda lg: (lg[:, -1, 3] - lg[:, -1, 4]).mean())
    top = circuits.edge_circuit(graph, np.abs(scores), 5, "eap")
    assert len(top.edges) == 5 and len(top.scores) == len(graph.edges)
    # edges out of heads that write nothing have zero attribution
    silent = [i for i, (s, _) in enumerate(graph.edges) if s.startswith("blocks.") and s not in PLANTED]
    np.testing.assert_allclose(np.asarray(scores)[silent], 0.0, atol=1e-6)


def test_position_resolved_cdt_and_path_patching_find_the_planted_heads():
    model = planted_model()
    clean, reference = batches()
    kl = circuits.kl_to_model(jax.vmap(model)(*clean))
    found = circuits.cdt_circuit(
        model, clean, reference, score=lambda rel: jnp.abs(rel[:, -1, :]).mean(), metric=lambda lg: -kl(lg),
        nodes=circuits.transformer_nodes(2, 4, seq_len=6), top_k=4, prune_tolerance=1e-3, rules=ji.Rules(),
    )  # fmt: skip
    assert {name.split("@")[0] for name in found.nodes} <= PLANTED
    assert all("@" in name for name in found.nodes)
    traced = circuits.path_patching_circuit(model, clean, reference, lambda lg: -kl(lg), top_k=2)
    assert set(traced.nodes) == PLANTED


def test_cdt_discovery_runs_on_grouped_query_attention_and_names_a_mismatched_mask():
    cfg = models.llama_config(vocab_size=30, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2, d_head=4, d_mlp=16)
    model = models.Transformer(cfg, key=jax.random.key(4))
    clean, reference = batches(4)
    common = dict(score=lambda rel: rel[:, -1, 3].mean(), metric=lambda lg: lg[:, -1, 3].mean(), top_k=3)
    nodes = circuits.transformer_nodes(2, 6, mlps=True, n_kv_heads=2)
    found = circuits.cdt_circuit(model, clean, reference, nodes=nodes, **common)
    assert found.nodes and set(found.scores) == {node.name for node in nodes}
    with np.testing.assert_raises_regex(ValueError, "n_kv_heads"):
        circuits.cdt_circuit(model, clean, reference, nodes=circuits.transformer_nodes(2, 6, mlps=True), **common)
