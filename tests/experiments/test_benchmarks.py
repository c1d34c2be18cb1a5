"""Smoke test of the CD-T MiniLM benchmark (`experiments/benchmarks/cd_minilm.py`): the quick run writes its JSON
with every figure present, positive and finite. No timing is asserted."""

import json
import math

import pytest

from experiments.benchmarks import cd_minilm
from experiments.record import results_dir

pytestmark = [pytest.mark.slow, pytest.mark.pretrained]  # the quick run decomposes the real MiniLM


def positive_finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_run_writes_positive_finite_figures():
    returned = cd_minilm.main(quick=True)
    record = json.loads((results_dir("benchmarks") / "cd_minilm.json").read_text())
    assert record["decomposition"] == returned["decomposition"]
    assert (results_dir("benchmarks") / "cd_minilm.md").read_text().startswith("| measure |")

    machine = record["machine"]
    assert machine["platform"] and machine["jax"] and machine["cpu_count"] >= 1

    dec = record["decomposition"]
    for name in ("forward", "cd"):
        entry = dec[name]
        for key in ("wall_s", "cpu_s", "lower_s", "compile_s", "gflops", "bytes_accessed_gb"):
            assert positive_finite(entry[key]), (name, key)
        for key in ("argument_bytes", "output_bytes", "temp_bytes", "total_bytes", "activations_bytes"):
            assert positive_finite(entry["memory"][key]), (name, key)
    for key in (
        "over_forward_wall",
        "over_forward_cpu",
        "over_forward_gflops",
        "over_forward_bytes_accessed",
        "over_forward_activations_memory",
        "over_forward_total_memory",
    ):
        assert positive_finite(dec["cd"][key]), key
    assert dec["cd"]["max_abs_rel_plus_irr_minus_forward"] <= 1e-3

    heads = record["head_sweep"]
    assert heads["n_sources"] == 72
    for key in ("wall_s", "cpu_s"):
        assert positive_finite(heads["forward"][key]) and positive_finite(heads["sequential"][key]), key
    for key in ("single_source_over_forward_wall", "single_compile_s", "max_abs_sequential"):
        assert positive_finite(heads[key]), key
    assert set(heads["variants"]) >= {"vmap", "lax_map_24"}
    for name, entry in heads["variants"].items():
        for key in ("wall_s", "cpu_s", "over_sequential_wall", "over_sequential_cpu", "compile_s"):
            assert positive_finite(entry[key]), (name, key)
        # float32: batched and unbatched matmuls sum in different orders, and the bias split divides by |rel| + |irr|
        assert entry["max_abs_difference_from_sequential"] <= 1e-2 * heads["max_abs_sequential"], name
    assert positive_finite(heads["memory"]["vmap_activations_over_single"])


def test_sweep_benchmark_quick_run_writes_its_figures():
    """`cd_sweep --quick` without the official code: every time positive and finite, and the sweep's first row
    equal to the single decomposition it stands for."""
    from experiments.benchmarks import cd_sweep

    record = cd_sweep.main(quick=True)
    assert json.loads((results_dir("benchmarks") / "cd_sweep.json").read_text())["gpt2"] == record["gpt2"]
    for workload, n_sets in (("minilm", 16), ("gpt2", 8)):
        entry = record[workload]
        assert entry["n_source_sets"] == n_sets
        for label, times in entry["times"].items():
            for key in ("wall_s", "cpu_s", "compile_s"):
                assert positive_finite(times[key]), (workload, label, key)
            assert positive_finite(times["memory"]["total_bytes"]), (workload, label)
        assert entry["max_abs_sweep_row0_minus_cd"] <= 1e-3


def test_patching_benchmark_quick_run_times_every_workload(tmp_path, monkeypatch):
    from experiments.benchmarks import patching as benchmark

    monkeypatch.setenv("JAXINTERP_RESULTS", str(tmp_path))
    record = benchmark.main(quick=True)
    assert set(record["jaxinterp"]) == {"head_out by pos", "head_out all pos", "eap", "forward"}
    # 2 layers of 4 heads and an MLP: 12 + 5 + 6 * 12 + 10 + 11 edges
    assert record["sizes"]["edges"] == 110
    assert all(t["wall_s"] > 0 for t in record["jaxinterp"].values())
    assert (tmp_path / "benchmarks" / "patching.json").exists()


def test_neuron_decoding_benchmark_quick_run_writes_its_figures():
    """`neuron_decoding --quick` (the last layer of SmolLM2): positive finite times, lists equal to the dense
    computation, and clamping the ' dog' neuron raises the mass on its tokens."""
    from experiments.benchmarks import neuron_decoding

    record = neuron_decoding.main(quick=True)
    assert json.loads((results_dir("benchmarks") / "neuron_decoding.json").read_text())["floor"] == record["floor"]
    full = record["every_neuron"]
    assert full["neurons"] == 1536
    for key in ("wall_s", "cpu_s", "lower_s", "compile_s", "gflops_per_s"):
        assert positive_finite(full[key]), key
    assert all(positive_finite(entry["gflops_per_s"]) for entry in record["gemm"].values() if isinstance(entry, dict))
    assert set(record["subset"]["variants"]) >= {"chunk_256", "bfloat16_default_chunk"}
    assert 0.5 <= record["subset"]["bfloat16_agreement"]["top"]["same_first"] <= 1.0
    assert record["dense_check"]["lists_equal"] == record["dense_check"]["neurons"]
    (dog,) = record["clamping"]
    assert dog["layer"] == 29 and " dog" in dog["top_tokens"]
    assert dog["effects"][0]["top_shift_nats"] > 0


def test_sharded_sweep_benchmark_quick_run_splits_the_sweep_and_keeps_its_results():
    """`sharded_sweep --quick` on 1 and 2 forced host devices: both runs time positive, the 2-device run used two
    devices, and its decomposition equals the one-device run's to float32 rounding."""
    from experiments.benchmarks import sharded_sweep

    record = sharded_sweep.main(quick=True, counts=(1, 2))
    assert json.loads((results_dir("benchmarks") / "sharded_sweep.json").read_text())["runs"] == record["runs"]
    assert [run["devices"] for run in record["runs"]] == [1, 2]
    for run in record["runs"]:
        assert run["source_sets"] == 16
        assert all(positive_finite(run[key]) for key in ("wall_s", "cpu_s", "compile_s"))
        assert run["max_abs_difference_from_first"] <= 1e-5
