import dataclasses
import json
import os
import pathlib

import pytest

from experiments.fast_slow_weights.config import FastSlowWeightsConfig
from experiments.fast_slow_weights.run import FAST_SLOW, FINE_TUNING, JOINT, METHODS, main

pytestmark = pytest.mark.slow  # loads MNIST and compiles every learner's step


def test_fast_slow_weights_smoke():
    config = dataclasses.replace(
        FastSlowWeightsConfig.quick(),
        runs=1,
        class_pairs=((0, 1), (2, 3)),
        shots=2,
        hidden_sizes=(8,),
        steps_per_task=3,
        test_per_class=20,
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "fast_slow_weights"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "accuracy_matrices.png").exists()
    assert record["config"]["shots"] == 2 and record["paper"]["target_here"]
    mnist = metrics["mnist"]
    for method in METHODS:
        matrix = mnist[method]["accuracy_matrix"]
        assert len(matrix) == 2 and all(len(row) == 2 and all(0.0 <= a <= 1.0 for a in row) for row in matrix)
        assert len(mnist[method]["task_1_accuracy"]) == 2
    assert len(mnist[FAST_SLOW]["fast_new_task_accuracy"]) == 2 and "fast_new_task_accuracy" not in mnist[JOINT]
    assert mnist[FINE_TUNING]["forgetting"] == pytest.approx(
        mnist[FINE_TUNING]["accuracy_matrix"][0][0] - mnist[FINE_TUNING]["accuracy_matrix"][1][0]
    )
    assert isinstance(mnist["target_met"], bool)
