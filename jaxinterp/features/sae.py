"""Sparse autoencoders (SAEs) on activations: ReLU with an L1 penalty, TopK, BatchTopK and JumpReLU, trained with
the project's one loop, with SAELens's parameter names, initialisation, losses and evaluation metrics. See
`docs/sae.md`."""

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from ..capture import capture
from ..intervene import intervene
from ..training import minibatches, train

SAE_ARCHITECTURES = ("relu", "topk", "batchtopk", "jumprelu")
"""The SAE architectures: `relu` (SAELens's `standard`), `topk`, `batchtopk` and `jumprelu`."""


@dataclasses.dataclass(frozen=True)
class SAEConfig:
    """How to build and train a sparse autoencoder; defaults follow SAELens's.

    - `d_in`, `d_sae`: the input width and the number of latents.
    - `architecture`: one of `SAE_ARCHITECTURES`.
    - `k`: active latents per input (`topk`), or on average per input of a batch (`batchtopk`).
    - `l1_coefficient`, `lp_norm`, `l1_warm_up_steps`: the ReLU SAE's sparsity penalty, `l1_coefficient` times the
      batch mean of the `lp_norm`-norm of the latents weighted by their decoder rows' norms, its coefficient
      ramped up linearly from 0 over the first `l1_warm_up_steps` steps.
    - `l0_coefficient`, `l0_warm_up_steps`, `jumprelu_bandwidth`, `jumprelu_init_threshold`: JumpReLU's L0 penalty
      (through the straight-through estimator of the step function with a rectangle kernel of that bandwidth), its
      warm-up, and the initial threshold of every latent.
    - `aux_coefficient`, `dead_feature_window`: a latent that has not fired for more than `dead_feature_window`
      steps is dead; TopK and BatchTopK add the AuxK loss, `aux_coefficient` times the error of reconstructing the
      residual from the top `d_in // 2` dead latents (scaled down while fewer latents are dead).
    - `batchtopk_threshold_lr`: the rate of BatchTopK's running estimate of its inference threshold (the smallest
      positive latent value of each batch).
    - `rescale_acts_by_decoder_norm`: TopK and BatchTopK train as if the decoder rows had unit norm (pre-activations
      times the rows' norms, rows divided by them), and the norms are folded into the encoder at the end, as
      SAELens does; the ReLU and JumpReLU penalties weight each latent by its decoder row's norm.
    - `normalise_decoder`: also keep every decoder row at unit norm throughout (the gradient's component along a
      row is removed, and rows are rescaled after each step); SAELens leaves them free.
    - `decoder_init_norm`: the norm of the initial decoder rows (the encoder starts as the decoder's transpose).
    - `apply_b_dec_to_input`: subtract `b_dec` from the input before encoding.
    - `learning_rate`, `adam_beta1`, `adam_beta2`, `lr_warm_up_steps`, `lr_decay_steps`, `max_grad_norm`: Adam
      with a linear warm-up from 0 and a linear decay to 0 over the last `lr_decay_steps` steps, after clipping the
      gradient's global norm (`None`: no clipping).
    - `batch_size`: inputs per step when `train_sae` is given one array.
    """

    d_in: int
    d_sae: int
    architecture: str = "relu"
    k: int = 32
    l1_coefficient: float = 1.0
    lp_norm: float = 1.0
    l1_warm_up_steps: int = 0
    l0_coefficient: float = 1.0
    l0_warm_up_steps: int = 0
    jumprelu_bandwidth: float = 0.05
    jumprelu_init_threshold: float = 0.01
    aux_coefficient: float = 1.0
    dead_feature_window: int = 1000
    batchtopk_threshold_lr: float = 0.01
    rescale_acts_by_decoder_norm: bool = True
    normalise_decoder: bool = False
    decoder_init_norm: float = 0.1
    apply_b_dec_to_input: bool = True
    learning_rate: float = 3e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    lr_warm_up_steps: int = 0
    lr_decay_steps: int = 0
    max_grad_norm: float | None = 1.0
    batch_size: int = 4096

    def __post_init__(self):
        for name in ("d_in", "d_sae", "k", "batch_size", "dead_feature_window"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"SAEConfig: {name} must be a positive integer, got {value!r}")
        for name in ("l1_warm_up_steps", "l0_warm_up_steps", "lr_warm_up_steps", "lr_decay_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"SAEConfig: {name} must be a non-negative integer, got {value!r}")
        if self.architecture not in SAE_ARCHITECTURES:
            raise ValueError(_unknown("architecture", self.architecture, SAE_ARCHITECTURES))
        if self.architecture in ("topk", "batchtopk") and self.k > self.d_sae:
            raise ValueError(f"SAEConfig: k = {self.k} is more than d_sae = {self.d_sae}")
        for name in ("learning_rate", "jumprelu_bandwidth", "jumprelu_init_threshold", "decoder_init_norm"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SAEConfig: {name} must be positive, got {getattr(self, name)!r}")
        for name in ("l1_coefficient", "l0_coefficient", "aux_coefficient"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SAEConfig: {name} must be non-negative, got {getattr(self, name)!r}")
        if not 0 < self.batchtopk_threshold_lr <= 1:
            raise ValueError(f"SAEConfig: batchtopk_threshold_lr must be in (0, 1], got {self.batchtopk_threshold_lr}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"SAEConfig: max_grad_norm must be None or positive, got {self.max_grad_norm!r}")


def _unknown(what: str, name: Any, known: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {what} {name!r}: expected one of {', '.join(map(repr, known))}{hint}"


class SparseAutoencoder(eqx.Module):
    """A sparse autoencoder with SAELens's parameters and conventions (inputs are rows, `x @ W_enc`).

    `encode(x)` is `f((x - b_dec) @ W_enc + b_enc)` (without the `- b_dec` when `apply_b_dec_to_input` is False)
    with `f` the architecture's activation: ReLU (`relu`), the top `k` pre-activations kept and passed through a
    ReLU (`topk`), or JumpReLU, `z * (z > threshold)` after a ReLU (`jumprelu`, and `batchtopk` at inference,
    whose threshold is the running estimate made in training). `decode(latents)` is `latents @ W_dec + b_dec`.
    Both take any leading axes.

    **Fields:** `W_enc` `[d_in, d_sae]`, `b_enc` `[d_sae]`, `W_dec` `[d_sae, d_in]`, `b_dec` `[d_in]`,
    `threshold` `[d_sae]` (JumpReLU and BatchTopK; `None` otherwise), and the static `architecture`, `k` and
    `apply_b_dec_to_input`.
    """

    W_enc: Float[Array, "d_in d_sae"]
    b_enc: Float[Array, " d_sae"]
    W_dec: Float[Array, "d_sae d_in"]
    b_dec: Float[Array, " d_in"]
    threshold: Float[Array, " d_sae"] | None = None
    architecture: str = eqx.field(static=True, default="relu")
    k: int = eqx.field(static=True, default=32)
    apply_b_dec_to_input: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if self.architecture not in SAE_ARCHITECTURES:
            raise ValueError(_unknown("architecture", self.architecture, SAE_ARCHITECTURES))
        d_in, d_sae = self.W_enc.shape
        shapes = {"b_enc": (d_sae,), "W_dec": (d_sae, d_in), "b_dec": (d_in,)}
        if self.threshold is not None:
            shapes["threshold"] = (d_sae,)
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise ValueError(
                    f"SparseAutoencoder: {name} has shape {getattr(self, name).shape}, expected {shape} for "
                    f"W_enc of shape {(d_in, d_sae)}"
                )
        if self.architecture in ("jumprelu", "batchtopk") and self.threshold is None:
            raise ValueError(f"SparseAutoencoder: a {self.architecture} SAE needs a threshold")

    @property
    def d_in(self) -> int:
        """The input width."""
        return self.W_enc.shape[0]

    @property
    def d_sae(self) -> int:
        """The number of latents."""
        return self.W_enc.shape[1]

    def pre_activations(self, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_sae"]:
        """The latents before the activation function, `(x - b_dec) @ W_enc + b_enc`."""
        self._check_input(x)
        if self.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def encode(self, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_sae"]:
        """The latents of inputs `x` `[..., d_in]`: `[..., d_sae]`."""
        pre = self.pre_activations(x)
        if self.architecture == "relu":
            return jax.nn.relu(pre)
        if self.architecture == "topk":
            return _topk(pre, self.k)
        return jnp.where(pre > self.threshold, jax.nn.relu(pre), 0.0)

    def decode(self, latents: Float[Array, "*batch d_sae"]) -> Float[Array, "*batch d_in"]:
        """The reconstruction `latents @ W_dec + b_dec` `[..., d_in]` of latents `[..., d_sae]`."""
        if latents.shape[-1:] != (self.d_sae,):
            raise ValueError(f"SparseAutoencoder.decode: latents must be [..., {self.d_sae}], got {latents.shape}")
        return latents @ self.W_dec + self.b_dec

    def __call__(self, x: Float[Array, "*batch d_in"]) -> Float[Array, "*batch d_in"]:
        """The reconstruction `decode(encode(x))`."""
        return self.decode(self.encode(x))

    def _check_input(self, x) -> None:
        if x.shape[-1:] != (self.d_in,):
            raise ValueError(f"SparseAutoencoder: inputs must be [..., {self.d_in}], got shape {x.shape}")


def _topk(pre: Array, k: int) -> Array:
    """Keep the `k` largest entries of the last axis (through a ReLU), zero the rest."""
    _, index = jax.lax.top_k(pre, k)
    keep = jnp.zeros(pre.shape, bool)
    keep = jnp.put_along_axis(keep, index, True, axis=-1, inplace=False)
    return jnp.where(keep, jax.nn.relu(pre), 0.0)


def init_sae(config: SAEConfig, *, key: PRNGKeyArray) -> SparseAutoencoder:
    """A fresh SAE as SAELens initialises one: decoder rows drawn uniformly (Kaiming), scaled to norm
    `decoder_init_norm` (unit norm with `normalise_decoder`), the encoder the decoder's transpose, zero biases, and
    JumpReLU thresholds of `jumprelu_init_threshold` (BatchTopK's starts at 0).

    **Arguments:** `config`: the SAE's configuration; `key`: a JAX PRNG key.

    **Returns:** a `SparseAutoencoder`.
    """
    bound = float(np.sqrt(6.0 / config.d_in))
    W_dec = jr.uniform(key, (config.d_sae, config.d_in), jnp.float32, -bound, bound)
    norm = 1.0 if config.normalise_decoder else config.decoder_init_norm
    W_dec = W_dec / jnp.linalg.norm(W_dec, axis=-1, keepdims=True) * norm
    threshold = None
    if config.architecture == "jumprelu":
        threshold = jnp.full((config.d_sae,), config.jumprelu_init_threshold, jnp.float32)
    elif config.architecture == "batchtopk":
        threshold = jnp.zeros((config.d_sae,), jnp.float32)
    return SparseAutoencoder(
        W_dec.T,
        jnp.zeros((config.d_sae,), jnp.float32),
        W_dec,
        jnp.zeros((config.d_in,), jnp.float32),
        threshold,
        config.architecture,
        config.k,
        config.apply_b_dec_to_input,
    )


# ---------------------------------------------------------------------------------------------------------------
# training


def _rectangle(x):
    return ((x > -0.5) & (x < 0.5)).astype(x.dtype)


@jax.custom_vjp
def _jumprelu(x, threshold, bandwidth):
    return jnp.where(x > threshold, x, 0.0)


def _jumprelu_fwd(x, threshold, bandwidth):
    return _jumprelu(x, threshold, bandwidth), (x, threshold, bandwidth)


def _jumprelu_bwd(saved, g):
    x, threshold, bandwidth = saved
    dx = jnp.where(x > threshold, g, 0.0)
    dthreshold = -jnp.sum((threshold / bandwidth) * _rectangle((x - threshold) / bandwidth) * g, axis=0)
    return dx, dthreshold, jnp.zeros_like(bandwidth)


_jumprelu.defvjp(_jumprelu_fwd, _jumprelu_bwd)


@jax.custom_vjp
def _step(x, threshold, bandwidth):
    return (x > threshold).astype(x.dtype)


def _step_fwd(x, threshold, bandwidth):
    return _step(x, threshold, bandwidth), (x, threshold, bandwidth)


def _step_bwd(saved, g):
    x, threshold, bandwidth = saved
    dthreshold = -jnp.sum((1.0 / bandwidth) * _rectangle((x - threshold) / bandwidth) * g, axis=0)
    return jnp.zeros_like(x), dthreshold, jnp.zeros_like(bandwidth)


_step.defvjp(_step_fwd, _step_bwd)


class _Trainee(eqx.Module):
    """What the loop trains: the SAE's arrays (JumpReLU's threshold among them), plus running statistics that the
    optimiser sets from pseudo-gradients emitted by the loss: `idle` (steps since each latent last fired), `fired`
    (how often each latent fired) and `running` (BatchTopK's threshold estimate)."""

    sae: SparseAutoencoder
    idle: Array
    fired: Array
    running: Array


@jax.custom_vjp
def _through(value, carried):
    """Zero, whose gradient with respect to `value` is `carried`: `carried` reaches the optimiser as the
    pseudo-gradient of `value`'s leaf."""
    return jnp.zeros((), value.dtype)


def _through_fwd(value, carried):
    return _through(value, carried), carried


def _through_bwd(carried, g):
    return g * carried, jnp.zeros_like(carried)


_through.defvjp(_through_fwd, _through_bwd)


def _ramp(step, warm_up: int):
    """SAELens's coefficient warm-up: `(step + 1) / warm_up` for the first `warm_up` steps, then 1."""
    return 1.0 if warm_up == 0 else jnp.minimum(1.0, (step + 1.0) / warm_up)


def _rescaled(config: SAEConfig) -> bool:
    return config.architecture in ("topk", "batchtopk") and config.rescale_acts_by_decoder_norm


def _sae_loss(config: SAEConfig):
    """The training objective of `config`'s architecture: `loss_fn(trainee, (x, step), key) -> (loss, metrics)`."""

    def loss_fn(trainee: _Trainee, batch, key):
        x, step = batch
        sae = trainee.sae
        pre = sae.pre_activations(x)
        dead = trainee.idle > config.dead_feature_window
        norms = jnp.linalg.norm(sae.W_dec, axis=-1)
        if _rescaled(config):
            pre = pre * norms
        decoder = sae.W_dec / norms[:, None] if _rescaled(config) else sae.W_dec
        if config.architecture == "relu":
            latents = jax.nn.relu(pre)
        elif config.architecture == "topk":
            latents = _topk(pre, config.k)
        elif config.architecture == "batchtopk":
            acts = jax.nn.relu(pre)
            flat = acts.reshape(-1)
            _, index = jax.lax.top_k(flat, config.k * x.shape[0])
            latents = jnp.zeros_like(flat).at[index].set(flat[index]).reshape(acts.shape)
        else:
            latents = _jumprelu(pre, sae.threshold, jnp.float32(config.jumprelu_bandwidth))
        x_hat = latents @ decoder + sae.b_dec
        on = (latents != 0).astype(jnp.float32)
        counts = jnp.sum(on, axis=0)
        l0 = jnp.mean(jnp.sum(on, axis=-1))
        mse = jnp.mean(jnp.sum((x_hat - x) ** 2, axis=-1))
        metrics = {}
        if config.architecture == "relu":
            penalty = jnp.mean(jnp.linalg.norm(latents * norms, ord=config.lp_norm, axis=-1))
            sparsity = config.l1_coefficient * _ramp(step, config.l1_warm_up_steps) * penalty
            metrics["l1_loss"] = sparsity
        elif config.architecture == "jumprelu":
            l0_step = jnp.sum(_step(pre, sae.threshold, jnp.float32(config.jumprelu_bandwidth)), axis=-1)
            sparsity = config.l0_coefficient * _ramp(step, config.l0_warm_up_steps) * jnp.mean(l0_step)
            metrics["l0_loss"] = sparsity
        else:
            sparsity = _auxk_loss(config, decoder, x, x_hat, pre, dead)
            metrics["auxiliary_reconstruction_loss"] = sparsity
        statistics = _through(trainee.idle, (counts > 0).astype(jnp.float32)) + _through(trainee.fired, counts)
        if config.architecture == "batchtopk":
            smallest = jnp.min(jnp.where(latents > 0, latents, jnp.inf))
            statistics += _through(trainee.running, jnp.where(jnp.isfinite(smallest), smallest, trainee.running))
        x_mean = jnp.mean(x, axis=0)
        metrics |= {
            "mse_loss": mse,
            "l0": l0,
            "explained_variance": 1.0 - jnp.sum((x - x_hat) ** 2) / jnp.sum((x - x_mean) ** 2),
            "dead_features": jnp.sum(dead),
        }
        return mse + sparsity + statistics, metrics

    return loss_fn


def _auxk_loss(config, decoder, x, x_hat, pre, dead):
    """TopK's AuxK loss: the residual `x - x_hat` reconstructed (without `b_dec`) from the pre-activations of the
    top `d_in // 2` dead latents, scaled by `min(dead / (d_in // 2), 1)`; computed only when a latent is dead."""
    k_aux = min(config.d_in // 2, config.d_sae)
    dead_count = jnp.sum(dead)

    def loss(operands):
        decoder, x, x_hat, pre = operands
        values, index = jax.lax.top_k(jnp.where(dead, pre, -jnp.inf), k_aux)
        values = jnp.where(jnp.arange(k_aux) < dead_count, values, 0.0)
        latents = jnp.put_along_axis(jnp.zeros_like(pre), index, values, axis=-1, inplace=False)
        residual = jax.lax.stop_gradient(x - x_hat)
        error = jnp.mean(jnp.sum((latents @ decoder - residual) ** 2, axis=-1))
        return config.aux_coefficient * jnp.minimum(dead_count / k_aux, 1.0) * error

    def nothing(operands):
        return jnp.zeros((), pre.dtype)

    return jax.lax.cond(dead_count > 0, loss, nothing, (decoder, x, x_hat, pre))


def _schedule(config: SAEConfig, steps: int):
    """The learning rate at each step: a linear warm-up from `lr / warm_up`, constant, and a linear decay to 0 over
    the last `lr_decay_steps` steps."""
    lr, warm, decay = config.learning_rate, config.lr_warm_up_steps, config.lr_decay_steps

    def schedule(count):
        factor = jnp.float32(1.0)
        if warm:
            factor = jnp.minimum(factor, (count + 1.0) / warm)
        if decay:
            factor = jnp.minimum(factor, jnp.clip((steps - count) / decay, 0.0, 1.0))
        return lr * factor

    return schedule


def _optimiser(config: SAEConfig, steps: int) -> optax.GradientTransformation:
    """Adam on the SAE's arrays after clipping their gradient's global norm (and, with `normalise_decoder`, after
    removing each decoder row's gradient along the row, and rescaling the rows after the update); JumpReLU's
    threshold kept non-negative; the running statistics set from their pseudo-gradients."""
    parts = [] if config.max_grad_norm is None else [optax.clip_by_global_norm(config.max_grad_norm)]
    adam = optax.chain(*parts, optax.adam(_schedule(config, steps), config.adam_beta1, config.adam_beta2))

    def init(params):
        return adam.init(params.sae)

    def update(grads, state, params):
        sae_grads, W = grads.sae, params.sae.W_dec
        if config.normalise_decoder:
            along = jnp.sum(sae_grads.W_dec * W, axis=-1, keepdims=True) / jnp.sum(W * W, axis=-1, keepdims=True)
            sae_grads = eqx.tree_at(lambda s: s.W_dec, sae_grads, sae_grads.W_dec - along * W)
        sae_updates, state = adam.update(sae_grads, state, params.sae)
        if config.normalise_decoder:
            new = W + sae_updates.W_dec
            sae_updates = eqx.tree_at(
                lambda s: s.W_dec, sae_updates, new / jnp.linalg.norm(new, axis=-1, keepdims=True) - W
            )
        if config.architecture == "jumprelu":
            threshold = params.sae.threshold
            new = jnp.maximum(threshold + sae_updates.threshold, 0.0)
            sae_updates = eqx.tree_at(lambda s: s.threshold, sae_updates, new - threshold)
        idle = jnp.where(grads.idle > 0, 0.0, params.idle + 1.0) - params.idle
        running = config.batchtopk_threshold_lr * (grads.running - params.running)
        if config.architecture != "batchtopk":
            running = jnp.zeros_like(running)
        return _Trainee(sae_updates, idle, grads.fired, running), state

    return optax.GradientTransformation(init, update)


def _stream(batches, config: SAEConfig, key) -> Callable[[int], Any]:
    """A `step -> (x, step)` function from one array (minibatches drawn with replacement) or an iterable of
    arrays (taken in order)."""
    if isinstance(batches, (np.ndarray, jax.Array)):
        data = jnp.asarray(batches, jnp.float32)
        if data.ndim != 2 or data.shape[1] != config.d_in:
            raise ValueError(f"train_sae: activations must be [n, {config.d_in}], got shape {data.shape}")
        if not bool(jnp.all(jnp.isfinite(data))):
            raise ValueError("train_sae: the activations have NaN or infinite values")
        draw = minibatches(data, config.batch_size, key=key)
        return lambda step: (draw(step), np.float32(step))
    iterator = iter(batches)
    first = []

    def next_batch(step):
        try:
            x = next(iterator)
        except StopIteration:
            raise ValueError(f"train_sae: the batches ran out at step {step}; give at least `steps` of them") from None
        x = jnp.asarray(x, jnp.float32)
        if x.ndim != 2 or x.shape[1] != config.d_in:
            raise ValueError(f"train_sae: batch {step} must be [batch, {config.d_in}], got shape {x.shape}")
        if first and x.shape != first[0]:
            raise ValueError(f"train_sae: batch {step} has shape {x.shape}, unlike the first batch's {first[0]}")
        if not first:
            first.append(x.shape)
            if not bool(jnp.all(jnp.isfinite(x))):
                raise ValueError("train_sae: the first batch has NaN or infinite values")
        return x, np.float32(step)

    return next_batch


def train_sae(
    batches: Float[ArrayLike, "n d_in"] | Iterable[Float[ArrayLike, "batch d_in"]],
    config: SAEConfig,
    *,
    key: PRNGKeyArray,
    steps: int,
    sae: SparseAutoencoder | None = None,
    checkpoint: Any = None,
    progress: bool = True,
    mesh: Any = None,
) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train a sparse autoencoder on activations with `jaxinterp.train`: one jitted step takes the loss, its
    gradient, the clipped Adam update, the decoder constraint and the running statistics.

    **Arguments:**

    - `batches`: one float array `[n, d_in]`, from which `config.batch_size` rows are drawn (with replacement) per
      step, or an iterable of float arrays `[batch, d_in]` of one shape, one per step, taken in order (e.g. an
      activation store's shuffled chunks).
    - `config`: an `SAEConfig`.
    - `key`: a JAX PRNG key (the initialisation and the minibatches).
    - `steps`: optimiser steps.
    - `sae`: the SAE to start from (default: `init_sae(config, key=...)`).
    - `checkpoint`: a file to save to and resume from (see `jaxinterp.train`; an iterable of batches starts again
      from its first batch on resume).
    - `progress`: show a progress bar.
    - `mesh`: a one-dimensional `jax.sharding.Mesh` for data-parallel training (each batch split across its
      devices, the SAE replicated; see `jaxinterp.train`), or `None`.

    **Returns:** `(sae, history)`. The trained `SparseAutoencoder`, in inference form as SAELens saves it: TopK's
    and BatchTopK's decoder norms folded into the encoder when trained with `rescale_acts_by_decoder_norm`, and
    BatchTopK's running threshold as the threshold of every latent (BatchTopK SAEs encode as JumpReLU SAEs). The
    loop's history: per step `loss`, `mse_loss` (squared error summed over `d_in`, mean over the batch), the
    sparsity term (`l1_loss`, `l0_loss` or `auxiliary_reconstruction_loss`), `l0`, `explained_variance` and
    `dead_features`; then `feature_sparsity` (each latent's firing frequency over the run, `[d_sae]`, what SAELens
    writes, as a log10, to `sparsity.safetensors`), `tokens`, `wall_time_s`, `first_step_s` and `tokens_per_s`.
    """
    if not isinstance(config, SAEConfig):
        raise TypeError(f"train_sae: config must be an SAEConfig, got {type(config).__name__}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"train_sae: steps must be a positive integer, got {steps!r}")
    init_key, batch_key, train_key = jr.split(key, 3)
    if sae is None:
        sae = init_sae(config, key=init_key)
    elif (sae.d_in, sae.d_sae, sae.architecture) != (config.d_in, config.d_sae, config.architecture):
        raise ValueError(
            f"train_sae: the SAE given is a {sae.architecture} SAE of shape {(sae.d_in, sae.d_sae)}, but the "
            f"config asks for a {config.architecture} SAE of shape {(config.d_in, config.d_sae)}"
        )
    running = jnp.max(sae.threshold) if config.architecture == "batchtopk" else 0.0
    if config.architecture != "jumprelu":
        sae = eqx.tree_at(lambda s: s.threshold, sae, None, is_leaf=lambda v: v is None)
    zeros = jnp.zeros((config.d_sae,), jnp.float32)
    trainee = _Trainee(sae, zeros, zeros, jnp.asarray(running, jnp.float32))
    stream = _stream(batches, config, batch_key)
    seen = [0]

    def counted(step):
        x, s = stream(step)
        seen[0] += x.shape[0]
        return x, s

    trainee, history = train(
        trainee,
        _cached_loss(config),
        counted,
        _cached_optimiser(config, steps),
        steps=steps,
        key=train_key,
        has_aux=True,
        checkpoint=checkpoint,
        description=f"{config.architecture} SAE",
        progress=progress,
        mesh=mesh,
    )
    history["feature_sparsity"] = np.asarray(trainee.fired) / max(seen[0], 1)
    history["tokens"] = seen[0]
    history["tokens_per_s"] = seen[0] / max(history["wall_time_s"], 1e-9)
    return _finished(trainee, config), history


_LOSSES: dict[SAEConfig, Callable] = {}
_OPTIMISERS: dict[tuple[SAEConfig, int], optax.GradientTransformation] = {}


def _cached_loss(config: SAEConfig) -> Callable:
    """One loss function per configuration, so that runs with equal configurations share one compilation."""
    key = dataclasses.replace(config, batch_size=1)
    if key not in _LOSSES:
        _LOSSES[key] = _sae_loss(config)
    return _LOSSES[key]


def _cached_optimiser(config: SAEConfig, steps: int) -> optax.GradientTransformation:
    """One optimiser per configuration and step count (the schedule's), for the same reason."""
    key = (dataclasses.replace(config, batch_size=1), steps if config.lr_decay_steps else 0)
    if key not in _OPTIMISERS:
        _OPTIMISERS[key] = _optimiser(config, steps)
    return _OPTIMISERS[key]


def _finished(trainee: _Trainee, config: SAEConfig) -> SparseAutoencoder:
    sae = trainee.sae
    if _rescaled(config):
        norms = jnp.maximum(jnp.linalg.norm(sae.W_dec, axis=-1), 1e-8)
        sae = eqx.tree_at(
            lambda s: (s.W_enc, s.b_enc, s.W_dec),
            sae,
            (sae.W_enc * norms, sae.b_enc * norms, sae.W_dec / norms[:, None]),
        )
    if config.architecture == "batchtopk":
        threshold = jnp.full((config.d_sae,), trainee.running, jnp.float32)
        sae = eqx.tree_at(lambda s: s.threshold, sae, threshold, is_leaf=lambda v: v is None)
    return sae


# ---------------------------------------------------------------------------------------------------------------
# metrics


@eqx.filter_jit
def _reconstruction_sums(sae: SparseAutoencoder, x: Array):
    latents = sae.encode(x)
    x_hat = sae.decode(latents)
    norm_in = jnp.linalg.norm(x, axis=-1)
    norm_out = jnp.linalg.norm(x_hat, axis=-1)
    active = latents != 0
    return {
        "l0": jnp.sum(active.astype(jnp.float32), axis=-1),
        "l1": jnp.sum(jnp.abs(latents), axis=-1),
        "error": jnp.sum((x - x_hat) ** 2, axis=-1),
        "cosine": jnp.sum(x * x_hat, axis=-1) / jnp.where(norm_in * norm_out > 0, norm_in * norm_out, 1.0),
        "l2_ratio": norm_out / jnp.where(norm_in < 1e-4, 1.0, norm_in),
        "squared_norm": norm_in**2,
        "active": jnp.sum(active.astype(jnp.float32), axis=0),
    }


def sae_metrics(
    sae: SparseAutoencoder,
    activations: Float[ArrayLike, "n d_in"] | None = None,
    *,
    model: Any = None,
    site: str | None = None,
    tokens: Int[ArrayLike, "texts seq"] | None = None,
    mask: Bool[ArrayLike, "texts seq"] | None = None,
    forward: Callable | None = None,
    batch_size: int = 4096,
) -> dict[str, float]:
    """SAELens's evaluation metrics of an SAE.

    Reconstruction, over the activations given (or, with `model`, those captured at `site` over the unmasked
    tokens):

    - `l0`, `l1`: the mean number of non-zero latents per input, and the mean sum of their absolute values;
    - `mse`: the mean over inputs of the squared error summed over `d_in`, `mean ||x - x_hat||^2`;
    - `explained_variance`: `1 - mse / (mean ||x||^2 - ||mean x||^2)` (1 or 0 for inputs without variance, as the
      error is zero or not);
    - `cosine`: the mean cosine similarity of `x` and `x_hat` (0 where either is zero, where SAELens's is NaN);
      `l2_ratio`: the mean `||x_hat|| / ||x||` (inputs of
      norm below 1e-4 divided by 1);
    - `dead_fraction`: the fraction of latents that never fire on these inputs; `feature_density`: each latent's
      firing frequency, a float64 array `[d_sae]`.

    With `model`, `site` and `tokens` also the downstream metrics: `ce_loss_clean`, `ce_loss_with_sae` and
    `ce_loss_with_ablation` (mean next-token cross-entropy with the site as it is, replaced by its reconstruction
    via `jaxinterp.intervene`, and zeroed), `ce_loss_score = (ablation - with_sae) / (ablation - clean)`, the mean
    KL divergences of the clean next-token distribution from the spliced ones `kl_div_with_sae` and
    `kl_div_with_ablation`, and `kl_div_score = (kl_ablation - kl_sae) / kl_ablation`.

    **Arguments:**

    - `sae`: the `SparseAutoencoder`.
    - `activations`: float `[n, d_in]` (or anything `[..., d_in]`); needed unless `model` is given.
    - `model`, `site`: a model `model(tokens) -> logits [seq, vocab]` for one text and the name of the site the
      SAE reads (its value for one text `[seq, d_in]`, or `[seq, ...]` flattened to `d_in`, e.g. `z` over heads).
    - `tokens`, `mask`: int `[texts, seq]` and bool `[texts, seq]` (all True when None). Masked positions (padding,
      or positions to leave alone, such as a first token whose residual is an outlier) are neither spliced nor
      counted: the reconstruction metrics use the unmasked positions, the losses the targets whose position and
      previous position are unmasked.
    - `forward`: `forward(model, tokens)` for one text instead of `model(tokens)`.
    - `batch_size`: inputs per compiled call for the reconstruction metrics.

    **Returns:** a dict of floats (and the `feature_density` array).
    """
    if not isinstance(sae, SparseAutoencoder):
        raise TypeError(f"sae_metrics: sae must be a SparseAutoencoder, got {type(sae).__name__}")
    downstream = {}
    if model is not None:
        if site is None or tokens is None:
            raise ValueError("sae_metrics: with a model, give the site the SAE reads and the tokens to run")
        downstream, captured = _downstream(sae, model, site, tokens, mask, forward)
        if activations is None:
            activations = captured
    if activations is None:
        raise ValueError("sae_metrics: give activations, or a model, a site and tokens")
    x = np.asarray(activations, np.float32)
    if x.shape[-1] != sae.d_in:
        raise ValueError(f"sae_metrics: activations must be [..., {sae.d_in}], got shape {x.shape}")
    x = x.reshape(-1, sae.d_in)
    if not x.shape[0]:
        raise ValueError("sae_metrics: no activations")
    if not np.all(np.isfinite(x)):
        raise ValueError("sae_metrics: the activations have NaN or infinite values")
    sums = dict.fromkeys(("l0", "l1", "error", "cosine", "l2_ratio", "squared_norm"), 0.0)
    active = np.zeros(sae.d_sae)
    for start in range(0, x.shape[0], batch_size):
        chunk = jax.device_get(_reconstruction_sums(sae, jnp.asarray(x[start : start + batch_size])))
        for name in sums:
            sums[name] += float(np.sum(np.asarray(chunk[name], np.float64)))
        active += np.asarray(chunk["active"], np.float64)
    n = x.shape[0]
    mse = sums["error"] / n
    variance = sums["squared_norm"] / n - float(np.sum(x.mean(0, dtype=np.float64) ** 2))
    if variance < 1e-10:
        explained = 1.0 if mse < 1e-10 else 0.0
    else:
        explained = 1.0 - mse / variance
    metrics = {
        "l0": sums["l0"] / n,
        "l1": sums["l1"] / n,
        "mse": mse,
        "explained_variance": explained,
        "cosine": sums["cosine"] / n,
        "l2_ratio": sums["l2_ratio"] / n,
        "dead_fraction": float(np.mean(active == 0)),
        "feature_density": active / n,
    }
    return metrics | downstream


def _downstream(sae, model, site, tokens, mask, forward):
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"sae_metrics: tokens must be integers [texts, seq], got {tokens.dtype} {tokens.shape}")
    mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.shape != tokens.shape:
        raise ValueError(f"sae_metrics: mask has shape {mask.shape}, tokens {tokens.shape}")
    forward = _call if forward is None else forward
    sums = np.zeros(6)
    captured = []
    for text in range(tokens.shape[0]):
        values, acts = jax.device_get(
            _spliced_losses(sae, model, forward, site, jnp.asarray(tokens[text]), jnp.asarray(mask[text]))
        )
        sums += np.asarray(values, np.float64)
        captured.append(np.asarray(acts).reshape(tokens.shape[1], -1)[mask[text]])
    if not sums[5]:
        raise ValueError("sae_metrics: no next-token targets (every text needs two unmasked tokens)")
    clean, with_sae, ablated, kl_sae, kl_ablated = (sums[:5] / sums[5]).tolist()
    metrics = {
        "ce_loss_clean": clean,
        "ce_loss_with_sae": with_sae,
        "ce_loss_with_ablation": ablated,
        "ce_loss_score": (ablated - with_sae) / (ablated - clean) if ablated != clean else float("nan"),
        "kl_div_with_sae": kl_sae,
        "kl_div_with_ablation": kl_ablated,
        "kl_div_score": (kl_ablated - kl_sae) / kl_ablated if kl_ablated else float("nan"),
    }
    return metrics, np.concatenate(captured)


def _call(model, tokens):
    return model(tokens)


@eqx.filter_jit
def _spliced_losses(sae, model, forward, site, tokens, mask):
    """For one text: the summed next-token cross-entropies (clean, SAE spliced in, site zeroed), the summed KL
    divergences of the clean distribution from the two spliced ones, the number of targets, and the site's value."""
    logits, records = capture(forward, site)(model, tokens)
    if site not in records:
        raise ValueError(f"sae_metrics: the site {site!r} was not captured; use an exact site name")

    def reconstruct(value):
        if value.size % value.shape[0] or value.size // value.shape[0] != sae.d_in:
            raise ValueError(
                f"sae_metrics: the site {site!r} has shape {value.shape}, which does not flatten to [seq, {sae.d_in}]"
            )
        flat = value.reshape(value.shape[0], -1)
        return _where_unmasked(mask, sae(flat).reshape(value.shape), value)

    def zero(value):
        return _where_unmasked(mask, jnp.zeros_like(value), value)

    with_sae = intervene(forward, {site: reconstruct})(model, tokens)
    ablated = intervene(forward, {site: zero})(model, tokens)
    targets = tokens[1:]
    valid = (mask[1:] & mask[:-1]).astype(jnp.float32)
    clean_log = jax.nn.log_softmax(logits[:-1].astype(jnp.float32), axis=-1)

    def ce_and_kl(out):
        log = jax.nn.log_softmax(out[:-1].astype(jnp.float32), axis=-1)
        ce = -jnp.take_along_axis(log, targets[:, None], axis=-1)[:, 0]
        kl = jnp.sum(jnp.exp(clean_log) * (clean_log - log), axis=-1)
        return jnp.sum(ce * valid), jnp.sum(kl * valid)

    clean, _ = ce_and_kl(logits)
    sae_ce, sae_kl = ce_and_kl(with_sae)
    ablated_ce, ablated_kl = ce_and_kl(ablated)
    values = jnp.stack([clean, sae_ce, ablated_ce, sae_kl, ablated_kl, jnp.sum(valid)])
    return values, records[site]


def _where_unmasked(mask, new, old):
    return jnp.where(mask.reshape(mask.shape + (1,) * (new.ndim - 1)), new, old)


def head_attribution(sae: SparseAutoencoder, n_heads: int) -> Float[np.ndarray, "d_sae n_heads"]:
    """Per-head attribution of the latents of an SAE on attention outputs `z` concatenated over heads (P12): each
    decoder row cut into `n_heads` blocks of `d_in / n_heads`, and each block's norm as a fraction of the sum of the
    blocks' norms.

    **Arguments:** `sae`: an SAE whose input is `[n_heads * d_head]`, head-major; `n_heads`: the number of heads.

    **Returns:** float32 `[d_sae, n_heads]`, rows summing to 1 (0 for a zero decoder row).
    """
    if not isinstance(n_heads, int) or n_heads < 1 or sae.d_in % n_heads:
        raise ValueError(f"head_attribution: n_heads must be a positive divisor of d_in = {sae.d_in}, got {n_heads!r}")
    blocks = np.linalg.norm(np.asarray(sae.W_dec, np.float64).reshape(sae.d_sae, n_heads, -1), axis=-1)
    total = blocks.sum(-1, keepdims=True)
    return np.where(total > 0, blocks / np.where(total > 0, total, 1.0), 0.0).astype(np.float32)
