"""Pointer networks (P40): an LSTM encoder-decoder whose attention points at its input, trained on small planar
point sets to output their convex hull, their Delaunay triangulation or a travelling-salesman tour, and tested on
larger sets than any it saw; exact match, hull area coverage, triangle coverage and tour-length ratio against the
exact answers (scipy's Qhull, Held-Karp) and a 2-opt / or-opt reference for large tours."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

import models
from experiments.record import results_dir, write_results
from jaxinterp import data
from jaxinterp.training import minibatches, train

from . import metrics
from .config import PointerNetworksConfig

SLUG = "pointer_networks"
RULES = {"hull": "hull", "delaunay": "triangles", "tsp": "tour"}
PAPER = {
    "claim": "Ptr-Nets trained on small point sets generalise to more points than trained on",
    "hull_area_coverage": "close to 100% of the true hull's area, also beyond the training sizes",
    "target_here": "convex-hull area coverage at 50 points at least 90% of that at the largest training size (20)",
}


def answer(task: str, points: np.ndarray, restarts: int) -> np.ndarray:
    """The exact answer as pointer slots (point `i` is slot `i + 1`), ended by the end slot 0; `restarts` of the tour
    search above 10 points."""
    if task == "hull":
        indices = data.convex_hull(points)
    elif task == "delaunay":
        indices = data.delaunay_triangles(points).ravel()
    else:
        indices = data.reference_tour(points, restarts=restarts)
    return np.concatenate([indices + 1, [metrics.END]])


def max_steps(task: str, n: int) -> int:
    """The longest answer for `n` points, end included (a triangulation has at most `2n - 5` triangles)."""
    return 3 * (2 * n - 5) + 1 if task == "delaunay" else n + 1


def make_set(task: str, sizes: np.ndarray, seed: int, restarts: int, desc: str) -> tuple[dict, list]:
    """Point sets of the given sizes (padded to the largest with zeros) and their answers (padded with 0)."""
    rng = np.random.default_rng(seed)
    width, steps = int(sizes.max()), max_steps(task, int(sizes.max()))
    points = np.zeros((len(sizes), width, 2), np.float32)
    targets = np.zeros((len(sizes), steps), np.int32)
    lengths = np.zeros(len(sizes), np.int32)
    answers = []
    for k, n in enumerate(tqdm(sizes, desc=desc, leave=False)):
        p = rng.uniform(size=(n, 2))
        slots = answer(task, p, restarts)
        points[k, :n], targets[k, : len(slots)], lengths[k] = p, slots, len(slots)
        answers.append(slots[:-1] - 1)
    return {"points": points, "num_points": sizes.astype(np.int32), "targets": targets, "lengths": lengths}, answers


def loss_fn(model, batch, key):
    """Mean cross-entropy of the exact answer's slots, over the steps up to and including the end."""
    logits = jax.vmap(model)(batch["points"], batch["num_points"], batch["targets"])
    log_p = jnp.take_along_axis(jax.nn.log_softmax(logits), batch["targets"][..., None], axis=-1)[..., 0]
    mask = jnp.arange(batch["targets"].shape[1]) < batch["lengths"][:, None]
    loss = -jnp.sum(jnp.where(mask, log_p, 0.0)) / jnp.sum(mask)
    return loss, {"step_accuracy": jnp.sum(mask & (jnp.argmax(logits, -1) == batch["targets"])) / jnp.sum(mask)}


@eqx.filter_jit
def decode(model, points, steps):
    return jax.vmap(lambda p: model.decode(p, p.shape[0], steps))(points)


def evaluate(task: str, model, n: int, config: PointerNetworksConfig, seed: int) -> tuple[dict, dict]:
    """Scores of greedy decoding on `test_examples` fresh sets of `n` points. **Returns:** `(summary, example)`."""
    test, answers = make_set(task, np.full(config.test_examples, n), seed, config.tsp_restarts, f"{task} test n={n}")
    slots = np.asarray(decode(model, jnp.asarray(test["points"]), max_steps(task, n)))
    points = test["points"].astype(np.float64)
    valid = [metrics.is_valid_sequence(s, n, RULES[task]) for s in slots]
    if task == "hull":
        scores = [metrics.hull_scores(p, s, t) for p, s, t in zip(points, slots, answers)]
        areas = np.array([s["area"] for s in scores])
        summary = {
            "exact_match": float(np.mean([s["exact"] for s in scores])),
            "simple_polygon": float(np.mean([s["valid"] for s in scores])),
            "area_coverage": float(np.nanmean(areas)) if np.any(np.isfinite(areas)) else 0.0,
            "area_coverage_failures_as_zero": float(np.mean(np.nan_to_num(areas))),
        }
    elif task == "delaunay":
        scores = [metrics.triangle_scores(s, t.reshape(-1, 3)) for s, t in zip(slots, answers)]
        summary = {
            "exact_match": float(np.mean([s["exact"] for s in scores])),
            "triangle_coverage": float(np.mean([s["coverage"] for s in scores])),
        }
    else:
        scores = [metrics.tour_scores(p, s, t) for p, s, t in zip(points, slots, answers)]
        ratios = np.array([s["length_ratio"] for s in scores])
        reference = np.mean([data.tour_length(p, t) for p, t in zip(points, answers)])
        summary = {
            "exact_match": float(np.mean([s["exact"] for s in scores])),
            "tour_length_ratio": float(np.nanmean(ratios)),
            "mean_tour_length": float(np.nanmean(ratios * [data.tour_length(p, t) for p, t in zip(points, answers)])),
            "mean_reference_length": float(reference),
            "reference": "Held-Karp optimum" if n <= 10 else "best of 2-opt / or-opt searches",
        }
    summary["valid_sequences"] = float(np.mean(valid))
    example = {"points": points[0], "truth": answers[0], "predicted": metrics.points_of(slots[0])}
    return summary, example


def run_task(task: str, config: PointerNetworksConfig, key) -> tuple[dict, dict]:
    low, high = {t: (a, b) for t, a, b in config.train_sizes}[task]
    task_seed = [config.seed, list(RULES).index(task)]
    rng = np.random.default_rng(task_seed)
    steps = dict(config.steps)[task]
    sizes = rng.integers(low, high + 1, config.tsp_train_examples if task == "tsp" else config.train_examples)
    train_set, _ = make_set(task, sizes, rng.integers(2**31), config.tsp_restarts, f"{task} training sets")
    model_key, batch_key, train_key = jr.split(jr.fold_in(key, list(RULES).index(task)), 3)
    model = models.PointerNetwork(RULES[task], config.hidden_size, key=model_key)
    schedule = optax.cosine_decay_schedule(config.learning_rate, steps, alpha=0.1)
    optimiser = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))
    model, history = train(
        model, loss_fn, minibatches(train_set, config.batch_size, key=batch_key), optimiser, steps=steps,
        key=train_key, has_aux=True, description=f"{task} training",
    )  # fmt: skip
    out = {
        "train_sizes": [low, high],
        "final_loss": float(np.mean(history["loss"][-50:])),
        "final_step_accuracy": float(np.mean(history["step_accuracy"][-50:])),
        "train_time_s": history["wall_time_s"],
        "loss_curve": history["loss"][:: max(1, steps // 100)].tolist(),
    }
    examples = {}
    for n in dict(config.test_sizes)[task]:
        out[f"n={n}"], examples[n] = evaluate(task, model, n, config, rng.integers(2**31))
    return out, examples


def plot(path, examples: dict) -> None:
    """One decoded example per problem at its largest test size, beside the exact answer."""
    fig, axes = plt.subplots(1, len(examples), figsize=(4.2 * len(examples), 4.2), squeeze=False)
    for ax, (task, by_size) in zip(axes[0], examples.items()):
        n = max(by_size)
        ex = by_size[n]
        p = ex["points"]
        ax.scatter(p[:, 0], p[:, 1], s=10, c="k", zorder=3)
        if task == "delaunay":
            for t in ex["truth"].reshape(-1, 3):
                ax.fill(*p[t].T, fc="none", ec="0.75", lw=2.5)
            pred = ex["predicted"][: len(ex["predicted"]) // 3 * 3].reshape(-1, 3)
            for t in pred:
                ax.fill(*p[t].T, fc="none", ec="C3", lw=1)
        else:
            for order, style in ((ex["truth"], dict(c="0.75", lw=3.5)), (ex["predicted"], dict(c="C3", lw=1.2))):
                if len(order):
                    closed = np.concatenate([order, order[:1]])
                    ax.plot(p[closed, 0], p[closed, 1], **style)
        ax.set_title(f"{task}, n = {n} (grey: exact, red: Ptr-Net)")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config: PointerNetworksConfig) -> dict:
    """Train one pointer network per problem on small sets, test on larger ones, write the results."""
    started = time.time()
    key = jr.key(config.seed)
    results, examples, table = {}, {}, []
    for task in config.tasks:
        results[task], examples[task] = run_task(task, config, key)
        for n in dict(config.test_sizes)[task]:
            row = {"problem": task, "train n": "{}-{}".format(*results[task]["train_sizes"]), "test n": n}
            scores = results[task][f"n={n}"]
            row.update({k: v for k, v in scores.items() if isinstance(v, float)})
            table.append(row)
    if "hull" in results:
        hull = results["hull"]
        largest_train = hull["train_sizes"][1]
        sizes = dict(config.test_sizes)["hull"]
        base = min(sizes, key=lambda n: abs(n - largest_train))
        kept = hull[f"n={max(sizes)}"]["area_coverage"] / max(hull[f"n={base}"]["area_coverage"], 1e-12)
        results["hull_coverage_kept"] = {
            "at_n": max(sizes),
            "relative_to_n": base,
            "ratio": kept,
            "absolute_at_largest": hull[f"n={max(sizes)}"]["area_coverage"],
        }
        results["target_met"] = bool(kept >= 0.9)
    plot(results_dir(SLUG) / "examples.png", examples)
    write_results(SLUG, config, results, started=started, table=table, paper=PAPER)
    return results
