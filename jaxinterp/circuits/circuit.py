"""`Circuit`: a set of nodes (and optionally edges) of a model's computational graph, with the scores that chose them.

Names follow the project's graph of a transformer:

- nodes: `"embed"`, `"blocks.L.attn.H"` (head `H` of layer `L`), `"blocks.L.mlp"`, `"logits"`;
- receivers (where an edge ends): `"blocks.L.attn.H.q"`, `"blocks.L.attn.H.k"`, `"blocks.L.attn.H.v"`,
  `"blocks.L.mlp"`, `"logits"`;
- an edge is a pair `(sender node, receiver)`, keyed as the string `"sender->receiver"`;
- a position-resolved name carries `@p` (token position `p`), e.g. `"blocks.3.attn.5@7"`.

A circuit is a plain value: frozen, comparable, and stored as JSON (`Circuit.save`, `Circuit.load`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np

FORMAT = "jaxinterp.circuit"
VERSION = 1
EDGE_SEPARATOR = "->"

_POSITION = re.compile(r"@(\d+)")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(?:attn\.(\d+)(?:\.([qkv]))?|mlp)$")


def edge_key(sender: str, receiver: str) -> str:
    """The string key of the edge `(sender, receiver)`: `"sender->receiver"`."""
    return f"{sender}{EDGE_SEPARATOR}{receiver}"


def parse_edge_key(key: str) -> tuple[str, str]:
    """The `(sender, receiver)` pair of an edge key `"sender->receiver"`; a `ValueError` for anything else."""
    sender, sep, receiver = key.partition(EDGE_SEPARATOR)
    if not sep or not sender or not receiver or EDGE_SEPARATOR in receiver:
        raise ValueError(f"{key!r} is not an edge key of the form 'sender->receiver'")
    return sender, receiver


def is_edge_key(key: str) -> bool:
    """Whether `key` is an edge key (contains `"->"`) rather than a node name."""
    return EDGE_SEPARATOR in key


@dataclasses.dataclass(frozen=True)
class NameParts:
    """A graph name taken apart.

    - `kind`: `"embed"`, `"attn"`, `"mlp"` or `"logits"`;
    - `layer`: the block index (`None` for embed and logits);
    - `head`: the head index of an attention name (else `None`);
    - `port`: `"q"`, `"k"` or `"v"` for an attention receiver (else `None`);
    - `position`: the token position of a position-resolved name (else `None`).
    """

    kind: str
    layer: int | None = None
    head: int | None = None
    port: str | None = None
    position: int | None = None


def parse_name(name: str) -> NameParts:
    """Take a node or receiver name apart (see `NameParts`); a `ValueError` names anything outside the convention."""
    positions = _POSITION.findall(name)
    if len(positions) > 1:
        raise ValueError(f"{name!r} has more than one '@position'")
    base = _POSITION.sub("", name)
    position = int(positions[0]) if positions else None
    if base in ("embed", "logits"):
        return NameParts(kind=base, position=position)
    match = _BLOCK.match(base)
    if match is None:
        raise ValueError(
            f"{name!r} is not a graph name: expected 'embed', 'blocks.L.attn.H', 'blocks.L.attn.H.q|k|v', "
            "'blocks.L.mlp' or 'logits', optionally with '@position'"
        )
    layer, head, port = match.groups()
    if head is None:
        return NameParts(kind="mlp", layer=int(layer), position=position)
    return NameParts(kind="attn", layer=int(layer), head=int(head), port=port, position=position)


def node_of(name: str) -> str:
    """The node a receiver belongs to: `"blocks.L.attn.H.q@p"` gives `"blocks.L.attn.H@p"`; a node name is itself."""
    parts = parse_name(name)
    if parts.port is None:
        return name
    base = f"blocks.{parts.layer}.attn.{parts.head}"
    return base if parts.position is None else f"{base}@{parts.position}"


def sort_key(name: str) -> tuple:
    """A key ordering names as the graph runs: embed, then each layer's heads (by index) and its MLP, then logits.

    Within a node, positions ascend and the ports come in the order q, k, v.
    """
    parts = parse_name(name)
    kind_order = {"embed": 0, "attn": 1, "mlp": 2, "logits": 3}[parts.kind]
    layer = -1 if parts.kind == "embed" else (math.inf if parts.kind == "logits" else parts.layer)
    head = -1 if parts.head is None else parts.head
    position = -1 if parts.position is None else parts.position
    port = {None: -1, "q": 0, "k": 1, "v": 2}[parts.port]
    return (layer, kind_order, head, position, port, name)


def _json_default(value: Any) -> Any:
    """JSON for the numpy (and jax) values that `info` may hold: scalars as Python numbers, arrays as lists."""
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "__array__"):
        return np.asarray(value).tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, pathlib.PurePath):
        return str(value)
    raise TypeError(f"Circuit.info holds a value JSON cannot store: {type(value).__name__}")


@dataclasses.dataclass(frozen=True)
class Circuit:
    """A circuit: kept nodes, optionally kept edges, and the scores of the candidates they were chosen from.

    **Fields:**

    - `nodes`: the kept node names (see the module docstring for the naming).
    - `edges`: the kept edges as `(sender, receiver)` pairs, or `None` for a node-only circuit.
    - `scores`: a score per node name or edge key `"sender->receiver"`; it may cover more than the kept nodes and
      edges (every scored candidate). Higher means more important.
    - `method`: the name of the method that found the circuit.
    - `info`: free metadata (task, metric values, seconds, ...); JSON-serialisable values.

    Equality compares every field; the hash uses `nodes`, `edges` and `method`. `len(c)` is the number of edges of
    an edge circuit and the number of nodes of a node-only one. `x in c` accepts a node name, an edge key or an
    edge pair.
    """

    # annotated as what the constructor accepts; stored as tuples, `str -> float` dicts
    nodes: Sequence[str]
    edges: Sequence[Sequence[str]] | None = None
    scores: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)
    method: str = ""
    info: dict = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        nodes = tuple(str(n) for n in self.nodes)
        edges = None if self.edges is None else tuple((str(s), str(r)) for s, r in self.edges)
        if len(set(nodes)) != len(nodes):
            raise ValueError("Circuit.nodes has repeated names")
        if edges is not None and len(set(edges)) != len(edges):
            raise ValueError("Circuit.edges has repeated edges")
        object.__setattr__(self, "nodes", nodes)
        object.__setattr__(self, "edges", edges)
        object.__setattr__(self, "scores", {str(k): float(v) for k, v in self.scores.items()})
        object.__setattr__(self, "method", str(self.method))
        object.__setattr__(self, "info", dict(self.info))

    # --- the set view -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes) if self.edges is None else len(self.edges)

    def __contains__(self, item: object) -> bool:
        if isinstance(item, tuple) and len(item) == 2:
            return self.edges is not None and tuple(item) in self.edges
        if isinstance(item, str):
            if is_edge_key(item):
                return self.edges is not None and parse_edge_key(item) in self.edges
            return item in self.nodes
        return False

    @property
    def edge_keys(self) -> tuple[str, ...]:
        """The kept edges as `"sender->receiver"` keys (empty for a node-only circuit)."""
        return () if self.edges is None else tuple(edge_key(s, r) for s, r in self.edges)

    @staticmethod
    def layer_of(name: str, n_layers: int | None = None) -> int:
        """The column of a node or receiver in a layered drawing of the graph.

        `"embed"` is column 0 (the input), every name of block `L` (heads, their q/k/v, the MLP) is column `L + 1`,
        and `"logits"` is the last column: `n_layers + 1` when `n_layers` is given, else `-1` (read as a Python
        index: the last). A position suffix `@p` does not change the column.

        **Arguments:**

        - `name`: a node or receiver name.
        - `n_layers`: the number of blocks of the model, to give logits a concrete column.

        **Returns:** the column index.
        """
        parts = parse_name(name)
        if parts.kind == "embed":
            return 0
        if parts.kind == "logits":
            return -1 if n_layers is None else n_layers + 1
        return parts.layer + 1

    # --- selection ----------------------------------------------------------------------------------------------

    def with_top(self, k: int, kind: Literal["edges", "nodes"] = "edges", *, absolute: bool = False) -> Circuit:
        """A new circuit of the `k` best-scored candidates in `scores`.

        Candidates are ranked by score, highest first (higher = more important), or by `|score|` with
        `absolute=True`; ties go to the name that sorts first. `k` larger than the number of candidates keeps them
        all.

        **Arguments:**

        - `k`: how many to keep (non-negative).
        - `kind`: `"edges"` ranks the edge keys of `scores`: the new circuit has those edges, and as nodes their
          senders and the nodes of their receivers (graph order). `"nodes"` ranks the node names of `scores`: the new
          circuit has those nodes (graph order) and no edges.
        - `absolute`: rank by `|score|`.

        **Returns:** a `Circuit` with the same `scores`, `method` and `info`.
        """
        if k < 0:
            raise ValueError(f"with_top needs k >= 0, got {k}")
        if kind not in ("edges", "nodes"):
            raise ValueError(f"with_top kind must be 'edges' or 'nodes', got {kind!r}")
        want_edges = kind == "edges"
        candidates = [key for key in self.scores if is_edge_key(key) == want_edges]
        if not candidates:
            raise ValueError(f"with_top(kind={kind!r}): scores has no {kind} to rank")

        def rank(key: str) -> tuple[float, str]:
            s = self.scores[key]
            return (-(abs(s) if absolute else s), key)

        kept = sorted(candidates, key=rank)[:k]
        if want_edges:
            edges = tuple(parse_edge_key(key) for key in kept)
            touched = {s for s, _ in edges} | {node_of(r) for _, r in edges}
            nodes = tuple(sorted(touched, key=sort_key))
        else:
            edges = None
            nodes = tuple(sorted(kept, key=sort_key))
        return dataclasses.replace(self, nodes=nodes, edges=edges)

    # --- JSON ---------------------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The JSON object of the circuit: the `format`/`version` header and every field."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "nodes": list(self.nodes),
            "edges": None if self.edges is None else [list(e) for e in self.edges],
            "scores": dict(self.scores),
            "info": self.info,
        }

    def to_json(self, indent: int | None = 1) -> str:
        """The circuit as JSON text (see `to_dict`); numpy values in `info` become numbers and lists."""
        return json.dumps(self.to_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_dict(cls, data: Any, source: str = "the JSON") -> Circuit:
        """The circuit of a JSON object written by `to_dict`.

        **Arguments:**

        - `data`: the decoded object.
        - `source`: what the data came from, for the error messages (a path, say).

        **Returns:** the `Circuit`; a `ValueError` when the header or a field is wrong.
        """
        is_object = isinstance(data, Mapping)
        found = data.get("format") if is_object else None
        if found != FORMAT:
            what = (
                f"its 'format' is {found!r}" if is_object else f"it holds a JSON {type(data).__name__}, not an object"
            )
            raise ValueError(f"{source} is not a circuit: {what}; expected format {FORMAT!r}")
        if data.get("version") != VERSION:
            raise ValueError(
                f"{source} has circuit format version {data.get('version')!r}; this jaxinterp reads version {VERSION}"
            )
        try:
            edges = data.get("edges")
            return cls(
                nodes=tuple(data["nodes"]),
                edges=None if edges is None else tuple(_pair(e) for e in edges),
                scores=dict(data.get("scores") or {}),
                method=data.get("method", ""),
                info=dict(data.get("info") or {}),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source} is not a valid circuit: {error}") from error

    @classmethod
    def from_json(cls, text: str, source: str = "the JSON text") -> Circuit:
        """The circuit of JSON text written by `to_json`; a `ValueError` (naming `source`) for invalid JSON."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} is not valid JSON: {error}") from error
        return cls.from_dict(data, source)

    def save(self, path: str | pathlib.Path) -> pathlib.Path:
        """Write the circuit as JSON to `path` (parent folders created); returns the path."""
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | pathlib.Path) -> Circuit:
        """Read a circuit written by `save`.

        **Returns:** the `Circuit`. Raises `FileNotFoundError` for a missing file and `ValueError` for invalid JSON
        or a wrong `format`/`version`; the messages name the path.
        """
        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no circuit file at {path}")
        return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))

    # --- drawing ------------------------------------------------------------------------------------------------

    def render(self, path: str | pathlib.Path | None = None, format: str | None = None) -> str | bytes:
        """Draw the circuit as a layered graph (see `jaxinterp.circuits.render.render`).

        **Arguments:**

        - `path`: where to write the drawing, or `None` to only return it.
        - `format`: `"svg"` or `"png"`; by default the suffix of `path`, else `"svg"`.

        **Returns:** the SVG text or the PNG bytes.
        """
        from .render import render

        return render(self, path=path, format=format)


def _pair(edge: Iterable) -> tuple[str, str]:
    edge = tuple(edge)
    if len(edge) != 2 or not all(isinstance(x, str) for x in edge):
        raise ValueError(f"an edge must be a [sender, receiver] pair of strings, got {list(edge)!r}")
    return edge
