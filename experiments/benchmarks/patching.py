"""Activation patching of every head at every position, and EAP over every edge, on a GPT-2-small-shaped model:
`jaxinterp.patching` against TransformerLens's `patching` functions, timed in one run.

With `--official TORCH_PYTHON` (an environment with torch and transformer_lens 3.9, see
`patching_official.py`), TransformerLens is timed first, in the same run, on its own `HookedTransformer` (random
weights from a config); this script then loads those weights and prompts, checks that its results agree with
TransformerLens's and times the same sweeps. Without it, the weights are drawn here and only jaxinterp is timed.

- `head_out by pos`: TransformerLens's `get_act_patch_attn_head_out_by_pos` (layers x seq x heads forwards of the
  corrupted prompts, each with one head's `z` at one position from the clean run) against
  `activation_sweep(..., "head_out", by="pos")`;
- `head_out all pos`: `get_act_patch_attn_head_out_all_pos` against `by="all_pos"`;
- `eap`: `jaxinterp.patching.eap` over all 32,491 edges (one clean forward, one corrupted forward, one backward).

The metric is the logit difference of two tokens at the last position, so the jaxinterp side computes the
unembedding at that position only (`output_positions=[-1]`); TransformerLens's metric sees its full logits.

    python -m experiments.benchmarks.patching [--quick] [--official "$TORCH_VENV"/bin/python [--official-repeats N]]

Writes `results/benchmarks/patching.json` and `patching.md`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import models
from experiments.benchmarks.timing import interleaved_medians, machine_info
from experiments.record import markdown_table, results_dir
from jaxinterp import patching

NAME = "patching"
HERE = pathlib.Path(__file__).resolve().parent
SWEEPS = {"head_out by pos": ("get_act_patch_attn_head_out_by_pos", "pos"),
          "head_out all pos": ("get_act_patch_attn_head_out_all_pos", "all_pos")}  # fmt: skip


def run_official(python: str, folder: pathlib.Path, quick: bool, repeats: int) -> dict:
    """Time TransformerLens under `python`, `repeats` rounds. **Returns:** its record (the weights and results in
    `folder`)."""
    command = [python, str(HERE / "patching_official.py"), "--npz", str(folder / "official.npz"),
               "--out", str(folder / "official.json"), "--threads", str(os.cpu_count() or 1),
               "--repeats", str(repeats)]  # fmt: skip
    subprocess.run(command + (["--quick"] if quick else []), check=True, env={**os.environ, "PYTHONPATH": ""})
    return json.loads((folder / "official.json").read_text())


def model_from(arrays: dict) -> models.Transformer:
    """The anchor's `HookedTransformer` as a `models.Transformer` (its weights in the project's layout)."""
    sizes = dict(zip((str(n) for n in arrays["config_names"]), (int(v) for v in arrays["config"])))
    cfg = models.gpt2_config(
        vocab_size=sizes["d_vocab"], d_model=sizes["d_model"], n_layers=sizes["n_layers"], n_heads=sizes["n_heads"],
        d_head=sizes["d_head"], d_mlp=sizes["d_mlp"], max_positions=sizes["n_ctx"],
        norm_eps=float(arrays["norm_eps"]), tie_embeddings=False,
    )  # fmt: skip
    weights = {str(n): arrays[f"weights/{n}"] for n in arrays["weight_names"]}
    return models.from_arrays(cfg, weights, source="patching_official.npz")


def drawn(quick: bool) -> dict:
    """Weights and prompts drawn here when TransformerLens is not timed (same sizes, batch 1, 12 tokens)."""
    sizes = dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, vocab_size=1000) if quick else {}
    model = models.Transformer(models.gpt2_config(**sizes), key=jax.random.key(0))
    clean = jax.random.randint(jax.random.key(1), (1, 12), 0, model.cfg.vocab_size)
    corrupted = clean.at[:, 1:-1].set(jax.random.randint(jax.random.key(2), (1, 10), 0, model.cfg.vocab_size))
    return {"model": model, "clean": clean, "corrupted": corrupted, "answer": jnp.array([0, 1])}


def main(quick: bool = False, official_python: str | None = None, official_repeats: int | None = None) -> dict:
    """Run the benchmark (`official_repeats`: TransformerLens's timed rounds, by default as many as jaxinterp's:
    3, quick 1; at GPT-2-small size one round of its head-by-position sweep is 1,728 forwards). **Returns:** the
    record written."""
    repeats = 1 if quick else 3
    official_repeats = official_repeats or repeats
    record = {"benchmark": NAME, "quick": quick, "repeats": repeats, "official_repeats": official_repeats,
              "machine": machine_info()}  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        if official_python:
            print("timing TransformerLens (its own progress follows)", file=sys.stderr, flush=True)
            record["transformer_lens"] = run_official(official_python, pathlib.Path(folder), quick, official_repeats)
            arrays = dict(np.load(pathlib.Path(folder) / "official.npz"))
            setup = {"model": model_from(arrays), "clean": jnp.asarray(arrays["clean_tokens"]),
                     "corrupted": jnp.asarray(arrays["corrupted_tokens"]), "answer": jnp.asarray(arrays["answer_tokens"])}  # fmt: skip
            official = {name: arrays[fn] for name, (fn, _) in SWEEPS.items()}
        else:
            setup, official = drawn(quick), {}
    model, answer = models.LastPosition(setup["model"]), setup["answer"]

    def metric(logits):  # [batch, 1, vocab]: the mean logit difference at the last position
        return jnp.mean(logits[:, -1, answer[0]] - logits[:, -1, answer[1]])

    clean, corrupted = (setup["clean"],), (setup["corrupted"],)
    thunks = {
        name: (lambda by=by: jax.block_until_ready(
            patching.activation_sweep(model, corrupted, clean, metric, "head_out", by=by, batch_size=16)))
        for name, (_, by) in SWEEPS.items()
    }  # fmt: skip
    thunks["eap"] = lambda: jax.block_until_ready(patching.eap(model, clean, corrupted, metric))
    forward = eqx.filter_jit(lambda m, t: jax.vmap(m)(t))
    thunks["forward"] = lambda: jax.block_until_ready(forward(model, setup["corrupted"]))
    print("timing jaxinterp (the first call of each compiles)", file=sys.stderr, flush=True)
    record["jaxinterp"] = interleaved_medians(thunks, repeats)
    results = {name: np.asarray(thunks[name]()) for name in SWEEPS}
    cfg = setup["model"].cfg
    record["sizes"] = {"layers": cfg.n_layers, "heads": cfg.n_heads, "d_model": cfg.d_model,
                       "batch": int(setup["clean"].shape[0]), "seq": int(setup["clean"].shape[1]),
                       "edges": len(patching.Graph.of(model).edges)}  # fmt: skip
    if official:
        tl = record["transformer_lens"]["times_s"]
        record["agreement_max_abs"] = {name: float(np.abs(results[name] - official[name]).max()) for name in SWEEPS}
        record["speedup"] = {name: tl[fn] / record["jaxinterp"][name]["wall_s"] for name, (fn, _) in SWEEPS.items()}
    record["machine"]["load_average_1min_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    out = results_dir("benchmarks")
    (out / f"{NAME}.json").write_text(json.dumps(record, indent=2))
    rows = []
    for name in (*SWEEPS, "eap", "forward"):
        row = {"workload": name, "jaxinterp_s": record["jaxinterp"][name]["wall_s"]}
        if official and name in SWEEPS:
            row["transformer_lens_s"] = record["transformer_lens"]["times_s"][SWEEPS[name][0]]
            row["speedup"] = record["speedup"][name]
            row["max_abs_difference"] = record["agreement_max_abs"][name]
        rows.append(row)
    table = markdown_table(rows)
    (out / f"{NAME}.md").write_text(table + "\n")
    print(table)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2-layer narrow model, 1 repeat")
    parser.add_argument("--official", metavar="TORCH_PYTHON", help="time TransformerLens too, under this Python")
    parser.add_argument("--official-repeats", type=int, default=None, help="TransformerLens's timed rounds")
    options = parser.parse_args()
    main(options.quick, options.official, options.official_repeats)
    sys.exit(0)
