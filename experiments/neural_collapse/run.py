"""Neural collapse in deep linear networks (P13): NC1-NC4 over training for bias-free deep linear networks with
weight decay, under MSE and cross-entropy, with balanced and imbalanced classes, on free (unconstrained) features
and on a small MNIST subset; for imbalanced MSE, the class means' lengths against the class counts and their
orthogonality."""

import itertools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax
from scipy.stats import spearmanr

from experiments.record import results_dir, write_results
from jaxinterp import compare
from jaxinterp import data as datasets
from jaxinterp.training import train

from .config import NeuralCollapseConfig

SLUG = "neural_collapse"


class DeepLinear(eqx.Module):
    """Bias-free linear layers `h_l = W_l h_(l-1)` and a classifier `W h_M`.

    `features` holds the free features of the unconstrained feature model (one row per training example), stored
    divided by `sqrt(N)`: each feature's gradient under a mean over examples is `1 / N` of the weights', and the
    rescaling gives it the weights' step size without changing the objective. `None` when `h_0` is the input."""

    features: jax.Array | None
    layers: tuple[jax.Array, ...]
    classifier: jax.Array

    def free_features(self):
        return self.features * np.sqrt(self.features.shape[0])

    def hidden(self, inputs):
        """Every layer's features `[h_0, ..., h_M]`, each `[examples, width]`."""
        h = [self.free_features() if inputs is None else inputs]
        for w in self.layers:
            h.append(h[-1] @ w.T)
        return h

    def penalty(self):
        """`sum_l ||W_l||^2 / 2`, plus the free features' `||H||^2 / (2 N)` (the same decay per example)."""
        weights = sum(jnp.sum(w**2) for w in (*self.layers, self.classifier))
        free = 0.0 if self.features is None else jnp.sum(self.free_features() ** 2) / self.features.shape[0]
        return 0.5 * (weights + free)


def initial(config: NeuralCollapseConfig, in_size: int | None, n: int, key) -> DeepLinear:
    keys = jr.split(key, config.depth + 2)
    sizes = [config.width if in_size is None else in_size] + [config.width] * config.depth
    layers = tuple(jr.normal(k, (out, fan_in)) / np.sqrt(fan_in) for k, fan_in, out in zip(keys[1:], sizes, sizes[1:]))
    classifier = jr.normal(keys[-1], (config.num_classes, config.width)) / np.sqrt(config.width)
    features = None if in_size is not None else jr.normal(keys[0], (n, config.width)) / np.sqrt(n)
    return DeepLinear(features, layers, classifier)


def _loss_fn(kind: str, weight_decay: float):
    def loss_fn(model, batch, key):
        inputs, labels = batch
        logits = model.hidden(inputs)[-1] @ model.classifier.T
        if kind == "mse":
            fit = 0.5 * jnp.mean(jnp.sum((logits - jax.nn.one_hot(labels, logits.shape[-1])) ** 2, axis=-1))
        else:
            fit = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        return fit + weight_decay * model.penalty(), {"fit": fit}

    return loss_fn


def make_data(config: NeuralCollapseConfig, source: str, counts: tuple[int, ...]):
    """`(inputs or None, labels)`: MNIST images of the first classes (the first `counts[c]` of class `c`,
    flattened and scaled to a mean length of 1, not centred: the networks are bias-free), or no inputs for the
    unconstrained features."""
    labels = np.repeat(np.arange(config.num_classes), counts).astype(np.int32)
    if source == "unconstrained":
        return None, labels
    images, digit = datasets.mnist("train")
    chosen = np.concatenate([np.flatnonzero(digit == c)[:n] for c, n in enumerate(counts)])
    x = images[chosen].reshape(len(chosen), -1)
    return jnp.asarray(x / np.linalg.norm(x, axis=1).mean()), labels


def evaluate(model: DeepLinear, inputs, labels) -> dict:
    """The collapse metrics of the last layer's features (Papyan's centred ones and, for bias-free models, the
    uncentred means' geometry) and NC1 at every layer."""
    hidden = [np.asarray(h, dtype=np.float64) for h in model.hidden(inputs)]
    classifier = np.asarray(model.classifier)
    centred = compare.collapse_metrics(hidden[-1], labels, classifier)
    uncentred = compare.collapse_metrics(hidden[-1], labels, classifier, centre="none")
    return {
        "nc1": centred["nc1"],
        "nc2_etf_distance": centred["nc2_etf_distance"],
        "nc2_equinorm": centred["nc2_equinorm"],
        "nc3": centred["nc3"],
        "nc4": centred["nc4"],
        "uncentred_max_abs_cosine": uncentred["nc2_max_abs_cosine"],
        "uncentred_mean_norms": uncentred["mean_norms"],
        "classifier_norms": uncentred["classifier_norms"],
        "classifier_mean_cosines": uncentred["classifier_mean_cosines"],
        "nc3_uncentred": uncentred["nc3"],
        "nc1_per_layer": [compare.nc1(h, labels) for h in hidden[1:]],
    }


def run_setting(config: NeuralCollapseConfig, source: str, loss: str, balance: str, index: int) -> dict:
    counts = (config.balanced_count,) * config.num_classes if balance == "balanced" else config.imbalanced_counts
    inputs, labels = make_data(config, source, counts)
    key = jr.fold_in(jr.key(config.seed), index)
    init_key, train_key = jr.split(key)
    model = initial(config, None if inputs is None else inputs.shape[1], len(labels), init_key)
    loss_fn = _loss_fn(loss, config.weight_decay)
    optimiser = optax.sgd(config.learning_rate, momentum=config.momentum)
    batch = (inputs, jnp.asarray(labels))
    checkpoint = results_dir(SLUG) / "checkpoints" / f"{source}_{loss}_{balance}.eqx"
    checkpoint.unlink(missing_ok=True)  # every run starts afresh; the file only carries training between evaluations
    moments = np.unique(np.geomspace(10, config.steps, config.num_evaluations).astype(int)).tolist()
    trajectory = []
    for steps in moments:
        trained, history = train(
            model, loss_fn, lambda step: batch, optimiser, steps=steps, key=train_key, has_aux=True,
            checkpoint=checkpoint, checkpoint_every=config.steps, description=f"{source} {loss} {balance}",
            progress=False,
        )  # fmt: skip
        trajectory.append({"step": steps, "loss": float(history["loss"][-1]), **evaluate(trained, inputs, labels)})
    checkpoint.unlink(missing_ok=True)
    final = trajectory[-1]
    out = {"counts": list(counts), "trajectory": trajectory, "final": final}
    if balance == "imbalanced":
        out["norm_vs_count_spearman"] = float(spearmanr(final["uncentred_mean_norms"], counts).statistic)
        out["classifier_norm_vs_count_spearman"] = float(spearmanr(final["classifier_norms"], counts).statistic)
        out["near_orthogonal"] = bool(final["uncentred_max_abs_cosine"] <= config.orthogonality_tolerance)
    return out


def plot(path, settings: dict) -> None:
    names = ["nc1", "nc2_etf_distance", "nc3", "uncentred_max_abs_cosine"]
    fig, axes = plt.subplots(1, len(names), figsize=(4.0 * len(names), 3.2))
    for ax, name in zip(axes, names):
        for k, (setting, result) in enumerate(settings.items()):
            steps = [t["step"] for t in result["trajectory"]]
            values = [max(t[name], 1e-8) for t in result["trajectory"]]
            ax.loglog(steps, values, color=f"C{k}", label=setting)
        ax.set_title(name)
        ax.set_xlabel("step")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config: NeuralCollapseConfig) -> dict:
    """Train every setting and record the collapse metrics over training; writes `results/neural_collapse/`."""
    started = time.time()
    settings, table = {}, []
    combinations = itertools.product(config.inputs, config.losses, ("balanced", "imbalanced"))
    for index, (source, loss, balance) in enumerate(combinations):
        name = f"{source} {loss} {balance}"
        result = run_setting(config, source, loss, balance, index)
        settings[name] = result
        final = result["final"]
        table.append({
            "features": source, "loss": loss, "classes": balance, "NC1": final["nc1"],
            "NC2 (ETF distance)": final["nc2_etf_distance"], "NC3": final["nc3"],
            "NC3 (uncentred)": final["nc3_uncentred"], "NC4": final["nc4"],
            "max cos, uncentred means": final["uncentred_max_abs_cosine"],
            "norms vs counts (Spearman)": result.get("norm_vs_count_spearman", ""),
            "classifier norms vs counts": result.get("classifier_norm_vs_count_spearman", ""),
            "min cos(w_c, mean_c)": min(final["classifier_mean_cosines"]),
        })  # fmt: skip
    plot(results_dir(SLUG) / "collapse.png", settings)
    write_results(SLUG, config, settings, started=started, table=table)
    return settings
