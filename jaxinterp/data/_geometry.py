"""Planar point sets with exact answers for the three problems of Pointer Networks (P40): convex hulls and Delaunay
triangulations (scipy's Qhull), and travelling-salesman tours (exact Held-Karp dynamic programming for small sets,
a 2-opt / or-opt local search for larger ones)."""

import itertools

import numpy as np
from jaxtyping import Float, Int


def random_points(num: int, n: int, *, seed: int) -> Float[np.ndarray, "num n 2"]:
    """`num` sets of `n` points drawn uniformly from the unit square (float64; P40's inputs)."""
    if num < 1 or n < 3:
        raise ValueError(f"random_points: need num >= 1 and n >= 3, got num={num}, n={n}")
    return np.random.default_rng(seed).uniform(size=(num, n, 2))


def _check_points(points, where: str) -> np.ndarray:
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] < 3:
        raise ValueError(f"{where}: points must have shape [n, 2] with n >= 3, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{where}: points hold NaN or infinite values")
    return points


def convex_hull(points: Float[np.ndarray, "n 2"]) -> Int[np.ndarray, " h"]:
    """The indices of the convex hull's vertices, counter-clockwise, starting from the smallest index (P40's output
    order)."""
    from scipy.spatial import ConvexHull

    hull = ConvexHull(_check_points(points, "convex_hull")).vertices  # counter-clockwise in 2-D
    return np.roll(hull, -int(np.argmin(hull)))


def delaunay_triangles(points: Float[np.ndarray, "n 2"]) -> Int[np.ndarray, "t 3"]:
    """The Delaunay triangulation as index triples, each sorted ascending, the triples in lexicographic order."""
    from scipy.spatial import Delaunay

    triangles = np.sort(Delaunay(_check_points(points, "delaunay_triangles")).simplices, axis=1)
    return triangles[np.lexsort(triangles.T[::-1])]


def tour_length(points: Float[np.ndarray, "n 2"], tour: Int[np.ndarray, " n"]) -> float:
    """The length of the closed tour visiting `points[tour]` in order."""
    ordered = np.asarray(points)[np.asarray(tour)]
    return float(np.sum(np.linalg.norm(ordered - np.roll(ordered, -1, axis=0), axis=1)))


def canonical_tour(tour: Int[np.ndarray, " n"]) -> Int[np.ndarray, " n"]:
    """The same cycle starting at point 0, in the direction whose second point has the smaller index."""
    tour = np.roll(np.asarray(tour), -int(np.argmin(tour)))
    return tour if tour[1] < tour[-1] else np.concatenate([tour[:1], tour[1:][::-1]])


def held_karp(points: Float[np.ndarray, "n 2"]) -> Int[np.ndarray, " n"]:
    """An optimal travelling-salesman tour by Held-Karp dynamic programming over subsets (`O(2^n n^2)` time; up to
    about 13 points), in `canonical_tour` order.

    `cost[S, j]` is the shortest path from point 0 through the set `S` of other points ending at `j`; the tour
    closes the best `cost[all, j] + d(j, 0)`.
    """
    points = _check_points(points, "held_karp")
    n = len(points)
    if n > 13:
        raise ValueError(f"held_karp: {n} points is too many for the exact dynamic programme (at most 13)")
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    m = n - 1  # points 1..n-1 as bits 0..m-1
    full = 1 << m
    cost = np.full((full, m), np.inf)
    parent = np.full((full, m), -1, dtype=np.int64)
    cost[1 << np.arange(m), np.arange(m)] = dist[0, 1:]
    subsets = np.arange(full)
    bits = (subsets[:, None] >> np.arange(m)) & 1
    for size in range(2, m + 1):
        sets = subsets[bits.sum(1) == size]
        for j in range(m):
            with_j = sets[bits[sets, j] == 1]
            previous = with_j ^ (1 << j)
            candidates = cost[previous] + dist[1:, 1 + j][None, :]
            candidates[bits[previous] == 0] = np.inf
            best = np.argmin(candidates, axis=1)
            cost[with_j, j] = candidates[np.arange(len(with_j)), best]
            parent[with_j, j] = best
    last = int(np.argmin(cost[full - 1] + dist[1:, 0]))
    tour, subset = [], full - 1
    while last >= 0:
        tour.append(last + 1)
        subset, last = subset ^ (1 << last), int(parent[subset, last])
    return canonical_tour(np.array([0, *tour[::-1]]))


def _two_opt(dist: np.ndarray, tour: np.ndarray) -> tuple[np.ndarray, bool]:
    """Apply the best 2-opt move (reverse `tour[i+1..j]`) while one shortens the tour."""
    n = len(tour)
    improved = False
    i, j = np.triu_indices(n, 2)
    keep = ~((i == 0) & (j == n - 1))
    i, j = i[keep], j[keep]
    while True:
        a, b, c, d = tour[i], tour[i + 1], tour[j], tour[(j + 1) % n]
        gain = dist[a, b] + dist[c, d] - dist[a, c] - dist[b, d]
        best = int(np.argmax(gain))
        if gain[best] <= 1e-12:
            return tour, improved
        tour = np.concatenate([tour[: i[best] + 1], tour[i[best] + 1 : j[best] + 1][::-1], tour[j[best] + 1 :]])
        improved = True


def _or_opt(dist: np.ndarray, tour: np.ndarray) -> tuple[np.ndarray, bool]:
    """Apply the first or-opt move found (a segment of 1-3 points moved elsewhere, either way round) that shortens
    the tour."""
    n = len(tour)
    for length, start in itertools.product((1, 2, 3), range(n)):
        if length >= n - 2:
            continue
        rolled = np.roll(tour, -start)
        segment, rest = rolled[:length], rolled[length:]
        removal = dist[rest[-1], segment[0]] + dist[segment[-1], rest[0]] - dist[rest[-1], rest[0]]
        left, right = rest[:-1], rest[1:]
        forward = dist[left, segment[0]] + dist[segment[-1], right] - dist[left, right]
        backward = dist[left, segment[-1]] + dist[segment[0], right] - dist[left, right]
        options = np.minimum(forward, backward)
        best = int(np.argmin(options))
        if removal - options[best] > 1e-12:
            piece = segment if forward[best] <= backward[best] else segment[::-1]
            return np.concatenate([rest[: best + 1], piece, rest[best + 1 :]]), True
    return tour, False


def improve_tour(points: Float[np.ndarray, "n 2"], tour: Int[np.ndarray, " n"] | None = None) -> Int[np.ndarray, " n"]:
    """A travelling-salesman tour by local search: 2-opt and or-opt moves until neither shortens the tour, from
    `tour` or, by default, from the nearest-neighbour tour starting at point 0. In `canonical_tour` order."""
    points = _check_points(points, "improve_tour")
    n = len(points)
    dist = np.linalg.norm(points[:, None] - points[None], axis=-1)
    if tour is None:
        tour, left = [0], set(range(1, n))
        while left:
            nearest = min(left, key=lambda k: dist[tour[-1], k])
            tour.append(nearest)
            left.remove(nearest)
    tour = np.asarray(tour)
    if sorted(tour.tolist()) != list(range(n)):
        raise ValueError("improve_tour: tour must visit every point exactly once")
    while True:
        tour, _ = _two_opt(dist, tour)
        tour, moved = _or_opt(dist, tour)
        if not moved:
            return canonical_tour(tour)


def reference_tour(points: Float[np.ndarray, "n 2"], *, restarts: int = 4, seed: int = 0) -> Int[np.ndarray, " n"]:
    """The best reference tour available: Held-Karp's optimum for up to 10 points, else the shortest of the local
    searches from the nearest-neighbour tour and `restarts` random tours."""
    points = _check_points(points, "reference_tour")
    if len(points) <= 10:
        return held_karp(points)
    rng = np.random.default_rng(seed)
    tours = [improve_tour(points)] + [improve_tour(points, rng.permutation(len(points))) for _ in range(restarts)]
    return min(tours, key=lambda t: tour_length(points, t))
