"""What the image-classification experiments share: the MNIST-style data sets as arrays, cross-entropy training of
a classifier with the project's loop, and accuracy."""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from jaxinterp import data as datasets
from jaxinterp.training import minibatches, train

LOADERS = {"mnist": datasets.mnist, "fashion_mnist": datasets.fashion_mnist}


def load_images(name: str, train_size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(train_images, train_labels, test_images, test_labels)` of MNIST or Fashion-MNIST, images `[n, 1, 28, 28]`
    in `[0, 1]`; `train_size` keeps the first that many training images."""
    if name not in LOADERS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(LOADERS)}")
    train_images, train_labels = LOADERS[name]("train")
    test_images, test_labels = LOADERS[name]("test")
    if train_size is not None:
        train_images, train_labels = train_images[:train_size], train_labels[:train_size]
    return train_images[:, None], train_labels, test_images[:, None], test_labels


@functools.cache
def _loss(logits_fn: Callable) -> Callable:
    """One loss function per `logits_fn`, so that models of one shape share the compiled training step."""

    def loss_fn(model, batch, key):
        images, labels, extra = batch
        logits = logits_fn(model, images, extra)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    return loss_fn


@functools.cache
def _adam(learning_rate: float) -> optax.GradientTransformation:
    return optax.adam(learning_rate)


def train_classifier(
    model: Any,
    logits_fn: Callable,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    key,
    extra: Any = None,
    description: str = "classifier",
) -> tuple[Any, dict]:
    """Train `model` with cross-entropy and Adam in `jaxinterp.train`, on minibatches drawn with replacement.

    `logits_fn(model, images, extra)` gives the batch's logits; `extra` (e.g. anchor inputs) is passed in every
    batch, so it is data, not a trained parameter. Returns the model and a summary of its training.
    """
    batch_key, train_key = jr.split(key)
    draw = minibatches((jnp.asarray(images), jnp.asarray(labels)), batch_size, key=batch_key)
    model, history = train(
        model,
        _loss(logits_fn),
        lambda step: (*draw(step), extra),
        _adam(learning_rate),
        steps=steps,
        key=train_key,
        description=description,
        progress=False,
    )
    loss = history["loss"]
    return model, {
        "steps": steps,
        "first_loss": float(loss[0]),
        "final_loss": float(loss[-max(1, steps // 10) :].mean()),
        "wall_time_s": history["wall_time_s"],
    }


@eqx.filter_jit
def _predict(f, images):
    return jnp.argmax(jax.vmap(f)(images), axis=-1)


def accuracy(f: Callable, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """The fraction of `images` that the per-example classifier `f` labels correctly, in batches."""
    correct = 0
    for start in range(0, len(images), batch_size):
        predicted = np.asarray(_predict(f, jnp.asarray(images[start : start + batch_size])))
        correct += int(np.sum(predicted == labels[start : start + batch_size]))
    return correct / len(images)
