import dataclasses
import json

import pytest

from experiments.cdt_local_attribution import run
from experiments.cdt_local_attribution.config import LocalAttributionConfig
from tests.helpers import small_fine_tuning

# the methods themselves are tested in tests/attribution; the smoke run takes two of them, one at CD-T's budget too,
# which saves the other methods' compilation on MiniLM
METHODS = ("cd", "occlusion")


@pytest.mark.slow
@pytest.mark.pretrained
def test_the_experiment_compares_methods_and_writes_its_tables_and_pictures(
    tmp_path, monkeypatch, text_classifier_cache
):
    monkeypatch.setenv("JAXINTERP_CACHE", str(text_classifier_cache))
    config = dataclasses.replace(
        LocalAttributionConfig.quick(),
        classifiers=small_fine_tuning(),
        n_texts=2,
        budget=64,
        mining_texts=4,
        picture_texts=2,
        methods=METHODS,
        matched_methods=("shap",),
    )
    metrics = run.main(config)
    sst2 = metrics["sst2"]
    assert [row["method"] for row in sst2["table"]] == [*METHODS, "shap@cd"]
    for row in sst2["table"]:
        assert -1.0 <= row["AOPC deletion"] <= 1.0 and -1.0 <= row["AOPC insertion"] <= 1.0
        assert row["seconds per text (median)"] > 0
    by_method = {row["method"]: row for row in sst2["table"]}
    assert by_method["occlusion"]["evaluations per text"] == by_method["cd"]["evaluations per text"] + 1
    assert len(sst2["verdicts"]) == len(METHODS)
    assert by_method["shap@cd"]["evaluations per text"] == by_method["cd"]["evaluations per text"] + 2
    assert set(sst2["phrases"]) <= {"negative", "positive"} and sst2["phrases"]
    out = tmp_path / "results" / run.SLUG
    record = json.loads((out / "results.json").read_text())
    assert record["metrics"]["sst2"]["table"] == sst2["table"]
    for name in sst2["files"].values():
        assert (out / name).stat().st_size > 0
    assert (out / "results.md").read_text().count("\n") == len(METHODS) + 3
