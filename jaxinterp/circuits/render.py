"""Drawing a `Circuit` as a layered graph, as SVG (written as text) or PNG (drawn with matplotlib's Agg backend).

The drawing runs left to right: a column for the input (`embed`), one per block (its attention heads, then its MLP a
little to the right), and one for the output (`logits`). Nodes are labelled boxes. An edge is a curve (one SVG `path`)
from the right side of its sender to the left side of its receiver's node (a head's q, k and v enter at the top,
middle and bottom of its box), bowing upwards where it passes over other columns; its colour is the sign of its score (blue positive, red negative, grey unscored) and its
width grows with `|score|`. In a node-only circuit the boxes are filled by score on the same colour scale.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import xml.etree.ElementTree as ET

from .circuit import Circuit, edge_key, node_of, parse_name, sort_key

FONT_SIZE = 11  # px
CHAR_WIDTH = 0.61 * FONT_SIZE  # a monospace character
BOX_HEIGHT = 22
ROW_GAP = 8
COLUMN_GAP = 70
MARGIN = 20
TOP = 56  # room for the title and the column headers
POSITIVE = "#2166ac"
NEGATIVE = "#b2182b"
UNSCORED = "#8c8c8c"
NEUTRAL_FILL = "#f0f0f0"
BOX_STROKE = "#404040"
MAX_LINE_WIDTH = 5.0
MIN_LINE_WIDTH = 0.75
_PORT_HEIGHT = {"q": 0.25, "k": 0.5, "v": 0.75, None: 0.5}


@dataclasses.dataclass(frozen=True)
class _Box:
    name: str
    x: float
    y: float
    width: float
    fill: str
    text_colour: str
    score: float | None


@dataclasses.dataclass(frozen=True)
class _Line:
    """A cubic Bezier curve from `start` to `end` with control points `c1`, `c2`."""

    key: str
    start: tuple[float, float]
    c1: tuple[float, float]
    c2: tuple[float, float]
    end: tuple[float, float]
    colour: str
    width: float
    score: float | None


@dataclasses.dataclass(frozen=True)
class _Layout:
    width: float
    height: float
    title: str
    headers: tuple[tuple[float, str], ...]
    boxes: tuple[_Box, ...]
    lines: tuple[_Line, ...]
    legend: str


def _mix(colour_a: str, colour_b: str, t: float) -> str:
    """The colour `(1 - t) a + t b` of two `#rrggbb` colours."""
    a = [int(colour_a[i : i + 2], 16) for i in (1, 3, 5)]
    b = [int(colour_b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round((1 - t) * x + t * y):02x}" for x, y in zip(a, b))


def _sign_colour(score: float | None) -> str:
    if score is None or score == 0:
        return UNSCORED
    return POSITIVE if score > 0 else NEGATIVE


def _layout(circuit: Circuit) -> _Layout:
    """Positions, colours and widths of everything drawn (in pixels, y downwards)."""
    edges = circuit.edges or ()
    names = set(circuit.nodes) | {s for s, _ in edges} | {node_of(r) for _, r in edges}
    n_layers = 1 + max((p.layer for p in map(parse_name, names) if p.layer is not None), default=-1)

    # sub-columns: 0 input; 1 + 2L the heads of block L; 2 + 2L its MLP; 1 + 2 n_layers the output
    def sub_column(name: str) -> int:
        parts = parse_name(name)
        if parts.kind == "embed":
            return 0
        if parts.kind == "logits":
            return 1 + 2 * n_layers
        return 1 + 2 * parts.layer + (parts.kind == "mlp")

    n_sub = 2 + 2 * n_layers
    stacks: list[list[str]] = [[] for _ in range(n_sub)]
    for name in sorted(names, key=sort_key):
        stacks[sub_column(name)].append(name)

    box_width = max((len(n) for n in names), default=8) * CHAR_WIDTH + 12
    narrow = 0.25 * box_width  # an empty sub-column
    lefts, x = [], float(MARGIN)
    for stack in stacks:
        lefts.append(x)
        x += (box_width if stack else narrow) + COLUMN_GAP
    width = max(x - COLUMN_GAP + MARGIN, 320.0)
    rows = max((len(s) for s in stacks), default=0)
    column_height = rows * BOX_HEIGHT + max(rows - 1, 0) * ROW_GAP

    # an edge that passes over a non-empty sub-column bows upwards, so that it is not hidden behind the boxes
    occupied = [bool(stack) for stack in stacks]
    bows = []
    for sender, receiver in edges:
        a, b = sub_column(sender), sub_column(node_of(receiver))
        span = lefts[b] - lefts[a] - box_width
        skips = any(occupied[a + 1 : b])
        bows.append(-min(max(0.1 * span, 14.0), 80.0) if skips else 0.0)
    top = TOP + 0.75 * max((-bow for bow in bows), default=0.0)
    height = top + max(column_height, BOX_HEIGHT) + MARGIN + 22  # the legend below

    node_scores = {n: circuit.scores[n] for n in names if n in circuit.scores}
    colour_nodes = circuit.edges is None and bool(node_scores)
    node_scale = max((abs(s) for s in node_scores.values()), default=0.0) or 1.0
    boxes, where = [], {}
    for column, stack in enumerate(stacks):
        stack_height = len(stack) * BOX_HEIGHT + max(len(stack) - 1, 0) * ROW_GAP
        y = top + (column_height - stack_height) / 2
        for name in stack:
            score = circuit.scores.get(name)
            fill, text_colour = NEUTRAL_FILL, "#000000"
            if colour_nodes:
                t = 0.0 if score is None else min(abs(score) / node_scale, 1.0)
                fill = "#ffffff" if score is None else _mix("#ffffff", _sign_colour(score), t)
                text_colour = "#ffffff" if t > 0.55 else "#000000"
            boxes.append(_Box(name, lefts[column], y, box_width, fill, text_colour, score))
            where[name] = (lefts[column], y)
            y += BOX_HEIGHT + ROW_GAP

    edge_scores = [circuit.scores.get(edge_key(s, r)) for s, r in edges]
    edge_scale = max((abs(s) for s in edge_scores if s is not None), default=0.0) or 1.0
    lines = []
    for (sender, receiver), score, bow in zip(edges, edge_scores, bows):
        sx, sy = where[sender]
        rx, ry = where[node_of(receiver)]
        start = (sx + box_width, sy + BOX_HEIGHT / 2)
        end = (rx, ry + BOX_HEIGHT * _PORT_HEIGHT[parse_name(receiver).port])
        half = (end[0] - start[0]) / 2
        c1 = (start[0] + half, start[1] + bow)
        c2 = (end[0] - half, end[1] + bow)
        scaled = MIN_LINE_WIDTH + (MAX_LINE_WIDTH - MIN_LINE_WIDTH) * abs(score or 0.0) / edge_scale
        line_width = 1.5 if score is None else scaled
        lines.append(_Line(edge_key(sender, receiver), start, c1, c2, end, _sign_colour(score), line_width, score))

    headers = [(lefts[0] + box_width / 2 if stacks[0] else lefts[0] + narrow / 2, "input")]
    for layer in range(n_layers):
        left = lefts[1 + 2 * layer]
        right = lefts[2 + 2 * layer] + (box_width if stacks[2 + 2 * layer] else narrow)
        headers.append(((left + right) / 2, f"layer {layer}"))
    headers.append((lefts[-1] + (box_width if stacks[-1] else narrow) / 2, "output"))

    kind = "node-only" if circuit.edges is None else f"{len(edges)} edges"
    title = f"{circuit.method or 'circuit'}: {len(circuit.nodes)} nodes, {kind}"
    if circuit.edges is None:
        legend = "fill: node score (blue positive, red negative, white unscored)"
    else:
        legend = "line colour: edge score sign (blue positive, red negative); width: |score|"
    if not names:
        title += " (empty)"
    return _Layout(width, height, title, tuple(headers), tuple(boxes), tuple(lines), legend)


def _format_score(score: float | None) -> str:
    return "unscored" if score is None else f"{score:.4g}"


def _fmt(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".")


def _svg(layout: _Layout) -> str:
    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "width": _fmt(layout.width),
            "height": _fmt(layout.height),
            "viewBox": f"0 0 {_fmt(layout.width)} {_fmt(layout.height)}",
            "font-family": "DejaVu Sans Mono, Menlo, Consolas, monospace",
            "font-size": str(FONT_SIZE),
        },
    )
    ET.SubElement(svg, "rect", {"width": "100%", "height": "100%", "fill": "#ffffff"})
    title = ET.SubElement(svg, "text", {"x": str(MARGIN), "y": "18", "font-size": str(FONT_SIZE + 2)})
    title.text = layout.title
    headers = ET.SubElement(svg, "g", {"class": "headers", "fill": "#505050", "text-anchor": "middle"})
    for x, text in layout.headers:
        header = ET.SubElement(headers, "text", {"x": _fmt(x), "y": str(TOP - 10)})
        header.text = text
    lines = ET.SubElement(
        svg, "g", {"class": "edges", "fill": "none", "stroke-linecap": "round", "stroke-opacity": "0.8"}
    )
    for line in layout.lines:
        points = " ".join(f"{_fmt(x)},{_fmt(y)}" for x, y in (line.c1, line.c2, line.end))
        element = ET.SubElement(
            lines,
            "path",
            {
                "d": f"M {_fmt(line.start[0])},{_fmt(line.start[1])} C {points}",
                "stroke": line.colour,
                "stroke-width": _fmt(line.width),
            },
        )
        ET.SubElement(element, "title").text = f"{line.key}: {_format_score(line.score)}"
    nodes = ET.SubElement(svg, "g", {"class": "nodes"})
    for box in layout.boxes:
        group = ET.SubElement(nodes, "g")
        ET.SubElement(group, "title").text = f"{box.name}: {_format_score(box.score)}"
        ET.SubElement(
            group,
            "rect",
            {
                "x": _fmt(box.x),
                "y": _fmt(box.y),
                "width": _fmt(box.width),
                "height": str(BOX_HEIGHT),
                "rx": "3",
                "fill": box.fill,
                "stroke": BOX_STROKE,
                "stroke-width": "0.8",
            },
        )
        label = ET.SubElement(
            group,
            "text",
            {
                "x": _fmt(box.x + box.width / 2),
                "y": _fmt(box.y + BOX_HEIGHT / 2),
                "text-anchor": "middle",
                "dominant-baseline": "central",
                "fill": box.text_colour,
            },
        )
        label.text = box.name
    legend = ET.SubElement(svg, "text", {"x": str(MARGIN), "y": _fmt(layout.height - 10), "fill": "#505050"})
    legend.text = layout.legend
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(svg, encoding="unicode") + "\n"


def _png(layout: _Layout, dpi: int = 200) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch, PathPatch
    from matplotlib.path import Path

    points = 72 / 100  # one pixel of the layout in points, at 100 layout pixels per inch
    figure = Figure(figsize=(layout.width / 100, layout.height / 100), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, layout.width)
    axes.set_ylim(layout.height, 0)
    axes.set_axis_off()
    text = dict(family="monospace", fontsize=FONT_SIZE * points)
    axes.text(MARGIN, 18, layout.title, va="baseline", **{**text, "fontsize": (FONT_SIZE + 2) * points})
    for x, header in layout.headers:
        axes.text(x, TOP - 10, header, ha="center", va="baseline", color="#505050", **text)
    for line in layout.lines:
        curve = Path([line.start, line.c1, line.c2, line.end], [Path.MOVETO, Path.CURVE4, Path.CURVE4, Path.CURVE4])
        axes.add_patch(
            PathPatch(
                curve,
                facecolor="none",
                edgecolor=line.colour,
                linewidth=line.width * points,
                alpha=0.8,
                capstyle="round",
                zorder=1,
            )
        )
    for box in layout.boxes:
        axes.add_patch(
            FancyBboxPatch(
                (box.x, box.y),
                box.width,
                BOX_HEIGHT,
                boxstyle="round,pad=0,rounding_size=3",
                facecolor=box.fill,
                edgecolor=BOX_STROKE,
                linewidth=0.8 * points,
                zorder=2,
            )
        )
        axes.text(
            box.x + box.width / 2,
            box.y + BOX_HEIGHT / 2,
            box.name,
            ha="center",
            va="center",
            color=box.text_colour,
            zorder=3,
            **text,
        )
    axes.text(MARGIN, layout.height - 10, layout.legend, va="baseline", color="#505050", **text)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor="#ffffff")
    return buffer.getvalue()


def render(circuit: Circuit, path: str | pathlib.Path | None = None, format: str | None = None) -> str | bytes:
    """Draw `circuit` as a layered graph (see the module docstring for what the drawing shows).

    **Arguments:**

    - `circuit`: the circuit; its names must follow the graph convention of `jaxinterp.circuits.circuit`.
    - `path`: where to write the drawing, or `None` to only return it.
    - `format`: `"svg"` (text, no dependency) or `"png"` (matplotlib, Agg backend); by default the suffix of `path`,
      else `"svg"`.

    **Returns:** the SVG text (`str`) or the PNG bytes (`bytes`), also written to `path` when given.
    """
    if format is None:
        suffix = pathlib.Path(path).suffix.lower().lstrip(".") if path is not None else "svg"
        if suffix not in ("svg", "png"):
            raise ValueError(f"cannot tell the drawing format from {str(path)!r}: pass format='svg' or format='png'")
        format = suffix
    if format not in ("svg", "png"):
        raise ValueError(f"render format must be 'svg' or 'png', got {format!r}")
    layout = _layout(circuit)
    drawing = _svg(layout) if format == "svg" else _png(layout)
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(drawing, str):
            path.write_text(drawing, encoding="utf-8")
        else:
            path.write_bytes(drawing)
    return drawing
