import itertools

import numpy as np
import pytest

from jaxinterp import data


def test_held_karp_is_optimal_and_local_search_finds_short_tours():
    for points in data.random_points(4, 7, seed=0):
        best = min(itertools.permutations(range(1, 7)), key=lambda t: data.tour_length(points, np.array([0, *t])))
        exact = data.held_karp(points)
        assert sorted(exact.tolist()) == list(range(7)) and exact[0] == 0 and exact[1] < exact[-1]
        assert data.tour_length(points, exact) == pytest.approx(data.tour_length(points, np.array([0, *best])))
        assert data.tour_length(points, data.improve_tour(points)) >= data.tour_length(points, exact) - 1e-12
    points = data.random_points(1, 30, seed=1)[0]
    tour = data.reference_tour(points, restarts=1)
    assert sorted(tour.tolist()) == list(range(30))
    nearest = data.improve_tour(points, np.arange(30))
    assert data.tour_length(points, tour) <= data.tour_length(points, nearest) + 1e-12
    assert data.tour_length(points, tour) < data.tour_length(points, np.arange(30))


def test_hull_and_delaunay_references():
    points = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.4], [1.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(data.convex_hull(points), [0, 1, 3, 4])  # counter-clockwise from index 0
    triangles = data.delaunay_triangles(points)
    assert triangles.shape == (4, 3) and np.all(np.diff(triangles, axis=1) > 0)
    assert all(2 in t for t in triangles.tolist())  # the inner point is a vertex of every triangle
    assert data.canonical_tour(np.array([2, 0, 1, 3])).tolist() == [0, 1, 3, 2]
    with pytest.raises(ValueError, match="at most 13"):
        data.held_karp(np.random.default_rng(0).uniform(size=(14, 2)))
