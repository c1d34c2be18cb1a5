"""Smoke run of the circuit-discovery experiment at its smallest: tracr-reverse, every method, one call each."""

import json
import os
import pathlib

import pytest

from experiments.cdt_circuits import config, run

pytestmark = pytest.mark.slow  # every method compiles once on the compiled model


def test_cdt_circuits_smoke_writes_the_table_and_the_figure():
    metrics = run.main(config.quick().replace(tasks=("reverse",), batch=4, eap_ig_steps=2, random_draws=2))
    out = pathlib.Path(os.environ["JAXINTERP_RESULTS"]) / "cdt_circuits"
    record = json.loads((out / "results.json").read_text())
    assert record["slug"] == "cdt_circuits" and record["paper"]["cdt_mean_node_roc_auc"] == 0.97
    rows = {row["method"]: row for row in metrics["rows"]}
    assert set(rows) == set(run.NODE_METHODS + run.EDGE_METHODS)
    for name in run.EDGE_METHODS:
        assert 0.0 <= rows[name]["edge_roc_auc"] <= 1.0 and rows[name]["axis"] == "edges"
    for row in rows.values():
        assert 0.0 <= row["node_roc_auc"] <= 1.0 and row["seconds"] > 0
    assert metrics["summary"]["acdc_reverse_edge_roc_auc"] == rows["acdc"]["edge_roc_auc"]
    assert (out / "faithfulness.png").stat().st_size > 0
    assert (out / "reverse.cdt.circuit.json").exists()
    assert set(record["metrics"]["tasks"]["reverse"]["agreement"]) >= {"cdt vs eap"}
