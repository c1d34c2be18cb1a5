"""Semi-NMF of SmolLM2-135M's MLP activations: `jaxinterp.features.snmf` against the official PyTorch code of P5,
on the same matrix from the same start, to the same loss, timed in one run.

The matrix: `blocks.L.mlp.post` of SmolLM2-135M (`[tokens, 1536]`) over the first SST-2 training sentences, written
by `jaxinterp.features.build_activation_store` (its tokens/s is reported too). The start: codes `G0` uniform on
`[0, 1)` from a seeded generator (the official `"random"` initialisation, drawn once and given to both). Both run
the same number of iterations with no early stop (the official one under its own environment, through
`snmf_official_torch.py`); since they follow the same trajectory (checked: the largest relative difference of the
losses), that is the same loss. Ours is compiled ahead of time (compile time reported apart) and timed as the
median of `repeats` runs; the official code as the median of its runs after a short warm-up.

    python -m experiments.benchmarks.snmf_official [--quick] [--official "$TORCH_VENV"/bin/python]

`--official` needs `SNMF_OFFICIAL_PATH` naming a checkout of GitHub `ordavid-s/snmf-mlp-decomposition`. Without it
only our side runs. Writes `results/benchmarks/snmf_official.json` and `snmf_official.md`.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import jaxinterp as ji
import models
from experiments.benchmarks.timing import machine_info
from experiments.record import results_dir, write_benchmark
from jaxinterp import features

NAME = "snmf_official"
HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Workload:
    layer: int = 9
    tokens: int = 4_096
    k: int = 100
    sparsity: float = 0.01
    iterations: int = 100
    repeats: int = 2
    seed: int = 0
    context: int = 64


FULL = Workload()
QUICK = Workload(layer=0, tokens=256, k=8, iterations=20, repeats=1, context=16)


def activations(workload: Workload) -> tuple[np.ndarray, dict]:
    """`[tokens, d_mlp]` MLP activations at `workload.layer` from an activation store (kept under
    `results/benchmarks/snmf_store_L<layer>/`, resumed when present), and the store's build record."""
    model, tokenizer = models.load_smollm2()
    texts, _ = ji.data.sst2("train")
    site = f"blocks.{workload.layer}.mlp.post"
    settings = features.StoreSettings(
        sites=(site,), context=workload.context, chunk_tokens=4_096, model_name="SmolLM2-135M"
    )
    average = 12  # SST-2 training sentences average about 13 tokens: enough texts for the tokens asked, and a few more
    texts = texts[: workload.tokens // average + 64]
    store = features.build_activation_store(
        results_dir("benchmarks") / f"snmf_store_L{workload.layer}_{len(texts)}", model, tokenizer, texts, settings
    )
    x = store.load(site, workload.tokens)
    if len(x) < workload.tokens:
        raise RuntimeError(f"the store holds {len(x)} tokens, fewer than the {workload.tokens} asked")
    return x, store.manifest["build"] | {"store_tokens": store.rows}


def run_official(python: str, x: np.ndarray, G0: np.ndarray, workload: Workload, folder: pathlib.Path) -> dict:
    """The official fit under `python` (its own environment). **Returns:** its JSON record."""
    npz, out = folder / "snmf_input.npz", folder / "official.json"
    np.savez(npz, X=x, G0=G0, sparsity=np.float64(workload.sparsity), iterations=np.int64(workload.iterations))
    command = [python, str(HERE / "snmf_official_torch.py"), "--npz", str(npz), "--out", str(out)]
    command += ["--threads", str(os.cpu_count() or 1), "--repeats", str(workload.repeats)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
    return json.loads(out.read_text())


def ours(x: np.ndarray, G0: np.ndarray, workload: Workload) -> dict:
    """`jaxinterp.features.snmf` from `G0` (the public function, its input checks included): the first call
    (compilation and one run) timed apart, then `repeats` timed runs."""

    def fit():
        fitted = features.snmf(
            x, G0.shape[1], init=G0, sparsity=workload.sparsity, max_iterations=workload.iterations,
            patience=workload.iterations + 1,
        )  # fmt: skip
        return jax.block_until_ready(fitted)

    started = time.perf_counter()
    fit()
    first_s = time.perf_counter() - started
    times = []
    for _ in range(workload.repeats):
        started = time.perf_counter()
        result = fit()
        times.append(time.perf_counter() - started)
    final = np.asarray(result.G, np.float64) @ np.asarray(result.F, np.float64).T
    return {
        "compile_s": max(first_s - statistics.median(times), 0.0),
        "first_call_s": first_s,
        "times_s": times,
        "median_s": statistics.median(times),
        "losses": result.trajectory().tolist(),
        "best_loss_recomputed": float(np.sum((x - final) ** 2)),
    }


def summary_rows(record: dict) -> list[dict]:
    w = record["workload"]
    mine = record["jaxinterp"]
    rows = [
        {"measure": "matrix", "value": f"{w['tokens']} tokens x {record['d']} (blocks.{w['layer']}.mlp.post)",
         "note": f"k = {w['k']}, sparsity {w['sparsity']}, {w['iterations']} iterations, no early stop"},
        {"measure": "activation store build", "value": f"{record['store']['tokens_per_s']:.0f} tokens/s",
         "note": f"{record['store']['tokens']} tokens, when the store was built (compilation included)"},
        {"measure": "jaxinterp snmf", "value": f"{mine['median_s']:.2f} s",
         "note": f"median of {len(mine['times_s'])}; compile {mine['compile_s']:.1f} s; final loss "
                 f"{mine['losses'][-1]:.6g}"},
    ]  # fmt: skip
    official = record.get("official")
    if official:
        rows += [
            {"measure": "official NMFSemiNMF.fit (torch)", "value": f"{official['median_s']:.2f} s",
             "note": f"median of {len(official['times_s'])}, {official['threads']} threads; final loss "
                     f"{official['losses'][-1]:.6g}"},
            {"measure": "speed-up, same iterations, same loss", "value": f"{record['speedup']:.1f}x",
             "note": f"{record['speedup_with_compile']:.1f}x counting our compile time (target >= 3x)"},
            {"measure": "loss trajectories, largest relative difference", "value": f"{record['max_relative_loss_difference']:.1e}",
             "note": "over every iteration"},
        ]  # fmt: skip
    return rows


def main(quick: bool = False, official_python: str | None = None) -> dict:
    """Run the benchmark. **Returns:** the record written."""
    started = time.time()
    workload = QUICK if quick else FULL
    x, store = activations(workload)
    G0 = np.maximum(np.random.default_rng(workload.seed).random((workload.tokens, workload.k)), 1e-6)
    G0 = G0.astype(np.float32)
    record = {"benchmark": NAME, "quick": quick, "workload": dataclasses.asdict(workload), "d": int(x.shape[1])}
    record["machine"] = machine_info()
    record["store"] = store
    if official_python:
        print("timing the official code", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory() as folder:
            record["official"] = run_official(official_python, x, G0, workload, pathlib.Path(folder))
    record["jaxinterp"] = ours(x, G0, workload)
    if official_python:
        theirs, mine = np.asarray(record["official"]["losses"]), np.asarray(record["jaxinterp"]["losses"])
        record["max_relative_loss_difference"] = float(np.max(np.abs(theirs - mine) / theirs))
        record["speedup"] = record["official"]["median_s"] / record["jaxinterp"]["median_s"]
        record["speedup_with_compile"] = record["official"]["median_s"] / (
            record["jaxinterp"]["median_s"] + record["jaxinterp"]["compile_s"]
        )
    write_benchmark(NAME, record, summary_rows(record), started=started)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="layer 0, 256 tokens of at most 16 per text, k = 8, 20 iterations, one repeat",
    )
    parser.add_argument("--official", metavar="TORCH_PYTHON", help="time the official code too, under this Python")
    options = parser.parse_args()
    main(options.quick, options.official)
    sys.exit(0)
