"""Contextual decomposition (CD-T) on MiniLM-L6: its cost against a plain forward, on real SST-2 text.

Three measurements, each taken side by side in one process (every function compiled ahead of time, then one
warm-up call each and the median of interleaved repeats, every call ended with `block_until_ready`; trace/lower and
compile times reported separately):

1. **Decomposition / forward.** A batch of SST-2 dev sentences, padded or truncated to a fixed length with the
   attention mask; the plain forward is `eqx.filter_jit(jax.vmap(model))`, the decomposition the same with
   `jaxinterp.cd(model, Site("embed", mask))` and a per-sentence source mask over token positions (default rules;
   optionally also the official BERT rules, `Rules(normalise_signs=True, bias_split="official")`).
2. **Head sweep.** All 72 MiniLM heads as sources, one at a time (one `Site` per layer on `blocks.L.attn.z`, a
   one-hot head mask over all 72) on one sentence: 72 sequential calls of one compiled single-mask function, one
   `jax.vmap` over the 72 masks, `jax.lax.map` over them in batches, and `jaxinterp.cd_sweep` (one stack of 12
   heads per layer, each starting at its layer).
3. **Memory.** XLA's compiled memory analysis of the forward and of the decomposition (argument, output and
   temporary buffer sizes), and where /proc is readable, the growth of the process's resident set during one call
   (in a fresh subprocess per function, after returning freed heap memory to the system).

Run `python -m experiments.benchmarks.cd_minilm [--quick]`; writes `results/benchmarks/cd_minilm.json` and
`cd_minilm.md` and prints the Markdown table.
"""

import argparse
import ctypes
import dataclasses
import gc
import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import equinox as eqx
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
from jaxinterp.data import sst2

NAME = "cd_minilm"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
OFFICIAL_RULES = ji.Rules(normalise_signs=True, bias_split="official")


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and repeat counts of the benchmark.

    **Fields:**

    - `batch`, `seq_len`: sentences in the decomposition/forward comparison and tokens per sentence (padded or
      truncated); the head sweep uses one sentence of `seq_len` tokens.
    - `repeats`, `head_repeats`: timed repeats of each function after its warm-up call (decomposition section,
      head-sweep section).
    - `source_positions`: token positions of the decomposition's source.
    - `official_rules`: also time the decomposition with the official BERT CD-T rules.
    - `map_batch_sizes`: batch sizes of the `lax.map` head sweeps.
    - `per_layer_sweep`: also time the sweep with `jaxinterp.cd_sweep` (one stack per layer).
    - `rss`: also measure the resident-set growth, in subprocesses.
    """

    batch: int = 32
    seq_len: int = 64
    repeats: int = 7
    head_repeats: int = 3
    source_positions: tuple[int, ...] = (1, 2, 3)
    official_rules: bool = True
    map_batch_sizes: tuple[int, ...] = (6, 12, 24)
    per_layer_sweep: bool = True
    rss: bool = True


FULL = Config()
QUICK = Config(
    batch=4,
    seq_len=16,
    repeats=2,
    head_repeats=2,
    official_rules=False,
    map_batch_sizes=(24,),
    per_layer_sweep=False,
    rss=False,
)


# ------------------------------------------------------------------------------------------------------ inputs
def encode(tokenizer, sentences: list[str], seq_len: int) -> tuple[jax.Array, jax.Array]:
    """Token ids and attention masks `[n, seq_len]` (int32), padded with `[PAD]` or truncated to `seq_len`."""
    tokenizer.enable_truncation(max_length=seq_len)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]", length=seq_len)
    encodings = tokenizer.encode_batch(sentences)
    ids = np.asarray([e.ids for e in encodings], np.int32)
    attention = np.asarray([e.attention_mask for e in encodings], np.int32)
    return jnp.asarray(ids), jnp.asarray(attention)


def load_inputs(config: Config):
    """MiniLM, the first `config.batch` SST-2 dev sentences encoded, and the longest dev sentence (for the head
    sweep). **Returns:** `(model, ids, attention, sweep_ids, sweep_attention)`."""
    model, tokenizer = models.load("minilm-l6")
    sentences, _ = sst2("dev")
    # measured before `encode` turns on padding and truncation (with them every sentence has `seq_len` tokens)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    longest = max(sentences, key=lambda s: len(tokenizer.encode(s).ids))
    ids, attention = encode(tokenizer, sentences[: config.batch], config.seq_len)
    sweep_ids, sweep_attention = encode(tokenizer, [longest], config.seq_len)
    return model, ids, attention, sweep_ids[0], sweep_attention[0]


def source_masks(config: Config) -> jax.Array:
    """The decomposition's source, one position mask per sentence: `[batch, seq_len, 1]`."""
    mask = ji.position_mask(list(config.source_positions), config.seq_len)
    return jnp.broadcast_to(mask, (config.batch, config.seq_len, 1))


# --------------------------------------------------------------------------------------------- the functions
def forward(model, tokens, attention):
    """MiniLM's final hidden states for one sequence."""
    return model(tokens, attention_mask=attention)


def decompose(model, tokens, attention, source_mask, rules: ji.Rules = ji.Rules()):
    """CD-T of MiniLM's final hidden states into the part due to the token positions in `source_mask` (at
    `embed`) and the rest. **Returns:** `(rel, irr)`, each `[seq, d_model]`."""
    return ji.cd(model, ji.Site("embed", source_mask), rules=rules)(tokens, attention_mask=attention)


def decompose_official(model, tokens, attention, source_mask):
    """`decompose` with the official BERT CD-T rules (sign normalisation, the published bias split)."""
    return decompose(model, tokens, attention, source_mask, OFFICIAL_RULES)


def decompose_heads(model, tokens, attention, masks):
    """The part of MiniLM's final hidden states due to the heads selected by `masks` (`[layers, heads, 1]`, one
    site per layer on `blocks.L.attn.z`). **Returns:** `rel`, `[seq, d_model]`."""
    sources = [ji.Site(f"blocks.{layer}.attn.z", masks[layer]) for layer in range(masks.shape[0])]
    return ji.cd(model, sources)(tokens, attention_mask=attention)[0]


def decompose_heads_by_layer(model, tokens, attention, head_masks):
    """The same sweep as `decompose_heads` over all heads, as `jaxinterp.cd_sweep` does it: one stack of sources
    per layer, each starting at its layer, the relevant part alone carried (`docs/cd.md#sweeps`).

    **Arguments:** `head_masks`: `[heads, heads, 1]`, one mask per head of a layer (as `jaxinterp.every_head`).

    **Returns:** `[layers * heads, seq, d_model]`, ordered as the one-hot masks of `decompose_heads`.
    """
    stacks = [ji.SourceStack.at(f"blocks.{layer}.attn.z", head_masks) for layer in range(model.cfg.n_layers)]
    return ji.cd_sweep(model, stacks)(tokens, attention_mask=attention).rel


def sweep_with_map(batch_size: int) -> Callable:
    """All head masks swept with `jax.lax.map` in batches of `batch_size`."""

    def sweep(model, tokens, attention, masks):
        return jax.lax.map(lambda m: decompose_heads(model, tokens, attention, m), masks, batch_size=batch_size)

    return sweep


# ------------------------------------------------------------------------------------------------- measuring
def _resident_bytes() -> int | None:
    """The process's current resident set size, from /proc (None where unavailable)."""
    try:
        pages = int(pathlib.Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _release_free_heap() -> None:
    """Return the heap memory freed so far to the system (glibc `malloc_trim`; nothing elsewhere), so that the
    next call's allocations show as resident-set growth instead of reusing pages freed by compilation."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_probe(kind: str, batch: int, seq_len: int, calls: int = 3) -> dict[str, float] | None:
    """Resident-set growth during one call of `kind` (`"forward"` or `"cd"`) on a batch, in this process.

    The function is compiled and called once; then `calls` times: freed heap memory is returned to the system and
    the resident set is sampled every half millisecond during one call. **Returns:** `{"before_mb", "delta_mb"}`
    (the largest growth over the calls), or None without /proc.
    """
    if _resident_bytes() is None:
        return None
    config = dataclasses.replace(FULL, batch=batch, seq_len=seq_len)
    model, ids, attention, _, _ = load_inputs(config)
    if kind == "forward":
        fn, args = jax.vmap(forward, in_axes=(None, 0, 0)), (model, ids, attention)
    else:
        fn, args = jax.vmap(decompose, in_axes=(None, 0, 0, 0)), (model, ids, attention, source_masks(config))
    compiled = eqx.filter_jit(fn).lower(*args).compile()
    jax.block_until_ready(compiled(*args))
    deltas, befores = [], []
    for _ in range(calls):
        _release_free_heap()
        before = _resident_bytes()
        peak = [before]
        running = threading.Event()
        running.set()

        def sample(peak=peak, running=running):
            while running.is_set():
                peak[0] = max(peak[0], _resident_bytes())
                time.sleep(0.0005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = jax.block_until_ready(compiled(*args))
        running.clear()
        sampler.join()
        del out
        deltas.append(peak[0] - before)
        befores.append(before)
    mb = 2.0**20
    return {"before_mb": min(befores) / mb, "delta_mb": max(deltas) / mb}


def rss_in_subprocess(kind: str, config: Config) -> dict[str, float] | None:
    """`rss_probe` run in a fresh Python process, so neither measurement sees the other's allocations."""
    code = (
        "import json; from experiments.benchmarks.cd_minilm import rss_probe; "
        f"print(json.dumps(rss_probe({kind!r}, {config.batch}, {config.seq_len})))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------- sections
def bench_decomposition(config: Config, model, ids, attention) -> dict:
    """Time, cost estimate and memory of the batched decomposition(s) against the batched forward."""
    masks = source_masks(config)
    fwd = compile_timed(jax.vmap(forward, in_axes=(None, 0, 0)), model, ids, attention)
    variants = {"cd": decompose}
    if config.official_rules:
        variants["cd_official_rules"] = decompose_official
    compiled = {
        name: compile_timed(jax.vmap(fn, in_axes=(None, 0, 0, 0)), model, ids, attention, masks)
        for name, fn in variants.items()
    }
    thunks = {"forward": blocking(fwd.call, model, ids, attention)}
    thunks |= {name: blocking(c.call, model, ids, attention, masks) for name, c in compiled.items()}
    times = interleaved_medians(thunks, config.repeats)
    plain = fwd.call(model, ids, attention)

    def describe(name, c):
        return {
            **times[name],
            "lower_s": c.lower_s,
            "compile_s": c.compile_s,
            **cost_stats(c.executable),
            "memory": memory_stats(c.executable),
        }

    out = {"forward": describe("forward", fwd)}
    base = out["forward"]
    for name, c in compiled.items():
        entry = describe(name, c)
        rel, irr = c.call(model, ids, attention, masks)
        entry |= {
            "over_forward_wall": entry["wall_s"] / base["wall_s"],
            "over_forward_cpu": entry["cpu_s"] / base["cpu_s"],
            "over_forward_gflops": entry["gflops"] / base["gflops"] if entry["gflops"] and base["gflops"] else None,
            "over_forward_bytes_accessed": entry["bytes_accessed_gb"] / base["bytes_accessed_gb"]
            if entry["bytes_accessed_gb"] and base["bytes_accessed_gb"]
            else None,
            "over_forward_activations_memory": entry["memory"]["activations_bytes"]
            / base["memory"]["activations_bytes"],
            "over_forward_total_memory": entry["memory"]["total_bytes"] / base["memory"]["total_bytes"],
            "max_abs_rel_plus_irr_minus_forward": float(jnp.max(jnp.abs(rel + irr - plain))),
        }
        out[name] = entry
    return out


def bench_head_sweep(config: Config, model, tokens, attention) -> dict:
    """The 72-head sweep on one sentence: sequential calls of one compiled single-mask function against one
    vmap, `lax.map` in batches and (when `config.per_layer_sweep`) `jaxinterp.cd_sweep`."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n = n_layers * n_heads
    masks = jnp.eye(n).reshape(n, n_layers, n_heads, 1)
    head_masks = jnp.eye(n_heads)[:, :, None]
    fwd = compile_timed(forward, model, tokens, attention)
    single = compile_timed(decompose_heads, model, tokens, attention, masks[0])
    variants = {"vmap": (jax.vmap(decompose_heads, in_axes=(None, None, None, 0)), masks)}
    variants |= {f"lax_map_{size}": (sweep_with_map(size), masks) for size in config.map_batch_sizes}
    if config.per_layer_sweep:
        variants["per_layer_vmap"] = (decompose_heads_by_layer, head_masks)
    compiled = {name: (compile_timed(fn, model, tokens, attention, m), m) for name, (fn, m) in variants.items()}

    def sequential():
        return jax.block_until_ready([single.call(model, tokens, attention, masks[h]) for h in range(n)])

    thunks = {"forward": blocking(fwd.call, model, tokens, attention), "sequential": sequential}
    thunks |= {name: blocking(c.call, model, tokens, attention, m) for name, (c, m) in compiled.items()}
    times = interleaved_medians(thunks, config.head_repeats)
    reference = np.stack(sequential())
    single_memory = memory_stats(single.executable)
    vmap_memory = memory_stats(compiled["vmap"][0].executable)
    return {
        "n_sources": n,
        "sentence_tokens": int(attention.sum()),
        "forward": times["forward"],
        "sequential": times["sequential"],
        "single_source_over_forward_wall": times["sequential"]["wall_s"] / n / times["forward"]["wall_s"],
        "single_compile_s": single.lower_s + single.compile_s,
        "variants": {
            name: {
                **times[name],
                "over_sequential_wall": times[name]["wall_s"] / times["sequential"]["wall_s"],
                "over_sequential_cpu": times[name]["cpu_s"] / times["sequential"]["cpu_s"],
                "compile_s": c.lower_s + c.compile_s,
                "max_abs_difference_from_sequential": float(
                    np.max(np.abs(np.asarray(c.call(model, tokens, attention, m)) - reference))
                ),
            }
            for name, (c, m) in compiled.items()
        },
        "max_abs_sequential": float(np.max(np.abs(reference))),
        "memory": {
            "single": single_memory,
            "vmap": vmap_memory,
            "vmap_activations_over_single": vmap_memory["activations_bytes"] / single_memory["activations_bytes"],
        },
    }


# ----------------------------------------------------------------------------------------------------- report
def summary_rows(record: dict) -> list[dict]:
    """The Markdown table's rows: the headline ratios with their absolute figures."""
    dec, heads, cfg = record["decomposition"], record["head_sweep"], record["config"]
    fwd = dec["forward"]
    size = f"{cfg['batch']} x {cfg['seq_len']} tokens"
    mib = 2.0**20

    def compile_note(entry):
        return f"trace+lower {entry['lower_s']:.1f} s, compile {entry['compile_s']:.1f} s"

    rows = [{"measure": f"forward, {size}", "value": f"{fwd['wall_s']:.3f} s", "note": compile_note(fwd)}]
    labels = {"cd": "CD-T (default rules)", "cd_official_rules": "CD-T (official BERT rules)"}
    for name in ("cd", "cd_official_rules"):
        if name not in dec:
            continue
        entry, label = dec[name], labels[name]
        rows += [
            {
                "measure": f"{label}, {size}, 3-token source",
                "value": f"{entry['wall_s']:.3f} s",
                "note": compile_note(entry),
            },
            {
                "measure": f"{label} / forward, wall time",
                "value": f"{entry['over_forward_wall']:.2f}x",
                "note": f"CPU time {entry['over_forward_cpu']:.2f}x",
            },
        ]
    cd = dec["cd"]
    if cd["over_forward_gflops"]:
        rows.append(
            {
                "measure": "CD-T / forward, XLA flop estimate",
                "value": f"{cd['over_forward_gflops']:.2f}x",
                "note": f"{cd['gflops']:.1f} / {fwd['gflops']:.1f} GFLOP",
            }
        )
    if cd["over_forward_bytes_accessed"]:
        rows.append(
            {
                "measure": "CD-T / forward, XLA memory-traffic estimate",
                "value": f"{cd['over_forward_bytes_accessed']:.2f}x",
                "note": f"{cd['bytes_accessed_gb']:.2f} / {fwd['bytes_accessed_gb']:.2f} GB",
            }
        )
    rows += [
        {
            "measure": "CD-T / forward, peak memory: outputs + temporaries (XLA)",
            "value": f"{cd['over_forward_activations_memory']:.2f}x",
            "note": f"{cd['memory']['activations_bytes'] / mib:.0f} / {fwd['memory']['activations_bytes'] / mib:.0f} MiB",
        },
        {
            "measure": "CD-T / forward, peak memory: + arguments (weights, inputs)",
            "value": f"{cd['over_forward_total_memory']:.2f}x",
            "note": f"{cd['memory']['total_bytes'] / mib:.0f} / {fwd['memory']['total_bytes'] / mib:.0f} MiB",
        },
    ]
    rss = record.get("rss")
    if rss and rss.get("forward") and rss.get("cd"):
        rows.append(
            {
                "measure": "CD-T / forward, process RSS growth during one call",
                "value": f"{rss['cd']['delta_mb'] / max(rss['forward']['delta_mb'], 1e-9):.2f}x",
                "note": f"{rss['cd']['delta_mb']:.0f} / {rss['forward']['delta_mb']:.0f} MiB",
            }
        )
    n = heads["n_sources"]
    rows.append(
        {
            "measure": f"{n} heads, {n} sequential calls",
            "value": f"{heads['sequential']['wall_s']:.2f} s",
            "note": f"one source = {heads['single_source_over_forward_wall']:.1f}x a forward of the sentence",
        }
    )
    labels = {"vmap": "one vmap over all masks", "per_layer_vmap": "jaxinterp.cd_sweep, one stack per layer"}
    for name, entry in heads["variants"].items():
        label = labels.get(name, name.replace("lax_map_", "lax.map, batch "))
        rows.append(
            {
                "measure": f"{n} heads, {label} / sequential",
                "value": f"{entry['over_sequential_wall']:.2f}x",
                "note": f"{entry['wall_s']:.2f} s; CPU time {entry['over_sequential_cpu']:.2f}x; "
                f"compile {entry['compile_s']:.1f} s",
            }
        )
    return rows


def main(quick: bool = False, config: Config | None = None) -> dict:
    """Run the benchmark (`quick`: 4 sentences of 16 tokens, 2 repeats, fewer variants, no RSS probe).

    **Returns:** the record written to `results/benchmarks/cd_minilm.json`.
    """
    config = config or (QUICK if quick else FULL)
    started = time.time()
    model, ids, attention, sweep_tokens, sweep_attention = load_inputs(config)
    record = {
        "benchmark": NAME,
        "quick": quick,
        "config": dataclasses.asdict(config),
        "machine": machine_info(),
        "decomposition": bench_decomposition(config, model, ids, attention),
        "head_sweep": bench_head_sweep(config, model, sweep_tokens, sweep_attention),
        "rss": {kind: rss_in_subprocess(kind, config) for kind in ("forward", "cd")} if config.rss else None,
    }
    write_benchmark(NAME, record, summary_rows(record), started=started)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences of 16 tokens, 2 repeats (a smoke test)")
    main(quick=parser.parse_args().quick)
