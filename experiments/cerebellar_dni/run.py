"""Cortico-cerebellar networks as decoupled neural interfaces (P2): a cortical LSTM trained by full BPTT, by
truncated BPTT, and by truncated BPTT with a cerebellar module predicting the gradient from beyond each window
(ccRNN), on line drawing, digit drawing (pen paths traced from MNIST digits) and sequential MNIST; learning curves,
held-out error and the drawings' ataxia (jitter)."""

import pathlib
import tempfile
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
from jaxinterp.learning import boundary_gradients, synthetic_gradient_quality
from jaxinterp.training import minibatches, train

from .config import CerebellarDNIConfig

SLUG = "cerebellar_dni"
TASKS = ("line_drawing", "digit_drawing", "sequential_mnist")
METHODS = ("bptt", "truncated", "ccrnn")
METHOD_LABELS = {"bptt": "full BPTT", "truncated": "truncated BPTT", "ccrnn": "ccRNN (truncated + cerebellum)"}
PAPER = {
    "claim": "ccRNN learns faster and reaches lower error than the cortical RNN with truncated BPTT alone, close to "
    "full BPTT, and draws with less ataxia (smoother, more accurate pen paths), on line drawing, digit drawing and "
    "sequential MNIST (Boven et al. 2023, Figs. 2-4)",
    "line_drawing": "ccRNN error falls faster and lower than the cortical RNN's; drawings smoother",
    "digit_drawing": "ccRNN error falls faster and lower; less ataxic digit drawings",
    "sequential_mnist": "ccRNN error lower than truncated BPTT's, approaching full BPTT",
}


# ---------------------------------------------------------------------------------------------------------- tasks
def line_drawing_data(config: CerebellarDNIConfig):
    """Cues and targets of the line-drawing task (synthetic, as in the paper): a one-hot cue of one of
    `line_directions` directions at the first step (zero input afterwards), and the target a straight line from the
    origin to the point at `line_radius` in that direction, `line_length` steps long.

    **Returns:** `(inputs [directions, length, directions], targets [directions, length, 2])`."""
    n, length = config.line_directions, config.line_length
    inputs = np.zeros((n, length, n), np.float32)
    inputs[np.arange(n), 0, np.arange(n)] = 1.0
    angles = 2 * np.pi * np.arange(n) / n
    ends = config.line_radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    fractions = np.arange(1, length + 1) / length
    targets = fractions[None, :, None] * ends[:, None, :]
    return inputs, targets.astype(np.float32)


def trace_pen_path(image: np.ndarray, points: int) -> np.ndarray:
    """A pen path through the strokes of a digit image, `points` positions long.

    The image is thresholded at half its maximum; the midpoint of every run of ink along each row and along each
    column marks the middle of a stroke (a crude skeleton); these marks are ordered by a greedy nearest-neighbour
    walk from the top-most one, and the walk is resampled to `points` positions equally spaced in arc length.
    Where the walk jumps between strokes the path crosses blank paper in a straight line.

    **Arguments:**

    - `image`: `[28, 28]`, ink in `[0, 1]`.
    - `points`: positions on the path.

    **Returns:** `[points, 2]` pen positions `(x, y)` in `[0, 1]^2`, `y` pointing up.
    """
    ink = image >= 0.5 * image.max()
    marks = set()
    for along_rows in (True, False):
        grid = ink if along_rows else ink.T
        for line, row in enumerate(grid):
            padded = np.concatenate([[False], row, [False]])
            edges = np.flatnonzero(np.diff(padded.astype(int)))
            for begin, end in zip(edges[::2], edges[1::2]):
                mid = (begin + end - 1) / 2
                marks.add((line, mid) if along_rows else (mid, line))
    marks = np.array(sorted(marks), dtype=np.float64)
    order = [int(np.lexsort((marks[:, 1], marks[:, 0]))[0])]
    left = np.ones(len(marks), bool)
    left[order[0]] = False
    while left.any():
        distances = np.linalg.norm(marks - marks[order[-1]], axis=1)
        distances[~left] = np.inf
        order.append(int(np.argmin(distances)))
        left[order[-1]] = False
    walk = marks[order]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(walk, axis=0), axis=1))])
    at = np.linspace(0.0, arc[-1], points)
    rows, cols = np.interp(at, arc, walk[:, 0]), np.interp(at, arc, walk[:, 1])
    return np.stack([cols / 27.0, 1.0 - rows / 27.0], axis=1).astype(np.float32)


def digit_templates(config: CerebellarDNIConfig, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One pen path per digit, traced (`trace_pen_path`) from the mean of its first `template_examples` training
    images, 28 positions long. **Returns:** `[10, 28, 2]`."""
    means = [images[labels == digit][: config.template_examples].mean(axis=0) for digit in range(10)]
    return np.stack([trace_pen_path(mean, 28) for mean in means])


def ataxia(paths: np.ndarray) -> float:
    """Trajectory jitter: the mean squared second difference `|p_(t+1) - 2 p_t + p_(t-1)|^2` of drawn paths
    `[n, time, 2]`."""
    second = paths[:, 2:] - 2 * paths[:, 1:-1] + paths[:, :-2]
    return float(np.mean(np.sum(second**2, axis=-1)))


def task_setup(config: CerebellarDNIConfig, task: str) -> dict:
    """Everything a task needs: training and held-out data, the step loss and weights, the window and steps."""
    if task == "line_drawing":
        inputs, targets = line_drawing_data(config)
        length = config.line_length
        return {
            "train": (inputs, targets), "test": (inputs, targets), "kind": "drawing", "input_size": inputs.shape[-1],
            "output_size": 2, "window": config.line_window, "steps": config.line_steps, "length": length,
            "weights": np.full(length, 1.0 / length, np.float32),
        }  # fmt: skip
    images, labels = datasets.mnist("train")
    images, labels = images[: config.train_size], labels[: config.train_size]
    if config.eval_split not in ("test", "valid"):
        raise ValueError(f"eval_split must be 'test' or 'valid', got {config.eval_split!r}")
    test_images, test_labels = datasets.mnist(config.eval_split)
    test_images, test_labels = test_images[: config.eval_size], test_labels[: config.eval_size]
    if task == "digit_drawing":
        templates = digit_templates(config, images, labels)
        return {
            "train": (images, templates[labels]), "test": (test_images, templates[test_labels]), "kind": "drawing",
            "input_size": 28, "output_size": 2, "window": config.digit_window, "steps": config.digit_steps,
            "length": 28, "weights": np.full(28, 1.0 / 28, np.float32), "templates": templates,
        }  # fmt: skip
    one_hot = np.repeat(np.eye(10, dtype=np.float32)[labels][:, None], 28, axis=1)
    test_one_hot = np.repeat(np.eye(10, dtype=np.float32)[test_labels][:, None], 28, axis=1)
    weights = np.zeros(28, np.float32)
    weights[-1] = 1.0
    return {
        "train": (images, one_hot), "test": (test_images, test_one_hot), "kind": "classification",
        "input_size": 28, "output_size": 10, "window": config.mnist_window, "steps": config.mnist_steps,
        "length": 28, "weights": weights,
    }  # fmt: skip


def step_loss_for(kind: str):
    if kind == "drawing":
        return lambda output, target: jnp.sum((output - target) ** 2)
    return lambda logits, target: -jnp.sum(target * jax.nn.log_softmax(logits))


# ---------------------------------------------------------------------------------------------------------- training
class CorticoCerebellar(eqx.Module):
    """The trained pair: the cortical LSTM and (for ccRNN) its cerebellum."""

    cortex: models.CorticalLSTM
    cerebellum: models.Cerebellum | None


def loss_for(method: str, setup: dict, config: CerebellarDNIConfig):
    """`loss_fn(model, batch, key) -> (loss, metrics)` of one method, for `jaxinterp.train`."""
    step_loss = step_loss_for(setup["kind"])
    weights = jnp.asarray(setup["weights"])

    def loss_fn(model: CorticoCerebellar, batch, key):
        inputs, targets = batch
        common = {"initial_state": model.cortex.initial_state(), "step_loss": step_loss, "step_weights": weights}
        if method == "bptt":
            return learning.bptt_loss(model.cortex, inputs, targets, **common)
        if method == "truncated":
            return learning.truncated_bptt_loss(model.cortex, inputs, targets, window=setup["window"], **common)
        return learning.synthetic_gradient_loss(
            model.cortex, model.cerebellum, inputs, targets, window=setup["window"], scale=config.scale,
            discount=config.discount, **common,
        )  # fmt: skip

    return loss_fn


def make_optimiser(config: CerebellarDNIConfig):
    """Adam for the cortex and, with a learning rate of its own, for the cerebellum, each network's gradient
    clipped to `clip_norm` on its own: the cortex's updates follow the same rule whatever the method."""

    def network(rate):
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), optax.adam(rate))

    def labels(params):
        return CorticoCerebellar(
            jax.tree.map(lambda _: "cortex", params.cortex), jax.tree.map(lambda _: "cerebellum", params.cerebellum)
        )

    return optax.multi_transform(
        {"cortex": network(config.learning_rate), "cerebellum": network(config.cerebellum_learning_rate)}, labels
    )


@eqx.filter_jit
def gradient_diagnostic(model: CorticoCerebellar, batch, weights, *, window: int, kind: str, scale, discount) -> dict:
    """How good the cerebellum's predictions are, on one batch: at every window boundary, the cosine similarity and
    relative error between `C(s_k)` and the exact gradient of the future loss with respect to `s_k` (full BPTT;
    `synthetic_gradient_quality`), and the cosine similarity of the cortex's whole update under truncated BPTT and
    under ccRNN with full BPTT's.

    **Returns:** arrays over boundaries (`"cosine"`, `"relative_error"`, `"injected_relative_error"`,
    `"norm_ratio"`, `"true_norm"`) and the scalars `"truncated_update_cosine"`, `"ccrnn_update_cosine"`."""
    inputs, targets = batch
    common = {"initial_state": model.cortex.initial_state(), "step_loss": step_loss_for(kind), "step_weights": weights}
    states, gradients = boundary_gradients(model.cortex, inputs, targets, window=window, **common)
    quality = synthetic_gradient_quality(model.cerebellum, states, gradients, scale=scale)

    def cortex_grad(loss):
        return ravel_tree(eqx.filter_grad(lambda cortex: loss(cortex)[0])(model.cortex))

    full = cortex_grad(lambda c: learning.bptt_loss(c, inputs, targets, **common))
    truncated = cortex_grad(lambda c: learning.truncated_bptt_loss(c, inputs, targets, window=window, **common))
    ccrnn = cortex_grad(
        lambda c: learning.synthetic_gradient_loss(
            c, model.cerebellum, inputs, targets, window=window, scale=scale, discount=discount, **common
        )
    )

    def cosine(a, b):
        return jnp.vdot(a, b) / jnp.maximum(jnp.linalg.norm(a) * jnp.linalg.norm(b), 1e-30)

    return {
        **quality, "truncated_update_cosine": cosine(truncated, full), "ccrnn_update_cosine": cosine(ccrnn, full)
    }  # fmt: skip


def ravel_tree(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(leaf) for leaf in jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))])


def evaluate(model: CorticoCerebellar, setup: dict) -> dict:
    """Held-out error of the trained cortex: the per-step squared error (and ataxia) of drawings, or the
    cross-entropy and accuracy of sequential MNIST."""
    inputs, targets = setup["test"]
    _, outputs = eqx.filter_jit(learning.run_sequence)(
        model.cortex, jnp.asarray(inputs), initial_state=model.cortex.initial_state()
    )
    outputs = np.asarray(outputs)
    if setup["kind"] == "drawing":
        return {
            "test_error": float(np.mean(np.sum((outputs - targets) ** 2, axis=-1))),
            "ataxia": ataxia(outputs),
            "target_ataxia": ataxia(targets),
            "paths": outputs[:10].tolist(),
        }
    logits, labels = outputs[:, -1], np.argmax(targets[:, -1], axis=-1)
    log_probabilities = np.asarray(jax.nn.log_softmax(logits, axis=-1))
    return {
        "test_error": float(-np.mean(log_probabilities[np.arange(len(labels)), labels])),
        "test_accuracy": float(np.mean(np.argmax(logits, axis=-1) == labels)),
    }


def run_one(config: CerebellarDNIConfig, task: str, method: str, run: int, setup: dict, optimiser) -> dict:
    key = jr.fold_in(jr.key(config.seed + run), TASKS.index(task))
    cortex_key, cerebellum_key, data_key, train_key = jr.split(key, 4)
    cortex = models.CorticalLSTM(setup["input_size"], config.hidden_size, setup["output_size"], key=cortex_key)
    cerebellum = None
    if method == "ccrnn":
        cerebellum = models.Cerebellum(2 * config.hidden_size, config.cerebellum_hidden, key=cerebellum_key)
    model = CorticoCerebellar(cortex, cerebellum)
    batches = minibatches(
        (jnp.asarray(setup["train"][0]), jnp.asarray(setup["train"][1])), config.batch_size, key=data_key
    )
    loss_fn, description = loss_for(method, setup, config), f"{task} {method} run {run}"
    diagnostics = []
    if method != "ccrnn":
        trained, history = train(
            model, loss_fn, batches, optimiser, steps=setup["steps"], key=train_key, has_aux=True,
            description=description,
        )  # fmt: skip
        wall_time = float(history["wall_time_s"])
    else:
        # Trained in stretches of `diagnostic_every` steps, resumed from a checkpoint (bit for bit the same run as
        # one call), with the cerebellum's predictions scored between stretches on a fixed batch of training data.
        train_inputs, train_targets = setup["train"]
        probe = (
            jnp.asarray(train_inputs[: config.diagnostic_size]), jnp.asarray(train_targets[: config.diagnostic_size])
        )  # fmt: skip
        weights = jnp.asarray(setup["weights"])

        def diagnose(model, batch):
            return gradient_diagnostic(
                model, batch, weights, window=setup["window"], kind=setup["kind"], scale=config.scale,
                discount=config.discount,
            )  # fmt: skip

        stops = sorted({*range(0, setup["steps"], max(1, config.diagnostic_every)), setup["steps"]})
        trained, wall_time = model, 0.0
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = pathlib.Path(folder) / "checkpoint.eqx"
            for stop in stops:
                if stop > 0:
                    trained, history = train(
                        model, loss_fn, batches, optimiser, steps=stop, key=train_key, has_aux=True,
                        checkpoint=checkpoint, checkpoint_every=setup["steps"], description=description,
                    )  # fmt: skip
                    wall_time += float(history["wall_time_s"])
                scores = jax.tree.map(np.asarray, diagnose(trained, probe))
                diagnostics.append({"step": stop, **{name: value.tolist() for name, value in scores.items()}})
    curve = np.asarray(history["task_loss"], np.float64)
    out = {
        "curve": curve.tolist(),
        "area_under_curve": float(curve.mean()),
        "final_train_loss": float(curve[-20:].mean()),
    }
    if "synthesiser_loss" in history:
        out["final_synthesiser_loss"] = float(np.mean(history["synthesiser_loss"][-20:]))
    if diagnostics:
        out["diagnostics"] = diagnostics
    out.update(evaluate(trained, setup))
    out["wall_time_s"] = wall_time
    return out


# ---------------------------------------------------------------------------------------------------------- figures
def smooth(curve: np.ndarray, width: int) -> np.ndarray:
    width = max(1, min(width, len(curve)))
    return np.convolve(curve, np.ones(width) / width, mode="valid")


def plot_curves(path, results: dict, config: CerebellarDNIConfig) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(4.4 * len(results), 3.4), squeeze=False)
    for ax, (task, by_method) in zip(axes[0], results.items()):
        for k, (method, summary) in enumerate(by_method.items()):
            curves = np.array([run["curve"] for run in summary["runs"]])
            mean = smooth(curves.mean(axis=0), config.curve_smoothing)
            ax.plot(
                np.arange(len(mean)) + config.curve_smoothing // 2, mean, color=f"C{k}", label=METHOD_LABELS[method]
            )
        ax.set_yscale("log")
        ax.set_title(task.replace("_", " "))
        ax.set_xlabel("step")
        ax.set_ylabel("training loss (moving average)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_diagnostics(path, results: dict) -> None:
    """The cerebellum's predictions against the exact future gradient over ccRNN training (mean over boundaries
    and seeds), and the cortex's update under truncated BPTT and ccRNN against full BPTT's."""
    tasks = [task for task, by_method in results.items() if "ccrnn" in by_method]
    if not tasks:
        return
    fig, axes = plt.subplots(len(tasks), 3, figsize=(12, 2.9 * len(tasks)), squeeze=False)
    for row, task in zip(axes, tasks):
        runs = [run["diagnostics"] for run in results[task]["ccrnn"]["runs"]]
        steps = [entry["step"] for entry in runs[0]]

        def mean(name, runs=runs):
            values = np.array([[entry[name] for entry in run] for run in runs], np.float64)
            return values.mean(axis=(0, 2) if values.ndim == 3 else 0)

        row[0].plot(steps, mean("cosine"), "o-", ms=3)
        row[0].axhline(0, color="0.7", lw=0.8)
        row[0].set_ylabel("cosine(C(s), true gradient)")
        row[1].plot(steps, mean("relative_error"), "o-", ms=3, label="|C - g| / |g|")
        row[1].plot(steps, mean("injected_relative_error"), "o-", ms=3, label="|scale C - g| / |g|")
        row[1].plot(steps, mean("norm_ratio"), "o-", ms=3, label="|C| / |g|")
        row[1].set_ylabel("relative to the true gradient")
        row[1].legend(fontsize=7)
        row[2].plot(steps, mean("truncated_update_cosine"), "o-", ms=3, label="truncated BPTT")
        row[2].plot(steps, mean("ccrnn_update_cosine"), "o-", ms=3, label="ccRNN")
        row[2].set_ylabel("cosine(cortex update, full BPTT's)")
        row[2].legend(fontsize=7)
        for ax in row:
            ax.set_title(task.replace("_", " "), fontsize=9)
            ax.set_xlabel("ccRNN training step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_drawings(path, results: dict, setups: dict) -> None:
    drawing_tasks = [task for task in results if setups[task]["kind"] == "drawing"]
    if not drawing_tasks:
        return
    fig, axes = plt.subplots(len(drawing_tasks), 3, figsize=(10, 3.3 * len(drawing_tasks)), squeeze=False)
    for row, task in zip(axes, drawing_tasks):
        targets = setups[task]["test"][1][:10]
        for ax, method in zip(row, METHODS):
            if method not in results[task]:
                ax.axis("off")
                continue
            paths = np.asarray(results[task][method]["runs"][0]["paths"])
            shown = range(len(paths)) if task == "line_drawing" else range(min(4, len(paths)))
            for k, i in enumerate(shown):
                offset = np.array([0.0, 0.0]) if task == "line_drawing" else np.array([1.2 * k, 0.0])
                ax.plot(*(targets[i] + offset).T, color="0.75", lw=3)
                ax.plot(*(paths[i] + offset).T, color=f"C{k}", marker=".", ms=3, lw=1)
            ax.set_title(f"{task.replace('_', ' ')}: {METHOD_LABELS[method]}", fontsize=8)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------- main
def _check(config: CerebellarDNIConfig) -> None:
    unknown = [task for task in config.tasks if task not in TASKS] + [m for m in config.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown tasks or methods {unknown}; tasks are {TASKS}, methods {METHODS}")
    if config.seeds < 1:
        raise ValueError(f"seeds must be at least 1, got {config.seeds}")


def main(config: CerebellarDNIConfig) -> dict:
    """Train the cortical LSTM by full BPTT, truncated BPTT and ccRNN on each task; writes
    `results/cerebellar_dni/`."""
    _check(config)
    started = time.time()
    optimiser = make_optimiser(config)
    results, setups, table = {}, {}, []
    for task in config.tasks:
        setups[task] = setup = task_setup(config, task)
        results[task] = {}
        for method in config.methods:
            runs = [run_one(config, task, method, run, setup, optimiser) for run in range(config.seeds)]
            summary = {"runs": runs, "window": None if method == "bptt" else setup["window"]}
            if method == "ccrnn":
                for run in runs:
                    last = run["diagnostics"][-1]
                    for name in ("cosine", "relative_error", "injected_relative_error", "norm_ratio"):
                        run[f"final_boundary_{name}"] = float(np.mean(last[name]))
                    run["final_truncated_update_cosine"] = last["truncated_update_cosine"]
                    run["final_ccrnn_update_cosine"] = last["ccrnn_update_cosine"]
            for name in ("area_under_curve", "final_train_loss", "test_error", "ataxia", "test_accuracy", "wall_time_s",
                         "final_boundary_cosine", "final_boundary_relative_error",
                         "final_boundary_injected_relative_error", "final_boundary_norm_ratio",
                         "final_truncated_update_cosine", "final_ccrnn_update_cosine"):  # fmt: skip
                if name in runs[0]:
                    values = [run[name] for run in runs]
                    summary[name] = float(np.mean(values))
                    summary[f"{name}_std"] = float(np.std(values))
            results[task][method] = summary
            row = {
                "task": task.replace("_", " "), "method": METHOD_LABELS[method],
                "window": "whole sequence" if method == "bptt" else setup["window"],
                "area under training loss": summary["area_under_curve"], "final training loss":
                summary["final_train_loss"], "test error": summary["test_error"],
            }  # fmt: skip
            if setup["kind"] == "drawing":
                row["ataxia (mean squared 2nd difference)"] = summary["ataxia"]
                row["target's ataxia"] = runs[0]["target_ataxia"]
            else:
                row["test accuracy"] = summary["test_accuracy"]
            row["training wall time per run (s)"] = summary["wall_time_s"]
            if method == "ccrnn":
                row["cerebellum's cosine with the true gradient (end)"] = summary["final_boundary_cosine"]
                row["cortex update's cosine with full BPTT's, truncated / ccRNN (end)"] = (
                    f"{summary['final_truncated_update_cosine']:.3f} / {summary['final_ccrnn_update_cosine']:.3f}"
                )
            table.append(row)
    out = results_dir(SLUG)
    plot_curves(out / "learning_curves.png", results, config)
    plot_drawings(out / "drawings.png", results, setups)
    plot_diagnostics(out / "gradient_diagnostics.png", results)
    metrics = {"tasks": results}
    for task, by_method in results.items():
        if {"ccrnn", "truncated", "bptt"} <= set(by_method):
            cc, tr, full = (by_method[m] for m in ("ccrnn", "truncated", "bptt"))
            metrics[f"{task}_ccrnn_faster_than_truncated"] = cc["area_under_curve"] < tr["area_under_curve"]
            metrics[f"{task}_ccrnn_gap_closed"] = (tr["area_under_curve"] - cc["area_under_curve"]) / max(
                tr["area_under_curve"] - full["area_under_curve"], 1e-12
            )
            if "ataxia" in cc:
                metrics[f"{task}_ccrnn_less_ataxic_than_truncated"] = cc["ataxia"] < tr["ataxia"]
    if "digit_drawing" in setups:
        metrics["digit_templates"] = setups["digit_drawing"]["templates"].tolist()
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    print((out / "results.md").read_text())
    return metrics
