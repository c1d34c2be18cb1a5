"""NeuRBF (P10): neural fields from adaptive radial bases composed with sinusoids and a grid, fitted to scikit-image's
sample photographs and to the signed distance of a torus, beside a grid-only field, a Fourier-feature MLP and a
SIREN of the same parameter count; PSNR against parameter count for the images, IoU and distance error for the
field."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
import skimage.filters
from tqdm.auto import tqdm

from experiments.record import results_dir, write_results
from jaxinterp import data
from jaxinterp.training import train
from models.neurbf import SIREN, FourierFeatureMLP, GridField, NeuRBF, grid_resolutions, kernel_centres, parameter_count

from .config import NeuRBFConfig

SLUG = "neurbf"
MODELS = ("NeuRBF", "grid", "Fourier MLP", "SIREN")
PAPER = {
    "claim": "NeuRBF fits 2-D images and 3-D signed distance fields more accurately and compactly than grid-based "
    "fields (Instant NGP) and MLPs at similar or smaller parameter counts",
    "benchmarks": "2-D images (DIV2K among them), 3-D signed distance fields of meshes and NeRF scenes, at about a million "
    "parameters and tens of thousands of steps; not run here",
    "target_here": "NeuRBF's PSNR above the grid-only field's and both MLPs' at equal parameter count on every image",
}
_FOURIER_FREQUENCIES = 32
_FOURIER_SCALE = 10.0


def _largest(make, budget: int, low: int, high: int):
    """The model `make(size)` of the largest integer `size` in `[low, high]` whose parameter count fits `budget`."""

    def count(size):
        return parameter_count(eqx.filter_eval_shape(make, size))

    if count(low) > budget:
        raise ValueError(f"budget {budget} is below the smallest model ({count(low)} parameters)")
    while low < high:
        middle = (low + high + 1) // 2
        if count(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return make(low)


def build(name: str, budget: int, in_dim: int, out_dim: int, config: NeuRBFConfig, init, *, key) -> eqx.Module:
    """The model `name` (one of `MODELS`) for points of `in_dim` dimensions, sized to at most `budget` parameters.
    `init(n_kernels)` gives NeuRBF's initial `(centres, widths)`."""
    depth = config.mlp_depth
    if name == "NeuRBF":
        grid_budget = config.grid_fraction * budget
        base = max(2, int((grid_budget / (2 * (1 + 2**in_dim))) ** (1 / in_dim)))
        resolutions = (base, 2 * base)
        per_kernel = in_dim + in_dim**2 + config.rbf_features

        def make(n_kernels):
            centres = np.full((n_kernels, in_dim), 0.5, np.float32)
            return NeuRBF(
                centres,
                0.1,
                out_dim,
                n_features=config.rbf_features,
                n_neighbours=config.rbf_neighbours,
                grid_resolutions=resolutions,
                hidden_sizes=config.hidden_sizes,
                key=key,
            )

        fixed = parameter_count(eqx.filter_eval_shape(make, 1)) - per_kernel
        n_kernels = (budget - fixed) // per_kernel
        if n_kernels < config.rbf_neighbours:
            raise ValueError(f"budget {budget} leaves room for only {n_kernels} kernels")
        centres, widths = init(n_kernels)
        model = make(n_kernels)
        return eqx.tree_at(
            lambda m: (m.centres, m.shapes),
            model,
            (jnp.asarray(centres), jnp.eye(in_dim)[None] / jnp.asarray(widths)[:, None, None]),
        )
    if name == "grid":
        base = 8 if in_dim == 2 else 4
        return _largest(
            lambda finest: GridField(
                in_dim, out_dim, grid_resolutions(base, finest, 4), 2, hidden_sizes=config.hidden_sizes, key=key
            ),
            budget,
            base,
            4096,
        )
    if name == "Fourier MLP":
        return _largest(
            lambda width: FourierFeatureMLP(
                in_dim, out_dim, (width,) * depth, _FOURIER_FREQUENCIES, _FOURIER_SCALE, key=key
            ),
            budget,
            2,
            2048,
        )
    if name == "SIREN":
        return _largest(lambda width: SIREN(in_dim, out_dim, (width,) * depth, key=key), budget, 2, 2048)
    raise ValueError(f"unknown model {name!r}; expected one of {MODELS}")


def mse_loss(model, batch, key):
    """The mean squared error of the field over the batch `(points [n, d], targets [n, out])`."""
    points, targets = batch
    return jnp.mean(jnp.square(jax.vmap(model)(points) - targets))


@eqx.filter_jit
def _predict(model, points):
    return jax.vmap(model)(points)


def predict(model, points: np.ndarray, chunk: int = 32768) -> np.ndarray:
    """The field at every point, in chunks."""
    return np.concatenate([np.asarray(_predict(model, points[i : i + chunk])) for i in range(0, len(points), chunk)])


def psnr(prediction: np.ndarray, target: np.ndarray) -> float:
    """`10 log10(1 / MSE)` of the prediction clipped to `[0, 1]`."""
    mse = float(np.mean(np.square(np.clip(prediction, 0.0, 1.0) - target)))
    return float(10 * np.log10(1.0 / max(mse, 1e-12)))


def _optimiser(config: NeuRBFConfig, name: str, steps: int):
    """Adam with cosine decay; for NeuRBF with `train_kernels` off, the centres and shapes stay at their k-means
    initialisation (as in the official image and distance-field configurations)."""
    adam = optax.adam(optax.cosine_decay_schedule(dict(config.learning_rates)[name], steps, alpha=0.1))
    if name != "NeuRBF" or config.train_kernels:
        return adam

    def labels(params):
        trained = jax.tree.map(lambda _: "trained", params)
        return eqx.tree_at(lambda m: (m.centres, m.shapes), trained, ("fixed", "fixed"))

    return optax.multi_transform({"trained": adam, "fixed": optax.set_to_zero()}, labels)


def fit_image(config: NeuRBFConfig, image_name: str, bar) -> dict:
    """Fit one image with every model at every budget: parameter counts, PSNRs and the reconstructions."""
    image = data.sample_image(image_name, config.image_size)
    size, _, channels = image.shape
    points = data.pixel_grid(size, size)
    targets = image.reshape(-1, channels)
    gradient = np.sqrt(sum(skimage.filters.sobel(image[..., c]) ** 2 for c in range(channels))).reshape(-1)

    def init(n_kernels):
        return kernel_centres(points, gradient, n_kernels, seed=config.seed)

    batch = (jnp.asarray(points), jnp.asarray(targets))
    out = {"channels": channels, "runs": []}
    reconstructions = {}
    for budget in config.budgets:
        for name in MODELS:
            key = jax.random.key(config.seed)
            model = build(name, budget, 2, channels, config, init, key=key)
            model, history = train(
                model,
                mse_loss,
                lambda step: batch,
                _optimiser(config, name, config.image_steps),
                steps=config.image_steps,
                key=jax.random.fold_in(key, 1),
                description=f"{image_name} {name} {budget}",
            )
            prediction = predict(model, points)
            out["runs"].append({
                "model": name, "budget": budget, "parameters": parameter_count(model),
                "psnr": psnr(prediction, targets), "train_s": history["wall_time_s"],
            })  # fmt: skip
            reconstructions[name] = np.clip(prediction.reshape(image.shape), 0, 1)
            bar.update()
    return out, image, reconstructions


def fit_sdf(config: NeuRBFConfig, bar) -> dict:
    """Fit the torus's signed distance with every model at `sdf_budget`: IoU of the inside on a grid and the mean
    absolute distance error near the surface."""
    rng = np.random.default_rng(config.seed)
    n = config.sdf_samples
    uniform = rng.random((n // 2, 3), dtype=np.float32)
    on_surface = _torus_surface(rng, n - n // 2)
    near = np.clip(on_surface + 0.02 * rng.standard_normal(on_surface.shape), 0, 1).astype(np.float32)
    points = np.concatenate([uniform, near])
    distance = data.torus_distance(points)[:, None]
    test_near = np.clip(_torus_surface(rng, 20_000) + 0.02 * rng.standard_normal((20_000, 3)), 0, 1)
    test_near = test_near.astype(np.float32)
    test_distance = data.torus_distance(test_near)
    r = config.sdf_resolution
    grid = ((np.stack(np.meshgrid(*[np.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) / r).astype(np.float32)
    inside = data.torus_distance(grid) < 0

    def init(n_kernels):
        return kernel_centres(points, 1.0 / (np.abs(distance[:, 0]) + 0.01), n_kernels, seed=config.seed)

    pool = (jnp.asarray(points), jnp.asarray(distance))
    draw = jax.random.fold_in(jax.random.key(config.seed), 2)

    def batches(step):
        index = jax.random.randint(jax.random.fold_in(draw, step), (config.sdf_batch,), 0, n)
        return pool[0][index], pool[1][index]

    runs = []
    for name in MODELS:
        key = jax.random.key(config.seed)
        model = build(name, config.sdf_budget, 3, 1, config, init, key=key)

        model, history = train(
            model,
            mse_loss,
            batches,
            _optimiser(config, name, config.sdf_steps),
            steps=config.sdf_steps,
            key=jax.random.fold_in(key, 1),
            description=f"torus {name}",
        )
        predicted_inside = predict(model, grid)[:, 0] < 0
        iou = float(np.sum(predicted_inside & inside) / max(np.sum(predicted_inside | inside), 1))
        error = float(np.mean(np.abs(predict(model, test_near)[:, 0] - test_distance)))
        runs.append({
            "model": name, "parameters": parameter_count(model), "iou": iou, "near_surface_mae": error,
            "train_s": history["wall_time_s"],
        })  # fmt: skip
        bar.update()
    return {"runs": runs}


def _torus_surface(rng, n: int, major: float = 0.3, minor: float = 0.1) -> np.ndarray:
    """`n` points on the torus of `jaxinterp.data.torus_distance`, uniform in its two angles."""
    u, v = rng.random((2, n)) * 2 * np.pi
    ring = major + minor * np.cos(v)
    return np.stack([0.5 + ring * np.cos(u), 0.5 + ring * np.sin(u), 0.5 + minor * np.sin(v)], -1)


def plot(path, results: dict, config: NeuRBFConfig) -> None:
    """PSNR against parameter count, one panel per image."""
    names = list(results["images"])
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False)
    for axis, image_name in zip(axes[0], names):
        runs = results["images"][image_name]["runs"]
        for name in MODELS:
            mine = [r for r in runs if r["model"] == name]
            axis.plot([r["parameters"] for r in mine], [r["psnr"] for r in mine], "o-", label=name)
        axis.set_title(image_name)
        axis.set_xlabel("parameters")
        axis.set_xscale("log")
    axes[0][0].set_ylabel("PSNR (dB)")
    axes[0][-1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_reconstructions(path, image: np.ndarray, reconstructions: dict, title: str) -> None:
    """The image beside each model's reconstruction."""
    figure, axes = plt.subplots(1, 1 + len(reconstructions), figsize=(2.6 * (1 + len(reconstructions)), 2.8))
    for axis, (name, picture) in zip(axes, [("target", image), *reconstructions.items()]):
        axis.imshow(picture.squeeze(), cmap="gray" if picture.shape[-1] == 1 else None, vmin=0, vmax=1)
        axis.set_title(name, fontsize=9)
        axis.axis("off")
    figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(config: NeuRBFConfig) -> dict:
    """Fit every image at every budget and the torus's distance field with NeuRBF and the three baselines; writes
    `results/neurbf/`."""
    started = time.time()
    unknown = sorted(set(config.images) - set(data.SAMPLE_IMAGES))
    if unknown:
        raise ValueError(f"unknown images {unknown}; expected some of {list(data.SAMPLE_IMAGES)}")
    if sorted(dict(config.learning_rates)) != sorted(MODELS):
        raise ValueError(f"learning_rates must name exactly the models {MODELS}")
    out = results_dir(SLUG)
    results = {"images": {}}
    table = []
    total = len(config.images) * len(config.budgets) * len(MODELS) + len(MODELS)
    with tqdm(total=total, desc=SLUG) as bar:
        for image_name in config.images:
            result, image, reconstructions = fit_image(config, image_name, bar)
            results["images"][image_name] = result
            plot_reconstructions(
                out / f"reconstructions_{image_name}.png",
                image,
                reconstructions,
                f"{image_name}, {config.image_size}x{config.image_size}, budget {config.budgets[-1]}",
            )
        results["sdf"] = fit_sdf(config, bar)
    wins = []
    for image_name, result in results["images"].items():
        for budget in config.budgets:
            runs = {r["model"]: r for r in result["runs"] if r["budget"] == budget}
            best_baseline = max(runs[name]["psnr"] for name in MODELS[1:])
            wins.append(runs["NeuRBF"]["psnr"] > best_baseline)
            table.append({
                "image": image_name, "budget": budget,
                **{f"{name} PSNR": runs[name]["psnr"] for name in MODELS},
                **{f"{name} params": runs[name]["parameters"] for name in MODELS},
            })  # fmt: skip
    sdf = {run["model"]: run for run in results["sdf"]["runs"]}
    table.append({
        "image": "torus SDF (IoU)", "budget": config.sdf_budget,
        **{f"{name} PSNR": sdf[name]["iou"] for name in MODELS},
        **{f"{name} params": sdf[name]["parameters"] for name in MODELS},
    })  # fmt: skip
    results["neurbf_wins"] = int(sum(wins))
    results["comparisons"] = len(wins)
    results["target_met"] = bool(all(wins))
    plot(out / "psnr_vs_parameters.png", results, config)
    write_results(SLUG, config, results, started=started, table=table, paper=PAPER)
    return results
