"""Few-shot continual learning with fast and slow weights (P35): a sequence of two-class tasks from the class pairs
of MNIST and Fashion-MNIST, each learned from a few examples per class, by fast/slow weights with the two-step
consolidation, by each step alone, by plain fine-tuning of one network and by joint training on every task seen so
far; the accuracy matrix, the forgetting of earlier tasks and the few-shot accuracy on each new task."""

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
from experiments.classifiers import LOADERS
from experiments.record import results_dir, write_results
from jaxinterp import learning
from jaxinterp.training import train

from .config import FastSlowWeightsConfig

SLUG = "fast_slow_weights"
FINE_TUNING = "fine-tuning"
FAST_SLOW = "fast/slow weights"
STEP_1_ONLY = "step 1 only (anchored fast weights, copied)"
STEP_2_ONLY = "step 2 only (plain fast weights, merged)"
JOINT = "joint training"
METHODS = (FINE_TUNING, FAST_SLOW, STEP_1_ONLY, STEP_2_ONLY, JOINT)
PAPER = {
    "claim_forgetting": "fast/slow weights learn the task sequence without (catastrophic) forgetting",
    "claim_joint": "average accuracy above joint training of all tasks ever seen",
    "claim_few_shot": "few-shot accuracy on new tasks improves along the sequence",
    "benchmarks": "CIFAR-100, CUB-200 and miniImageNet task sequences (not run here)",
    "target_here": "fast/slow forgetting at most half of fine-tuning's",
}


def _task_logits(model, images, classes):
    """Each example's two logits of its task's classes: `[n, 2]`."""
    logits = jax.vmap(model)(images)
    return jnp.take_along_axis(logits, classes, axis=1)


def task_loss(model, batch, key):
    """Mean cross-entropy over the batch `(images [n, 784], labels [n] in {0, 1}, classes [n, 2])`."""
    images, labels, classes = batch
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(_task_logits(model, images, classes), labels))


def example_loss(model, example):
    """The cross-entropy of one example `(image [784], label, classes [2])`."""
    image, label, classes = example
    logits = model(image)[classes]
    return optax.softmax_cross_entropy_with_integer_labels(logits, label)


@eqx.filter_jit
def _correct(model, images, labels, classes):
    return jnp.sum(jnp.argmax(_task_logits(model, images, classes), axis=1) == labels)


def accuracy(model, task: tuple) -> float:
    """The fraction of the task's test examples whose larger task logit is that of their class."""
    images, labels, classes = task
    return float(_correct(model, images, labels, classes)) / len(labels)


def _as_task(images: np.ndarray, digits: np.ndarray, pair: tuple[int, int]) -> tuple:
    labels = (digits == pair[1]).astype(np.int32)
    classes = np.broadcast_to(np.asarray(pair, dtype=np.int32), (len(labels), 2))
    return jnp.asarray(images.reshape(len(images), -1)), jnp.asarray(labels), jnp.asarray(classes)


def make_tasks(config: FastSlowWeightsConfig, data: tuple, run_seed: int) -> tuple[list, list]:
    """`(support_sets, test_sets)`, one of each per class pair: `shots` training images per class drawn without
    replacement (from the run's seed and the task's index), and the pair's test images (the first `test_per_class`
    of each class, or all)."""
    train_images, train_labels, test_images, test_labels = data
    support, test = [], []
    for index, pair in enumerate(config.class_pairs):
        rng = np.random.default_rng([run_seed, index])
        chosen = np.concatenate(
            [rng.choice(np.flatnonzero(train_labels == c), config.shots, replace=False) for c in pair]
        )
        support.append(_as_task(train_images[chosen], train_labels[chosen], pair))
        held_out = np.concatenate([np.flatnonzero(test_labels == c)[: config.test_per_class] for c in pair])
        test.append(_as_task(test_images[held_out], test_labels[held_out], pair))
    return support, test


def _every_step(batch):
    """`batches` for the loop: the same (full) batch at every step."""
    return lambda step: batch


def _concatenate(tasks: list) -> tuple:
    return tuple(jnp.concatenate(parts) for parts in zip(*tasks))


def run_sequence(config: FastSlowWeightsConfig, method: str, model, support: list, test: list, optimiser, key):
    """Learn the tasks in order with one method. **Returns:** `{"matrix": A, ...}` with `A[i][j]` the accuracy on
    task `j` after learning task `i`, and, for the fast/slow learners, the fast weights' accuracy on each new task."""
    slow, importance = model, learning.zero_importance(model)
    matrix, fast_accuracy = [], []
    for index, task in enumerate(support):
        step_key = jr.fold_in(key, index)
        steps = config.steps_per_task
        if method == JOINT:
            seen = _concatenate(support[: index + 1])
            slow, _ = train(
                model, task_loss, _every_step(seen), optimiser, steps=steps * (index + 1), key=step_key,
                description=f"joint, {index + 1} tasks", progress=False,
            )  # fmt: skip
        elif method == FINE_TUNING:
            slow, _ = train(
                slow, task_loss, _every_step(task), optimiser, steps=steps, key=step_key,
                description=f"fine-tuning, task {index + 1}", progress=False,
            )  # fmt: skip
        elif method == FAST_SLOW:
            slow, importance, fast, _ = learning.learn_task(
                slow, importance, task_loss, example_loss, task, _every_step(task), optimiser, steps=steps,
                key=step_key, strength=config.strength, rate=config.rate, floor=config.floor, normalise=True,
                description=f"fast weights, task {index + 1}", progress=False,
            )  # fmt: skip
            fast_accuracy.append(accuracy(fast, test[index]))
        else:
            strength = 0.0 if method == STEP_2_ONLY else config.strength
            fast, _ = learning.fast_adapt(
                slow, task_loss, _every_step(task), optimiser, steps=steps, key=step_key, importance=importance,
                strength=strength, description=f"fast weights, task {index + 1}", progress=False,
            )  # fmt: skip
            fast_accuracy.append(accuracy(fast, test[index]))
            task_importance = learning.diagonal_fisher(fast, example_loss, task, normalise=True)
            if method == STEP_1_ONLY:
                slow, importance = fast, jax.tree.map(jnp.add, importance, task_importance)
            else:
                slow, importance = learning.consolidate(
                    slow, fast, importance, task_importance, rate=config.rate, floor=config.floor
                )
        matrix.append([accuracy(slow, t) for t in test])
    return {"matrix": matrix, "fast_new_task_accuracy": fast_accuracy}


def summarise(matrix: np.ndarray) -> dict:
    """Average final accuracy, forgetting (the mean drop `A[j, j] - A[T, j]` over the earlier tasks `j < T`), the
    mean accuracy on each task right after learning it, and task 1's accuracy along the sequence."""
    last = len(matrix) - 1
    return {
        "final_average_accuracy": float(np.mean(matrix[last])),
        "forgetting": float(np.mean([matrix[j, j] - matrix[last, j] for j in range(last)])),
        "new_task_accuracy": float(np.mean(np.diag(matrix))),
        "task_1_accuracy": matrix[:, 0].tolist(),
    }


def run_dataset(config: FastSlowWeightsConfig, name: str, bar) -> dict:
    train_images, train_labels = LOADERS[name]("train")
    test_images, test_labels = LOADERS[name]("test")
    data = (train_images, train_labels, test_images, test_labels)
    optimiser = optax.adam(config.learning_rate)
    runs = {method: [] for method in METHODS}
    for run in range(config.runs):
        run_seed = config.seed + run
        support, test = make_tasks(config, data, run_seed)
        model_key, train_key = jr.split(jr.key(run_seed))
        model = models.MLP(28 * 28, config.hidden_sizes, 10, key=model_key)
        for method in METHODS:
            runs[method].append(run_sequence(config, method, model, support, test, optimiser, train_key))
            bar.update()
    out = {}
    for method, results in runs.items():
        matrices = np.asarray([r["matrix"] for r in results])
        per_run = [summarise(m) for m in matrices]
        out[method] = {
            "accuracy_matrix": matrices.mean(axis=0).tolist(),
            "accuracy_matrices": matrices.tolist(),
            **{key: value for key, value in summarise(matrices.mean(axis=0)).items()},
            "forgetting_std": float(np.std([r["forgetting"] for r in per_run])),
            "final_average_accuracy_std": float(np.std([r["final_average_accuracy"] for r in per_run])),
        }
        if results[0]["fast_new_task_accuracy"]:
            fast = np.asarray([r["fast_new_task_accuracy"] for r in results]).mean(axis=0)
            out[method]["fast_new_task_accuracy"] = fast.tolist()
    fine_tuning = out[FINE_TUNING]["forgetting"]
    out["forgetting_ratio"] = out[FAST_SLOW]["forgetting"] / fine_tuning if fine_tuning > 0 else float("nan")
    out["target_met"] = bool(out[FAST_SLOW]["forgetting"] <= 0.5 * fine_tuning)
    return out


def plot(path, results: dict, config: FastSlowWeightsConfig) -> None:
    """Per data set: the fast/slow and fine-tuning accuracy matrices, and task 1's accuracy along the sequence."""
    names = list(results)
    fig, axes = plt.subplots(len(names), 3, figsize=(12.5, 3.6 * len(names)), squeeze=False)
    tasks = np.arange(1, len(config.class_pairs) + 1)
    for row, name in zip(axes, names):
        for ax, method in zip(row[:2], (FAST_SLOW, FINE_TUNING)):
            matrix = np.asarray(results[name][method]["accuracy_matrix"])
            image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
            for (i, j), value in np.ndenumerate(matrix):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if value < 0.7 else "k")
            ax.set_xticks(tasks - 1, [f"{a}/{b}" for a, b in config.class_pairs])
            ax.set_yticks(tasks - 1, tasks)
            ax.set_xlabel("evaluated on task (classes)")
            ax.set_ylabel("after learning task")
            ax.set_title(f"{name}: {method}")
        fig.colorbar(image, ax=row[1], fraction=0.046)
        for k, method in enumerate(METHODS):
            row[2].plot(tasks, results[name][method]["task_1_accuracy"], marker="o", color=f"C{k}", label=method)
        row[2].set_ylim(0.4, 1.02)
        row[2].set_xlabel("tasks learned")
        row[2].set_ylabel("accuracy on task 1")
        row[2].set_title(f"{name}: task 1 along the sequence")
    axes[0, 2].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config: FastSlowWeightsConfig) -> dict:
    """Learn the class-pair task sequence of each data set with every method and record the accuracy matrices and
    forgetting; writes `results/fast_slow_weights/`."""
    started = time.time()
    unknown = sorted(set(config.datasets) - set(LOADERS))
    if unknown:
        raise ValueError(f"unknown data sets {unknown}; expected some of {sorted(LOADERS)}")
    if len(config.class_pairs) < 2:
        raise ValueError("the sequence needs at least two tasks to measure forgetting")
    results, table = {}, []
    with tqdm(total=len(config.datasets) * config.runs * len(METHODS), desc=SLUG) as bar:
        for name in config.datasets:
            results[name] = run_dataset(config, name, bar)
    for name, result in results.items():
        for method in METHODS:
            summary = result[method]
            table.append({
                "data": name, "method": method, "shots": config.shots,
                "final average accuracy": summary["final_average_accuracy"],
                "forgetting": summary["forgetting"], "forgetting std": summary["forgetting_std"],
                "accuracy on each new task": summary["new_task_accuracy"],
                "task 1 at the end": summary["task_1_accuracy"][-1],
            })  # fmt: skip
    plot(results_dir(SLUG) / "accuracy_matrices.png", results, config)
    write_results(SLUG, config, results, started=started, table=table, paper=PAPER)
    return results
