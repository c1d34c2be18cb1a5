"""Multi-variate parallel attention (P38): train on a subset of a real multivariate problem's channels (UEA
BasicMotions and JapaneseVowels; the EEG problems EyesOpenShut and SelfRegulationSCP1), then test with the channels
permuted, with fewer of them, with half of them swapped for channels never seen and with unseen channels only; an
MVPFormer-style classifier beside a standard transformer over time patches."""

import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

from experiments.record import results_dir, write_results
from jaxinterp import data
from jaxinterp.training import minibatches, train
from models.mvpa import MVPFormer, PatchTransformer

from .config import MVPAConfig

SLUG = "mvpa"
MVPA = "MVPFormer (MVPA)"
STANDARD = "standard transformer"
MODELS = (MVPA, STANDARD)
SAME = "training channels"
SCENARIOS = (SAME, "permuted", "half of them", "half swapped for unseen", "unseen only")
PAPER = {
    "claim": "MVPA handles heterogeneous channel configurations and generalises across subjects; MVPFormer beats "
    "transformer baselines on SWEC, MAYO and FNUSA iEEG seizure detection and matches attention models on standard "
    "classification",
    "benchmarks": "SWEC iEEG (about 10,000 hours), MAYO, FNUSA; not available offline, not run here",
    "target_here": "MVPA more accurate than the standard transformer whenever the test channels differ from the "
    "training channels",
}


def channel_configurations(channels: int, train_fraction: float, rng: np.random.Generator) -> dict:
    """The training channels and each test configuration, as lists of channel indices: a random
    `ceil(train_fraction * channels)` channels for training (at least one left unseen), then those permuted, the
    first half of them, half of them replaced by unseen channels, and the unseen ones alone."""
    order = rng.permutation(channels)
    m = min(max(1, math.ceil(train_fraction * channels)), channels - 1)
    seen, unseen = list(order[:m]), list(order[m:])
    half = max(1, m // 2)
    swapped = list(seen)
    for slot, channel in zip(range(m - 1, -1, -1), unseen[: m - half]):
        swapped[slot] = channel
    permuted = list(seen)
    while m > 1 and permuted == seen:
        permuted = list(rng.permutation(seen))
    return {
        SAME: seen,
        "permuted": permuted,
        "half of them": seen[:half],
        "half swapped for unseen": swapped,
        "unseen only": unseen[:m],
    }


def slots(x: np.ndarray, chosen: list, width: int) -> np.ndarray:
    """The standard transformer's input: the chosen channels in its `width` slots, in order, missing slots zero."""
    out = np.zeros((x.shape[0], width, x.shape[2]), x.dtype)
    out[:, : len(chosen)] = x[:, chosen]
    return out


def loss(model, batch, key):
    """Mean cross-entropy of the batch `(series [n, channels, length], labels [n])`, with the accuracy."""
    x, y = batch
    logits = jax.vmap(model)(x)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y)), {
        "accuracy": jnp.mean(jnp.argmax(logits, -1) == y)
    }


@eqx.filter_jit
def _correct(model, x, y):
    return jnp.sum(jnp.argmax(jax.vmap(model)(x), -1) == y)


def accuracy(model, x: np.ndarray, y: np.ndarray, chunk: int = 128) -> float:
    """The fraction of series classified correctly."""
    hits = sum(int(_correct(model, jnp.asarray(x[i : i + chunk]), jnp.asarray(y[i : i + chunk])))
               for i in range(0, len(y), chunk))  # fmt: skip
    return hits / len(y)


def run_dataset(config: MVPAConfig, name: str, patch: int, bar) -> dict:
    """Every run's accuracies of both models on every channel configuration of one problem."""
    x_train, y_train, classes = data.uea(name, "train")
    x_test, y_test, _ = data.uea(name, "test")
    channels, length = x_train.shape[1:]
    optimiser = optax.adamw(config.learning_rate, weight_decay=config.weight_decay)
    per_run = []
    for r in range(config.runs):
        seed = config.seed + r
        configurations = channel_configurations(channels, config.train_fraction, np.random.default_rng(seed))
        seen = configurations[SAME]
        key = jax.random.key(seed)
        sizes = dict(d_model=config.d_model, n_heads=config.n_heads, depth=config.depth)
        built = {
            MVPA: MVPFormer(patch, len(classes), max_time_offset=length // patch, key=key, **sizes),
            STANDARD: PatchTransformer(len(seen), patch, len(classes), length // patch, key=key, **sizes),
        }
        result = {"channels": {k: [int(c) for c in v] for k, v in configurations.items()}}
        for model_name, model in built.items():
            batches = minibatches(
                (jnp.asarray(x_train[:, seen]), jnp.asarray(y_train)), config.batch_size, key=jax.random.fold_in(key, 1)
            )
            model, history = train(
                model, loss, batches, optimiser, steps=config.steps, key=jax.random.fold_in(key, 2), has_aux=True,
                description=f"{name} {model_name} run {r}",
            )  # fmt: skip
            scores = {}
            for scenario, chosen in configurations.items():
                x = x_test[:, chosen] if model_name == MVPA else slots(x_test, chosen, len(seen))
                scores[scenario] = accuracy(model, x, y_test)
            result[model_name] = {
                "accuracy": scores,
                "train_accuracy": float(np.mean(history["accuracy"][-20:])),
                "parameters": int(sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array)))),
                "train_s": history["wall_time_s"],
            }
            bar.update()
        per_run.append(result)
    summary = {
        model_name: {
            scenario: float(np.mean([run[model_name]["accuracy"][scenario] for run in per_run]))
            for scenario in SCENARIOS
        }
        for model_name in MODELS
    }
    return {
        "channels": int(channels), "length": int(length), "classes": len(classes), "train_size": len(y_train),
        "test_size": len(y_test), "chance": float(np.max(np.bincount(y_test)) / len(y_test)), "runs": per_run,
        "mean_accuracy": summary,
    }  # fmt: skip


def plot(path, results: dict) -> None:
    """Mean test accuracy per channel configuration, one panel per problem."""
    names = list(results["datasets"])
    figure, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.2), squeeze=False)
    width = 0.38
    for axis, name in zip(axes[0], names):
        summary = results["datasets"][name]["mean_accuracy"]
        for i, model_name in enumerate(MODELS):
            values = [summary[model_name][s] for s in SCENARIOS]
            axis.bar(np.arange(len(SCENARIOS)) + (i - 0.5) * width, values, width, label=model_name)
        axis.axhline(results["datasets"][name]["chance"], color="grey", lw=0.8, ls="--")
        axis.set_xticks(np.arange(len(SCENARIOS)), SCENARIOS, rotation=40, ha="right", fontsize=7)
        axis.set_title(name, fontsize=9)
        axis.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(config: MVPAConfig) -> dict:
    """Train both models on each problem's training channels and test them on every channel configuration; writes
    `results/mvpa/`."""
    started = time.time()
    unknown = sorted({name for name, _ in config.datasets} - set(data.UEA_PROBLEMS))
    if unknown:
        raise ValueError(f"unknown data sets {unknown}; expected some of {sorted(data.UEA_PROBLEMS)}")
    results = {"datasets": {}}
    with tqdm(total=len(config.datasets) * config.runs * len(MODELS), desc=SLUG) as bar:
        for name, patch in config.datasets:
            results["datasets"][name] = run_dataset(config, name, patch, bar)
    table, wins = [], []
    for name, result in results["datasets"].items():
        for scenario in SCENARIOS:
            mvpa, standard = (result["mean_accuracy"][m][scenario] for m in MODELS)
            if scenario != SAME:
                wins.append(mvpa > standard)
            table.append({"data": name, "test channels": scenario, MVPA: mvpa, STANDARD: standard,
                          "chance": result["chance"]})  # fmt: skip
    results["mvpa_wins"] = int(sum(wins))
    results["comparisons"] = len(wins)
    results["target_met"] = bool(all(wins))
    plot(results_dir(SLUG) / "accuracy_by_channels.png", results)
    write_results(SLUG, config, results, started=started, table=table, paper=PAPER)
    return results
