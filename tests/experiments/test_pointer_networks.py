import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest

from experiments.pointer_networks import metrics
from experiments.pointer_networks.config import PointerNetworksConfig
from experiments.pointer_networks.run import main

pytestmark = pytest.mark.slow  # compiles a training step and a decoder per problem


def test_pointer_networks_smoke():
    config = dataclasses.replace(
        PointerNetworksConfig.quick(),
        train_sizes=(("hull", 4, 5), ("delaunay", 4, 4), ("tsp", 4, 5)),
        test_sizes=(("hull", (5, 7)), ("delaunay", (4,)), ("tsp", (6,))),
        train_examples=8,
        tsp_train_examples=8,
        test_examples=3,
        hidden_size=4,
        steps=(("hull", 2), ("delaunay", 2), ("tsp", 2)),
        batch_size=4,
    )
    results = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "pointer_networks"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "examples.png").exists()
    assert record["paper"]["target_here"] and isinstance(results["target_met"], bool)
    for task, sizes in config.test_sizes:
        for n in sizes:
            scores = results[task][f"n={n}"]
            assert scores["valid_sequences"] == 1.0  # decoding under the rule always gives a well-formed answer
            assert 0.0 <= scores["exact_match"] <= 1.0
    assert 0.0 <= results["hull"]["n=7"]["area_coverage_failures_as_zero"] <= 1.0
    assert 0.0 <= results["delaunay"]["n=4"]["triangle_coverage"] <= 1.0
    assert results["tsp"]["n=6"]["tour_length_ratio"] >= 1.0 - 1e-9  # the reference is Held-Karp's optimum
    kept = results["hull_coverage_kept"]
    assert kept["at_n"] == 7 and kept["relative_to_n"] == 5


def test_scores_of_known_answers():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    truth = np.array([0, 1, 2, 3])
    assert metrics.hull_scores(square, np.array([1, 2, 3, 4, 0, 0]), truth) == {
        "exact": True,
        "valid": True,
        "area": 1.0,
    }
    half = metrics.hull_scores(square, np.array([1, 2, 5, 0, 0, 0]), truth)  # the triangle (0, 1, centre)
    assert not half["exact"] and half["valid"] and half["area"] == pytest.approx(0.25)
    crossed = metrics.hull_scores(square, np.array([1, 3, 2, 4, 0, 0]), truth)  # a bow tie
    assert not crossed["valid"] and np.isnan(crossed["area"])
    assert not metrics.is_valid_sequence(np.array([1, 2, 2, 0]), 5, "hull")
    assert not metrics.is_valid_sequence(np.array([1, 2, 3, 4]), 5, "hull")  # never ended
    triangles = np.array([[0, 1, 4], [1, 2, 4]])
    scores = metrics.triangle_scores(np.array([2, 5, 1, 3, 4, 5, 0]), triangles)
    assert scores == {"exact": False, "coverage": 0.5}
    tour = metrics.tour_scores(square[:4], np.array([1, 4, 3, 2, 0]), np.array([0, 1, 2, 3]))
    assert tour["exact"] and tour["length_ratio"] == pytest.approx(1.0)
