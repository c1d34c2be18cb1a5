"""Perforated backpropagation (P29): test accuracy against parameter count on MNIST and Fashion-MNIST, for
ordinary one-hidden-layer MLPs of several widths and for narrow MLPs that grow dendrite nodes in rounds (each node
trained to correlate with its neuron's remaining error, then frozen while the neurons retrain)."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

import models
from experiments.record import results_dir, write_results
from jaxinterp import data as datasets
from jaxinterp import learning
from jaxinterp.training import minibatches, train

from .config import PerforatedBackpropConfig

SLUG = "perforated_backprop"
_LOADERS = {"mnist": datasets.mnist, "fashion_mnist": datasets.fashion_mnist}
_TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
PAPER = {
    "claim": "dendrite nodes raise the accuracy of the same architecture, and let a smaller network match a larger "
    "one's accuracy (significant compression without a loss of accuracy)",
    "follow_up_claim": "up to 90% compression without a loss of accuracy, or up to 16% higher accuracy "
    "(Brenner et al., arXiv:2506.00356)",
}


def load(name: str) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """`((train images, labels), (test images, labels))` of a data set, images flattened to `[n, 784]`."""
    if name not in _LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {', '.join(_LOADERS)}")
    out = []
    for split in ("train", "test"):
        images, labels = _LOADERS[name](split)
        out.append((jnp.asarray(images.reshape(len(images), -1)), jnp.asarray(labels)))
    return tuple(out)


def cross_entropy(model, batch, key):
    """The mean softmax cross-entropy of `model` on `(images, labels)`."""
    images, labels = batch
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(jax.vmap(model)(images), labels))


@eqx.filter_jit
def accuracy(model, images, labels) -> jax.Array:
    """The fraction of `images` whose largest logit is at their label."""
    return jnp.mean(jnp.argmax(jax.vmap(model)(images), axis=-1) == labels)


def parameter_count(model) -> int:
    """The number of floating-point numbers in `model`: every weight, bias, dendrite weight and output weight."""
    return int(sum(leaf.size for leaf in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))))


def run_baseline(config: PerforatedBackpropConfig, train_data, test_data, width: int, key) -> dict:
    init_key, batch_key, train_key = jr.split(key, 3)
    model = models.MLP(train_data[0].shape[1], [width], 10, key=init_key)
    model, history = train(
        model, cross_entropy, minibatches(train_data, config.batch_size, key=batch_key),
        optax.adam(config.learning_rate), steps=config.neuron_steps * (config.rounds + 1), key=train_key,
        description=f"baseline, width {width}",
    )  # fmt: skip
    return {
        "width": width,
        "parameters": parameter_count(model),
        "test_accuracy": float(accuracy(model, *test_data)),
        "final_train_loss": float(history["loss"][-1]),
        "wall_time_s": history["wall_time_s"],
    }


def run_perforated(config: PerforatedBackpropConfig, train_data, test_data, width: int, key) -> dict:
    init_key, batch_key, train_key = jr.split(key, 3)
    model = models.PerforatedMLP(train_data[0].shape[1], [width], 10, key=init_key)
    _, phases = learning.perforated_training(
        model, cross_entropy, minibatches(train_data, config.batch_size, key=batch_key),
        optax.adam(config.learning_rate), rounds=config.rounds, neuron_steps=config.neuron_steps,
        dendrite_steps=config.dendrite_steps, key=train_key,
        dendrite_optimiser=optax.adam(config.dendrite_learning_rate),
        evaluate=lambda trained: {
            "parameters": parameter_count(trained), "test_accuracy": float(accuracy(trained, *test_data)),
        },
    )  # fmt: skip
    neuron_phases = [phase for phase in phases if phase["phase"] == "neurons"]
    dendrite_phases = {phase["round"]: phase for phase in phases if phase["phase"] == "dendrites"}
    rounds = [
        {
            "width": width,
            "round": phase["round"],
            "parameters": phase["parameters"],
            "test_accuracy": phase["test_accuracy"],
            "final_train_loss": phase["final_loss"],
            "dendrite_correlation_start": dendrite_phases.get(phase["round"], {}).get("correlation_start"),
            "dendrite_correlation_end": dendrite_phases.get(phase["round"], {}).get("correlation_end"),
        }
        for phase in neuron_phases
    ]
    return {"width": width, "rounds": rounds, "phases": phases}


def compare_with_baselines(point: dict, baselines: list[dict]) -> dict:
    """For one perforated network: the best baseline with at most its parameters, the accuracy difference to it,
    and the smallest baseline at least as accurate (the parameters it needs)."""
    cheaper = [b for b in baselines if b["parameters"] <= point["parameters"]]
    best_cheaper = max(cheaper, key=lambda b: b["test_accuracy"]) if cheaper else None
    as_good = [b for b in baselines if b["test_accuracy"] >= point["test_accuracy"]]
    smallest_as_good = min(as_good, key=lambda b: b["parameters"]) if as_good else None
    return {
        "best_baseline_at_most_parameters": None if best_cheaper is None else best_cheaper["width"],
        "accuracy_minus_that_baseline": None
        if best_cheaper is None
        else point["test_accuracy"] - best_cheaper["test_accuracy"],
        "smallest_baseline_as_accurate": None if smallest_as_good is None else smallest_as_good["width"],
        "parameters_of_that_baseline": None if smallest_as_good is None else smallest_as_good["parameters"],
    }


def plot(path, results: dict) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 3.8), squeeze=False)
    for ax, (name, result) in zip(axes[0], results.items()):
        baselines = result["baselines"]
        ax.plot(
            [b["parameters"] for b in baselines], [b["test_accuracy"] for b in baselines], "o-", color="k",
            label="MLP baseline",
        )  # fmt: skip
        for b in baselines:
            ax.annotate(str(b["width"]), (b["parameters"], b["test_accuracy"]), fontsize=7, xytext=(3, -9),
                        textcoords="offset points")  # fmt: skip
        for k, run in enumerate(result["perforated"]):
            rounds = run["rounds"]
            ax.plot(
                [r["parameters"] for r in rounds], [r["test_accuracy"] for r in rounds], "s--", color=f"C{k}",
                label=f"perforated, width {run['width']}",
            )  # fmt: skip
            for r in rounds:
                ax.annotate(f"r{r['round']}", (r["parameters"], r["test_accuracy"]), fontsize=7, color=f"C{k}",
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("test accuracy")
        ax.set_title(_TITLES[name])
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: PerforatedBackpropConfig) -> dict:
    """Train the baselines and the perforated networks on each data set; writes `results/perforated_backprop/`."""
    started = time.time()
    results, table = {}, []
    for d, name in enumerate(config.datasets):
        train_data, test_data = load(name)
        key = jr.fold_in(jr.key(config.seed), d)
        baselines = [
            run_baseline(config, train_data, test_data, width, jr.fold_in(jr.fold_in(key, 0), width))
            for width in config.baseline_widths
        ]
        perforated = [
            run_perforated(config, train_data, test_data, width, jr.fold_in(jr.fold_in(key, 1), width))
            for width in config.perforated_widths
        ]
        for run in perforated:
            for point in run["rounds"]:
                point |= compare_with_baselines(point, baselines)
        results[name] = {"baselines": baselines, "perforated": perforated}
        for b in baselines:
            table.append({
                "data": _TITLES[name], "model": f"MLP, width {b['width']}", "parameters": b["parameters"],
                "test accuracy": b["test_accuracy"],
            })  # fmt: skip
        for run in perforated:
            for point in run["rounds"]:
                difference = point["accuracy_minus_that_baseline"]
                table.append({
                    "data": _TITLES[name], "model": f"perforated, width {run['width']}, {point['round']} rounds",
                    "parameters": point["parameters"], "test accuracy": point["test_accuracy"],
                    "vs best baseline with no more parameters": "" if difference is None
                    else f"{difference:+.4f} (width {point['best_baseline_at_most_parameters']})",
                    "dendrite correlation (start -> end)": "" if point["dendrite_correlation_end"] is None
                    else f"{point['dendrite_correlation_start']:.3f} -> {point['dendrite_correlation_end']:.3f}",
                })  # fmt: skip
    grown = [
        point
        for result in results.values()
        for run in result["perforated"]
        for point in run["rounds"]
        if point["round"] > 0 and point["accuracy_minus_that_baseline"] is not None
    ]
    summary = {
        "perforated_points_beating_every_baseline_with_no_more_parameters": sum(
            point["accuracy_minus_that_baseline"] > 0 for point in grown
        ),
        "perforated_points_with_dendrites": len(grown),
        "mean_accuracy_minus_best_baseline_with_no_more_parameters": float(
            np.mean([point["accuracy_minus_that_baseline"] for point in grown])
        )
        if grown
        else None,
    }
    plot(results_dir(SLUG) / "accuracy_vs_parameters.png", results)
    write_results(SLUG, config, {**results, "summary": summary}, started=started, table=table, paper=PAPER)
    return {**results, "summary": summary}
