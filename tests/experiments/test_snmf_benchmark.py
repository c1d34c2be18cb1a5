"""Smoke test of the SNMF benchmark (`experiments/benchmarks/snmf_official.py`, our side only: the official code
needs its own environment). No timing is asserted."""

import json
import math

import pytest

from experiments.benchmarks import snmf_official
from experiments.record import results_dir


@pytest.mark.slow
@pytest.mark.pretrained
def test_snmf_benchmark_quick_run_writes_its_figures():
    record = snmf_official.main(quick=True)
    written = json.loads((results_dir("benchmarks") / "snmf_official.json").read_text())
    assert written["jaxinterp"]["losses"] == record["jaxinterp"]["losses"]
    mine = record["jaxinterp"]
    assert len(mine["losses"]) == snmf_official.QUICK.iterations
    assert mine["losses"][-1] < mine["losses"][0]
    assert all(math.isfinite(t) and t > 0 for t in mine["times_s"])
    assert record["store"]["store_tokens"] >= snmf_official.QUICK.tokens
    assert "official" not in record
