"""The residual-stream graph of a model: nodes that write into the residual stream, receivers that read it, an edge
from every node to every receiver after it, and a forward pass in which each edge carries the sender's value or
its ablated value (`docs/patching.md#the-graph`)."""

import difflib
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

ABLATIONS = ("resample", "mean", "zero")


class Graph:
    """Nodes, receivers and edges of a model that routes its residual stream through a `mix` function.

    A model provides the graph by two methods (the transformer family does, for pre-norm models):
    `graph_layout()`, the steps `("send", nodes)` and `("read", receivers)` in execution order, and
    `forward_graph(mix, *args)`, its forward pass with each receiver's input assembled by `mix`.

    **Attributes:** `nodes` (names, e.g. `embed`, `blocks.L.attn.H`, `blocks.L.mlp`), `receivers` (e.g.
    `blocks.L.attn.H.q`, `blocks.L.attn.G.k`, `blocks.L.mlp`, `logits`), `edges` (every `(node, receiver)` pair
    with the node sent before the receiver reads, in node-major order), `valid` (bool `[nodes, receivers]`, True
    at the edges).
    """

    def __init__(self, layout: Sequence[tuple[str, Sequence[str]]]):
        self._layout = tuple((step, tuple(names)) for step, names in layout)
        nodes, receivers, sent_before = [], [], []
        for step, names in self._layout:
            if step == "send":
                nodes += list(names)
            elif step == "read":
                receivers += list(names)
                sent_before += [len(nodes)] * len(names)
            else:
                raise ValueError(f"a graph layout step is 'send' or 'read', got {step!r}")
        self.nodes, self.receivers = tuple(nodes), tuple(receivers)
        self.sent_before = np.asarray(sent_before, int)
        self.valid = np.arange(len(nodes))[:, None] < self.sent_before[None, :]
        rows, cols = np.nonzero(self.valid)
        self.edges = tuple((self.nodes[u], self.receivers[r]) for u, r in zip(rows, cols))
        self._edge_rows, self._edge_cols = rows, cols
        self._node_index = {name: i for i, name in enumerate(self.nodes)}
        self._receiver_index = {name: i for i, name in enumerate(self.receivers)}

    @classmethod
    def of(cls, model) -> "Graph":
        """The graph of `model` (which must have `graph_layout` and `forward_graph`)."""
        if not (hasattr(model, "graph_layout") and hasattr(model, "forward_graph")):
            raise TypeError(
                f"{type(model).__name__} has no residual-stream graph: edge-level methods need a model with "
                "graph_layout() and forward_graph(mix, *args), as the pre-norm transformers of models.Transformer"
            )
        return cls(model.graph_layout())

    def __eq__(self, other):
        return isinstance(other, Graph) and self._layout == other._layout

    def __hash__(self):
        return hash(self._layout)

    def __repr__(self):
        return f"Graph({len(self.nodes)} nodes, {len(self.receivers)} receivers, {len(self.edges)} edges)"

    def node(self, name: str) -> int:
        """The index of node `name` (a `KeyError` naming the closest nodes when unknown)."""
        return _lookup(self._node_index, name, "node")

    def receiver(self, name: str) -> int:
        """The index of receiver `name` (a `KeyError` naming the closest receivers when unknown)."""
        return _lookup(self._receiver_index, name, "receiver")

    def edge_mask(self, edges: Iterable[tuple[str, str]]) -> np.ndarray:
        """A float `[nodes, receivers]` mask, 1 at the given edges and 0 elsewhere."""
        mask = np.zeros(self.valid.shape, np.float32)
        for sender, receiver in edges:
            u, r = self.node(sender), self.receiver(receiver)
            if not self.valid[u, r]:
                raise ValueError(f"no edge {sender}->{receiver}: {sender} is computed after {receiver} reads")
            mask[u, r] = 1.0
        return mask

    def node_mask(self, nodes: Iterable[str]) -> np.ndarray:
        """A float `[nodes, receivers]` mask keeping every edge out of the given nodes (the node-level circuit)."""
        keep = np.zeros(len(self.nodes), np.float32)
        keep[[self.node(name) for name in nodes]] = 1.0
        return keep[:, None] * self.valid

    def edge_indices(self, edges: Sequence[tuple[str, str]] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The `(node, receiver)` index arrays of `edges` (all edges by default), for indexing `[nodes, receivers]`
        arrays."""
        if edges is None:
            return self._edge_rows, self._edge_cols
        rows = np.asarray([self.node(sender) for sender, _ in edges], int)
        cols = np.asarray([self.receiver(receiver) for _, receiver in edges], int)
        bad = [f"{s}->{r}" for (s, r), u, c in zip(edges, rows, cols) if not self.valid[u, c]]
        if bad:
            raise ValueError(f"not edges (the sender is computed after the receiver reads): {', '.join(bad[:5])}")
        return rows, cols

    def single_edge_masks(self, edges: Sequence[tuple[str, str]] | None = None) -> np.ndarray:
        """`[len(edges), nodes, receivers]`: the full mask with one edge removed, for each edge (all by default)."""
        rows, cols = self.edge_indices(edges)
        masks = np.broadcast_to(self.valid.astype(np.float32), (len(rows),) + self.valid.shape).copy()
        masks[np.arange(len(rows)), rows, cols] = 0.0
        return masks

    def scores(self, values: ArrayLike, edges: Sequence[tuple[str, str]] | None = None) -> dict[str, float]:
        """`{"sender->receiver": score}` from an `[edges]` array of scores (in `edges` order, all by default)."""
        chosen = self.edges if edges is None else edges
        return {f"{s}->{r}": float(v) for (s, r), v in zip(chosen, np.asarray(values))}


def _lookup(index: dict[str, int], name: str, what: str) -> int:
    if name not in index:
        close = difflib.get_close_matches(name, list(index), n=5, cutoff=0.4)
        raise KeyError(f"unknown {what} {name!r}" + (f"; closest: {', '.join(close)}" if close else ""))
    return index[name]


def run_graph(
    model,
    args: Sequence[ArrayLike],
    mask: ArrayLike | None = None,
    ablated: ArrayLike | None = None,
    delta: ArrayLike | None = None,
    graph: Graph | None = None,
):
    """Run `model` on ONE example with each edge carrying the sender's value (mask 1) or its ablated value (0).

    A receiver's input is `constant + sum_u m[u, r] out_u + (1 - m[u, r]) ablated_u (+ delta_r)`, with `out_u`
    the sender's output in this run (so ablations upstream propagate).

    **Arguments:**

    - `model`, `args`: the model and its positional arguments for one example.
    - `mask`: `[nodes, receivers]`, or `[nodes, receivers, seq]` for position-resolved senders; values in
      `[0, 1]` interpolate. All ones (the ordinary forward) when omitted. Entries off `graph.valid` are ignored.
    - `ablated`: `[nodes, seq, d_model]`, the value an ablated edge carries (zeros when omitted).
    - `delta`: `[receivers, seq, d_model]` added to each receiver's input (for gradients with respect to
      receiver inputs); none when omitted.
    - `graph`: `Graph.of(model)`, when already built.

    **Returns:** the model's output.
    """
    graph = Graph.of(model) if graph is None else graph

    def mix(receivers, outputs, constant):
        cols = np.asarray([graph.receiver(name) for name in receivers])
        n = outputs.shape[0]
        inputs = jnp.broadcast_to(constant + outputs.sum(0), (len(cols),) + constant.shape)
        if mask is not None:
            removed = 1.0 - jnp.asarray(mask)[:n, cols].astype(outputs.dtype)
            away = outputs if ablated is None else outputs - ablated[:n]
            spec = "uk,usd->ksd" if removed.ndim == 2 else "uks,usd->ksd"
            inputs = inputs - jnp.einsum(spec, removed, away)
        if delta is not None:
            inputs = inputs + delta[cols]
        return inputs

    return model.forward_graph(mix, *args)


def node_outputs(model, args: Sequence[ArrayLike]) -> jax.Array:
    """Every node's output on ONE example, `[nodes, seq, d_model]`, in `Graph.of(model).nodes` order."""
    seen = {}

    def mix(receivers, outputs, constant):
        seen["outputs"] = outputs
        return jnp.broadcast_to(constant + outputs.sum(0), (len(receivers),) + constant.shape)

    model.forward_graph(mix, *args)
    return seen["outputs"]


def ablation_values(model, corrupted_inputs: Sequence[ArrayLike], ablation: str) -> jax.Array:
    """What ablated edges carry, for a batch: `[batch, nodes, seq, d_model]`.

    **Arguments:** `model`; `corrupted_inputs`, the model's positional arguments with a leading batch axis (the
    corrupted or reference run); `ablation`: `"resample"` (each example's node outputs on its corrupted input),
    `"mean"` (their mean over the batch, every example alike) or `"zero"`.
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"unknown ablation {ablation!r}; choose one of {ABLATIONS}")
    outputs = jax.vmap(lambda *a: node_outputs(model, a))(*corrupted_inputs)
    if ablation == "mean":
        return jnp.broadcast_to(outputs.mean(0, keepdims=True), outputs.shape)
    if ablation == "zero":
        return jnp.zeros_like(outputs)
    return outputs
