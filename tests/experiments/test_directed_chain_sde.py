import json
import os
import pathlib

import pytest

from experiments.directed_chain_sde import run
from experiments.directed_chain_sde.config import Config

pytestmark = pytest.mark.slow  # compiling the generator and the scores' GRUs takes tens of seconds


def test_directed_chain_sde_smoke():
    config = Config.quick().replace(
        generators=("DC-SDE",),
        num_paths=48,
        num_times=6,
        opinion_depth=3,
        dc_steps=2,
        score_steps=2,
        num_generated=32,
        chain_links=2,
    )
    metrics = run.main(config)
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "directed_chain_sde"
    record = json.loads((out / "results.json").read_text())
    assert record["config"]["dc_steps"] == 2 and record["metrics"]["data"]["opinion"]["train"] == [48, 6, 1]
    dc, reference = metrics["runs"]
    assert dc["generator"] == "DC-SDE" and reference["generator"] == "training set (reference)"
    assert dc["finite"] and 0 <= dc["discriminative"] <= 0.5 and dc["predictive"] > 0
    assert isinstance(dc["bimodal_reproduced"], bool) and len(reference["real_modes"]) >= 1
    assert all((out / name).stat().st_size > 0 for name in ("paths.png", "marginals.png"))
