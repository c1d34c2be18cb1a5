"""Counter-current learning (P42): MLP and CNN classifiers on MNIST and Fashion-MNIST trained by counter-current
learning, by backpropagation and by feedback alignment (same architecture, optimiser and steps), and a
convolutional autoencoder trained by counter-current learning and by backpropagation."""

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

from .config import CounterCurrentConfig

SLUG = "counter_current"

PAPER = {
    "source": "Kao and Hariharan, NeurIPS 2024, Table 1 (MLPs) and Table 3 (CNNs), and the autoencoder of Section 4",
    "claim_mlp": "counter-current learning reaches test accuracy comparable to the other biologically plausible "
    "rules (FA, DTP, DRL, L-DRL, FW-DTP, DRTP) on MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, a little below BP",
    "claim_cnn": "on CNNs counter-current learning stays close to backpropagation",
    "claim_autoencoder": "an eight-layer convolutional autoencoder (STL-10) trained by counter-current learning "
    "reconstructs comparably to backpropagation, with some visible artefacts",
    "target_here": "counter-current within 2 points of backpropagation on the MNIST and Fashion-MNIST MLPs",
}

_LOADERS = {"mnist": datasets.mnist, "fashion_mnist": datasets.fashion_mnist}
_MLP_METHODS = ("backprop", "feedback_alignment", "counter_current")
_CNN_METHODS = ("backprop", "counter_current")


def _check(config: CounterCurrentConfig) -> None:
    if config.optimiser not in ("sgd", "adam"):
        raise ValueError(f"unknown optimiser {config.optimiser!r}; choose 'sgd' or 'adam'")
    for name in (*config.datasets, *([config.autoencoder_dataset] if config.autoencoder_dataset else [])):
        if name not in _LOADERS:
            raise ValueError(f"unknown dataset {name!r}; choose from {sorted(_LOADERS)}")
    for method in config.mlp_methods:
        if method not in _MLP_METHODS:
            raise ValueError(f"unknown MLP method {method!r}; choose from {_MLP_METHODS}")
    for method in config.cnn_methods:
        if method not in _CNN_METHODS:
            raise ValueError(f"unknown CNN method {method!r}; choose from {_CNN_METHODS}")


def load(name: str, train_size: int | None):
    """`(train_images, train_labels, test_images, test_labels)`: `[n, 1, 28, 28]` images standardised with the
    training images' mean and standard deviation."""
    train_images, train_labels = _LOADERS[name]("train")
    test_images, test_labels = _LOADERS[name]("test")
    if train_size is not None:
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
    mean, std = train_images.mean(), train_images.std()
    standardise = lambda x: ((x - mean) / std)[:, None].astype(np.float32)
    return standardise(train_images), train_labels, standardise(test_images), test_labels


def _cross_entropy(logits, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def backprop_loss(model, batch, key):
    """End-to-end cross-entropy of the forward network (also feedback alignment's, on a rewritten model)."""
    images, labels = batch
    return _cross_entropy(jax.vmap(model)(images), labels)


def counter_current_classification_loss(cosine_scale: float | None):
    """The counter-current objective for a classifier: the prototype-alignment loss at every depth (on raw
    activations with `cosine_scale=None`, the MLPs; on unit-length ones with that weight, the CNNs) and
    cross-entropy at the top."""

    def loss_fn(model, batch, key):
        images, labels = batch

        def pair_loss(a, c):
            if cosine_scale is None:
                return learning.prototype_alignment_loss(a, c, labels)
            return learning.prototype_alignment_loss(a, c, labels, normalise=True, scale=cosine_scale)

        return learning.counter_current_loss(
            model.forward_layers, model.feedback_layers, images, model.class_codes(),
            pair_loss=pair_loss, output_loss=lambda logits, codes: _cross_entropy(logits, labels),
        )  # fmt: skip

    return loss_fn


def clip_each_network(max_norm: float) -> optax.GradientTransformation:
    """Scale the forward network's gradient and the feedback network's gradient, each on its own, to global norm at
    most `max_norm` (the per-network clipping of the authors' code); the updates must have a dual network's
    `forward_layers` and `feedback_layers`."""

    def clip(tree):
        norm = optax.tree.norm(tree)
        return jax.tree.map(lambda g: g * jnp.minimum(1.0, max_norm / (norm + 1e-6)), tree)

    def update(updates, state, params=None):
        parts = lambda m: (m.forward_layers, m.feedback_layers)
        clipped = tuple(clip(part) for part in parts(updates))
        return eqx.tree_at(parts, updates, clipped), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def classifier_optimiser(config: CounterCurrentConfig) -> optax.GradientTransformation:
    """The optimiser every classifier is trained with, whatever its rule."""
    if config.optimiser == "adam":
        return optax.adam(config.learning_rate)
    return optax.chain(clip_each_network(config.gradient_clip), optax.sgd(config.learning_rate))


def accuracy(model, images, labels, batch_size: int) -> float:
    """The fraction of `images` whose largest forward logit is at the label."""
    predict = eqx.filter_jit(lambda m, x: jnp.argmax(jax.vmap(m)(x), axis=-1))
    hits = 0
    for start in range(0, len(images), batch_size):
        chunk = jnp.asarray(images[start : start + batch_size])
        hits += int(jnp.sum(predict(model, chunk) == jnp.asarray(labels[start : start + batch_size])))
    return hits / len(images)


def train_classifier(config, data, architecture: str, method: str, key) -> dict:
    train_images, train_labels, test_images, test_labels = data
    init_key, feedback_key, batch_key, train_key = jr.split(key, 4)
    if architecture == "mlp":
        train_images, test_images = (
            train_images.reshape(len(train_images), -1),
            test_images.reshape(len(test_images), -1),
        )
        model = models.CounterCurrentMLP(
            784, config.mlp_hidden, 10, config.activation, use_bias=config.mlp_bias, key=init_key
        )
        epochs = config.mlp_epochs
    else:
        model = models.CounterCurrentCNN(1, 28, config.cnn_channels, 10, config.activation, key=init_key)
        epochs = config.cnn_epochs
    if method == "counter_current":
        loss_fn = counter_current_classification_loss(None if architecture == "mlp" else config.cnn_cosine_scale)
        has_aux = True
    else:
        loss_fn, has_aux = backprop_loss, False
        if method == "feedback_alignment":
            model = learning.feedback_alignment(model, key=feedback_key)
    steps = epochs * len(train_images) // config.batch_size
    batches = minibatches((jnp.asarray(train_images), jnp.asarray(train_labels)), config.batch_size, key=batch_key)
    trained, history = train(
        model, loss_fn, batches, classifier_optimiser(config), steps=steps, key=train_key, has_aux=has_aux,
        description=f"{architecture} {method}",
    )  # fmt: skip
    return {
        "test_accuracy": accuracy(trained, test_images, test_labels, config.evaluation_batch_size),
        "train_accuracy": accuracy(trained, train_images[:10_000], train_labels[:10_000], config.evaluation_batch_size),
        "steps": steps,
        "final_loss": float(np.mean(history["loss"][-50:])),
        "wall_time_s": history["wall_time_s"],
        "loss_curve": history["loss"][:: max(1, steps // 200)].tolist(),
    }


def autoencoder_backprop_loss(model, batch, key):
    """The reconstruction error of the forward network, trained end to end."""
    return jnp.mean((jax.vmap(model)(batch) - batch) ** 2)


def autoencoder_counter_current_loss(model, batch, key):
    """Counter-current learning for the autoencoder: the feedback network is fed the image itself; every depth has
    a mean squared pair loss and the top the reconstruction error."""
    return learning.counter_current_loss(
        model.forward_layers, model.feedback_layers, batch, batch,
        pair_loss=learning.mean_squared_pair_loss, output_loss=learning.mean_squared_pair_loss,
    )  # fmt: skip


def train_autoencoders(config, key) -> tuple[dict, dict]:
    """Train the autoencoder by both rules on raw pixels in `[0, 1]`; returns the metrics and the test
    reconstructions of the first eight test images."""
    train_images, _ = _LOADERS[config.autoencoder_dataset]("train")
    test_images, _ = _LOADERS[config.autoencoder_dataset]("test")
    if config.train_size is not None:
        train_images = train_images[: config.train_size]
    train_images, test_images = train_images[:, None], test_images[:2000, None]
    init_key, batch_key, train_key = jr.split(key, 3)
    model = models.CounterCurrentAutoencoder(1, 28, config.autoencoder_channels, config.activation, key=init_key)
    batches = minibatches(jnp.asarray(train_images), config.autoencoder_batch_size, key=batch_key)
    reconstruct = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))
    metrics, pictures = {}, {"original": test_images[:8, 0]}
    rules = {
        "backprop": (autoencoder_backprop_loss, False),
        "counter_current": (autoencoder_counter_current_loss, True),
    }
    for method, (loss_fn, has_aux) in rules.items():
        trained, history = train(
            model, loss_fn, batches, optax.adam(config.autoencoder_learning_rate), steps=config.autoencoder_steps,
            key=train_key, has_aux=has_aux, description=f"autoencoder {method}",
        )  # fmt: skip
        errors = [
            float(jnp.mean((reconstruct(trained, jnp.asarray(chunk)) - chunk) ** 2))
            for chunk in np.split(test_images, 4)
        ]
        metrics[method] = {"test_mse": float(np.mean(errors)), "wall_time_s": history["wall_time_s"]}
        pictures[method] = np.asarray(reconstruct(trained, jnp.asarray(test_images[:8])))[:, 0]
    return metrics, pictures


def plot_accuracies(path, classifiers: dict) -> None:
    names = list(classifiers)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    axes[0].barh(range(len(names)), [100 * classifiers[n]["test_accuracy"] for n in names], color="C0")
    axes[0].set_yticks(range(len(names)), names, fontsize=7)
    axes[0].set_xlabel("test accuracy (%)")
    low = min(100 * r["test_accuracy"] for r in classifiers.values())
    axes[0].set_xlim(max(0.0, low - 5), 100)
    for name in names:
        curve = classifiers[name]["loss_curve"]
        if "counter_current" not in name:
            axes[1].plot(np.linspace(0, 1, len(curve)), curve, label=name, lw=0.8)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("fraction of training")
    axes[1].set_ylabel("cross-entropy (backprop, FA)")
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reconstructions(path, pictures: dict) -> None:
    rows = list(pictures)
    fig, axes = plt.subplots(len(rows), 8, figsize=(8, 1.1 * len(rows)))
    for r, row in enumerate(rows):
        for c in range(8):
            axes[r, c].imshow(np.clip(pictures[row][c], 0, 1), cmap="gray", vmin=0, vmax=1)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        axes[r, 0].set_ylabel(row.replace("_", " "), fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config: CounterCurrentConfig) -> dict:
    """Train every classifier and the autoencoder; writes `results/counter_current/`."""
    started = time.time()
    _check(config)
    key = jr.key(config.seed)
    classifiers, table = {}, []
    runs = [("mlp", m) for m in config.mlp_methods] + [("cnn", m) for m in config.cnn_methods]
    for d, name in enumerate(config.datasets):
        data = load(name, config.train_size)
        for architecture, method in runs:
            # the same key for every method of one dataset and architecture: the same initial forward weights
            run_key = jr.fold_in(jr.fold_in(key, d), 0 if architecture == "mlp" else 1)
            result = train_classifier(config, data, architecture, method, run_key)
            classifiers[f"{name} {architecture} {method}"] = result
        for architecture in ("mlp", "cnn"):
            reference = classifiers.get(f"{name} {architecture} backprop")
            for method in config.mlp_methods if architecture == "mlp" else config.cnn_methods:
                result = classifiers[f"{name} {architecture} {method}"]
                if reference is not None:
                    result["gap_to_backprop_points"] = 100 * (reference["test_accuracy"] - result["test_accuracy"])
                table.append({
                    "dataset": name, "network": architecture, "rule": method,
                    "test accuracy (%)": 100 * result["test_accuracy"],
                    "gap to backprop (points)": result.get("gap_to_backprop_points", ""),
                    "steps": result["steps"], "train time (s)": result["wall_time_s"],
                })  # fmt: skip
    out = results_dir(SLUG)
    metrics = {"classifiers": classifiers}
    if "backprop" in config.mlp_methods and "counter_current" in config.mlp_methods:
        gaps = {n: classifiers[f"{n} mlp counter_current"]["gap_to_backprop_points"] for n in config.datasets}
        metrics["mlp_gap_to_backprop_points"] = gaps
        metrics["mlp_within_2_points"] = bool(all(g <= 2.0 for g in gaps.values()))
    if classifiers:
        plot_accuracies(out / "accuracy.png", classifiers)
    if config.autoencoder_dataset is not None:
        autoencoder, pictures = train_autoencoders(config, jr.fold_in(key, 1000))
        metrics["autoencoder"] = autoencoder
        plot_reconstructions(out / "reconstructions.png", pictures)
        for method, result in autoencoder.items():
            table.append({
                "dataset": config.autoencoder_dataset, "network": "conv autoencoder", "rule": method,
                "test reconstruction MSE": result["test_mse"], "steps": config.autoencoder_steps,
                "train time (s)": result["wall_time_s"],
            })  # fmt: skip
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
