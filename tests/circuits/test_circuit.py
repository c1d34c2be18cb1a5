"""The `Circuit` value: construction, the set view, selection, JSON, and drawing."""

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from jaxinterp.circuits.circuit import Circuit, edge_key, node_of, parse_edge_key, parse_name, sort_key
from jaxinterp.circuits.render import render

SVG = "{http://www.w3.org/2000/svg}"

EDGE_SCORES = {
    "embed->blocks.0.attn.1.q": 0.5,
    "embed->blocks.0.attn.0.v": 0.3,
    "blocks.0.attn.1->logits": -0.3,
    "embed->blocks.1.mlp": 0.1,
    "blocks.1.mlp->logits": 0.9,
    "blocks.0.attn.1->blocks.1.attn.0.v": 0.2,
    "blocks.0.attn.0->blocks.1.attn.0.k": -0.4,
    "blocks.0.mlp->blocks.1.mlp": 0.6,
    "blocks.0.attn.0->blocks.0.mlp": 0.25,
    "blocks.1.attn.0->logits": 0.55,
}


def edge_circuit(k=6):
    return Circuit(nodes=(), scores=EDGE_SCORES, method="eap-ig", info={"task": "ioi"}).with_top(k)


def positional_circuit():
    edges = (
        ("embed@0", "blocks.0.attn.2.k@0"),
        ("embed@3", "blocks.0.attn.2.q@3"),
        ("blocks.0.attn.2@3", "blocks.1.mlp@3"),
        ("blocks.1.mlp@3", "logits@3"),
    )
    scores = {edge_key(s, r): float(i) - 1.5 for i, (s, r) in enumerate(edges)}
    nodes = ("embed@0", "embed@3", "blocks.0.attn.2@0", "blocks.0.attn.2@3", "blocks.1.mlp@3", "logits@3")
    return Circuit(nodes=nodes, edges=edges, scores=scores, method="positional", info={"seconds": 1.25})


def test_fields_are_normalised_and_the_value_is_frozen_and_hashable():
    c = Circuit(nodes=["embed", "logits"], edges=[["embed", "logits"]], scores={"embed->logits": np.float32(2)})
    assert c.nodes == ("embed", "logits")
    assert c.edges == (("embed", "logits"),)
    assert type(c.scores["embed->logits"]) is float
    with pytest.raises(AttributeError):
        c.method = "other"
    same = Circuit(nodes=("embed", "logits"), edges=(("embed", "logits"),), scores={"embed->logits": 2.0})
    assert c == same and hash(c) == hash(same)
    assert c != Circuit(nodes=("embed", "logits"), edges=(("embed", "logits"),), scores={"embed->logits": 3.0})
    with pytest.raises(ValueError, match="repeated"):
        Circuit(nodes=("embed", "embed"))


def test_membership_and_length():
    c = edge_circuit(3)
    assert len(c) == 3
    assert ("blocks.1.mlp", "logits") in c
    assert "blocks.1.mlp->logits" in c
    assert "blocks.1.mlp" in c and "logits" in c
    assert "embed->blocks.1.mlp" not in c
    assert "blocks.7.mlp" not in c
    nodes = Circuit(nodes=("embed", "blocks.0.mlp"))
    assert len(nodes) == 2
    assert "blocks.0.mlp" in nodes and "embed->blocks.0.mlp" not in nodes and 3 not in nodes


def test_layer_of_columns():
    assert Circuit.layer_of("embed") == 0
    assert Circuit.layer_of("embed@4") == 0
    assert Circuit.layer_of("blocks.0.attn.3") == 1
    assert Circuit.layer_of("blocks.0.mlp") == 1
    assert Circuit.layer_of("blocks.11.attn.2.v@5") == 12
    assert Circuit.layer_of("blocks.3.attn.5@7") == 4
    assert Circuit.layer_of("logits") == -1
    assert Circuit.layer_of("logits", n_layers=12) == 13
    with pytest.raises(ValueError, match="not a graph name"):
        Circuit.layer_of("blocks.0.resid_pre")


def test_names_and_keys():
    assert parse_edge_key("blocks.0.attn.1@2->blocks.1.attn.0.q@2") == ("blocks.0.attn.1@2", "blocks.1.attn.0.q@2")
    assert edge_key("embed", "logits") == "embed->logits"
    with pytest.raises(ValueError, match="edge key"):
        parse_edge_key("embed")
    assert node_of("blocks.2.attn.4.k") == "blocks.2.attn.4"
    assert node_of("blocks.2.attn.4.k@6") == "blocks.2.attn.4@6"
    assert node_of("blocks.2.attn.4@6.k") == "blocks.2.attn.4@6"
    assert node_of("blocks.2.mlp") == "blocks.2.mlp"
    assert parse_name("blocks.2.attn.4.q@6").port == "q"
    names = ["logits", "blocks.1.mlp", "blocks.1.attn.10", "blocks.1.attn.2", "blocks.0.mlp", "embed"]
    assert sorted(names, key=sort_key) == [
        "embed",
        "blocks.0.mlp",
        "blocks.1.attn.2",
        "blocks.1.attn.10",
        "blocks.1.mlp",
        "logits",
    ]


def test_with_top_edges_keeps_the_highest_scores_and_their_nodes():
    c = edge_circuit(3)
    assert c.edges == (("blocks.1.mlp", "logits"), ("blocks.0.mlp", "blocks.1.mlp"), ("blocks.1.attn.0", "logits"))
    assert c.nodes == ("blocks.0.mlp", "blocks.1.attn.0", "blocks.1.mlp", "logits")
    assert c.scores == EDGE_SCORES and c.method == "eap-ig" and c.info == {"task": "ioi"}
    assert ("blocks.0.attn.0", "blocks.1.attn.0.k") in c.with_top(5, absolute=True)  # |-0.4| is fifth
    assert ("blocks.0.attn.0", "blocks.1.attn.0.k") not in c.with_top(5)
    assert len(c.with_top(100)) == len(EDGE_SCORES)
    assert len(c.with_top(0)) == 0 and c.with_top(0).nodes == ()
    with pytest.raises(ValueError, match="k >= 0"):
        c.with_top(-1)
    with pytest.raises(ValueError, match="no nodes"):
        c.with_top(2, kind="nodes")


def test_with_top_nodes():
    scores = {"blocks.0.attn.0": 0.1, "blocks.0.mlp": -2.0, "blocks.1.attn.3": 0.7, "embed": 0.5, "embed->logits": 9.0}
    c = Circuit(nodes=(), scores=scores)
    top = c.with_top(2, kind="nodes")
    assert top.nodes == ("embed", "blocks.1.attn.3") and top.edges is None
    assert c.with_top(1, kind="nodes", absolute=True).nodes == ("blocks.0.mlp",)


@pytest.mark.parametrize("make", [edge_circuit, positional_circuit])
def test_json_round_trip(make, tmp_path):
    c = make()
    data = json.loads(c.to_json())
    assert data["format"] == "jaxinterp.circuit" and data["version"] == 1
    assert Circuit.from_json(c.to_json()) == c
    path = c.save(tmp_path / "sub" / "circuit.json")
    assert Circuit.load(path) == c
    assert Circuit.load(str(path)) == c


def test_json_of_a_node_circuit_and_of_numpy_info():
    c = Circuit(
        nodes=("embed", "blocks.0.attn.1@2"),
        scores={"embed": 1.0, "blocks.0.attn.1@2": -0.25, "blocks.0.mlp": 0.0},
        method="ap",
        info={"auc": np.float64(0.75), "curve": np.arange(3), "nested": {"k": [1, 2]}},
    )
    back = Circuit.from_json(c.to_json())
    assert back.edges is None and back.nodes == c.nodes and back.scores == c.scores
    assert back.info == {"auc": 0.75, "curve": [0, 1, 2], "nested": {"k": [1, 2]}}
    with pytest.raises(TypeError, match="JSON cannot store"):
        Circuit(nodes=(), info={"f": object()}).to_json()


def test_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(FileNotFoundError, match="missing.json"):
        Circuit.load(missing)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "jaxinterp.circuit", "version": 1, "nodes": [')
    with pytest.raises(ValueError, match=r"corrupt\.json is not valid JSON"):
        Circuit.load(corrupt)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "something.else", "version": 1, "nodes": []}))
    with pytest.raises(ValueError, match=r"wrong\.json is not a circuit.*'something\.else'"):
        Circuit.load(wrong)
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "jaxinterp.circuit", "version": 2, "nodes": []}))
    with pytest.raises(ValueError, match=r"newer\.json has circuit format version 2"):
        Circuit.load(newer)
    bad_edge = tmp_path / "bad_edge.json"
    bad_edge.write_text(json.dumps({"format": "jaxinterp.circuit", "version": 1, "nodes": [], "edges": [["a"]]}))
    with pytest.raises(ValueError, match=r"bad_edge\.json is not a valid circuit"):
        Circuit.load(bad_edge)
    listed = tmp_path / "list.json"
    listed.write_text("[]")
    with pytest.raises(ValueError, match=r"list\.json is not a circuit: it holds a JSON list, not an object"):
        Circuit.load(listed)


def _texts(root):
    return [element.text for element in root.iter(f"{SVG}text")]


@pytest.mark.parametrize("make", [edge_circuit, positional_circuit])
def test_svg_has_every_node_label_and_one_curve_per_edge(make, tmp_path):
    c = make()
    svg = c.render(tmp_path / "circuit.svg")
    assert (tmp_path / "circuit.svg").read_text() == svg
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = _texts(root)
    drawn = set(c.nodes) | {s for s, _ in c.edges} | {node_of(r) for _, r in c.edges}
    for name in drawn:
        assert texts.count(name) == 1, name
    (edges,) = [g for g in root.iter(f"{SVG}g") if g.get("class") == "edges"]
    paths = list(edges.iter(f"{SVG}path"))
    assert len(paths) == len(c.edges)
    titles = {p.find(f"{SVG}title").text.split(": ")[0] for p in paths}
    assert titles == set(c.edge_keys)
    colours = {p.find(f"{SVG}title").text.split(": ")[0]: p.get("stroke") for p in paths}
    for key, colour in colours.items():
        assert colour == ("#2166ac" if c.scores[key] > 0 else "#b2182b")
    widths = {key: float(p.get("stroke-width")) for key, p in zip(colours, paths)}
    strongest = max(c.edge_keys, key=lambda k: abs(c.scores[k]))
    assert widths[strongest] == max(widths.values())


def test_svg_of_a_node_circuit_fills_by_score():
    c = Circuit(
        nodes=("embed", "blocks.0.attn.0", "blocks.0.mlp", "logits"), scores={"embed": 1.0, "blocks.0.mlp": -1.0}
    )
    root = ET.fromstring(render(c))
    fills = {}
    for group in root.iter(f"{SVG}g"):
        rect, text = group.find(f"{SVG}rect"), group.find(f"{SVG}text")
        if rect is not None and text is not None:
            fills[text.text] = rect.get("fill")
    assert fills == {"embed": "#2166ac", "blocks.0.attn.0": "#ffffff", "blocks.0.mlp": "#b2182b", "logits": "#ffffff"}
    assert not list(root.iter(f"{SVG}path"))


def test_svg_of_an_empty_circuit_is_valid():
    root = ET.fromstring(Circuit(nodes=()).render())
    assert any("empty" in (t or "") for t in _texts(root))


def test_png(tmp_path):
    from matplotlib.image import imread

    c = edge_circuit()
    png = c.render(tmp_path / "circuit.png")
    assert isinstance(png, bytes) and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "circuit.png").read_bytes() == png
    image = imread(tmp_path / "circuit.png")
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 200
    assert (image[..., :3] < 0.9).any(axis=-1).mean() > 0.01  # ink: boxes, text and edges
    assert c.render(format="png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_format_errors(tmp_path):
    c = edge_circuit()
    with pytest.raises(ValueError, match="cannot tell the drawing format"):
        c.render(tmp_path / "circuit.pdf")
    with pytest.raises(ValueError, match="'svg' or 'png'"):
        c.render(format="jpeg")
    assert c.render(tmp_path / "drawing.txt", format="svg").startswith("<?xml")
