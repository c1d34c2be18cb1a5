"""Source sweeps with `jaxinterp.cd_sweep` against a forward, against single `cd` calls and against the official
CD-T code, timed in one run.

Two workloads, the ones a circuit or attribution study runs:

1. **MiniLM, every single-token source of one 64-token SST-2 sentence** (the longest dev sentence when none has 64
   tokens, padded with the attention mask), each position alone at `embed`, decomposing the final hidden states.
2. **GPT-2-small-shaped model with random weights, every one of the 144 heads as a source** (all 16 positions of
   the head at `blocks.L.attn.z`), decomposed attention, to the logits.

For each: the plain forward, one `cd` call, the sweep with the default (exact) rules and with the official preset
(`Rules.official_bert()` / `Rules.official_gpt2()`, two streams), all compiled ahead of time; the median of
interleaved repeats; compile times and XLA's memory analysis (peak bytes of one call) beside each. The marginal
cost of one more source set is `(T(n) - T(n/2)) / (n/2)` for the sweep over the first half of each stack's sets
against all of them, in forwards.

With `--official TORCH_PYTHON` (and `CD_CIRCUIT_PATH` naming a checkout of GitHub `adelaidehsu/CD_Circuit`), the
official code is timed first, in the same run, on the same inputs: `cd_sweep_official.py` runs under that Python
(a separate environment with torch and transformer_lens, see its docstring), writes the GPT-2 weights and the
MiniLM token ids it used, and this script loads them. Without it, the GPT-2 weights are drawn here.

    python -m experiments.benchmarks.cd_sweep [--quick] [--official "$TORCH_VENV"/bin/python [--official-repeats N]]

Writes `results/benchmarks/cd_sweep.json` and `cd_sweep.md`.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
import models
from experiments.benchmarks.timing import (
    blocking,
    compile_timed,
    cost_stats,
    interleaved_medians,
    machine_info,
    memory_stats,
)
from experiments.record import write_benchmark

NAME = "cd_sweep"
HERE = pathlib.Path(__file__).resolve().parent


# ------------------------------------------------------------------------------------------------------ inputs
def run_official(python: str, out: pathlib.Path, quick: bool, repeats: int | None) -> dict:
    """Run the official anchor under `python` (its own environment). **Returns:** its `official.json`."""
    command = [python, str(HERE / "cd_sweep_official.py"), "--out", str(out), "--threads", str(os.cpu_count() or 1)]
    command += (["--quick"] if quick else []) + ([] if repeats is None else ["--repeats", str(repeats)])
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
    return json.loads((out / "official.json").read_text())


def gpt2_from_arrays(arrays: dict) -> models.Transformer:
    """A GPT-2 `models.Transformer` filled with the anchor's weights (keys named after the model's fields)."""
    number = lambda key: int(arrays[key])
    cfg = models.transformer.gpt2_config(
        vocab_size=number("d_vocab"), d_model=number("d_model"), n_layers=number("n_layers"),
        n_heads=number("n_heads"), d_head=number("d_head"), d_mlp=number("d_mlp"), max_positions=number("n_ctx"),
        norm_eps=float(arrays["layer_norm_eps"]), tie_embeddings=False,
    )  # fmt: skip
    names = [k for k in arrays if k.split(".")[0] in ("token_embed", "position_embed", "blocks", "ln_final", "unembed")]
    return models.from_arrays(cfg, {k: arrays[k] for k in names}, source="gpt2_small_random.npz")


def random_gpt2(quick: bool) -> tuple[models.Transformer, jax.Array]:
    """A GPT-2-small-shaped model with random weights and 16 random tokens (quick: a small model, 8 tokens)."""
    sizes = dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, vocab_size=1000) if quick else {}
    model = models.Transformer(models.transformer.gpt2_config(**sizes), key=jax.random.key(0))
    return model, jax.random.randint(jax.random.key(1), (8 if quick else 16,), 0, model.cfg.vocab_size)


def minilm_sentence(tokenizer, seq_len: int) -> tuple[jax.Array, jax.Array]:
    """The first SST-2 dev sentence with at least `seq_len` tokens (else the longest), truncated or padded to
    `seq_len`: `(token ids, attention mask)`."""
    sentences, _ = ji.data.sst2("dev")
    encoded = [tokenizer.encode(s).ids for s in sentences]
    ids = next((e for e in encoded if len(e) >= seq_len), max(encoded, key=len))[:seq_len]
    mask = [1] * len(ids) + [0] * (seq_len - len(ids))
    return jnp.asarray(ids + [0] * (seq_len - len(ids))), jnp.asarray(mask)


# ------------------------------------------------------------------------------------------------------ timing
def bench(name: str, model, args: tuple, stacks: list, rules: ji.Rules, official_rules: ji.Rules, repeats: int):
    """Time forward, one `cd`, half and full sweeps (exact rules) and the full sweep with the official preset."""
    first = [ji.Site(s.pattern, s.mask[0], s.mean) for s in stacks[0].sites]
    n_sets = sum(s.size for s in stacks)
    half = halve(stacks)
    functions = {
        "forward": (lambda m, *a: m(*a)),
        "one cd": (lambda m, *a: ji.cd(m, first, rules=rules)(*a)),
        "sweep, half the sets": (lambda m, *a: ji.cd_sweep(m, half, rules=rules)(*a)),
        "sweep": (lambda m, *a: ji.cd_sweep(m, stacks, rules=rules)(*a)),
        "sweep, official preset": (lambda m, *a: ji.cd_sweep(m, stacks, rules=official_rules)(*a)),
    }
    compiled = {}
    for label, fn in functions.items():
        print(f"{name}: compiling {label}", file=sys.stderr, flush=True)
        compiled[label] = compile_timed(fn, model, *args)
    print(f"{name}: timing, {repeats} interleaved rounds", file=sys.stderr, flush=True)
    times = interleaved_medians({k: blocking(c.call, model, *args) for k, c in compiled.items()}, repeats)
    forward = times["forward"]["wall_s"]
    n_half = sum(s.size for s in half)
    marginal = (times["sweep"]["wall_s"] - times["sweep, half the sets"]["wall_s"]) / (n_sets - n_half)
    check = ji.cd(model, first, rules=rules)(*args)
    swept = compiled["sweep"].call(model, *args)
    return {
        "workload": name,
        "n_source_sets": n_sets,
        "chunk_sizes": ji.cd_sweep(model, stacks, rules=rules).chunk_sizes(*args),
        "times": {
            label: {
                **times[label],
                "over_forward": times[label]["wall_s"] / forward,
                "lower_s": compiled[label].lower_s,
                "compile_s": compiled[label].compile_s,
                "memory": memory_stats(compiled[label].executable),
                **cost_stats(compiled[label].executable),
            }
            for label in functions
        },
        "one_cd_over_forward": times["one cd"]["wall_s"] / forward,
        "sweep_per_set_over_forward": times["sweep"]["wall_s"] / n_sets / forward,
        "marginal_set_over_forward": marginal / forward,
        "official_preset_per_set_over_forward": times["sweep, official preset"]["wall_s"] / n_sets / forward,
        "sweep_gflop_per_s": (cost_stats(compiled["sweep"].executable)["gflops"] or 0.0) / times["sweep"]["wall_s"],
        "max_abs_sweep_row0_minus_cd": float(jnp.max(jnp.abs(swept.rel[0] - check.rel))),
    }


def halve(stacks: list) -> list:
    """The first half of the source sets of every stack (so that, with per-layer stacks, the half has every layer's
    share, and the difference to the whole is what the average set costs)."""
    return [
        ji.SourceStack(tuple(ji.Site(s.pattern, s.mask[: n // 2], s.mean) for s in stack.sites), stack.labels[: n // 2])
        for stack in stacks
        for n in [stack.size]
    ]


# ------------------------------------------------------------------------------------------------------ report
def summary_rows(record: dict) -> list[dict]:
    """One row per workload: jaxinterp's times and ratios, and the official code's beside them."""
    rows = []
    for key, official_key in (("minilm", "minilm"), ("gpt2", "gpt2_small_random")):
        ours = record[key]
        t = ours["times"]
        row = {
            "workload": ours["workload"],
            "sets": ours["n_source_sets"],
            "forward (ms)": f"{1e3 * t['forward']['wall_s']:.3g}",
            "one cd / forward": f"{ours['one_cd_over_forward']:.2f}",
            "sweep (s)": f"{t['sweep']['wall_s']:.3g}",
            "marginal set / forward": f"{ours['marginal_set_over_forward']:.2f}",
            "official preset sweep (s)": f"{t['sweep, official preset']['wall_s']:.3g}",
            "sweep compile (s)": f"{t['sweep']['lower_s'] + t['sweep']['compile_s']:.1f}",
            "sweep peak (MiB)": f"{t['sweep']['memory']['total_bytes'] / 2**20:.0f}",
            "sweep GFLOP (XLA), GFLOP/s": f"{t['sweep']['gflops'] or 0:.0f}, {ours['sweep_gflop_per_s']:.0f}",
            "official-preset sweep GFLOP": f"{t['sweep, official preset']['gflops'] or 0:.0f}",
        }
        official = record.get("official", {}).get(official_key)
        if official:
            best = official_best_seconds(official)
            row["official code (s)"] = f"{best:.3g}"
            row["official / sweep"] = f"{best / t['sweep']['wall_s']:.1f}x"
            row["official / official-preset sweep"] = f"{best / t['sweep, official preset']['wall_s']:.1f}x"
        rows.append(row)
    return rows


def official_best_seconds(official: dict) -> float:
    """The official code's fastest time for all the source sets of a workload (its best batching)."""
    times = official["times_s"]
    candidates = [v for k, v in times.items() if k == "all_sources" or k.startswith("total_")]
    return min(candidates)


def main(quick: bool = False, official_python: str | None = None, official_repeats: int | None = None) -> dict:
    """Run the benchmark. **Returns:** the record written."""
    repeats = 2 if quick else 5
    record = {"benchmark": NAME, "quick": quick, "repeats": repeats, "machine": machine_info()}
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        if official_python:
            print("timing the official code (its own progress follows)", file=sys.stderr, flush=True)
            record["official"] = run_official(official_python, folder, quick, official_repeats)
            arrays = dict(np.load(folder / "gpt2_small_random.npz"))
            gpt2, tokens = gpt2_from_arrays(arrays), jnp.asarray(arrays["tokens"])
            minilm_ids = jnp.asarray(arrays["minilm_input_ids"]).reshape(-1)
            minilm_mask = jnp.asarray(arrays["minilm_attention_mask"]).reshape(-1)
        else:
            gpt2, tokens = random_gpt2(quick)
            minilm_ids = None
    minilm, tokenizer = models.load_minilm()
    if minilm_ids is None:
        minilm_ids, minilm_mask = minilm_sentence(tokenizer, 16 if quick else 64)
    seq = minilm_ids.shape[0]
    record["minilm"] = bench(
        f"MiniLM, {seq} single-token sources",
        minilm, (minilm_ids, None, minilm_mask), [ji.every_position(seq)], ji.Rules(), ji.Rules.official_bert(),
        repeats,
    )  # fmt: skip
    cfg = gpt2.cfg
    record["gpt2"] = bench(
        f"GPT-2-shaped ({cfg.n_layers}x{cfg.n_heads} heads, random), {tokens.shape[0]} tokens, to the logits",
        gpt2, (tokens,), ji.every_head(cfg.n_layers, cfg.n_heads), ji.Rules(attention="decomposed"),
        ji.Rules.official_gpt2(), repeats,
    )  # fmt: skip
    write_benchmark(NAME, record, summary_rows(record))
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats")
    parser.add_argument("--official", metavar="TORCH_PYTHON", help="time the official code too, under this Python")
    parser.add_argument("--official-repeats", type=int, help="timed rounds of the official code (default: its own)")
    options = parser.parse_args()
    main(options.quick, options.official, options.official_repeats)
    sys.exit(0)
