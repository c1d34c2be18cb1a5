"""Linear probes: multinomial logistic regression on activations, fitted in one compiled loop and refined online
one example batch at a time."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int


class Probe(eqx.Module):
    """A linear probe `softmax(((x - mean) / scale) @ weight + bias)`.

    The inputs are standardised with the training set's per-dimension mean and standard deviation (fixed when the
    probe is fitted), so one learning rate fits any site, including residual streams with a few very large
    dimensions.
    """

    weight: Float[Array, "d classes"]
    bias: Float[Array, " classes"]
    mean: Float[Array, " d"]
    scale: Float[Array, " d"]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[1]

    def logits(self, x: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch classes"]:
        x = jnp.asarray(x)
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"Probe: inputs have width {x.shape[-1]}, the probe takes {self.weight.shape[0]}")
        return ((x - self.mean) / self.scale) @ self.weight + self.bias

    def probabilities(self, x: Float[ArrayLike, "*batch d"]) -> Float[Array, "*batch classes"]:
        return jax.nn.softmax(self.logits(x), -1)

    def predict(self, x: Float[ArrayLike, "*batch d"]) -> Int[Array, "*batch"]:
        return jnp.argmax(self.logits(x), -1)


def _objective(weights, x, labels, l2, mean, scale):
    weight, bias = weights
    ce = optax.softmax_cross_entropy_with_integer_labels(Probe(weight, bias, mean, scale).logits(x), labels).mean()
    return ce + 0.5 * l2 * jnp.sum(weight**2)


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit(x, labels, num_classes, steps, learning_rate, l2):
    mean = x.mean(0)
    scale = jnp.maximum(x.std(0), 1e-6)
    weights = (jnp.zeros((x.shape[1], num_classes), x.dtype), jnp.zeros(num_classes, x.dtype))
    optimiser = optax.adam(learning_rate)

    def step(state, _):
        weights, opt_state = state
        grads = jax.grad(_objective)(weights, x, labels, l2, mean, scale)
        updates, opt_state = optimiser.update(grads, opt_state, weights)
        return (optax.apply_updates(weights, updates), opt_state), None

    (weights, _), _ = lax.scan(step, (weights, optimiser.init(weights)), None, length=steps)
    return Probe(*weights, mean, scale)


def _check(x, labels, where: str, num_classes: int | None = None):
    x = jnp.asarray(x)
    labels = jnp.asarray(labels)
    if x.ndim != 2 or labels.shape != x.shape[:1]:
        raise ValueError(f"{where}: expected x [n, d] and labels [n]; got {x.shape} and {labels.shape}")
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"{where}: labels must be integer class ids; got dtype {labels.dtype}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"{where}: x contains NaN or infinite values")
    if num_classes is not None and labels.size and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(
            f"{where}: labels must lie in [0, {num_classes}); got {int(labels.min())}..{int(labels.max())}"
        )
    return x.astype(jnp.result_type(x.dtype, jnp.float32)), labels


def fit_probe(
    x: Float[ArrayLike, "n d"],
    labels: Int[ArrayLike, " n"],
    num_classes: int,
    *,
    steps: int = 300,
    learning_rate: float = 0.05,
    l2: float = 1e-3,
) -> Probe:
    """Fit a multinomial logistic-regression probe by full-batch Adam on the mean cross-entropy plus
    `l2 / 2 ||weight||^2`.

    **Arguments:** `x`, the activations `[n, d]`; `labels`, int `[n]` in `[0, num_classes)`; `num_classes`
    (at least 1: a one-class probe always predicts class 0); `steps`, `learning_rate` and `l2` of the fit.

    **Returns:** the fitted `Probe`.
    """
    if num_classes < 1:
        raise ValueError(f"fit_probe: num_classes must be at least 1; got {num_classes}")
    x, labels = _check(x, labels, "fit_probe", num_classes)
    return _fit(x, labels, num_classes, steps, learning_rate, l2)


@jax.jit
def _refine(probe, x, labels, learning_rate, l2):
    weight, bias = jax.grad(_objective)((probe.weight, probe.bias), x, labels, l2, probe.mean, probe.scale)
    return Probe(probe.weight - learning_rate * weight, probe.bias - learning_rate * bias, probe.mean, probe.scale)


def refine_probe(
    probe: Probe, x: Float[ArrayLike, "n d"], labels: Int[ArrayLike, " n"], *, learning_rate: float = 0.1, l2=1e-3
) -> Probe:
    """One online step: a gradient step of the probe's objective on a new batch of labelled activations (the
    standardisation stays that of the original fit).

    **Returns:** the refined `Probe`.
    """
    x, labels = _check(x, labels, "refine_probe", probe.num_classes)
    return _refine(probe, x, labels, learning_rate, l2)


def probe_accuracy(probe: Probe, x: Float[ArrayLike, "n d"], labels: Int[ArrayLike, " n"]) -> float:
    """The fraction of `x` whose predicted class equals `labels`."""
    x, labels = _check(x, labels, "probe_accuracy", probe.num_classes)
    return float(jnp.mean(probe.predict(x) == labels))
