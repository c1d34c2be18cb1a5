"""Decoding every MLP neuron of SmolLM2-135M through the final norm and the unembedding (P39, `jaxinterp.neurons`),
timed against this CPU's matrix-product throughput.

The work is one matrix product, 46,080 neurons x 576 x 49,152 tokens x 2 = 2.6 TFLOP, and a top-10 and bottom-10
selection per neuron; no exact method avoids computing every logit. Sections, in one process:

1. **Matrix-product throughput.** XLA float32 and bfloat16 products of one chunk's shape (`[chunk, 576] @
   [576, 49152]`), a square float32 product (`2048^3`), and NumPy's BLAS on the chunk shape; best of `gemm_repeats`.
   The floor of the decoding is its FLOPs over the best float32 throughput; the products are measured again at
   the end, and the best of both counts.
2. **Chunk size.** `decode_neurons` on a subset of layers at several chunk sizes and at the default memory budget.
3. **Every neuron.** `decode_neurons(model, k=10)` (30 x 1,536 neurons, top 10 and bottom 10), compiled ahead of
   time (trace and lower, and XLA compile, reported apart), then one warm-up call and the median of `repeats`.
4. **bfloat16.** The subset decoded with bfloat16 operands (float32 accumulation): its time, and how often its
   top-10 and bottom-10 lists equal float32's.
5. **Dense check.** A few neurons of the full run against `neuron_logits` and `lax.top_k` of their full logits.
6. **Clamping on real prompts.** P39's concepts (" dog", " California"): the neuron that lists the token first
   (`search_token`), clamped at the last token of real prompts (`clamp_effect`), with the shift of probability mass
   toward its top-10 tokens and the KL divergence.

Run `python -m experiments.benchmarks.neuron_decoding [--quick]`; writes `results/benchmarks/neuron_decoding.json`
and `neuron_decoding.md` and prints the table.
"""

import argparse
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

import models
from experiments.benchmarks.timing import blocking, compile_timed, interleaved_medians, machine_info
from experiments.record import write_benchmark
from jaxinterp import neurons

NAME = "neuron_decoding"
PROMPTS = (
    "My favourite animal is the",
    "When I got home from work, the first thing I saw was the",
    "The best place to spend a holiday is",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes and repeat counts of the benchmark.

    **Fields:**

    - `k`: top and bottom tokens per neuron.
    - `layers`: the layers of the "every neuron" section (None: all 30).
    - `subset_layers`: the layers of the chunk-size and bfloat16 sections.
    - `chunk_sizes`: the chunk sizes tried on the subset (besides the default memory budget's).
    - `repeats`, `subset_repeats`, `gemm_repeats`: timed repeats of the full decoding, of the subset decodings and
      of each matrix product.
    - `dense_checks`: neurons of the full run checked against their dense logits.
    - `concepts`, `prompts`, `clamp_values`: the clamping section.
    """

    k: int = 10
    layers: tuple[int, ...] | None = None
    subset_layers: tuple[int, ...] = (0, 29)
    chunk_sizes: tuple[int, ...] = (128, 256, 512, 1024)
    repeats: int = 2
    subset_repeats: int = 2
    gemm_repeats: int = 5
    dense_checks: int = 8
    concepts: tuple[str, ...] = (" dog", " California")
    prompts: tuple[str, ...] = PROMPTS
    clamp_values: tuple[float, ...] = (5.0, 10.0, 20.0)


FULL = Config()
QUICK = Config(
    layers=(29,), subset_layers=(29,), chunk_sizes=(256,), repeats=1, subset_repeats=1, gemm_repeats=2,
    dense_checks=3, concepts=(" dog",), prompts=PROMPTS[:1], clamp_values=(10.0,),
)  # fmt: skip


# ------------------------------------------------------------------------------------------------------ sections
def _best_seconds(thunk, repeats: int) -> float:
    thunk()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        thunk()
        times.append(time.perf_counter() - started)
    return min(times)


def gemm_throughput(chunk: int, d_model: int, vocab: int, repeats: int) -> dict:
    """GFLOP/s of float32 and bfloat16 products of one chunk's shape, of a square float32 product, and of NumPy."""
    a = jax.random.normal(jax.random.key(0), (chunk, d_model))
    b = jax.random.normal(jax.random.key(1), (d_model, vocab))
    square = jax.random.normal(jax.random.key(2), (2048, 2048))
    product = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.float32))
    flops = 2.0 * chunk * d_model * vocab
    cases = {
        "xla_float32_chunk": (flops, blocking(product, a, b)),
        "xla_bfloat16_chunk": (flops, blocking(product, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16))),
        "xla_float32_square_2048": (2.0 * 2048**3, blocking(product, square, square)),
    }
    a_np, b_np = np.asarray(a), np.asarray(b)
    cases["numpy_float32_chunk"] = (flops, lambda: a_np @ b_np)
    out = {}
    for name, (work, thunk) in cases.items():
        seconds = _best_seconds(thunk, repeats)
        out[name] = {"seconds": seconds, "gflops_per_s": work / seconds / 1e9}
    out["shape_chunk"] = [chunk, d_model, vocab]
    return out


def _decoder(**options):
    return lambda model: neurons.decode_neurons(model, **options)


def _agreement(a: neurons.Decoded, b: neurons.Decoded) -> dict:
    """How often two decodings of the same neurons list the same tokens."""

    def lists(x, y):
        x, y = np.asarray(x).reshape(-1, x.shape[-1]), np.asarray(y).reshape(-1, y.shape[-1])
        overlap = [len(set(p) & set(q)) / len(p) for p, q in zip(x.tolist(), y.tolist())]
        return {
            "same_first": float(np.mean(x[:, 0] == y[:, 0])),
            "same_list_in_order": float(np.mean(np.all(x == y, axis=1))),
            "same_set": float(np.mean([o == 1.0 for o in overlap])),
            "mean_overlap": float(np.mean(overlap)),
        }

    return {"top": lists(a.top_ids, b.top_ids), "bottom": lists(a.bottom_ids, b.bottom_ids)}


def bench_subset(config: Config, model) -> dict:
    """The chunk sizes and bfloat16 on `config.subset_layers`: times, and bfloat16's agreement with float32."""
    layers = config.subset_layers
    n = len(layers) * model.cfg.d_mlp
    default_chunk = neurons.chunk_size_for(n, model.cfg.vocab_size)
    variants = {f"chunk_{c}": dict(chunk_size=c) for c in config.chunk_sizes}
    variants[f"default_chunk_{default_chunk}"] = {}
    variants["bfloat16_default_chunk"] = dict(matmul_dtype=jnp.bfloat16)
    compiled = {
        name: compile_timed(_decoder(k=config.k, layers=layers, **options), model) for name, options in variants.items()
    }
    times = interleaved_medians({name: blocking(c.call, model) for name, c in compiled.items()}, config.subset_repeats)
    flops = 2.0 * n * model.cfg.d_model * model.cfg.vocab_size
    reference = compiled[f"default_chunk_{default_chunk}"].call(model)
    return {
        "layers": list(layers),
        "neurons": n,
        "gflop": flops / 1e9,
        "variants": {
            name: {
                **times[name],
                "gflops_per_s": flops / times[name]["wall_s"] / 1e9,
                "lower_s": c.lower_s,
                "compile_s": c.compile_s,
            }
            for name, c in compiled.items()
        },
        "bfloat16_agreement": _agreement(compiled["bfloat16_default_chunk"].call(model), reference),
    }


def bench_every_neuron(config: Config, model) -> tuple[dict, neurons.Decoded]:
    """All neurons of `config.layers`: ahead-of-time compile times, then the steady state."""
    layers = config.layers or tuple(range(model.cfg.n_layers))
    n = len(layers) * model.cfg.d_mlp
    compiled = compile_timed(_decoder(k=config.k, layers=layers), model)
    times = interleaved_medians({"decode": blocking(compiled.call, model)}, config.repeats)["decode"]
    flops = 2.0 * n * model.cfg.d_model * model.cfg.vocab_size
    record = {
        "layers": len(layers),
        "neurons": n,
        "k": config.k,
        "chunk": neurons.chunk_size_for(n, model.cfg.vocab_size),
        "memory_budget_bytes": neurons.DEFAULT_MEMORY_BYTES,
        "gflop": flops / 1e9,
        **times,
        "gflops_per_s": flops / times["wall_s"] / 1e9,
        "lower_s": compiled.lower_s,
        "compile_s": compiled.compile_s,
    }
    return record, compiled.call(model)


def dense_check(config: Config, model, decoded: neurons.Decoded) -> dict:
    """A few neurons of the decoding against `lax.top_k` of their full logits."""
    rng = np.random.default_rng(0)
    equal, worst = 0, 0.0
    for _ in range(config.dense_checks):
        at = int(rng.integers(len(decoded.layers)))
        neuron = int(rng.integers(model.cfg.d_mlp))
        logits = neurons.neuron_logits(model, decoded.layers[at], neuron)
        values, ids = jax.lax.top_k(logits, config.k)
        low, low_ids = jax.lax.top_k(-logits, config.k)
        same = bool(jnp.all(ids == decoded.top_ids[at, neuron])) and bool(
            jnp.all(low_ids == decoded.bottom_ids[at, neuron])
        )
        equal += same
        worst = max(
            worst,
            float(jnp.max(jnp.abs(values - decoded.top_logits[at, neuron]))),
            float(jnp.max(jnp.abs(-low - decoded.bottom_logits[at, neuron]))),
        )
    return {"neurons": config.dense_checks, "lists_equal": equal, "max_abs_logit_difference": worst}


def clamping(config: Config, model, tokenizer, decoded: neurons.Decoded) -> list[dict]:
    """For each concept token, the neuron listing it first, clamped at the last token of each prompt."""
    encoded = [tokenizer.encode(prompt).ids for prompt in config.prompts]
    length = max(len(ids) for ids in encoded)
    # right padding: in a causal model, the positions up to each prompt's last token do not see it
    padded = [jnp.asarray(ids + [0] * (length - len(ids)), jnp.int32) for ids in encoded]
    out = []
    for concept in config.concepts:
        (token,) = tokenizer.encode(concept).ids
        hits = neurons.search_token(decoded, token)
        if hits.layers.size == 0:
            hits = neurons.top_neurons_for_token(model, token, n=1, layers=decoded.layers, score="z")
        layer, neuron, rank = int(hits.layers[0]), int(hits.neurons[0]), int(hits.ranks[0])
        at = decoded.layers.index(layer)
        entry = {
            "concept": concept,
            "token": token,
            "layer": layer,
            "neuron": neuron,
            "rank_of_concept": rank,
            "neurons_listing_it": int(neurons.search_token(decoded, token).layers.size),
            "top_tokens": [tokenizer.decode([int(t)]) for t in decoded.top_ids[at, neuron]],
            "bottom_tokens": [tokenizer.decode([int(t)]) for t in decoded.bottom_ids[at, neuron]],
            "effects": [],
        }
        for value in config.clamp_values:
            rows = []
            for ids, tokens in zip(encoded, padded):
                last = len(ids) - 1
                effect = neurons.clamp_effect(model, tokens, layer, neuron, value, positions=last, k=config.k)
                rows.append([float(x[last]) for x in effect[2:]])
            mass, mass_clamped, top_shift, bottom_shift, kl = np.mean(rows, axis=0)
            entry["effects"].append(
                {
                    "value": value,
                    "top_mass": mass,
                    "top_mass_clamped": mass_clamped,
                    "top_shift_nats": top_shift,
                    "bottom_shift_nats": bottom_shift,
                    "kl_nats": kl,
                }
            )
        out.append(entry)
    return out


# ----------------------------------------------------------------------------------------------------- report
def summary_rows(record: dict) -> list[dict]:
    """The Markdown table's rows."""
    full, gemm, subset = record["every_neuron"], record["gemm"], record["subset"]
    best = record["floor"]
    rows = [
        {
            "measure": f"decode {full['neurons']:,} neurons, top {full['k']} and bottom {full['k']}, steady state",
            "value": f"{full['wall_s']:.2f} s",
            "note": f"{full['gflops_per_s']:.1f} GFLOP/s over {full['gflop']:.0f} GFLOP; chunk {full['chunk']}; "
            f"CPU time {full['cpu_s']:.1f} s",
        },
        {
            "measure": "compile (ahead of time)",
            "value": f"{full['lower_s'] + full['compile_s']:.2f} s",
            "note": f"trace+lower {full['lower_s']:.2f} s, XLA compile {full['compile_s']:.2f} s",
        },
        {
            "measure": "floor: FLOPs / best float32 matrix-product throughput",
            "value": f"{best['floor_s']:.2f} s",
            "note": f"{best['best_float32_gflops_per_s']:.1f} GFLOP/s ({best['best_float32']}); decoding at "
            f"{full['gflops_per_s'] / best['best_float32_gflops_per_s']:.0%} of it",
        },
    ]
    for name, entry in gemm.items():
        if isinstance(entry, dict):
            after = record["gemm_end"][name]["gflops_per_s"]
            rows.append(
                {
                    "measure": f"matrix product, {name.replace('_', ' ')}",
                    "value": f"{entry['gflops_per_s']:.1f} GFLOP/s",
                    "note": f"{after:.1f} GFLOP/s after the decodings",
                }
            )
    for name, entry in subset["variants"].items():
        rows.append(
            {
                "measure": f"subset ({subset['neurons']:,} neurons), {name.replace('_', ' ')}",
                "value": f"{entry['wall_s']:.2f} s",
                "note": f"{entry['gflops_per_s']:.1f} GFLOP/s",
            }
        )
    agreement = subset["bfloat16_agreement"]
    rows.append(
        {
            "measure": "bfloat16 vs float32: same top-10 list in order / same set / same first token",
            "value": f"{agreement['top']['same_list_in_order']:.1%} / {agreement['top']['same_set']:.1%} / "
            f"{agreement['top']['same_first']:.1%}",
            "note": f"bottom-10: {agreement['bottom']['same_list_in_order']:.1%} / "
            f"{agreement['bottom']['same_set']:.1%} / {agreement['bottom']['same_first']:.1%}",
        }
    )
    check = record["dense_check"]
    rows.append(
        {
            "measure": "dense check (neurons with equal top and bottom lists)",
            "value": f"{check['lists_equal']} / {check['neurons']}",
            "note": f"max logit difference {check['max_abs_logit_difference']:.1e}",
        }
    )
    for entry in record["clamping"]:
        for effect in entry["effects"]:
            rows.append(
                {
                    "measure": f"clamp the{entry['concept']!r} neuron (layer {entry['layer']}, {entry['neuron']}) to "
                    f"{effect['value']:g}, last token",
                    "value": f"top-10 mass {effect['top_mass']:.2%} -> {effect['top_mass_clamped']:.2%}",
                    "note": f"shift {effect['top_shift_nats']:+.2f} nats, KL {effect['kl_nats']:.2f} nats",
                }
            )
    return rows


def main(quick: bool = False, config: Config | None = None) -> dict:
    """Run the benchmark (`quick`: the last layer, one repeat, one concept and prompt: a smoke test).

    **Returns:** the record written to `results/benchmarks/neuron_decoding.json`.
    """
    config = config or (QUICK if quick else FULL)
    started = time.time()
    model, tokenizer = models.load("smollm2-135m")
    n = len(config.layers or range(model.cfg.n_layers)) * model.cfg.d_mlp
    chunk = neurons.chunk_size_for(n, model.cfg.vocab_size)
    record = {"benchmark": NAME, "quick": quick, "config": dataclasses.asdict(config), "machine": machine_info()}
    record["gemm"] = gemm_throughput(chunk, model.cfg.d_model, model.cfg.vocab_size, config.gemm_repeats)
    record["subset"] = bench_subset(config, model)
    record["every_neuron"], decoded = bench_every_neuron(config, model)
    # measured again after the decodings: on a shared machine the throughput drifts, and the floor takes the best
    record["gemm_end"] = gemm_throughput(chunk, model.cfg.d_model, model.cfg.vocab_size, config.gemm_repeats)
    float32 = {
        f"{name}{when}": entry["gflops_per_s"]
        for when, measured in (("", record["gemm"]), (" (after)", record["gemm_end"]))
        for name, entry in measured.items()
        if "float32" in name
    }
    best = max(float32, key=float32.get)
    record["floor"] = {
        "best_float32": best,
        "best_float32_gflops_per_s": float32[best],
        "floor_s": record["every_neuron"]["gflop"] / float32[best],
        "gflops_per_s_for_10_s": record["every_neuron"]["gflop"] / 10.0,
    }
    record["dense_check"] = dense_check(config, model, decoded)
    record["clamping"] = clamping(config, model, tokenizer, decoded)
    write_benchmark(NAME, record, summary_rows(record), started=started)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the last layer, one repeat, one concept (a smoke test)")
    main(quick=parser.parse_args().quick)
