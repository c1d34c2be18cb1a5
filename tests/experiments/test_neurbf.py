import dataclasses
import json
import os
import pathlib

import pytest

from experiments.neurbf.config import NeuRBFConfig
from experiments.neurbf.run import MODELS, main

pytestmark = pytest.mark.slow  # compiles four fields twice (image and distance field)


def test_neurbf_smoke():
    config = dataclasses.replace(
        NeuRBFConfig.quick(),
        images=("camera",),
        image_size=12,
        budgets=(1400,),
        image_steps=2,
        sdf_budget=1600,
        sdf_steps=2,
        sdf_batch=64,
        sdf_samples=400,
        sdf_resolution=6,
    )
    metrics = main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "neurbf"
    record = json.loads((out / "results.json").read_text())
    assert (out / "psnr_vs_parameters.png").exists() and (out / "reconstructions_camera.png").exists()
    assert record["paper"]["target_here"] and record["config"]["budgets"] == [1400]
    runs = metrics["images"]["camera"]["runs"]
    assert [r["model"] for r in runs] == list(MODELS)
    assert all(r["parameters"] <= 1400 and r["psnr"] > 0 for r in runs)
    assert all(0.0 <= r["iou"] <= 1.0 for r in metrics["sdf"]["runs"])
    assert isinstance(metrics["target_met"], bool) and metrics["comparisons"] == 1
