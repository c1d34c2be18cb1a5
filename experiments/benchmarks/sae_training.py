"""SAE training from cached activations, `jaxinterp.features.train_sae` against SAELens, in one run.

1. **Activations.** SmolLM2-135M's residual stream after block `layer` (`blocks.L.resid_post`) over real text
   (SST-2 train sentences and AG News articles from `jaxinterp.data`, interleaved, each cut to `seq` tokens; the
   first token of each text is left out, its residual being an outlier of a much larger norm), captured with
   `jaxinterp.capture` in batches, written to `activations.npy`; the texts after the training texts are held out.
2. **Training, same inputs for both.** TopK SAEs (`d_sae`, `k` in {32, 64}, batch, float32, Adam at the same
   learning rate, SAELens's defaults otherwise: decoder rows initialised at norm 0.1 with the encoder their
   transpose, `rescale_acts_by_decoder_norm`, AuxK, gradient clipping at 1) trained on the same batches in the same
   order. SAELens (`sae_training_saelens.py`, its own trainer) runs under `--saelens PYTHON`, an environment with
   torch and sae-lens, first; then `train_sae`. Throughput is tokens per second over the steps after the first
   (which holds compilation for us, start-up for SAELens).
3. **Quality, one evaluation for both.** SAELens's SAE is read with `load_saelens`, and both are scored by
   `sae_metrics` on the held-out texts: explained variance and L0 on their activations, and the CE-loss score
   (the reconstruction spliced in at the site with `jaxinterp.intervene`, zero ablation as the reference) and KL
   score on the next-token predictions.

    python -m experiments.benchmarks.sae_training --saelens "$SAELENS_VENV"/bin/python [--quick]

Writes `results/benchmarks/sae_training.json` and `sae_training.md`.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from tqdm.auto import tqdm

import models
from experiments.benchmarks.timing import machine_info
from experiments.record import results_dir, write_benchmark
from jaxinterp import capture, data
from jaxinterp.features import SAEConfig, load_saelens, sae_metrics, train_sae

NAME = "sae_training"
HERE = pathlib.Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class Settings:
    layer: int = 6
    seq: int = 64
    train_texts: int = 480
    eval_texts: int = 24
    d_sae: int = 1536
    k: tuple[int, ...] = (32, 64)
    batch: int = 512
    steps: int = 300
    learning_rate: float = 3e-4
    seed: int = 0

    @classmethod
    def quick(cls) -> "Settings":
        return cls(train_texts=24, eval_texts=4, d_sae=256, k=(8,), batch=64, steps=12, seq=32)


def texts(count: int) -> list[str]:
    """SST-2 train sentences and AG News articles, alternately, the first `count` of them."""
    sst, _ = data.sst2("train")
    news, _ = data.ag_news()
    sst = [s for s in sst if len(s.split()) >= 12]
    out = []
    for a, b in zip(sst, news):
        out += [a, b]
    return out[:count]


def tokenise(tokenizer, chosen: list[str], seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `[texts, seq]` and a mask (False for padding and for each text's first token)."""
    tokens = np.zeros((len(chosen), seq), np.int32)
    mask = np.zeros((len(chosen), seq), bool)
    for row, text in enumerate(chosen):
        ids = tokenizer.encode(text).ids[:seq]
        tokens[row, : len(ids)] = ids
        mask[row, 1 : len(ids)] = True
    return tokens, mask


def cache_activations(model, site: str, tokens: np.ndarray, mask: np.ndarray, batch: int = 16) -> tuple:
    """The site's activations at the unmasked positions, float32 `[n, d_model]`, and tokens per second."""
    run = eqx.filter_jit(jax.vmap(lambda m, t: capture(m, site)(t)[1][site], in_axes=(None, 0)))
    chunks, started = [], time.perf_counter()
    for start in tqdm(range(0, len(tokens), batch), desc="activations", leave=False):
        part = tokens[start : start + batch]
        short = batch - len(part)
        values = np.asarray(run(model, jnp.asarray(np.pad(part, ((0, short), (0, 0))))))[: len(part)]
        chunks.append(values[mask[start : start + batch]])
    seconds = time.perf_counter() - started
    return np.concatenate(chunks).astype(np.float32), int(mask.sum()) / seconds


def run_saelens(python: str, folder: pathlib.Path) -> dict:
    command = [python, str(HERE / "sae_training_saelens.py"), "--folder", str(folder)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": ""})
    return json.loads((folder / "saelens.json").read_text())


def main(quick: bool = False, saelens_python: str | None = None) -> dict:
    """Run the benchmark. **Returns:** the record written."""
    started = time.time()
    settings = Settings.quick() if quick else Settings()
    record = {"benchmark": NAME, "quick": quick, "settings": dataclasses.asdict(settings), "machine": machine_info()}
    model, tokenizer = models.load_smollm2()
    site = f"blocks.{settings.layer}.resid_post"
    chosen = texts(settings.train_texts + settings.eval_texts)
    tokens, mask = tokenise(tokenizer, chosen, settings.seq)
    train_tokens, train_mask = tokens[: settings.train_texts], mask[: settings.train_texts]
    eval_tokens, eval_mask = tokens[settings.train_texts :], mask[settings.train_texts :]
    # caching needs the blocks up to the site only
    truncated = eqx.tree_at(lambda m: m.blocks, model, model.blocks[: settings.layer + 1])
    activations, cache_rate = cache_activations(truncated, site, train_tokens, train_mask)
    record["activations"] = {"site": site, "tokens": len(activations), "capture_tokens_per_s": cache_rate}
    order = np.random.default_rng(settings.seed).integers(0, len(activations), (settings.steps, settings.batch))
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        np.save(folder / "activations.npy", activations)
        np.save(folder / "order.npy", order)
        (folder / "settings.json").write_text(json.dumps(dataclasses.asdict(settings)))
        theirs = {}
        if saelens_python:
            print("training with SAELens (its own progress follows)", file=sys.stderr, flush=True)
            record["saelens"] = run_saelens(saelens_python, folder)
            theirs = {k: load_saelens(folder / f"saelens_k{k}")[0] for k in settings.k}
        record["runs"] = {}
        for k in settings.k:
            config = SAEConfig(
                activations.shape[1], settings.d_sae, "topk", k=k, batch_size=settings.batch,
                learning_rate=settings.learning_rate,
            )  # fmt: skip
            batches = (activations[index] for index in order)
            sae, history = train_sae(batches, config, key=jr.key(settings.seed), steps=settings.steps)
            steady = history["wall_time_s"] - history["first_step_s"]
            run = {
                "first_step_s": history["first_step_s"],
                "steady_tokens_per_s": (settings.steps - 1) * settings.batch / steady,
                "final_train_mse": float(history["mse_loss"][-10:].mean()),
            }
            scored = {"jaxinterp": sae} | ({"saelens": theirs[k]} if k in theirs else {})
            for name, trained in scored.items():
                metrics = sae_metrics(trained, model=model, site=site, tokens=eval_tokens, mask=eval_mask)
                run[name] = {key: value for key, value in metrics.items() if key != "feature_density"}
            if "saelens" in record:
                anchor = record["saelens"]["runs"][str(k)]
                run["speedup"] = run["steady_tokens_per_s"] / anchor["steady_tokens_per_s"]
            record["runs"][str(k)] = run
    write_benchmark(NAME, record, summary_rows(record), started=started)
    return record


def summary_rows(record: dict) -> list[dict]:
    rows = []
    for k, run in record["runs"].items():
        anchor = record.get("saelens", {}).get("runs", {}).get(k)
        ours, theirs = run["jaxinterp"], run.get("saelens")
        row = {
            "k": k,
            "jaxinterp tokens/s": f"{run['steady_tokens_per_s']:.0f}",
            "SAELens tokens/s": f"{anchor['steady_tokens_per_s']:.0f}" if anchor else "-",
            "speed-up": f"{run['speedup']:.2f}x" if anchor else "-",
            "L0 (ours / SAELens)": f"{ours['l0']:.1f} / {theirs['l0']:.1f}" if theirs else f"{ours['l0']:.1f}",
            "explained variance, % (ours / SAELens)": (
                f"{100 * ours['explained_variance']:.2f} / {100 * theirs['explained_variance']:.2f}"
                if theirs
                else f"{100 * ours['explained_variance']:.2f}"
            ),
            "CE-loss score, % (ours / SAELens)": (
                f"{100 * ours['ce_loss_score']:.2f} / {100 * theirs['ce_loss_score']:.2f}"
                if theirs
                else f"{100 * ours['ce_loss_score']:.2f}"
            ),
            "KL score, % (ours / SAELens)": (
                f"{100 * ours['kl_div_score']:.2f} / {100 * theirs['kl_div_score']:.2f}"
                if theirs
                else f"{100 * ours['kl_div_score']:.2f}"
            ),
        }
        rows.append(row)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes")
    parser.add_argument("--saelens", metavar="PYTHON", help="train with SAELens too, under this Python")
    options = parser.parse_args()
    main(options.quick, options.saelens)
    results_dir("benchmarks")
    sys.exit(0)
