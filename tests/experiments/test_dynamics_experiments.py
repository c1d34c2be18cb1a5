import json
import os
import pathlib

import numpy as np
import pytest

from experiments.latent_ode import config as latent_config
from experiments.latent_ode import run as latent_run
from experiments.regularized_node import config as node_config
from experiments.regularized_node import rounding
from experiments.regularized_node import run as node_run

pytestmark = pytest.mark.slow  # experiment smoke runs take tens of seconds each


def _results(slug: str) -> pathlib.Path:
    return pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / slug


def test_regularized_node_smoke():
    config = node_config.quick().replace(
        num_seeds=1, train_size=256, test_size=250, batch_size=64, num_steps=3, eval_batch_size=250
    )
    metrics = node_run.main(config)
    record = json.loads((_results("regularized_node") / "results.json").read_text())
    assert record["config"]["num_steps"] == 3 and record["wall_time_s"] > 0
    assert set(record["metrics"]["summary"]) == set(node_run.VARIANTS)
    assert (_results("regularized_node") / "results.md").read_text().startswith("| variant |")
    assert (_results("regularized_node") / "nfe_vs_accuracy.png").stat().st_size > 0
    for run in metrics["runs"]:
        assert 0.0 <= run["accuracy"] <= 100.0
        assert run["nfe"] >= 7 and (run["nfe"] - 1) % 6 == 0


def test_latent_ode_smoke():
    # one regularised variant of each kind beside its baseline: the others differ only in their weights
    variants = ("unregularised", "error", "SDE unregularised", "SDE error")
    config = latent_config.quick().replace(
        num_steps=3, sde_num_steps=3, max_windows=64, batch_size=32, variants=variants
    )
    train, test, ts = latent_run.load(config)
    assert train.shape[1:] == test.shape[1:] == (48, 2) and ts.shape == (48,)
    assert abs(float(train.reshape(-1, 2).mean())) < 1.0
    metrics = latent_run.main(config)
    assert metrics["test_windows"] == 64
    for run in metrics["runs"]:
        assert run["forecast_mse"] > 0 and run["interpolation_mse"] > 0 and run["nfe"] > 0
    assert (_results("latent_ode") / "forecast.png").stat().st_size > 0
    assert set(json.loads((_results("latent_ode") / "results.json").read_text())["metrics"]["summary"]) == set(variants)
    with pytest.raises(ValueError, match="SDE unregularised"):
        latent_run.main(config.replace(variants=("unregularised", "SDE error")))


def test_float32_rounding_dominates_the_error_estimate_of_small_steps():
    rows = rounding.error_estimate_rounding(node_config.quick(), steps=(0.01, 0.5), num_images=100)
    small, large = rows
    assert small["E float32"] > 100 * small["E float64"]
    np.testing.assert_allclose(small["rounding (scaled)"], small["E float32"], rtol=0.01)
    assert large["rounding (absolute)"] > small["rounding (absolute)"] > 0
