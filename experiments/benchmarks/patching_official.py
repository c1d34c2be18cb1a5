"""The TransformerLens side of the activation-patching benchmark: `transformer_lens.patching` on a GPT-2-small-shaped
random model.

Runs under a separate virtual environment with torch and transformer_lens 3.9 (the one of
`experiments/benchmarks/cd_sweep_official.py`), never under the project's own; no network is needed:

    "$VENV"/bin/python experiments/benchmarks/patching_official.py --npz patching_official.npz \
        [--out FILE.json] [--batch 1] [--seq 12] [--threads N] [--repeats N] [--quick]

The model is `cd_sweep_official.random_gpt`'s: a `HookedTransformer` from a `HookedTransformerConfig` (12 layers,
d_model 768, 12 heads of size 64, d_mlp 3072, vocabulary 50257, n_ctx 1024, `gelu_new`, `LN` with eps 1e-5, float32),
TransformerLens's initialisation from seed 0, then biases and layer-norm biases `0.02 * normal`, layer-norm weights
`1 + 0.02 * normal` and a zero unembedding bias. The prompts come from a generator seeded 2: a clean batch
`[batch, seq]` of random ids and a corrupted one equal to it at the first and the last position and redrawn (to
differ) everywhere else. The metric is the logit difference `logits[:, -1, answer] - logits[:, -1, distractor]`
averaged over the batch, `answer` the token whose last-position logit falls most from the clean to the corrupted
run (averaged over the batch) and `distractor` the one whose logit rises most.

It times, as TransformerLens intends them (`fn(model, corrupted_tokens, clean_cache, metric)`, one forward of the
corrupted batch per patch, under `torch.no_grad`):

- `get_act_patch_attn_head_out_by_pos`: every head's output (`hook_z`) at every position, `layers * seq * heads`
  patched forwards, result `[layers, seq, heads]`;
- `get_act_patch_attn_head_out_all_pos`: every head at all positions at once, `layers * heads` patched forwards,
  result `[layers, heads]`;
- beside them: one forward of the corrupted batch, the clean `run_with_cache` the sweeps need, and one patched
  forward (`run_with_hooks` with one `hook_z` hook).

Eager PyTorch compiles nothing, so the warm-up is one call of each of the three single-forward cases (and the
interleaved medians of `repeats` rounds of them, `cd_official_anchor.interleaved_medians`); the two sweeps are then
timed `repeats` times each, interleaved, and their median, minimum and every sample reported. Seconds are
wall-clock. `--quick` is the smoke-test size (`cd_sweep_official.GPT_QUICK`: 2 layers, d_model 64, 4 heads of 16,
d_mlp 256, vocabulary 1000; 1 repeat).

Writes the JSON record (sizes, times, forwards, checks, machine, versions) to `--out`, or to stdout without it
(progress goes to stderr), and to `--npz` (uncompressed: about 650 MB at the full size) the model's weights in the
jaxinterp layout under `weights/` (the keys of `models.from_arrays` for `models.gpt2_config(...,
tie_embeddings=False)`: `token_embed`, `position_embed`, `blocks.L.attn.w_q` `[d_model, heads, d_head]`, ...;
listed in `weight_names`), `config` and `config_names`, `norm_eps`, `clean_tokens` and `corrupted_tokens` (int32
`[batch, seq]`), `answer_tokens` (int32 `[2]`), `clean_logits_last` and `corrupted_logits_last` (`[batch, vocab]`),
`clean_metric`, `corrupted_metric`, and the two results under their function names, so that the jaxinterp side can
run the same model and check that it agrees.
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # transformer_lens.patching draws a progress bar per sweep

import numpy as np
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.benchmarks.cd_official_anchor import interleaved_medians, package_versions  # stdlib and torch only
from experiments.benchmarks.cd_sweep_official import GPT_FULL, GPT_QUICK, SEED, random_gpt, weights_in_our_layout

PROMPT_SEED = SEED + 2
SWEEPS = ("get_act_patch_attn_head_out_by_pos", "get_act_patch_attn_head_out_all_pos")


def prompts(d_vocab: int, batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean and corrupted token batches.

    **Arguments:** `d_vocab`, the vocabulary size; `batch`; `seq` (at least 3).

    **Returns:** `(clean, corrupted)`, int64 `[batch, seq]`: `clean` random ids from a generator seeded
    `PROMPT_SEED`, `corrupted` equal to it at the first and last position and redrawn, to differ, elsewhere.
    """
    if seq < 3:
        raise ValueError(f"--seq must be at least 3 (the first and last positions are shared), got {seq}")
    generator = torch.Generator().manual_seed(PROMPT_SEED)
    clean = torch.randint(0, d_vocab, (batch, seq), generator=generator)
    shift = torch.randint(1, d_vocab, (batch, seq - 2), generator=generator)
    corrupted = clean.clone()
    corrupted[:, 1:-1] = (clean[:, 1:-1] + shift) % d_vocab  # a non-zero shift: every redrawn id differs
    return clean, corrupted


def metric_tokens(clean_logits: torch.Tensor, corrupted_logits: torch.Tensor) -> tuple[int, int]:
    """The metric's `(answer, distractor)`: the tokens whose last-position logit falls most and rises most from the
    clean to the corrupted run, averaged over the batch. **Arguments:** both runs' logits `[batch, seq, vocab]`."""
    fall = (clean_logits[:, -1] - corrupted_logits[:, -1]).mean(0)
    return int(fall.argmax()), int(fall.argmin())


def logit_difference(answer: int, distractor: int):
    """The metric for two tokens.

    **Arguments:** `answer`, `distractor`: token ids.

    **Returns:** a function of logits `[batch, seq, vocab]` returning the scalar tensor
    `logits[:, -1, answer] - logits[:, -1, distractor]` averaged over the batch.
    """

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return (logits[:, -1, answer] - logits[:, -1, distractor]).mean()

    return metric


def timed_rounds(thunks: dict, repeats: int) -> tuple[dict[str, list[float]], dict]:
    """`repeats` rounds of one call of each thunk in turn (no warm-up: see the module docstring).

    **Returns:** `(samples, first)`: the wall-clock seconds of every call, per thunk, and each thunk's result from
    the first round; every later round's result is checked against it (`max_abs_repeat_difference` in the record).
    """
    samples, first, drift = {name: [] for name in thunks}, {}, {name: 0.0 for name in thunks}
    for round_ in range(repeats):
        for name, thunk in thunks.items():
            print(f"  round {round_ + 1}/{repeats}: {name}", file=sys.stderr, flush=True)
            start = time.perf_counter()
            result = thunk()
            samples[name].append(time.perf_counter() - start)
            result = result.numpy().copy()
            if name in first:
                drift[name] = max(drift[name], float(np.abs(result - first[name]).max()))
            else:
                first[name] = result
    return samples, {"results": first, "max_abs_repeat_difference": drift}


def peak_rss_mib() -> float:
    """The process's peak resident memory (`getrusage` `ru_maxrss`), in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run(dims: dict, batch: int, seq: int, repeats: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Build the model and the prompts and time the two sweeps and the single forwards.

    **Arguments:** `dims`, the model sizes (`GPT_FULL` or `GPT_QUICK`); `batch`, `seq`, the prompt size;
    `repeats`, the timed rounds.

    **Returns:** `(record, arrays)`: the JSON record and the arrays for `--npz`.
    """
    from transformer_lens import patching

    model, _ = random_gpt(dims, 1)
    cfg = model.cfg
    if seq > cfg.n_ctx:
        raise ValueError(f"--seq {seq} exceeds the model's {cfg.n_ctx} positions")
    clean, corrupted = prompts(cfg.d_vocab, batch, seq)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits = model(corrupted)
        answer, distractor = metric_tokens(clean_logits, corrupted_logits)
        metric = logit_difference(answer, distractor)
        hook = "blocks.0.attn.hook_z"

        def patch_one_head(z, hook):
            z[:, :, 0] = clean_cache[hook.name][:, :, 0]
            return z

        singles = {
            "forward": lambda: model(corrupted),
            "clean_run_with_cache": lambda: model.run_with_cache(clean)[0],
            "one_patched_forward": lambda: model.run_with_hooks(corrupted, fwd_hooks=[(hook, patch_one_head)]),
        }
        print(f"TransformerLens patching: {len(singles)} single forwards, warm-up + {repeats} rounds", file=sys.stderr)
        single_times = interleaved_medians(singles, repeats)

        def sweep(fn):
            return lambda: fn(model, corrupted, clean_cache, metric)

        sweeps = {name: sweep(getattr(patching, name)) for name in SWEEPS}
        print(f"TransformerLens patching: {len(sweeps)} sweeps, {repeats} rounds", file=sys.stderr, flush=True)
        samples, outcome = timed_rounds(sweeps, repeats)
    results = outcome["results"]
    patched = {
        "get_act_patch_attn_head_out_by_pos": cfg.n_layers * seq * cfg.n_heads,
        "get_act_patch_attn_head_out_all_pos": cfg.n_layers * cfg.n_heads,
    }
    clean_metric, corrupted_metric = float(metric(clean_logits)), float(metric(corrupted_logits))
    sweep_times = {name: statistics.median(samples[name]) for name in SWEEPS}
    record = {
        "config": {**{k: getattr(cfg, k) for k in GPT_FULL}, "act_fn": cfg.act_fn, "layer_norm_eps": cfg.eps},
        "seed": SEED,
        "prompt_seed": PROMPT_SEED,
        "batch": batch,
        "seq": seq,
        "answer_tokens": [answer, distractor],
        "metric": "mean over the batch of logits[:, -1, answer] - logits[:, -1, distractor]",
        "direction": "fn(model, corrupted_tokens, clean_cache, metric): the corrupted run, patched from the clean",
        "clean_metric": clean_metric,
        "corrupted_metric": corrupted_metric,
        "times_s": {**single_times, **sweep_times},
        "sweeps": {
            name: {
                "result_shape": list(results[name].shape),
                "patched_forwards": patched[name],
                "forwards_including_clean_cache": patched[name] + 1,
                "median_s": sweep_times[name],
                "min_s": min(samples[name]),
                "samples_s": samples[name],
                "per_patched_forward_s": sweep_times[name] / patched[name],
                "per_patched_forward_over_forward": sweep_times[name] / patched[name] / single_times["forward"],
                "max_abs_repeat_difference": outcome["max_abs_repeat_difference"][name],
            }
            for name in SWEEPS
        },
        "checks": {
            # position 0 reads token 0 only (causal) and token 0 is the same in both runs, so patching any head
            # there changes nothing
            "max_abs_by_pos_at_position_0_minus_corrupted_metric": float(
                np.abs(results["get_act_patch_attn_head_out_by_pos"][:, 0] - corrupted_metric).max()
            ),
            "max_abs_all_pos": float(np.abs(results["get_act_patch_attn_head_out_all_pos"]).max()),
            "finite": bool(all(np.isfinite(results[name]).all() for name in SWEEPS)),
        },
        "peak_rss_mib": peak_rss_mib(),
    }
    weights = weights_in_our_layout(model)
    arrays = {
        **{f"weights/{k}": v for k, v in weights.items()},
        "weight_names": np.array(sorted(weights)),
        "config": np.array([getattr(cfg, k) for k in GPT_FULL], np.int64),
        "config_names": np.array(list(GPT_FULL)),
        "norm_eps": np.array(cfg.eps, np.float64),
        "clean_tokens": clean.numpy().astype(np.int32),
        "corrupted_tokens": corrupted.numpy().astype(np.int32),
        "answer_tokens": np.array([answer, distractor], np.int32),
        "clean_logits_last": clean_logits[:, -1].numpy().astype(np.float32),
        "corrupted_logits_last": corrupted_logits[:, -1].numpy().astype(np.float32),
        "clean_metric": np.array(clean_metric, np.float32),
        "corrupted_metric": np.array(corrupted_metric, np.float32),
        **{name: results[name].astype(np.float32) for name in SWEEPS},
    }
    return record, arrays


def main(argv: list[str] | None = None) -> dict:
    """Parse the arguments, run the benchmark, write the `.npz` and the JSON record. **Returns:** the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", required=True, type=pathlib.Path, help="where to write the weights and results")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="JSON record file (default: stdout)")
    parser.add_argument("--batch", type=int, default=1, help="prompts per batch (default 1)")
    parser.add_argument("--seq", type=int, default=12, help="tokens per prompt (default 12)")
    parser.add_argument("--quick", action="store_true", help="a 2-layer narrow model, 1 repeat")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads (default: all; 1 is steadier on a shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3, quick 1)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    record, arrays = run(GPT_QUICK if args.quick else GPT_FULL, args.batch, args.seq, repeats)
    record = {
        "benchmark": "patching_official",
        "quick": args.quick,
        "repeats": repeats,
        "timing": "single forwards: one warm-up call each, then the median of `repeats` interleaved rounds; "
        "sweeps: `repeats` interleaved rounds after those (eager PyTorch: nothing to compile); wall-clock seconds",
        **record,
        "npz": str(args.npz),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_start": load_start,
            "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "versions": package_versions("torch", "transformer-lens", "numpy"),
    }
    args.npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.npz, **arrays)
    text = json.dumps(record, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return record


if __name__ == "__main__":
    main()
