"""Local attributions on fine-tuned MiniLM classifiers (paper P1, local half): CD-T word scores beside hierarchical
CD-T, KernelSHAP, LIME, integrated gradients and occlusion, judged by deletion and insertion AOPC on held-out texts
of SST-2 and AG News at equal model-evaluation budgets, with wall time; and the phrases CD-T finds most for and
against each class across the held-out set."""

import time

import jax
import numpy as np
from tqdm.auto import tqdm

from experiments.record import markdown_table, results_dir, write_results
from jaxinterp import attribution
from models import text_classifiers

from .config import LocalAttributionConfig

SLUG = "cdt_local_attribution"
PAPER = {
    "claim": (
        "P1 (arXiv v1) shows CD-T word and phrase attributions on SST-2 and AG News that contrast the classes, and a "
        "human study in which CD-T let people pick the more accurate of two models and trust outputs more than SHAP "
        "and LIME; it reports no AOPC. The human study is not replicated here; faithfulness is measured instead."
    ),
}
MINING_TEXTS = {"sst2": 872, "agnews": 300}


def held_out_texts(task: str, tokenizer, n: int, seed: int, max_tokens: int) -> tuple[list, np.ndarray, list[str]]:
    """`n` held-out texts of `task` (seeded choice) as `attribution.Text`s, with their labels and raw strings."""
    _, (texts, labels) = text_classifiers.task_data(task)
    chosen = np.random.default_rng(seed).permutation(len(texts))[:n]
    raw = [texts[i] for i in chosen]
    prepared = [attribution.Text.from_encoding(e, max_tokens=max_tokens) for e in tokenizer.encode_batch(raw)]
    return prepared, np.asarray(labels)[chosen], raw


MATCHED = "@cd"
"""Suffix of a method run at CD-T's budget: as many samples as the text has words (CD-T's decompositions)."""


def variants(config: LocalAttributionConfig) -> list[str]:
    """The rows of the comparison: every method of `config`, then each of `config.matched_methods` at CD-T's
    budget (named `method@cd`)."""
    return [*config.methods, *(m + MATCHED for m in config.matched_methods)]


def display_name(variant: str) -> str:
    """`"shap@cd"` -> `"KernelSHAP at CD-T's budget"`."""
    method = variant.removesuffix(MATCHED)
    name = attribution.METHOD_NAMES[method]
    return f"{name} at CD-T's budget" if variant.endswith(MATCHED) else name


def _run(classifier, text, variant: str, config: LocalAttributionConfig, key):
    method = variant.removesuffix(MATCHED)
    budget = text.n_features if variant.endswith(MATCHED) else config.budget
    return attribution.attribute(classifier, text, method, key=key, budget=budget, removal=config.removal)


def compare_methods(classifier, texts: list, config: LocalAttributionConfig, key) -> dict:
    """Every method on every text: AOPC of the deletion and insertion curves, evaluations, seconds.

    Each method first runs once, untimed, on one text of every shape it compiles for among `texts`: the padded width
    and feature count, and for KernelSHAP, LIME and occlusion also the feature count (their sampling, fitting or
    batch depends on it), so the timed runs measure the work, not compilation.

    **Returns:** `{variant: {"aopc_deletion": [...], "aopc_insertion": [...], "seconds": [...], "evaluations":
    [...], "deletion": mean curve, "insertion": mean curve, "scores": [per text]}}` over `variants(config)`.
    """
    for variant in variants(config):
        shapes = {}
        for text in texts:
            by_count = (text.n_features,) if variant.removesuffix(MATCHED) in ("shap", "lime", "occlusion") else ()
            shapes.setdefault((text.width, text.padded_features, *by_count), text)
        for text in tqdm(shapes.values(), desc=f"compiling {variant}", leave=False):
            _run(classifier, text, variant, config, key)
    fields = ("aopc_deletion", "aopc_insertion", "seconds", "evaluations", "scores", "deletion", "insertion")
    out = {variant: {field: [] for field in fields} for variant in variants(config)}
    for i, text in enumerate(tqdm(texts, desc="attributions", leave=False)):
        for variant in variants(config):
            result = _run(classifier, text, variant, config, jax.random.fold_in(key, i))
            curve = attribution.curves(classifier, text, result.scores, result.target, removal=config.removal)
            record = out[variant]
            record["aopc_deletion"].append(curve.aopc_deletion)
            record["aopc_insertion"].append(curve.aopc_insertion)
            record["seconds"].append(result.seconds)
            record["evaluations"].append(result.evaluations)
            record["scores"].append(result.scores.tolist())
            record["deletion"].append(curve.deletion)
            record["insertion"].append(curve.insertion)
    for record in out.values():
        record["deletion"] = np.mean(record["deletion"], 0).tolist()
        record["insertion"] = np.mean(record["insertion"], 0).tolist()
    return out


def mine(classifier, texts: list, labels: np.ndarray, config: LocalAttributionConfig) -> dict:
    """CD-T scores of every phrase of up to `max_width` words toward each text's true class, mined per class."""
    scored = []
    for text, label in zip(tqdm(texts, desc="phrases", leave=False), labels):
        spans = attribution.attribute(classifier, text, "cd", target=int(label), max_width=config.max_width).spans
        scored.append((int(label), {" ".join(text.names[a:b]): s for (a, b), s in spans.items()}))
    return attribution.mine_phrases(scored, top=config.mining_top, min_count=config.mining_min_count)


def _bootstrap_interval(values: np.ndarray, seed: int, n: int = 2000) -> tuple[float, float]:
    generator = np.random.default_rng(seed)
    means = [np.mean(generator.choice(values, len(values))) for _ in range(n)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(task: str, comparison: dict, seed: int) -> list[dict]:
    """One table row per method."""
    rows = []
    for method, record in comparison.items():
        deletion = np.asarray(record["aopc_deletion"])
        low, high = _bootstrap_interval(deletion, seed)
        rows.append(
            {
                "task": task,
                "method": method,
                "AOPC deletion": float(deletion.mean()),
                "95% interval": f"{low:.3f}-{high:.3f}",
                "AOPC insertion": float(np.mean(record["aopc_insertion"])),
                "evaluations per text": float(np.mean(record["evaluations"])),
                "seconds per text (median)": float(np.median(record["seconds"])),
            }
        )
    return rows


def verdicts(rows: list[dict]) -> list[str]:
    """Plain statements of where CD-T's AOPC-deletion is or is not at least each baseline's, and at what time."""
    cd = next(r for r in rows if r["method"] == "cd")
    lines = []
    for row in rows:
        if row["method"] == "cd":
            continue
        better = cd["AOPC deletion"] >= row["AOPC deletion"]
        faster = cd["seconds per text (median)"] <= row["seconds per text (median)"]
        lines.append(
            f"{row['task']}: CD-T AOPC-deletion {cd['AOPC deletion']:.3f} is "
            f"{'at least' if better else 'below'} {row['method']}'s {row['AOPC deletion']:.3f}, at "
            f"{'equal or lower' if faster else 'higher'} wall time "
            f"({cd['seconds per text (median)']:.2f} s vs {row['seconds per text (median)']:.2f} s)"
        )
    return lines


def pictures(task: str, classifier, texts: list, raw: list[str], comparison: dict, config, out) -> dict:
    """The mean deletion and insertion curves (PNG), a heatmap table of the first texts x methods, and the first
    text's CD-T heatmap (HTML). **Returns:** the files written."""
    fractions = attribution.FRACTIONS
    files = {}
    for kind in ("deletion", "insertion"):
        path = out / f"{task}_{kind}.png"
        attribution.render.plot_curves(
            {display_name(m): r[kind] for m, r in comparison.items()},
            fractions,
            path,
            title=f"{task}: {kind} curves, mean over {len(texts)} held-out texts",
            ylabel="probability of the predicted class",
            xlabel=f"fraction of words {'removed' if kind == 'deletion' else 'inserted'} (most supportive first)",
        )
        files[kind] = path.name
    shown = min(config.picture_texts, len(texts))
    table = attribution.render.heatmap_table_html(
        [texts[i].names for i in range(shown)],
        {display_name(m): [r["scores"][i] for i in range(shown)] for m, r in comparison.items() if MATCHED not in m},
        title=f"{task}: word attributions by method (red supports the prediction, blue opposes it)",
    )
    files["table"] = attribution.render.write_html(out / f"{task}_methods.html", table).name
    first = comparison["cd"]["scores"][0] if "cd" in comparison else next(iter(comparison.values()))["scores"][0]
    page = attribution.render.heatmap_html(texts[0].names, first, title=f"CD-T, {task}", subtitle=raw[0])
    files["heatmap"] = attribution.render.write_html(out / f"{task}_cd.html", page).name
    return files


def main(config: LocalAttributionConfig) -> dict:
    """Run the comparison on every task of `config` and write `results/cdt_local_attribution/`.

    **Returns:** the metrics written to `results.json`.
    """
    started = time.time()
    out = results_dir(SLUG)
    key = jax.random.key(config.seed)
    metrics, rows, statements = {}, [], []
    for task in config.tasks:
        classifier, tokenizer, info = text_classifiers.text_classifier(task, config.classifiers)
        texts, _, raw = held_out_texts(task, tokenizer, config.n_texts, config.seed, config.max_tokens)
        comparison = compare_methods(classifier, texts, config, key)
        task_rows = summarise(task, comparison, config.seed)
        n_mining = min(MINING_TEXTS[task], config.mining_texts)
        mining_texts, mining_labels, _ = held_out_texts(task, tokenizer, n_mining, config.seed + 1, config.max_tokens)
        mined = mine(classifier, mining_texts, mining_labels, config)
        names = text_classifiers.TASK_LABELS[task]
        metrics[task] = {
            "classifier": {
                k: info[k]
                for k in ("heldout_accuracy", "heldout_split", "trained_blocks", "frozen", "train_texts", "steps")
            },
            "methods": {m: {k: v for k, v in r.items() if k != "scores"} for m, r in comparison.items()},
            "table": task_rows,
            "verdicts": verdicts(task_rows),
            "phrases": {names[c]: lists for c, lists in mined.items()},
            "mining_texts": n_mining,
            "files": pictures(task, classifier, texts, raw, comparison, config, out),
        }
        rows += task_rows
        statements += metrics[task]["verdicts"]
        print(f"\n{task}: held-out accuracy {info['heldout_accuracy']:.4f} ({info['heldout_split']})")
        print(markdown_table(task_rows))
        for label, lists in metrics[task]["phrases"].items():
            print(f"  {label}: for  " + ", ".join(f"{p} ({s:+.2f})" for p, s, _ in lists["positive"][:6]))
            print(f"  {label}: against  " + ", ".join(f"{p} ({s:+.2f})" for p, s, _ in lists["negative"][:6]))
    print("\n".join(statements))
    write_results(SLUG, config, metrics, started=started, table=rows, paper=PAPER)
    print(f"\nWrote {out / 'results.json'}")
    return metrics
