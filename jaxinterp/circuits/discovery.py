"""Circuit discovery: CD-T's iterative source-to-target algorithm (P1), ACDC (Conmy et al. 2023), and circuits
from ranked edge scores (EAP, EAP-IG, path patching). See `docs/circuits.md#discovery`."""

import re
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from ..capture import capture
from ..cdt import rules as R
from ..cdt.sources import Site, head_mask, position_mask
from ..cdt.sweep import SourceStack, cd_sweep
from ..intervene import intervene
from ..patching.edges import evaluate_mask, path_patching
from ..patching.graph import Graph, ablation_values
from .circuit import Circuit, edge_key


class Node(NamedTuple):
    """A node as CD-T and node ablation see it.

    **Fields:** `name`; `site` and `mask`, where its output is read and a 0/1 mask over that site's value for one
    example (broadcastable: `[heads, 1]` for a head of `blocks.L.attn.z`, times `[seq, 1, 1]` for a head at one
    position, `[seq, 1]` for an MLP output at one position, `1` for a whole site); `reads`, the `(site, mask)`
    pairs where it reads its input (a head its query, key and value, an MLP its pre-activation), where CD-T
    measures what earlier nodes contribute to it.
    """

    name: str
    site: str
    mask: jax.Array
    reads: tuple


def transformer_nodes(
    n_layers: int, n_heads: int, mlps: bool = False, seq_len: int | None = None, n_kv_heads: int | None = None
) -> list[Node]:
    """The head nodes (at `blocks.L.attn.z`) and, with `mlps`, MLP nodes (at `blocks.L.mlp.out`) of a transformer
    of the family, by layer; with `seq_len`, one node per position (`blocks.L.attn.H@p`: the head's output at
    query position `p`, reading its query there and keys and values everywhere). `n_kv_heads` for grouped-query
    attention (a head reads the keys and values of head `H // (n_heads // n_kv_heads)`)."""
    kv = n_kv_heads or n_heads
    positions = [None] if seq_len is None else range(seq_len)
    nodes = []
    for layer in range(n_layers):
        site = f"blocks.{layer}.attn"
        for h in range(n_heads):
            group = head_mask(h // (n_heads // kv), kv)
            for p in positions:
                at = 1.0 if p is None else position_mask(p, seq_len, 2)
                mask = at * head_mask(h, n_heads)
                reads = ((f"{site}.q", mask), (f"{site}.k", group), (f"{site}.v", group))
                nodes.append(Node(f"{site}.{h}" + ("" if p is None else f"@{p}"), f"{site}.z", mask, reads))
        if mlps:
            for p in positions:
                mask = jnp.ones(()) if p is None else position_mask(p, seq_len, 1)
                name = f"blocks.{layer}.mlp" + ("" if p is None else f"@{p}")
                nodes.append(Node(name, f"blocks.{layer}.mlp.out", mask, ((f"blocks.{layer}.mlp.pre", mask),)))
    return nodes


def _layer(node: str) -> int:
    return int(re.match(r"blocks\.(\d+)\.", node).group(1))


def site_means(f: Callable, nodes: Sequence[Node], reference_inputs: Sequence[jax.Array]) -> dict[str, jax.Array]:
    """The mean value of every node's output and input sites over a reference batch (leading axis of
    `reference_inputs`)."""
    sites = sorted({node.site for node in nodes} | {site for node in nodes for site, _ in node.reads})
    _, values = jax.vmap(capture(f, *sites))(*reference_inputs)
    means = {site: values[site].mean(0) for site in sites}
    for node in nodes:
        for site, mask in ((node.site, node.mask), *node.reads):
            try:
                jnp.broadcast_shapes(jnp.shape(mask), means[site].shape)
            except ValueError:
                raise ValueError(
                    f"node {node.name!r}: its mask of shape {jnp.shape(mask)} does not broadcast to site {site!r}, "
                    f"of shape {means[site].shape} (for grouped-query attention pass n_kv_heads to transformer_nodes)"
                ) from None
    return means


def node_ablation(f: Callable, nodes: Sequence[Node]):
    """`run(keep, replacements, *args)`: `f` on one example with every node whose `keep` entry is 0 replaced by
    its value in `replacements` (site -> the value at that site: a reference mean from `site_means`, zeros, or the
    example's own corrupted value for resample ablation); `keep` is `[len(nodes)]`, fractional values
    interpolate. Vmaps over `keep`, and over examples with or without their replacements."""
    by_site: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        by_site.setdefault(node.site, []).append(i)

    def run(keep, replacements, *args):
        def edit(site):
            def replace(x):
                for i in by_site[site]:
                    x = x + nodes[i].mask * (1 - keep[i]) * (replacements[site] - x)
                return x

            return replace

        return intervene(f, {site: edit(site) for site in by_site})(*args)

    return run


@eqx.filter_jit
def ablated_nodes_metric(
    f, nodes: Sequence[Node], replacements: dict, metric: Callable, inputs, keep, per_example: bool = False
) -> jax.Array:
    """`metric` of the batch `inputs` with the nodes whose `keep` entry is 0 ablated to `replacements`
    (`node_ablation`: one value per site, or with `per_example` one per example, a leading batch axis); `keep`
    is `[len(nodes)]` or `[masks, len(nodes)]` (then one metric per mask, all in one `vmap`). Compiled once per
    model structure, nodes, metric and shapes."""
    run = node_ablation(f, nodes)
    axes = (None, 0 if per_example else None) + (0,) * len(inputs)

    def one(keep):
        return metric(jax.vmap(run, in_axes=axes)(keep, replacements, *inputs))

    keep = jnp.asarray(keep, jnp.float32)
    return jax.vmap(one)(keep) if keep.ndim == 2 else one(keep)


@eqx.filter_jit
def _batched(swept, inputs):
    return jax.vmap(swept)(*inputs)


def _stacks(nodes: Sequence[Node], means: dict[str, jax.Array]) -> list[SourceStack]:
    """Every node a source set of its own (mean-ablation sources, CD-T's variant), all in one stack: set `i` has
    node `i`'s mask at its site and zero masks (no source) at the other nodes' sites, so one decomposition of the
    model is traced and compiled for all of them, however many sites the nodes sit at."""
    sites = list(dict.fromkeys(node.site for node in nodes))
    shapes = {site: jnp.broadcast_shapes(*(n.mask.shape for n in nodes if n.site == site)) for site in sites}
    masks = {
        site: jnp.stack([jnp.broadcast_to(node.mask if node.site == site else 0.0, shapes[site]) for node in nodes])
        for site in sites
    }
    return [SourceStack([Site(site, masks[site], means[site]) for site in sites], labels=[n.name for n in nodes])]


def _target_score(kind: str, swept, values: dict, means: dict, site: str, mask) -> jax.Array:
    """Every source set's score at one target input, `[sets]`, averaged over the batch: `"dot"` is
    `<rel, value - mean>` (the relevant part's projection on the target's deviation from its reference mean),
    `"l1"` is `mean|rel| / (mean|rel| + mean|irr|)` over the target's entries (P1's two choices)."""
    rel = swept.rel[site] * mask  # [batch, sets, *site]
    if kind == "dot":
        deviation = (values[site] - means[site]) * mask  # [batch, *site]
        return jnp.einsum("bn...,b...->n", rel, deviation) / rel.shape[0]
    irr = swept.irr[site] * mask
    axes = tuple(range(2, rel.ndim))
    size = jnp.sum(jnp.broadcast_to(mask, rel.shape[2:]) != 0)
    rel_l1 = jnp.abs(rel).sum(axes) / size
    irr_l1 = jnp.abs(irr).sum(axes) / size
    return jnp.mean(rel_l1 / (rel_l1 + irr_l1 + 1e-12), axis=0)


def _normalised(values: np.ndarray) -> np.ndarray:
    return values / (np.max(np.abs(values)) or 1.0)


def cdt_circuit(
    model,
    inputs: Sequence[jax.Array],
    reference_inputs: Sequence[jax.Array],
    score: Callable[[jax.Array], jax.Array],
    metric: Callable[[jax.Array], jax.Array],
    nodes: Sequence[Node],
    *,
    top_k: int = 10,
    keep_fraction: float = 0.5,
    rules: R.Rules | None = None,
    prune: bool = True,
    prune_tolerance: float = 0.0,
    ablation: str = "mean",
    target_score: str = "dot",
) -> Circuit:
    """CD-T circuit discovery (P1, `docs/circuits.md#cd-t-discovery`).

    1. Every node is a source (mean-ablation sources: what the node adds beyond its reference mean); its score
       against the output is `score(rel)` of the relevant part of the output, averaged over the batch.
    2. The `top_k` nodes with a positive score are the first targets. Every node outside the circuit below the
       deepest target is scored against them in one sweep ("dot": `<rel, value - mean>` at each target's
       inputs, `Node.reads`: a head's query, key and value, an MLP's pre-activation; summed over the targets and
       averaged over the batch; or `target_score="l1"`, the relevant part's share `mean|rel| / (mean|rel| +
       mean|irr|)` there), the scores normalised per layer by the layer's largest, and nodes scoring at
       least `keep_fraction` join the circuit and become the next targets; this repeats until no node joins
       (down to layer 0).
    3. Greedy pruning: nodes are tried in increasing order of score and dropped when mean-ablating them (with
       everything outside the circuit mean-ablated) keeps `metric` within `prune_tolerance * |m(full) -
       m(empty)|` of the unpruned circuit's value (the drops do not compound; `m(empty)`: every node ablated).

    **Arguments:** `model` (of one example); `inputs` (positional arguments with a leading batch axis);
    `reference_inputs` (the reference batch whose mean activations ablate); `score(rel_output_batch) -> scalar`
    (e.g. the mean logit difference of `rel`); `metric(output_batch) -> scalar` for pruning (higher is better);
    `nodes` (`transformer_nodes(...)`: heads, MLPs, optionally per position); `top_k`; `keep_fraction`; `rules`
    (`Rules.official_gpt2()` by default); `prune`; `prune_tolerance` (a fraction of the metric's range, in
    `[0, 1)`); `ablation`: `"mean"` (the reference
    batch's mean is what a node is measured against and what pruning replaces it with) or `"zero"` (zero: plain
    CD-T sources, and zero ablation when pruning); `target_score`: `"dot"` or `"l1"` (step 2).

    **Returns:** a node-level `Circuit`; every node's score is its output score relative to the best, or its
    normalised score against the targets where higher (in `[-1, 1]`), plus 2 for the circuit's nodes, so that
    ranking by score puts the circuit first. `info` has the seconds taken and the metric of the circuit, of the
    full model and of the empty circuit.
    """
    if target_score not in ("dot", "l1"):
        raise ValueError(f"cdt_circuit: target_score is 'dot' or 'l1', got {target_score!r}")
    if isinstance(prune_tolerance, bool) or not isinstance(prune_tolerance, (int, float)):
        raise TypeError(f"cdt_circuit: prune_tolerance is a number, got {prune_tolerance!r}")
    if not 0.0 <= prune_tolerance < 1.0:
        raise ValueError(
            f"cdt_circuit: prune_tolerance is a fraction of the metric's range in [0, 1), got {prune_tolerance}"
        )
    start = time.perf_counter()
    rules = R.Rules.official_gpt2() if rules is None else rules
    inputs, reference_inputs = tuple(inputs), tuple(reference_inputs)
    nodes = list(nodes)
    means = site_means(model, nodes, reference_inputs)
    if ablation == "zero":
        means = {site: jnp.zeros_like(mean) for site, mean in means.items()}
    elif ablation != "mean":
        raise ValueError(f"cdt_circuit: ablation is 'mean' or 'zero', got {ablation!r}")
    stacks = _stacks(nodes, means)
    output = _batched(cd_sweep(model, stacks, rules=rules), inputs)
    labels = [node.name for node in nodes]
    order = {name: i for i, name in enumerate(labels)}
    by_stack = [label for stack in stacks for label in stack.labels]
    output_scores = np.asarray(jax.vmap(score, in_axes=1)(output.rel), float)  # [sets]; axis 0 is the batch
    node_scores = dict(zip(by_stack, _normalised(output_scores)))
    circuit = {n for n in sorted(labels, key=lambda n: (-node_scores[n], order[n]))[:top_k] if node_scores[n] > 0}
    _, values = jax.vmap(capture(model, *means))(*inputs)  # every output and input site
    targets = [node for node in nodes if node.name in circuit]
    while targets:
        deepest = max(_layer(node.name) for node in targets)
        candidates = [node for node in nodes if _layer(node.name) < deepest and node.name not in circuit]
        if not candidates:
            break
        target_sites = sorted({site for node in targets for site, _ in node.reads})
        stacks = _stacks(candidates, means)
        sweep = cd_sweep(model, stacks, targets=target_sites, rules=rules)
        swept = _batched(sweep, inputs)
        names = [label for stack in stacks for label in stack.labels]
        raw = np.zeros(len(names))
        for target in targets:
            for site, mask in target.reads:
                raw += np.asarray(_target_score(target_score, swept, values, means, site, mask))
        joined = []
        for layer in sorted({_layer(n) for n in names}):
            in_layer = [i for i, n in enumerate(names) if _layer(n) == layer]
            for i, value in zip(in_layer, _normalised(raw[in_layer])):
                node_scores[names[i]] = max(node_scores[names[i]], float(value))
                if value >= keep_fraction:
                    joined.append(names[i])
        circuit.update(joined)
        targets = [node for node in nodes if node.name in joined]

    def evaluate(keep):
        return ablated_nodes_metric(model, nodes, means, metric, inputs, keep)

    keep = np.asarray([name in circuit for name in labels], np.float32)
    current = float(evaluate(keep))
    full = float(evaluate(np.ones(len(labels), np.float32)))
    empty = float(evaluate(np.zeros(len(labels), np.float32)))
    if prune:
        floor = current - prune_tolerance * abs(full - empty)
        for name in sorted(circuit, key=lambda n: (node_scores[n], order[n])):
            trial = keep.copy()
            trial[order[name]] = 0.0
            value = float(evaluate(trial))
            if value >= floor:
                keep, current = trial, value
    kept = tuple(n for n, k in zip(labels, keep) if k)
    info = {"seconds": time.perf_counter() - start, "metric": current, "metric_full": full, "metric_empty": empty}
    # the ranking the method ends with: the circuit's nodes first, each group by score
    ranked = {n: node_scores[n] + (2.0 if n in kept else 0.0) for n in labels}
    return Circuit(kept, scores=ranked, method="cdt", info=info)


def path_patching_circuit(
    model,
    inputs: Sequence[jax.Array],
    corrupted_inputs: Sequence[jax.Array],
    metric: Callable[[jax.Array], jax.Array],
    *,
    keep_fraction: float = 0.5,
    top_k: int = 10,
    ablation: str = "resample",
) -> Circuit:
    """Circuit discovery by path patching, as Wang et al. (2022) traced the IOI circuit, automated: every node's
    direct effect on the logits; the `top_k` nodes with the largest |effect| form the first level; then
    repeatedly every earlier node's direct effect on the query, key and value inputs of the level's nodes, the
    nodes with |effect| at least `keep_fraction` of the largest joining, until no node joins.

    **Arguments:** `model` (with a residual-stream graph); `inputs`, `corrupted_inputs` (leading batch axis);
    `metric(output_batch) -> scalar`; `keep_fraction`; `top_k`; `ablation`.

    **Returns:** a node-level `Circuit` of heads and MLPs (scores: |effect| relative to the largest of its
    level, the highest over levels); `info` has the seconds and the number of path-patching forwards.
    """
    start = time.perf_counter()
    graph = Graph.of(model)
    last = graph.receivers[-1]
    effects = np.abs(np.asarray(path_patching(model, inputs, corrupted_inputs, metric, (last,), ablation=ablation)))
    senders = [n for n in graph.nodes if graph.valid[graph.node(n), graph.receiver(last)]]
    forwards = len(senders)
    scores = {n: 0.0 for n in graph.nodes if n != "embed"}
    level = []
    for name, value in sorted(zip(senders, _normalised(effects)), key=lambda item: -item[1]):
        if name != "embed":
            scores[name] = float(value)
            if len(level) < top_k:
                level.append(name)
    circuit = set(level)
    while level:
        receivers = list(dict.fromkeys(r for n in level for r in _receivers_of(graph, n)))
        cols = [graph.receiver(r) for r in receivers]
        senders = [n for n in graph.nodes if n != "embed" and graph.valid[graph.node(n), cols].any()]
        if not senders:
            break
        values = path_patching(model, inputs, corrupted_inputs, metric, receivers, senders, ablation=ablation)
        forwards += len(senders)
        level = []
        for name, value in zip(senders, _normalised(np.abs(np.asarray(values)))):
            scores[name] = max(scores[name], float(value))
            if value >= keep_fraction and name not in circuit:
                level.append(name)
        circuit |= set(level)
    kept = tuple(n for n in graph.nodes if n in circuit)
    info = {"seconds": time.perf_counter() - start, "forwards": forwards}
    return Circuit(kept, scores=scores, method="path_patching", info=info)


def _receivers_of(graph: Graph, node: str) -> list[str]:
    """Where a node reads the residual stream: an MLP its input; a query head its query input and the key and value
    inputs of its key/value head (grouped-query attention shares them)."""
    if not re.match(r"blocks\.\d+\.attn\.\d+$", node):
        return [node]
    layer, head = re.match(r"blocks\.(\d+)\.attn\.(\d+)$", node).groups()
    n_heads = sum(1 for r in graph.receivers if r.startswith(f"blocks.{layer}.attn.") and r.endswith(".q"))
    n_kv = sum(1 for r in graph.receivers if r.startswith(f"blocks.{layer}.attn.") and r.endswith(".k"))
    group = int(head) // (n_heads // n_kv)
    return [f"{node}.q", f"blocks.{layer}.attn.{group}.k", f"blocks.{layer}.attn.{group}.v"]


def kl_to_model(full_logits: jax.Array, position: int = -1) -> Callable[[jax.Array], jax.Array]:
    """ACDC's metric: `metric(logits) = mean KL(full || circuit)` of the next-token distributions at `position`,
    for a batch `[batch, seq, vocab]` (lower is closer to the full model)."""
    reference = jax.nn.log_softmax(full_logits[:, position], -1)

    def metric(logits):
        log_q = jax.nn.log_softmax(logits[:, position], -1)
        return jnp.mean(jnp.sum(jnp.exp(reference) * (reference - log_q), -1))

    return metric


def acdc(
    model,
    inputs: Sequence[jax.Array],
    corrupted_inputs: Sequence[jax.Array],
    threshold: float,
    metric: Callable[[jax.Array], jax.Array] | None = None,
    *,
    ablation: str = "resample",
) -> Circuit:
    """ACDC (Conmy et al. 2023): from the output backwards, remove each edge whose removal raises the distance to
    the full model by less than `threshold` (`docs/circuits.md#acdc`).

    Receivers are visited in reverse order of computation (the logits first) and, for each, its senders from the
    latest to the earliest; an edge is tried with every edge already removed staying removed.

    **Arguments:** `model` (with a residual-stream graph); `inputs`, `corrupted_inputs` (leading batch axis);
    `threshold` (tau); `metric(logits_batch) -> scalar`, a distance to minimise (default: the KL divergence from
    the full model's next-token distribution at the last position, `kl_to_model`); `ablation` (`"resample"`,
    `"mean"`, `"zero"`).

    **Returns:** an edge-level `Circuit`; an edge's score is the increase in the metric its removal caused when
    tried (kept edges: at least `threshold`).
    """
    start = time.perf_counter()
    graph = Graph.of(model)
    inputs = tuple(inputs)
    if metric is None:
        metric = kl_to_model(jax.vmap(model)(*inputs))
    ablated = ablation_values(model, tuple(corrupted_inputs), ablation)

    def evaluate(mask):
        return evaluate_mask(model, metric, graph, inputs, ablated, mask)

    mask = graph.valid.astype(np.float32)
    current = float(evaluate(mask))
    scores = {}
    for r in range(len(graph.receivers) - 1, -1, -1):
        for u in range(graph.sent_before[r] - 1, -1, -1):
            mask[u, r] = 0.0
            value = float(evaluate(mask))
            scores[edge_key(graph.nodes[u], graph.receivers[r])] = value - current
            if value - current < threshold:
                current = value
            else:
                mask[u, r] = 1.0
    edges = tuple(edge for edge in graph.edges if mask[graph.node(edge[0]), graph.receiver(edge[1])])
    nodes = tuple(dict.fromkeys(s for s, _ in edges))
    info = {"seconds": time.perf_counter() - start, "threshold": threshold, "metric": current}
    return Circuit(nodes, edges, scores, method="acdc", info=info)


def edge_circuit(graph: Graph, values: ArrayLike, k: int, method: str) -> Circuit:
    """The circuit of the `k` highest-scoring edges, from an `[edges]` array of scores in `graph.edges` order (from
    `eap`, `edge_patching`, ...); every edge's score kept. Scores are ranked as given: pass `abs(values)` to rank by
    magnitude, or `-values` for effects where lower means more important."""
    values = np.asarray(values, float)
    order = np.argsort(-values, kind="stable")[:k]
    edges = tuple(graph.edges[i] for i in sorted(order))
    nodes = tuple(dict.fromkeys(s for s, _ in edges))
    return Circuit(nodes, edges, graph.scores(values), method=method)
