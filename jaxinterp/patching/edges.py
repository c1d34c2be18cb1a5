"""Edge-level patching on the residual-stream graph: exact edge patching, path patching, edge attribution
patching (EAP) and EAP with integrated gradients (`docs/patching.md#edges`)."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .graph import Graph, ablation_values, node_outputs, run_graph

Metric = Callable[[jax.Array], jax.Array]


def masked_metric(model, inputs: Sequence[jax.Array], ablated: jax.Array, metric: Metric, graph: Graph | None = None):
    """The metric of the batch run under an edge mask, as a function of the mask.

    **Arguments:** `model`; `inputs` (positional arguments with a leading batch axis); `ablated` (`[batch, nodes,
    seq, d_model]`, `ablation_values`); `metric(outputs) -> scalar` on the batched outputs; `graph`.

    **Returns:** `evaluate(mask) -> scalar`, jit-, vmap- and grad-able, with `mask` as in `run_graph`.
    """
    graph = Graph.of(model) if graph is None else graph
    inputs = tuple(inputs)

    def evaluate(mask):
        run = jax.vmap(lambda args, abl: run_graph(model, args, mask, abl, graph=graph))
        return metric(run(inputs, ablated))

    return evaluate


@eqx.filter_jit
def evaluate_mask(model, metric: Metric, graph: Graph, inputs, ablated, mask) -> jax.Array:
    """`masked_metric(model, inputs, ablated, metric, graph)(mask)`, compiled once per model structure, metric,
    graph and shapes (for evaluating many circuits)."""
    return masked_metric(model, inputs, ablated, metric, graph)(mask)


def _setup(model, inputs, corrupted_inputs, ablation):
    graph = Graph.of(model)
    inputs, corrupted_inputs = tuple(inputs), tuple(corrupted_inputs)
    batch = {a.shape[0] for a in inputs + corrupted_inputs}
    if len(batch) != 1:
        raise ValueError(f"inputs and corrupted_inputs need one batch size, got leading axes {sorted(batch)}")
    return graph, inputs, ablation_values(model, corrupted_inputs, ablation)


def edge_patching(
    model,
    inputs: Sequence[jax.Array],
    corrupted_inputs: Sequence[jax.Array],
    metric: Metric,
    edges: Sequence[tuple[str, str]] | None = None,
    *,
    ablation: str = "resample",
    batch_size: int | None = 64,
) -> jax.Array:
    """The exact effect of ablating each edge alone: `metric(edge ablated) - metric(full model)`.

    **Arguments:** `model` (with a residual-stream graph, `Graph`); `inputs`, `corrupted_inputs` (positional
    arguments with a leading batch axis); `metric(outputs) -> scalar`; `edges` (all of `Graph.of(model).edges`
    by default); `ablation` (`"resample"`, `"mean"` or `"zero"`, see `ablation_values`); `batch_size` (edges
    evaluated together).

    **Returns:** `[len(edges)]`, in `edges` order.
    """
    graph, inputs, ablated = _setup(model, inputs, corrupted_inputs, ablation)
    rows, cols = graph.edge_indices(edges)
    columns = np.zeros((len(rows), len(graph.receivers)), np.float32)
    columns[np.arange(len(rows)), cols] = 1.0
    return _removal_effects(model, metric, graph, batch_size, inputs, ablated, rows, columns)


@eqx.filter_jit
def _removal_effects(model, metric, graph, batch_size, inputs, ablated, rows, columns):
    """`metric(mask) - metric(full)` with, for each `i`, the edges from node `rows[i]` to the receivers where
    `columns[i]` is 1 removed."""
    evaluate = masked_metric(model, inputs, ablated, metric, graph)
    valid = jnp.asarray(graph.valid, jnp.float32)
    node_axis = jnp.arange(valid.shape[0])

    def removed(row_and_columns):
        row, cols = row_and_columns
        return evaluate(valid * (1.0 - (node_axis == row)[:, None] * cols[None, :]))

    return jax.lax.map(removed, (jnp.asarray(rows), jnp.asarray(columns)), batch_size=batch_size) - evaluate(valid)


def path_patching(
    model,
    inputs: Sequence[jax.Array],
    corrupted_inputs: Sequence[jax.Array],
    metric: Metric,
    receivers: Sequence[str] = ("logits",),
    senders: Sequence[str] | None = None,
    *,
    ablation: str = "resample",
    batch_size: int | None = 64,
) -> jax.Array:
    """Path patching (Wang et al. 2022): each sender's ablated value reaches the receivers along the direct path
    only, every other path frozen at its clean value; `metric(patched) - metric(clean)` per sender.

    **Arguments:** as `edge_patching`, with `receivers` (receiver names, e.g. `("logits",)` or the query inputs
    of some heads, `"blocks.9.attn.6.q"`) and `senders` (node names; every node computed before some receiver by
    default).

    **Returns:** `[len(senders)]`.
    """
    graph, inputs, ablated = _setup(model, inputs, corrupted_inputs, ablation)
    cols = np.asarray([graph.receiver(name) for name in receivers])
    if senders is None:
        senders = [name for u, name in enumerate(graph.nodes) if graph.valid[u, cols].any()]
    rows = np.asarray([graph.node(name) for name in senders])
    columns = np.zeros((len(rows), len(graph.receivers)), np.float32)
    columns[:, cols] = 1.0
    return _removal_effects(model, metric, graph, batch_size, inputs, ablated, rows, columns)


def _input_gradients(model, graph, inputs, ablated, metric, mask):
    """The gradient of the batch metric with respect to every receiver's input, `[batch, receivers, seq, d]`."""
    seq_model = ablated.shape[2:]
    delta = jnp.zeros((ablated.shape[0], len(graph.receivers)) + seq_model, ablated.dtype)

    def total(delta):
        run = jax.vmap(lambda args, abl, d: run_graph(model, args, mask, abl, d, graph=graph))
        return metric(run(inputs, ablated, delta))

    return jax.grad(total)(delta)


def eap(
    model,
    inputs: Sequence[jax.Array],
    corrupted_inputs: Sequence[jax.Array],
    metric: Metric,
    *,
    ablation: str = "resample",
    steps: int = 1,
) -> jax.Array:
    """Edge attribution patching (Syed et al. 2023), or with `steps > 1` EAP-IG (Hanna et al. 2024).

    Every edge's effect is estimated as `(ablated_u - clean_u) . dmetric/d(input_r)`, summed over the batch: one
    clean forward, one corrupted forward and one backward give every edge. EAP-IG replaces the gradient by its
    average along the straight line from the corrupted to the clean input embeddings, at the midpoints
    `alpha = (k - 1/2) / steps` of `steps` equal intervals (one forward and backward each). Where a receiver's
    input moves along a straight line as the embeddings do (the edge from `embed` is the only path to it), this
    is the integrated-gradients identity and converges to exact patching as `steps` grows.

    **Arguments:** as `edge_patching`, with `steps` (1: EAP at the clean input; more: EAP-IG).

    **Returns:** `[edges]`, in `Graph.of(model).edges` order.
    """
    graph, inputs, ablated = _setup(model, inputs, corrupted_inputs, ablation)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")

    return _eap_scores(model, metric, graph, steps, inputs, tuple(corrupted_inputs), ablated)


@eqx.filter_jit
def _eap_scores(model, metric, graph, steps, inputs, corrupted_inputs, ablated):
    """The compiled body of `eap`."""
    clean = jax.vmap(lambda *a: node_outputs(model, a))(*inputs)
    valid = jnp.asarray(graph.valid, jnp.float32)
    if steps == 1:
        gradient = _input_gradients(model, graph, inputs, ablated, metric, valid)
    else:
        # the input embeddings interpolated between the corrupted run's and the clean run's
        corrupted = jax.vmap(lambda *a: node_outputs(model, a))(*corrupted_inputs)
        start = ablated.at[:, 0].set(corrupted[:, 0])
        embed_row = (jnp.arange(valid.shape[0]) == 0)[:, None]

        def at(alpha):
            mask = jnp.where(embed_row, alpha * valid, valid)
            return _input_gradients(model, graph, inputs, start, metric, mask)

        alphas = (jnp.arange(steps) + 0.5) / steps
        gradient = jax.lax.map(at, alphas).mean(0)
    dense = jnp.einsum("busd,brsd->ur", ablated - clean, gradient)
    return dense[graph.edge_indices()]
