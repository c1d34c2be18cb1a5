"""Dale meets Langevin (P4): the multiplicative GBM samplers against variance-exploding and variance-preserving
diffusion on the same score network, with FID/KID in a trained classifier's feature space, NFE, sampling time,
positivity and a nearest-neighbour memorisation check."""

import dataclasses
import functools
import hashlib
import pathlib
import time
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments.record import results_dir, write_results
from jaxinterp import data as datasets
from jaxinterp.dynamics import additive_diffusion as additive
from jaxinterp.dynamics import gbm
from jaxinterp.generative_metrics import frechet_distance, kernel_distance, nearest_neighbour_distances
from jaxinterp.training import LossFn, minibatches, train
from models.cnn import CNN
from models.score_net import ScoreUNet

from .config import DaleLangevinConfig

SLUG = "dale_langevin"
SHARK_DRIFT_EVALUATIONS_PER_STEP = 2
CHECKPOINT_VERSION = 2
FINAL_LOSS_STEPS = 50


@dataclasses.dataclass(frozen=True)
class Diffusion:
    """A forward process with its data representation: how pixels in [0, 1] map to the process's state and back,
    how a noise-predicting network becomes a score, the training loss and the prior at `t = 1`."""

    encode: Callable
    decode: Callable
    score: Callable
    loss: Callable
    prior: Callable


def load(name: str, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train and test images `[n, 1, s, s]` in [0, 1] with labels; 28x28 sets are average-pooled to `image_size`."""
    if name == "digits":
        images, labels = datasets.digits()
        order = np.random.default_rng(0).permutation(images.shape[0])
        images, labels = images[order], labels[order]
        split = 1500
        return images[:split, None], labels[:split], images[split:, None], labels[split:]
    loader = {"mnist": datasets.mnist, "fashion_mnist": datasets.fashion_mnist}[name]
    train_images, train_labels = loader("train")
    test_images, test_labels = loader("test")

    def pool(images):
        factor = images.shape[-1] // image_size
        n = images.shape[0]
        return images.reshape(n, image_size, factor, image_size, factor).mean(axis=(2, 4))[:, None]

    return pool(train_images), train_labels, pool(test_images), test_labels


def processes(
    config: DaleLangevinConfig,
) -> tuple[gbm.GeometricBrownianMotion, additive.VarianceExploding, additive.VariancePreserving]:
    """The GBM process and the two additive baselines."""
    return (
        gbm.GeometricBrownianMotion(config.sigma),
        additive.VarianceExploding(sigma_max=config.ve_sigma_max),
        additive.VariancePreserving(beta_max=config.vp_beta_max),
    )


def diffusions(config: DaleLangevinConfig, train_pixels: np.ndarray) -> dict[str, Diffusion]:
    """The GBM process on `pixels + 1` and the VE (on pixels) and VP (on `2 pixels - 1`) baselines."""
    process, ve, vp = processes(config)
    log_data = np.log(train_pixels + 1.0)
    log_mean, log_var = float(log_data.mean()), float(log_data.var())
    prior = gbm.LogNormalPrior.fit(process, train_pixels + 1.0)

    def gbm_score(net):
        def score(x, t):
            scaled = (jnp.log(x) - log_mean) / jnp.sqrt(log_var + process.sigma**2 * t)
            return process.score_from_noise(net(scaled, t), x, t)

        return score

    data_std = float(train_pixels.std())

    def ve_score(net):
        def score(x, t):
            return ve.score_from_noise(net(x / jnp.sqrt(data_std**2 + ve.std(t) ** 2), t), x, t)

        return score

    def vp_score(net):
        return lambda x, t: vp.score_from_noise(net(x, t), x, t)

    return {
        "gbm": Diffusion(
            lambda p: p + 1.0,
            lambda x: x - 1.0,
            gbm_score,
            lambda net, x0, key: gbm.multiplicative_score_matching_loss(
                gbm_score(net), process, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: prior.sample(shape, key=key),
        ),
        "ve": Diffusion(
            lambda p: p,
            lambda x: x,
            ve_score,
            lambda net, x0, key: additive.denoising_score_matching_loss(
                ve_score(net), ve, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: ve.prior_sample(shape, key=key),
        ),
        "vp": Diffusion(
            lambda p: 2.0 * p - 1.0,
            lambda x: (x + 1.0) / 2.0,
            vp_score,
            lambda net, x0, key: additive.denoising_score_matching_loss(
                vp_score(net), vp, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: vp.prior_sample(shape, key=key),
        ),
    }


def samplers(config: DaleLangevinConfig) -> dict[str, tuple[str, Callable]]:
    """Each sampler: the diffusion whose network it uses, and `(score, x_init, key) -> (samples, nfe)`."""
    process, ve, vp = processes(config)
    ts = jnp.linspace(1.0, 1.0 / config.num_levels, config.num_levels)
    n = config.num_levels
    controller = diffrax.PIDController(rtol=config.adaptive_rtol, atol=config.adaptive_atol)

    def shark(score, x, key):
        samples, steps = gbm.reverse_sde_sample(
            score, process, x, key=key, t_min=config.t_min, solver=diffrax.ShARK(), stepsize_controller=controller
        )
        return samples, SHARK_DRIFT_EVALUATIONS_PER_STEP * steps + 1

    return {
        "Dale-Langevin (GBM)": ("gbm", lambda s, x, k: (gbm.dale_langevin_sample(s, process, x, ts, key=k), n)),
        "ambient multiplicative (GBM)": (
            "gbm",
            lambda s, x, k: (gbm.ambient_multiplicative_sample(s, process, x, ts, key=k), n),
        ),
        "reverse SDE, diffrax ShARK adaptive (GBM)": ("gbm", shark),
        "VE, Euler-Maruyama": ("ve", lambda s, x, k: (additive.euler_maruyama_sample(s, ve, x, ts, key=k), n)),
        "VP, Euler-Maruyama": ("vp", lambda s, x, k: (additive.euler_maruyama_sample(s, vp, x, ts, key=k), n)),
    }


@functools.cache
def optimiser(learning_rate: float, warmup_steps: int) -> optax.GradientTransformation:
    """Adam with global-norm clipping at 1 and a linear warm-up from 0 over `warmup_steps`, then a constant rate
    (one object per setting, so networks trained with the same loss share the compiled step)."""
    schedule = optax.linear_schedule(0.0, learning_rate, max(warmup_steps, 1))
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(schedule))


def train_network(
    model: eqx.Module,
    loss_fn: LossFn,
    data,
    config: DaleLangevinConfig,
    *,
    steps: int,
    key,
    checkpoint: pathlib.Path | None,
    description: str,
) -> tuple[eqx.Module, dict]:
    """Train one network with `jaxinterp.training.train`: minibatches of `config.batch_size` drawn with
    replacement from `data`, `optimiser(config.learning_rate, config.warmup_steps)`, the weight average with
    `config.ema_decay` (what is returned) and checkpoints every `config.checkpoint_every` steps.

    **Returns:** the weight-averaged model and a summary of its training for results.json: the step count, the
    first loss, `final_loss` (the mean over the last `FINAL_LOSS_STEPS` steps), the per-step losses and the times.
    """
    batch_key, loss_key = jr.split(key)
    model, history = train(
        model,
        loss_fn,
        minibatches(data, config.batch_size, key=batch_key),
        optimiser(config.learning_rate, config.warmup_steps),
        steps=steps,
        key=loss_key,
        ema_decay=config.ema_decay,
        checkpoint=checkpoint,
        checkpoint_every=config.checkpoint_every,
        description=description,
    )
    losses = history["loss"]
    summary = {
        "steps": len(losses),
        "initial_loss": float(losses[0]) if len(losses) else None,
        "final_loss": float(np.mean(losses[-FINAL_LOSS_STEPS:])) if len(losses) else None,
        "loss": [float(v) for v in losses],
        "resumed_from_step": int(history["start_step"]),
        "wall_time_s": float(history["wall_time_s"]),
        "first_step_s": float(history["first_step_s"]),
    }
    return model, summary


def train_classifier(config, train_x, train_y, test_x, test_y, *, key, checkpoint):
    """The feature network for FID/KID: `models.cnn.CNN` trained with cross-entropy; returns it, its test accuracy
    and the summary of its training."""
    init_key, train_key = jr.split(key)
    model = CNN(1, train_x.shape[-1], config.classifier_channels, 10, key=init_key)

    def loss_fn(model, batch, key):
        images, labels = batch
        logits = jax.vmap(model)(images)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))

    model, summary = train_network(
        model,
        loss_fn,
        (train_x, train_y),
        config,
        steps=config.classifier_steps,
        key=train_key,
        checkpoint=checkpoint,
        description="classifier",
    )
    logits = eqx.filter_jit(lambda m, x: jax.vmap(m)(x))(model, jnp.asarray(test_x))
    predictions = np.asarray(jnp.argmax(logits, axis=-1))
    return model, float(np.mean(predictions == test_y)), summary


def _timed(fn, *args):
    """Compile `fn` ahead of time, then run it once; returns the output, compile seconds and run seconds."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - start


def _tile(images: np.ndarray, rows: int) -> np.ndarray:
    n, _, h, w = images.shape
    cols = rows
    grid = np.ones((rows * (h + 1) - 1, cols * (w + 1) - 1))
    for i in range(min(n, rows * cols)):
        r, c = divmod(i, cols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = images[i, 0]
    return grid


def save_grid(path, panels: dict[str, np.ndarray], rows: int = 8) -> None:
    """One PNG with a `rows x rows` grid of images per panel (white is 1, black is 0)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6))
    for ax, (title, images) in zip(axes, panels.items()):
        ax.imshow(_tile(images, rows), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(pixels, raw_positive, features_fn, test_features, train_flat, test_nn_median, config) -> dict:
    """FID/KID against the test features, nearest-neighbour distances to the training set, and positivity: of
    `x = pixel + 1` (the positive representation the GBM process works in) and of the pixels themselves."""
    finite = np.isfinite(pixels).all(axis=(1, 2, 3))
    clipped = np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0)
    features = features_fn(clipped)
    kid, kid_std = kernel_distance(features, test_features, subset_size=min(200, len(features)), seed=config.seed)
    nn_distances, _ = nearest_neighbour_distances(clipped.reshape(len(clipped), -1), train_flat)
    return {
        "fid": frechet_distance(features, test_features),
        "kid": kid,
        "kid_std": kid_std,
        "nn_distance_median": float(np.median(nn_distances)),
        "nn_distance_ratio": float(np.median(nn_distances) / test_nn_median),
        "positive_fraction": float(np.mean(raw_positive > 0)),
        "nonnegative_pixel_fraction": float(np.mean(pixels >= 0)),
        "min_value": float(np.nanmin(raw_positive)),
        "finite_fraction": float(np.mean(finite)),
    }


TRAINING_FIELDS = (
    "seed",
    "image_size",
    "train_size",
    "widths",
    "embed_dim",
    "batch_size",
    "learning_rate",
    "warmup_steps",
    "ema_decay",
    "classifier_channels",
    "sigma",
    "ve_sigma_max",
    "vp_beta_max",
    "t_min",
)


def checkpoint_tag(config: DaleLangevinConfig) -> str:
    """A hash of the settings that shape training other than the step counts: a run resumes only checkpoints that
    it can continue (more steps, or new sampling settings, reuse them). `CHECKPOINT_VERSION` counts changes of
    the training code that make older checkpoints unusable."""
    settings = (("checkpoint_version", CHECKPOINT_VERSION),) + tuple(
        (name, getattr(config, name)) for name in TRAINING_FIELDS
    )
    return hashlib.sha256(repr(settings).encode()).hexdigest()[:12]


def run_dataset(name: str, config: DaleLangevinConfig, key) -> tuple[dict, list[dict]]:
    """Train the classifier and the three score networks on one data set, run every sampler and evaluate it."""
    out = results_dir(SLUG)
    checkpoints = out / "checkpoints" / checkpoint_tag(config)
    train_x, train_y, test_x, test_y = load(name, config.image_size)
    if config.train_size is not None:
        train_x, train_y = train_x[: config.train_size], train_y[: config.train_size]
    eval_x = test_x[np.random.default_rng(config.seed).permutation(len(test_x))[: config.eval_size]]
    classifier_key, net_key, sample_key = jr.split(key, 3)

    classifier, accuracy, classifier_training = train_classifier(
        config, train_x, train_y, test_x, test_y, key=classifier_key, checkpoint=checkpoints / f"{name}_classifier.eqx"
    )
    raw_features = eqx.filter_jit(lambda model, images: jax.vmap(model.features)(images))
    feature_scale = float(np.std(np.asarray(raw_features(classifier, jnp.asarray(eval_x)))))

    def features_fn(images):
        return np.asarray(raw_features(classifier, jnp.asarray(images))) / feature_scale

    test_features = features_fn(eval_x)
    train_flat = train_x.reshape(len(train_x), -1)
    test_nn, _ = nearest_neighbour_distances(eval_x[: config.num_samples].reshape(config.num_samples, -1), train_flat)
    test_nn_median = float(np.median(test_nn))

    procs = diffusions(config, train_x)
    nets, training = {}, {"classifier": classifier_training}
    for i, (proc_name, diffusion) in enumerate(procs.items()):
        init_key, train_key = jr.split(jr.fold_in(net_key, i))
        net = ScoreUNet(1, config.widths, config.embed_dim, key=init_key)
        nets[proc_name], training[proc_name] = train_network(
            net,
            diffusion.loss,
            diffusion.encode(train_x),
            config,
            steps=config.train_steps,
            key=train_key,
            checkpoint=checkpoints / f"{name}_{proc_name}.eqx",
            description=f"{name} {proc_name}",
        )

    data_idx = np.random.default_rng(config.seed).choice(len(train_x), config.num_samples, replace=False)
    data_pixels = train_x[data_idx]
    metrics = {
        "classifier_test_accuracy": accuracy,
        "final_losses": {net: summary["final_loss"] for net, summary in training.items() if net != "classifier"},
        "training": training,
        "reference_nn_distance_median": test_nn_median,
        "samplers": {},
    }
    reference = evaluate(data_pixels, data_pixels + 1.0, features_fn, test_features, train_flat, test_nn_median, config)
    reference["nn_distance_ratio"] = None
    metrics["samplers"]["training images (reference)"] = reference
    table = [_row(name, "training images (reference)", reference, 0, 0.0)]
    panels = {"training images": data_pixels}
    shape = (config.num_samples,) + train_x.shape[1:]

    for j, (sampler_name, (proc_name, sample)) in enumerate(samplers(config).items()):
        diffusion = procs[proc_name]
        prior_key, noise_key = jr.split(jr.fold_in(sample_key, j))
        x_init = diffusion.prior(shape, prior_key)
        params, static = eqx.partition(nets[proc_name], eqx.is_inexact_array)

        def sample_fn(params, x_init, key, static=static, diffusion=diffusion, sample=sample):
            return sample(diffusion.score(eqx.combine(params, static)), x_init, key)

        (state, nfe), compile_s, run_s = _timed(sample_fn, params, x_init, noise_key)
        state = np.asarray(state)
        pixels = np.asarray(diffusion.decode(state))
        result = evaluate(pixels, pixels + 1.0, features_fn, test_features, train_flat, test_nn_median, config)
        result.update(nfe=int(nfe), sampling_time_s=run_s, compile_time_s=compile_s)
        metrics["samplers"][sampler_name] = result
        table.append(_row(name, sampler_name, result, int(nfe), run_s))
        panels[sampler_name] = np.clip(np.nan_to_num(pixels), 0.0, 1.0)

    save_grid(out / f"samples_{name}.png", panels)
    return metrics, table


def _row(dataset: str, sampler: str, result: dict, nfe: int, seconds: float) -> dict:
    return {
        "dataset": dataset,
        "sampler": sampler,
        "FID (classifier features)": result["fid"],
        "KID x1e3": 1e3 * result["kid"],
        "NFE": nfe,
        "sampling s": seconds,
        "x > 0 fraction": result["positive_fraction"],
        "min x": result["min_value"],
        "pixel >= 0 fraction": result["nonnegative_pixel_fraction"],
        "NN dist / test NN dist": "-" if result["nn_distance_ratio"] is None else result["nn_distance_ratio"],
    }


def main(config: DaleLangevinConfig) -> dict:
    """Run the replication and write `results/dale_langevin/` (results.json, results.md, samples_<data set>.png).

    **Arguments:**

    - `config`: the settings; `DaleLangevinConfig()` is the full run, `DaleLangevinConfig.quick()` the quick one.

    **Returns:** the metrics written to results.json.
    """
    started = time.time()
    key = jr.key(config.seed)
    metrics, table = {}, []
    for i, name in enumerate(config.datasets):
        metrics[name], rows = run_dataset(name, config, jr.fold_in(key, i))
        table.extend(rows)
    write_results(
        SLUG,
        config,
        metrics,
        started=started,
        table=table,
        paper={
            "claim": "the multiplicative (Dale-Langevin) sampler generates recognisable MNIST digits, "
            "Fashion-MNIST garments and Kuzushiji characters"
        },
    )
    return metrics
