"""Scores of decoded pointer sequences against the exact answers (P40's measures): exact match, the area of a hull
polygon relative to the true hull's, the fraction of true Delaunay triangles found, and tour length relative to the
reference tour."""

import numpy as np

from jaxinterp import data

END = 0


def points_of(slots: np.ndarray) -> np.ndarray:
    """The point indices of a decoded slot sequence: up to the first end (slot 0), each slot `j` the point `j - 1`."""
    slots = np.asarray(slots)
    ends = np.flatnonzero(slots == END)
    return slots[: ends[0] if len(ends) else len(slots)] - 1


def is_valid_sequence(slots: np.ndarray, num_points: int, rule: str) -> bool:
    """Whether a decoded slot sequence is a well-formed answer for `num_points` points: indices in range and ended
    (a slot 0 present); for `"hull"` at least three distinct points; for `"tour"` every point exactly once; for
    `"triangles"` a whole number of triples of three distinct points."""
    slots = np.asarray(slots)
    if slots.ndim != 1 or not np.all((slots >= 0) & (slots <= num_points)) or END not in slots:
        return False
    chosen = points_of(slots)
    if rule == "hull":
        return len(chosen) >= 3 and len(set(chosen.tolist())) == len(chosen)
    if rule == "tour":
        return sorted(chosen.tolist()) == list(range(num_points))
    if rule == "triangles":
        return len(chosen) % 3 == 0 and all(len(set(t)) == 3 for t in chosen.reshape(-1, 3).tolist())
    raise ValueError(f"unknown rule {rule!r}")


def polygon_area(points: np.ndarray) -> float:
    """The shoelace area of the polygon through `points` in order (absolute value)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def _segments_cross(p, q, r, s) -> bool:
    def orient(a, b, c):
        return np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))

    return orient(p, q, r) * orient(p, q, s) < 0 and orient(r, s, p) * orient(r, s, q) < 0


def is_simple_polygon(points: np.ndarray) -> bool:
    """Whether the closed polygon through `points` (at least three) has no two non-adjacent edges that cross."""
    m = len(points)
    edges = [(points[i], points[(i + 1) % m]) for i in range(m)]
    for i in range(m):
        for j in range(i + 2, m):
            if i == 0 and j == m - 1:
                continue
            if _segments_cross(*edges[i], *edges[j]):
                return False
    return True


def hull_scores(points: np.ndarray, slots: np.ndarray, truth: np.ndarray) -> dict:
    """`{"exact", "valid", "area"}` of one decoded hull: exact when the polygon is the true hull in P40's order,
    valid when it is a simple polygon, area its area over the true hull's (NaN when invalid)."""
    chosen = points_of(slots)
    exact = len(chosen) == len(truth) and np.array_equal(chosen, truth)
    valid = is_valid_sequence(slots, len(points), "hull") and is_simple_polygon(points[chosen])
    area = polygon_area(points[chosen]) / polygon_area(points[truth]) if valid else float("nan")
    return {"exact": bool(exact), "valid": bool(valid), "area": area}


def triangle_scores(slots: np.ndarray, truth: np.ndarray) -> dict:
    """`{"exact", "coverage"}` of one decoded triangulation: the fraction of true triangles among the decoded ones,
    and whether the decoded set is exactly the true set."""
    chosen = points_of(slots)
    predicted = {tuple(sorted(t)) for t in chosen[: len(chosen) // 3 * 3].reshape(-1, 3).tolist()}
    true = {tuple(t) for t in np.asarray(truth).tolist()}
    return {"exact": predicted == true, "coverage": len(predicted & true) / len(true)}


def tour_scores(points: np.ndarray, slots: np.ndarray, reference: np.ndarray) -> dict:
    """`{"exact", "valid", "length_ratio"}` of one decoded tour: the same cycle as the reference, a permutation of
    the points, and its length over the reference's (NaN when invalid)."""
    chosen = points_of(slots)
    valid = is_valid_sequence(slots, len(points), "tour")
    if not valid:
        return {"exact": False, "valid": False, "length_ratio": float("nan")}
    exact = np.array_equal(data.canonical_tour(chosen), data.canonical_tour(reference))
    ratio = data.tour_length(points, chosen) / data.tour_length(points, reference)
    return {"exact": bool(exact), "valid": True, "length_ratio": ratio}
