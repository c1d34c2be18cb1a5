import dataclasses
import json
import os
import pathlib

import pytest

from experiments.neural_operators.config import NeuralOperatorsConfig
from experiments.neural_operators.run import FNO, OPERATOR_CNN, PLAIN_CNN, main

pytestmark = pytest.mark.slow  # solves both PDEs and compiles four trainings


def test_neural_operators_smoke():
    config = dataclasses.replace(
        NeuralOperatorsConfig.quick(),
        train_samples=6,
        test_samples=4,
        burgers_solve_points=64,
        burgers_solve_steps=100,
        burgers_train_points=32,
        burgers_test_points=(32, 128),
        darcy_solve_points=17,
        darcy_train_points=9,
        darcy_test_points=(9, 17),
        fno_width=4,
        fno_modes=4,
        fno_modes_2d=2,
        width_2d=4,
        cnn_width=4,
        cnn_width_2d=4,
        cnn_depth=1,
        steps=2,
        darcy_steps=2,
        batch_size=3,
        darcy_batch_size=3,
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "neural_operators"
    record = json.loads((out / "results.json").read_text())
    assert (out / "results.md").stat().st_size > 0 and (out / "relative_l2.png").exists()
    assert record["paper"]["target_here"] and isinstance(metrics["target_met"], bool)
    for name, grids in (("burgers", (32, 128)), ("darcy", (9, 17))):
        errors = metrics[name]["relative_l2"]
        assert set(errors) == {FNO, OPERATOR_CNN, PLAIN_CNN}
        assert all(
            sorted(errors[label]) == list(grids) and all(e > 0 for e in errors[label].values()) for label in errors
        )
        # on the training grid the plain CNN is the operator CNN
        assert errors[PLAIN_CNN][grids[0]] == errors[OPERATOR_CNN][grids[0]]
    change = metrics["burgers"]["fno_change_at_finest"]
    assert change["finer_points"] == 128
    assert change["relative_change"] == pytest.approx(
        metrics["burgers"]["relative_l2"][FNO][128] / metrics["burgers"]["relative_l2"][FNO][32] - 1
    )
