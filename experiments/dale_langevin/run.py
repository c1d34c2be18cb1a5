"""Dale meets Langevin (P4): the multiplicative GBM samplers against variance-exploding and variance-preserving
diffusion on the same score network, with FID/KID in a trained classifier's feature space, NFE, sampling time,
positivity and a nearest-neighbour memorisation check."""

import dataclasses
import functools
import hashlib
import pathlib
import shutil
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
from tqdm.auto import tqdm

from experiments.record import results_dir, write_results
from jaxinterp import data as datasets
from jaxinterp.dynamics import additive_diffusion as additive
from jaxinterp.dynamics import gbm
from jaxinterp.generative_metrics import frechet_distance, kernel_distance, nearest_neighbour_distances
from jaxinterp.training import LossFn, minibatches, train
from models.cnn import CNN
from models.score_net import ScoreUNet

from . import config as config_names
from .config import DaleLangevinConfig

SLUG = "dale_langevin"
SHARK_DRIFT_EVALUATIONS_PER_STEP = 2
CHECKPOINT_VERSION = 2
FINAL_LOSS_STEPS = 50
PROCESS_ORDER = ("gbm", "ve", "vp")


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
        PROCESS_ORDER[0]: Diffusion(
            lambda p: p + 1.0,
            lambda x: x - 1.0,
            gbm_score,
            lambda net, x0, key: gbm.multiplicative_score_matching_loss(
                gbm_score(net), process, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: prior.sample(shape, key=key),
        ),
        PROCESS_ORDER[1]: Diffusion(
            lambda p: p,
            lambda x: x,
            ve_score,
            lambda net, x0, key: additive.denoising_score_matching_loss(
                ve_score(net), ve, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: ve.prior_sample(shape, key=key),
        ),
        PROCESS_ORDER[2]: Diffusion(
            lambda p: 2.0 * p - 1.0,
            lambda x: (x + 1.0) / 2.0,
            vp_score,
            lambda net, x0, key: additive.denoising_score_matching_loss(
                vp_score(net), vp, x0, key=key, t_min=config.t_min
            ),
            lambda shape, key: vp.prior_sample(shape, key=key),
        ),
    }


SAMPLER_PROCESS = {
    config_names.DALE_PAPER: "gbm",
    config_names.DALE_REVERSE_SDE: "gbm",
    config_names.AMBIENT_PAPER: "gbm",
    config_names.AMBIENT_REVERSE_SDE: "gbm",
    config_names.SHARK: "gbm",
    config_names.VE_EULER: "ve",
    config_names.VP_EULER: "vp",
}


def samplers(config: DaleLangevinConfig) -> dict[str, tuple[str, Callable]]:
    """The samplers `config.samplers` names: for each, the diffusion whose network it uses, and
    `(score, x_init, key) -> (samples, nfe)`."""
    process, ve, vp = processes(config)
    ts = jnp.linspace(1.0, 1.0 / config.num_levels, config.num_levels)
    n = config.num_levels
    paper = config.paper_schedule()
    controller = diffrax.PIDController(rtol=config.adaptive_rtol, atol=config.adaptive_atol)
    dale_paper = functools.partial(
        gbm.dale_langevin_sample,
        step_size=paper["dale_step"],
        noise_decay=paper["noise_decay"],
        denoising_steps=config.denoising_steps,
    )
    ambient_paper = functools.partial(
        gbm.ambient_multiplicative_sample,
        step_size=paper["ambient_step"],
        steps_per_level=config.ambient_steps_per_level,
        noise_decay=paper["noise_decay"],
        denoising_steps=config.denoising_steps,
    )

    def shark(score, x, key):
        samples, steps = gbm.reverse_sde_sample(
            score, process, x, key=key, t_min=config.t_min, solver=diffrax.ShARK(), stepsize_controller=controller
        )
        return samples, SHARK_DRIFT_EVALUATIONS_PER_STEP * steps + 1

    every = {
        config_names.DALE_PAPER: lambda s, x, k: (dale_paper(s, process, x, ts, key=k), n + config.denoising_steps),
        config_names.DALE_REVERSE_SDE: lambda s, x, k: (gbm.dale_langevin_sample(s, process, x, ts, key=k), n),
        config_names.AMBIENT_PAPER: lambda s, x, k: (
            ambient_paper(s, process, x, ts, key=k),
            n * config.ambient_steps_per_level + config.denoising_steps,
        ),
        config_names.AMBIENT_REVERSE_SDE: lambda s, x, k: (
            gbm.ambient_multiplicative_sample(s, process, x, ts, key=k),
            n,
        ),
        config_names.SHARK: shark,
        config_names.VE_EULER: lambda s, x, k: (additive.euler_maruyama_sample(s, ve, x, ts, key=k), n),
        config_names.VP_EULER: lambda s, x, k: (additive.euler_maruyama_sample(s, vp, x, ts, key=k), n),
    }
    return {name: (SAMPLER_PROCESS[name], every[name]) for name in config.samplers}


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


def sampler_program(diffusion: Diffusion, sample: Callable) -> Callable:
    """`(net, x_init, key) -> (state, nfe)`: one sampler run with `net` as the noise predictor of `diffusion`."""

    def run(net, x_init, key):
        return sample(diffusion.score(net), x_init, key)

    return run


def _timed(fn, *args):
    """Compile `eqx.filter_jit(fn)` ahead of time, then run it once; returns the output, compile seconds and run
    seconds."""
    start = time.perf_counter()
    compiled = eqx.filter_jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(compiled(*args))
    return out, compile_s, time.perf_counter() - start


def recognised(probabilities: np.ndarray, confidence: float) -> np.ndarray:
    """Which images the classifier gives one class a probability of at least `confidence`."""
    return probabilities.max(axis=1) >= confidence


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


def evaluate(
    pixels, classify, test_features, train_flat, test_nn_median, config
) -> tuple[dict, np.ndarray, np.ndarray]:
    """FID/KID against the test features, recognisability (the fraction of samples the classifier gives one class
    with probability at least `config.confidence`, and the classes it gives), nearest-neighbour distances to the
    training set, and positivity: of `x = pixel + 1` (the positive representation the GBM process works in) and of
    the pixels themselves. `classify(images)` returns the scaled features and the class probabilities.

    **Returns:** the metrics, the pixels clipped to [0, 1] (NaN as 0) and the classifier's probabilities of them.
    """
    finite = np.isfinite(pixels).all(axis=(1, 2, 3))
    clipped = np.clip(np.nan_to_num(pixels, nan=0.0), 0.0, 1.0)
    features, probabilities = classify(clipped)
    kid, kid_std = kernel_distance(features, test_features, subset_size=min(200, len(features)), seed=config.seed)
    nn_distances, _ = nearest_neighbour_distances(clipped.reshape(len(clipped), -1), train_flat)
    confident = recognised(probabilities, config.confidence)
    predicted = probabilities.argmax(axis=1)
    metrics = {
        "fid": frechet_distance(features, test_features),
        "kid": kid,
        "kid_std": kid_std,
        "recognisable_fraction": float(np.mean(confident)),
        "recognised_class_counts": np.bincount(predicted[confident], minlength=probabilities.shape[1]).tolist(),
        "nn_distance_median": float(np.median(nn_distances)),
        "nn_distance_ratio": float(np.median(nn_distances) / test_nn_median),
        "positive_fraction": float(np.mean(pixels + 1.0 > 0)),
        "nonnegative_pixel_fraction": float(np.mean(pixels >= 0)),
        "min_value": float(np.nanmin(pixels + 1.0)),
        "finite_fraction": float(np.mean(finite)),
    }
    return metrics, clipped, probabilities


def save_class_grid(path, panels: dict[str, tuple[np.ndarray, np.ndarray]], per_class: int = 6) -> None:
    """One PNG with a panel per sampler: row `c` shows the `per_class` images the classifier gives class `c` with
    the highest probability (blank where fewer are assigned to it), the probability of each below it.

    `panels` maps a title to `(images [n, 1, h, w] in [0, 1], class probabilities [n, classes])`.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(2.4 * len(panels), 4.4))
    for ax, (title, (images, probabilities)) in zip(np.atleast_1d(axes), panels.items()):
        n_classes = probabilities.shape[1]
        h, w = images.shape[-2:]
        grid = np.ones((n_classes * (h + 1) - 1, per_class * (w + 1) - 1))
        predicted, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
        for c in range(n_classes):
            members = np.flatnonzero(predicted == c)
            members = members[np.argsort(-confidence[members])][:per_class]
            for j, i in enumerate(members):
                grid[c * (h + 1) : c * (h + 1) + h, j * (w + 1) : j * (w + 1) + w] = images[i, 0]
        ax.imshow(grid, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        ax.set_title(title, fontsize=7)
        ax.set_yticks([c * (h + 1) + h / 2 for c in range(n_classes)], [str(c) for c in range(n_classes)], fontsize=6)
        ax.set_xticks([])
    fig.suptitle("samples by the classifier's most probable class (row = class)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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


def stage_checkpoint(folder: pathlib.Path, stem: str, steps: int, train_steps: int) -> pathlib.Path:
    """The checkpoint of one training stage: `<stem>.eqx` for the last (`train_steps`), `<stem>.step<N>.eqx` for an
    earlier stage of the FID curve."""
    return folder / (f"{stem}.eqx" if steps == train_steps else f"{stem}.step{steps}.eqx")


def run_dataset(name: str, config: DaleLangevinConfig, key) -> tuple[dict, list[dict]]:
    """Train the classifier and the score networks the samplers need on one data set, run every sampler and
    evaluate it; the metrics include where the run's time went."""
    out = results_dir(SLUG)
    checkpoints = out / "checkpoints" / checkpoint_tag(config)
    stage_times = {}
    train_x, train_y, test_x, test_y = load(name, config.image_size)
    if config.train_size is not None:
        train_x, train_y = train_x[: config.train_size], train_y[: config.train_size]
    eval_x = test_x[np.random.default_rng(config.seed).permutation(len(test_x))[: config.eval_size]]
    classifier_key, net_key, sample_key = jr.split(key, 3)

    start = time.perf_counter()
    classifier, accuracy, classifier_training = train_classifier(
        config, train_x, train_y, test_x, test_y, key=classifier_key, checkpoint=checkpoints / f"{name}_classifier.eqx"
    )
    stage_times["classifier"] = time.perf_counter() - start
    outputs = eqx.filter_jit(lambda model, images: jax.vmap(lambda x: (model.features(x), model(x)))(images))
    feature_scale = float(np.std(np.asarray(outputs(classifier, jnp.asarray(eval_x))[0])))

    def classify(images):
        features, logits = outputs(classifier, jnp.asarray(images))
        return np.asarray(features) / feature_scale, np.asarray(jax.nn.softmax(logits, axis=-1))

    test_features, test_probabilities = classify(eval_x)
    train_flat = train_x.reshape(len(train_x), -1)
    n_reference = min(config.num_samples, len(eval_x))
    test_nn, _ = nearest_neighbour_distances(eval_x[:n_reference].reshape(n_reference, -1), train_flat)
    test_nn_median = float(np.median(test_nn))
    real_recognisable = float(np.mean(recognised(test_probabilities, config.confidence)))

    chosen = samplers(config)
    needed = sorted({proc_name for proc_name, _ in chosen.values()}, key=list(PROCESS_ORDER).index)
    procs = {
        proc_name: diffusion for proc_name, diffusion in diffusions(config, train_x).items() if proc_name in needed
    }
    nets, training = {}, {"classifier": classifier_training}
    budgets = sorted(set(config.curve_steps) | {config.train_steps})
    snapshots = {}  # (process, training steps) -> the weight-averaged network after that many steps
    for proc_name, diffusion in procs.items():
        init_key, train_key = jr.split(jr.fold_in(net_key, PROCESS_ORDER.index(proc_name)))
        net = ScoreUNet(1, config.widths, config.embed_dim, key=init_key)
        start = time.perf_counter()
        # Training in stages, each continuing the previous stage's checkpoint, reproduces one uninterrupted run
        # exactly; every stage keeps a checkpoint of its own, so a rerun loads each stage's network again.
        previous = None
        for steps in budgets:
            path = stage_checkpoint(checkpoints, f"{name}_{proc_name}", steps, config.train_steps)
            if not path.exists() and previous is not None and previous.exists():
                shutil.copyfile(previous, path)
            snapshots[proc_name, steps], training[proc_name] = train_network(
                net,
                diffusion.loss,
                diffusion.encode(train_x),
                config,
                steps=steps,
                key=train_key,
                checkpoint=path,
                description=f"{name} {proc_name}",
            )
            previous = path
        nets[proc_name] = snapshots[proc_name, config.train_steps]
        stage_times[f"train {proc_name}"] = time.perf_counter() - start

    data_idx = np.random.default_rng(config.seed).choice(len(train_x), config.num_samples, replace=False)
    data_pixels = train_x[data_idx]
    metrics = {
        "classifier_test_accuracy": accuracy,
        "real_test_recognisable_fraction": real_recognisable,
        "final_losses": {net: summary["final_loss"] for net, summary in training.items() if net != "classifier"},
        "training": training,
        "reference_nn_distance_median": test_nn_median,
        "samplers": {},
    }
    reference, _, _ = evaluate(data_pixels, classify, test_features, train_flat, test_nn_median, config)
    reference["nn_distance_ratio"] = None
    metrics["samplers"]["training images (reference)"] = reference
    table = [_row(name, "training images (reference)", reference, 0, 0.0, real_recognisable)]
    panels = {"training images": data_pixels}
    class_panels = {"test images": (eval_x[: config.num_samples], test_probabilities[: config.num_samples])}
    shape = (config.num_samples,) + train_x.shape[1:]

    for sampler_name, (proc_name, sample) in tqdm(chosen.items(), desc=f"{name} samplers", leave=False):
        diffusion = procs[proc_name]
        prior_key, noise_key = jr.split(jr.fold_in(sample_key, config_names.SAMPLERS.index(sampler_name)))
        x_init = diffusion.prior(shape, prior_key)
        (state, nfe), compile_s, run_s = _timed(sampler_program(diffusion, sample), nets[proc_name], x_init, noise_key)
        stage_times[f"sample {sampler_name}"] = compile_s + run_s
        pixels = np.asarray(diffusion.decode(np.asarray(state)))
        result, clipped, probabilities = evaluate(pixels, classify, test_features, train_flat, test_nn_median, config)
        result.update(
            nfe=int(nfe),
            sampling_time_s=run_s,
            compile_time_s=compile_s,
            network_ms_per_image=1e3 * run_s / (int(nfe) * config.num_samples),
            recognisability_vs_real=result["recognisable_fraction"] / max(real_recognisable, 1e-12),
        )
        metrics["samplers"][sampler_name] = result
        table.append(_row(name, sampler_name, result, int(nfe), run_s, real_recognisable))
        panels[sampler_name] = clipped
        class_panels[sampler_name] = (clipped, probabilities)

    if config_names.VP_EULER in metrics["samplers"]:
        vp_fid = metrics["samplers"][config_names.VP_EULER]["fid"]
        for result in metrics["samplers"].values():
            result["fid_vs_vp"] = result["fid"] / vp_fid
    if config.curve_steps or config.curve_levels:
        start = time.perf_counter()
        metrics["fid_curve"] = fid_curve(
            config, procs, snapshots, budgets, train_x.shape[1:], classify, test_features, sample_key
        )
        stage_times["FID curve"] = time.perf_counter() - start
    save_grid(out / f"samples_{name}.png", panels)
    save_class_grid(out / f"classes_{name}.png", class_panels)
    metrics["time_breakdown_s"] = stage_times
    metrics["train_step_s"] = {proc_name: _steady_step_seconds(summary) for proc_name, summary in training.items()}
    return metrics, table


def fid_curve(config, procs, snapshots, budgets, image_shape, classify, test_features, key) -> list[dict]:
    """FID of `config.curve_samplers` against training budget and noise levels: every training step count in
    `budgets` (the networks of `snapshots`) at every level count in `config.curve_levels`, with
    `config.curve_samples` samples each (images of `image_shape`).

    **Returns:** one record per point: sampler, steps, levels, FID, KID and the recognisable fraction.
    """
    records = []
    for levels in config.curve_levels:
        chosen = samplers(dataclasses.replace(config, num_levels=levels, samplers=config.curve_samplers))
        for sampler_name, (proc_name, sample) in tqdm(chosen.items(), desc=f"FID curve, {levels} levels", leave=False):
            diffusion = procs[proc_name]
            point_key = jr.fold_in(jr.fold_in(key, levels), config_names.SAMPLERS.index(sampler_name))
            prior_key, noise_key = jr.split(point_key)
            x_init = diffusion.prior((config.curve_samples, *image_shape), prior_key)
            program = eqx.filter_jit(sampler_program(diffusion, sample))  # compiled once for every budget
            for steps in budgets:
                state, _ = program(snapshots[proc_name, steps], x_init, noise_key)
                pixels = np.clip(np.nan_to_num(np.asarray(diffusion.decode(np.asarray(state)))), 0.0, 1.0)
                features, probabilities = classify(pixels)
                kid, _ = kernel_distance(features, test_features, subset_size=min(100, len(features)), seed=config.seed)
                records.append(
                    {
                        "sampler": sampler_name,
                        "steps": steps,
                        "levels": levels,
                        "fid": frechet_distance(features, test_features),
                        "kid": kid,
                        "recognisable_fraction": float(np.mean(recognised(probabilities, config.confidence))),
                    }
                )
    return records


def _steady_step_seconds(summary: dict) -> float | None:
    """Seconds per training step after the first (which includes compilation); `None` with fewer than two new
    steps."""
    new_steps = summary["steps"] - summary["resumed_from_step"]
    if new_steps < 2:
        return None
    return (summary["wall_time_s"] - summary["first_step_s"]) / (new_steps - 1)


def _row(dataset: str, sampler: str, result: dict, nfe: int, seconds: float, real_recognisable: float) -> dict:
    return {
        "dataset": dataset,
        "sampler": sampler,
        "FID (classifier features)": result["fid"],
        "KID x1e3": 1e3 * result["kid"],
        f"recognisable (real test {real_recognisable:.2f})": result["recognisable_fraction"],
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
