"""Train a neural ODE classifier unregularised and with the error / stiffness / both regularisers of P32, several
seeds each, and compare test accuracy, NFE at prediction, prediction time and training time."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxinterp.data
from experiments.record import results_dir, write_results
from jaxinterp.dynamics.training import RegularisationWeights, fit
from models.neural_ode import NeuralODEClassifier

from .config import Config

SLUG = "regularized_node"
VARIANTS = ("unregularised", "error", "stiffness", "error+stiffness")
PAPER = {
    "claim": "regularising the error / stiffness estimates roughly halves prediction time at similar accuracy",
    "mnist_test_nfe_unregularised": 362.7,
    "mnist_test_nfe_error_regularised": 286.8,
    "mnist_test_accuracy_unregularised": 97.35,
    "mnist_test_accuracy_error_regularised": 97.78,
    "source": "P32 (Pal et al. 2021), numbers of an independent re-implementation (docs/neural_de.md)",
}


def load(config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flattened train and test images with labels, as the config asks."""
    if config.dataset == "mnist":
        x_train, y_train = jaxinterp.data.mnist("train")
        x_test, y_test = jaxinterp.data.mnist("test")
    elif config.dataset == "digits":
        images, labels = jaxinterp.data.digits()
        order = np.random.default_rng(0).permutation(len(images))
        images, labels = images[order], labels[order]
        x_train, y_train, x_test, y_test = images[:1297], labels[:1297], images[1297:], labels[1297:]
    else:
        raise ValueError(f"unknown dataset {config.dataset!r}")
    flat = lambda x: x.reshape(len(x), -1)
    return (
        flat(x_train[: config.train_size]),
        y_train[: config.train_size],
        flat(x_test[: config.test_size]),
        y_test[: config.test_size],
    )


def build_classifier(config: Config, in_size: int, key) -> NeuralODEClassifier:
    """The experiment's classifier for flattened inputs of `in_size`, with initial weights from `key`."""
    return NeuralODEClassifier(
        in_size, config.hidden, 10, config.width, config.depth, rtol=config.rtol, atol=config.atol, key=key
    )


def _weights(config: Config, variant: str) -> RegularisationWeights:
    def schedule(value: float):
        return optax.linear_schedule(value, 0.1 * value, config.weight_decay_steps)

    error = config.error_weight if "error" in variant else 0.0
    stiffness = config.stiffness_weight if "stiffness" in variant else 0.0
    return RegularisationWeights(error=schedule(error), stiffness=schedule(stiffness))


def _batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int):
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield jnp.asarray(x[index]), jnp.asarray(y[index])


def _loss(model: NeuralODEClassifier, batch, key):
    logits, heuristics = model.solve_batch(batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), heuristics


@eqx.filter_jit
def _predict(model: NeuralODEClassifier, x):
    logits, heuristics = model.solve_batch(x)
    return jnp.argmax(logits, axis=-1), heuristics.nfe


def evaluate(model: NeuralODEClassifier, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, float]:
    """Accuracy (%), mean NFE per prediction batch, and the wall time of predicting the whole set (compiled; the
    best of five)."""
    chunks = [jnp.asarray(x[i : i + batch_size]) for i in range(0, len(x) - batch_size + 1, batch_size)]
    jax.block_until_ready(_predict(model, chunks[0]))
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        outputs = jax.block_until_ready([_predict(model, chunk) for chunk in chunks])
        timings.append(time.perf_counter() - started)
    predictions = np.concatenate([np.asarray(p) for p, _ in outputs])
    return {
        "accuracy": 100.0 * float(np.mean(predictions == y[: len(predictions)])),
        "nfe": float(np.mean([int(n) for _, n in outputs])),
        "predict_s": min(timings),
    }


def _figure(runs: list[dict], path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for variant, marker in zip(VARIANTS, "osD^"):
        rows = [r for r in runs if r["variant"] == variant]
        ax.scatter([r["nfe"] for r in rows], [r["accuracy"] for r in rows], marker=marker, label=variant)
    ax.set_xlabel("NFE at prediction (Tsit5)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: Config) -> dict:
    """Run every variant with every seed (in float64 if the config asks); write `results/regularized_node/`.

    **Returns:** the metrics written to `results.json`.
    """
    with jax.enable_x64(config.float64):
        return _run_all(config)


def _run_all(config: Config) -> dict:
    started = time.time()
    x_train, y_train, x_test, y_test = load(config)
    dtype = jnp.result_type(float)  # float64 inside `jax.enable_x64`
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    optimiser = optax.adam(config.learning_rate)
    runs = []
    for variant in VARIANTS:
        for seed in range(config.seed, config.seed + config.num_seeds):
            model_key, train_key = jax.random.split(jax.random.key(seed))
            model = build_classifier(config, x_train.shape[1], model_key)
            model, history = fit(
                model,
                _loss,
                _batches(x_train, y_train, config.batch_size, seed),
                optimiser,
                num_steps=config.num_steps,
                weights=_weights(config, variant),
                key=train_key,
                description=f"{variant} seed {seed}",
            )
            run = {"variant": variant, "seed": seed, **evaluate(model, x_test, y_test, config.eval_batch_size)}
            run["train_s"] = history["wall_time_s"] - history["first_step_s"]
            run["compile_s"] = history["first_step_s"]
            run["train_nfe_last"] = float(np.mean(history["nfe"][-20:]))
            runs.append(run)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}, flush=True)

    summary = {}
    base = None
    for variant in VARIANTS:
        rows = [r for r in runs if r["variant"] == variant]
        stats = {
            key: (float(np.mean([r[key] for r in rows])), float(np.std([r[key] for r in rows])))
            for key in ("accuracy", "nfe", "predict_s", "train_s")
        }
        if base is None:
            base = stats
        stats["nfe_ratio"] = stats["nfe"][0] / base["nfe"][0]
        stats["predict_ratio"] = stats["predict_s"][0] / base["predict_s"][0]
        stats["train_ratio"] = stats["train_s"][0] / base["train_s"][0]
        stats["accuracy_change"] = stats["accuracy"][0] - base["accuracy"][0]
        summary[variant] = stats
    table = [
        {
            "variant": v,
            "test accuracy %": f"{s['accuracy'][0]:.2f} ± {s['accuracy'][1]:.2f}",
            "NFE (prediction)": f"{s['nfe'][0]:.1f} ± {s['nfe'][1]:.1f}",
            "NFE ratio": s["nfe_ratio"],
            "prediction s": s["predict_s"][0],
            "prediction ratio": s["predict_ratio"],
            "training s": s["train_s"][0],
            "training ratio": s["train_ratio"],
        }
        for v, s in summary.items()
    ]
    _figure(runs, results_dir(SLUG) / "nfe_vs_accuracy.png")
    metrics = {"runs": runs, "summary": summary}
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
