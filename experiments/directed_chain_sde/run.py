"""Train a directed chain SDE (P31), a neural SDE as an SDE-GAN and a latent SDE (P22) on simulated opinion dynamics
and FitzHugh-Nagumo paths and on windows of the S&P 500 and of electricity demand; score their generated paths on
held-out paths; plot real against generated paths and marginals."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from experiments.record import results_dir, write_results
from jaxinterp import minibatches, train
from jaxinterp.data import electricity_demand_windows, sp500_windows
from jaxinterp.dynamics import (
    RegularisationWeights,
    discriminative_score,
    fit,
    fitzhugh_nagumo,
    marginal_modes,
    marginal_wasserstein,
    opinion_dynamics,
    predictive_score,
    signature_mmd_squared,
)
from models import SDEGAN, DirectedChainSDE, LatentSDE, train_sde_gan

from .config import DATASETS, GENERATORS, Config

SLUG = "directed_chain_sde"
PAPER = {
    "claim": "P31: a directed chain SDE generator trained with a signature loss reproduces the laws of mean-field "
    "systems (the bimodal marginal of stochastic opinion dynamics, mean-field FitzHugh-Nagumo) and of real series "
    "(a stock, electricity consumption), scoring better than neural-SDE GANs and TimeGAN-type baselines on "
    "signature MMD and the discriminative and predictive scores",
    "source": "P31 (Min, Hu, Ichiba, Directed Chain Generative Adversarial Networks, ICML 2023), its tables of "
    "discriminative / predictive scores; P22 (Kidger 2022) for the SDE-GAN and the latent SDE",
}


def _check(config: Config) -> None:
    for name in config.datasets:
        if name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}; expected some of {DATASETS}")
    for name in config.generators:
        if name not in GENERATORS:
            raise ValueError(f"unknown generator {name!r}; expected some of {GENERATORS}")


def _split_windows(windows: np.ndarray, config: Config, gap: int) -> tuple[np.ndarray, np.ndarray]:
    """The first windows train and the last `test_fraction` test, `gap` windows left out between them (so that no
    test window overlaps a training one), each cut to `num_paths`, evenly spaced."""
    cut = int(len(windows) * (1 - config.test_fraction))
    train_set, test_set = windows[:cut], windows[cut + gap :]

    def thin(w):
        return w[np.linspace(0, len(w) - 1, min(len(w), config.num_paths)).astype(int)]

    return thin(train_set), thin(test_set)


def load(name: str, config: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(ts, train, test)` for one data set: the grid on `[0, 1]` and float32 paths `[n, times, channels]`.

    Simulated sets draw the training and test particles from two independent simulations (for opinion dynamics
    `num_paths` random particles of two systems of `opinion_particles`); FitzHugh-Nagumo is
    standardised by the training states at time 0 (as P31's loader). Real series are windowed, min-max scaled over
    the whole series, and split in time.
    """
    key = jax.random.fold_in(jax.random.key(config.seed), DATASETS.index(name))
    grid = dict(num_times=config.num_times, substeps=config.substeps)
    if name == "opinion":
        keep_key, *keys = jax.random.split(key, 3)
        particles = max(config.opinion_particles, config.num_paths)
        systems = [np.asarray(opinion_dynamics(k, particles, **grid)[1]) for k in keys]
        rng = np.random.default_rng(np.asarray(jax.random.key_data(keep_key)).ravel())
        train_set, test_set = (paths[rng.permutation(particles)[: config.num_paths]] for paths in systems)
    elif name == "fitzhugh_nagumo":
        train_set, test_set = (
            np.asarray(fitzhugh_nagumo(k, config.num_paths, **grid)[1]) for k in jax.random.split(key)
        )
        mean, std = train_set[:, 0].mean(0), train_set[:, 0].std(0)
        train_set, test_set = (train_set - mean) / std, (test_set - mean) / std
    elif name == "sp500":
        windows = sp500_windows(config.sp500_length, config.sp500_stride, columns=config.sp500_columns)
        train_set, test_set = _split_windows(windows, config, -(-config.sp500_length // config.sp500_stride))
    else:
        windows = electricity_demand_windows(config.electricity_length, config.electricity_length)
        train_set, test_set = _split_windows(windows, config, 0)
    ts = np.linspace(0.0, 1.0, train_set.shape[1], dtype=np.float32)
    return ts, train_set.astype(np.float32), test_set.astype(np.float32)


def _depth(name: str, config: Config) -> int:
    return config.opinion_depth if name == "opinion" else config.depth


def signature_loss(fake, real, depth: int):
    """P31's loss: the distance between the mean time-augmented signatures (basepoint at the origin) of the two
    sets, the square root of the biased linear signature MMD^2."""
    mmd = signature_mmd_squared(fake, real, depth, unbiased=False, add_time=True, basepoint=True)
    return jnp.sqrt(mmd + 1e-12)


def train_dc_sde(ts, data, depth: int, config: Config, key) -> tuple[DirectedChainSDE, float]:
    """Train a DC-SDE: neighbours are real paths, initial states those of another batch of real paths."""
    model_key, data_key, train_key = jax.random.split(key, 3)
    model = DirectedChainSDE(
        data.shape[-1], config.width, config.mlp_depth, noise_size=config.noise_size, key=model_key
    )
    ts = jnp.asarray(ts)

    def loss(model, batch, key):
        neighbours, starts = jnp.split(batch, 2)
        fake = model.sample(ts, neighbours, starts[:, 0], key=key)
        return signature_loss(fake, neighbours, depth)

    schedule = optax.exponential_decay(config.learning_rate, config.dc_steps, 0.1)
    model, history = train(
        model,
        loss,
        minibatches(jnp.asarray(data), 2 * config.batch_size, key=data_key),
        optax.adam(schedule),
        steps=config.dc_steps,
        key=train_key,
        description="DC-SDE",
    )
    return model, float(history["wall_time_s"])


def train_gan(ts, data, config: Config, key) -> tuple[SDEGAN, float]:
    """Train the SDE-GAN (neural SDE generator, neural CDE discriminator)."""
    model_key, train_key = jax.random.split(key)
    gan = SDEGAN(
        data.shape[-1],
        config.hidden_size,
        config.width,
        config.mlp_depth,
        lipschitz=config.gan_lipschitz,
        key=model_key,
    )
    started = time.perf_counter()
    gan, _ = train_sde_gan(
        gan,
        jnp.asarray(ts),
        data,
        steps=config.gan_steps,
        batch_size=config.batch_size,
        key=train_key,
        generator_lr=config.gan_generator_lr,
        discriminator_lr=config.gan_discriminator_lr,
    )
    return gan, time.perf_counter() - started


def train_latent_sde(ts, data, config: Config, key) -> tuple[LatentSDE, float]:
    """Train a latent SDE on fully observed paths (reconstruction MSE plus `latent_kl_weight` times the KL of
    `q(z0)` and the path KL), with the error regulariser at `latent_error_weight`."""
    model_key, data_key, train_key = jax.random.split(key, 3)
    size = config.hidden_size
    model = LatentSDE(data.shape[-1], size, size, config.width, config.mlp_depth, t0=0.0, t1=1.0, key=model_key)
    ts = jnp.asarray(ts)

    def loss(model, xs, key):
        mask = jnp.ones(xs.shape[:2], bool)
        predictions, mean, logstd, path_kl, heuristics = model.solve_batch(ts, xs, mask, key=key)
        kl = jnp.mean(jnp.sum(0.5 * (mean**2 + jnp.exp(2 * logstd) - 1) - logstd, axis=-1)) + jnp.mean(path_kl)
        return jnp.mean((predictions - xs) ** 2) + config.latent_kl_weight * kl, heuristics

    batches = minibatches(jnp.asarray(data), config.batch_size, key=data_key)
    model, history = fit(
        model,
        loss,
        (batches(i) for i in range(config.latent_steps)),
        optax.adam(config.learning_rate),
        num_steps=config.latent_steps,
        weights=RegularisationWeights(error=config.latent_error_weight),
        key=train_key,
        description="latent SDE",
    )
    return model, float(history["wall_time_s"])


def generate(name: str, model, ts, test: np.ndarray, config: Config, key) -> np.ndarray:
    """`num_generated` paths of a trained generator; the DC-SDE runs `chain_links` links of its chain from real
    test paths (initial states drawn from the test set's) and returns the last."""
    n = min(config.num_generated, len(test))
    ts = jnp.asarray(ts)
    if isinstance(model, DirectedChainSDE):
        init_key, chain_key = jax.random.split(key)
        starts = jax.random.randint(init_key, (config.chain_links, n), 0, len(test))
        initials = jnp.asarray(test[:, 0])[starts]
        links = eqx.filter_jit(model.chain)(ts, jnp.asarray(test[:n]), initials, key=chain_key)
        return np.asarray(links[-1])
    if isinstance(model, SDEGAN):
        return np.asarray(eqx.filter_jit(model.sample)(ts, n, key=key))
    sample = eqx.filter_jit(jax.vmap(lambda k: model.sample_prior(ts, key=k)))
    return np.asarray(sample(jax.random.split(key, n)))


def score(name: str, real: np.ndarray, fake: np.ndarray, ts, config: Config, key) -> dict:
    """Signature MMD (linear, the loss's, and RBF), discriminative and predictive scores, marginal distances; for
    opinion dynamics the modes of the marginal at `mode_time`."""
    depth = _depth(name, config)
    options = dict(add_time=True, basepoint=True)
    d_key, p_key = jax.random.split(key)
    out = {
        "signature_mmd2": float(signature_mmd_squared(real, fake, depth, **options)),
        "signature_mmd2_rbf": float(signature_mmd_squared(real, fake, depth, kernel="rbf", **options)),
        "discriminative": discriminative_score(real, fake, key=d_key, steps=config.score_steps),
        "predictive": predictive_score(fake, real, key=p_key, steps=config.score_steps),
        "marginal_w1": float(marginal_wasserstein(real, fake).mean()),
        "finite": bool(np.all(np.isfinite(fake))),
    }
    if name == "opinion":
        index = int(np.argmin(np.abs(np.asarray(ts) - config.mode_time)))
        real_modes = marginal_modes(real[:, index, 0], min_height=config.mode_min_height)
        fake_modes = marginal_modes(fake[:, index, 0], min_height=config.mode_min_height)
        out["mode_time"] = float(ts[index])
        out["real_modes"], out["modes"] = real_modes.tolist(), fake_modes.tolist()
        out["bimodal_reproduced"] = bool(
            len(real_modes) == 2
            and len(fake_modes) == 2
            and np.all(np.abs(np.sort(fake_modes) - np.sort(real_modes)) <= config.mode_tolerance)
        )
    return out


def _clean(fake: np.ndarray) -> np.ndarray:
    """Generated paths with non-finite values clipped, so that a diverged generator is still scored (badly)."""
    return np.nan_to_num(fake, nan=0.0, posinf=1e6, neginf=-1e6)


def _figures(samples: dict, ts_by_name: dict, config: Config, out) -> list[str]:
    """Real against generated paths (first channel, 20 of each), and the marginals of the first channel at
    `mode_time` (opinion) or the last time."""
    names, generators = list(samples), list(config.generators)
    written = []
    for kind in ("paths", "marginals"):
        fig, axes = plt.subplots(
            len(names), 1 + len(generators), figsize=(2.6 * (1 + len(generators)), 2.0 * len(names)), squeeze=False
        )
        for row, name in enumerate(names):
            ts = ts_by_name[name]
            real = samples[name]["real"]
            index = int(np.argmin(np.abs(ts - config.mode_time))) if name == "opinion" else len(ts) - 1
            for col, label in enumerate(["real", *generators]):
                ax = axes[row, col]
                paths = samples[name][label]
                if kind == "paths":
                    ax.plot(ts, paths[:20, :, 0].T, lw=0.6, alpha=0.7)
                    ax.set_ylim(np.quantile(real[..., 0], 0.001) - 0.2, np.quantile(real[..., 0], 0.999) + 0.2)
                else:
                    bins = np.linspace(
                        np.quantile(real[:, index, 0], 0.001) - 0.3, np.quantile(real[:, index, 0], 0.999) + 0.3, 40
                    )
                    ax.hist(real[:, index, 0], bins=bins, density=True, color="0.8", label="real")
                    if label != "real":
                        ax.hist(
                            np.clip(paths[:, index, 0], bins[0], bins[-1]),
                            bins=bins,
                            density=True,
                            histtype="step",
                            color="C1",
                        )
                    ax.set_xlabel(f"t = {ts[index]:.2f}", fontsize=7)
                if row == 0:
                    ax.set_title(label, fontsize=8)
                if col == 0:
                    ax.set_ylabel(name, fontsize=8)
                ax.tick_params(labelsize=6)
        fig.tight_layout()
        path = out / f"{kind}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def main(config: Config) -> dict:
    """Train and score every generator on every data set; write `results/directed_chain_sde/`.

    **Returns:** the metrics written to `results.json`.
    """
    _check(config)
    started = time.time()
    out = results_dir(SLUG)
    runs, samples, ts_by_name, data_info = [], {}, {}, {}
    for d_index, name in enumerate(config.datasets):
        ts, train_set, test_set = load(name, config)
        ts_by_name[name] = ts
        data_info[name] = {"train": list(train_set.shape), "test": list(test_set.shape)}
        samples[name] = {"real": test_set}
        depth = _depth(name, config)
        for g_index, generator in enumerate(config.generators):
            key = jax.random.fold_in(jax.random.key(config.seed), 1000 + 10 * d_index + g_index)
            train_key, sample_key, score_key = jax.random.split(key, 3)
            if generator == "DC-SDE":
                model, seconds = train_dc_sde(ts, train_set, depth, config, train_key)
            elif generator == "neural SDE (SDE-GAN)":
                model, seconds = train_gan(ts, train_set, config, train_key)
            else:
                model, seconds = train_latent_sde(ts, train_set, config, train_key)
            fake = _clean(generate(name, model, ts, test_set, config, sample_key))
            samples[name][generator] = fake
            run = {"dataset": name, "generator": generator, "train_s": seconds}
            run.update(score(name, test_set, fake, ts, config, score_key))
            runs.append(run)
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in run.items()}, flush=True)
        real_half = score(name, test_set, train_set[: len(test_set)], ts, config, jax.random.key(7))
        runs.append({"dataset": name, "generator": "training set (reference)", "train_s": 0.0, **real_half})

    for name in config.datasets:
        rows = {r["generator"]: r for r in runs if r["dataset"] == name}
        if "DC-SDE" in rows and "neural SDE (SDE-GAN)" in rows:
            rows["DC-SDE"]["mmd_at_most_neural_sde"] = (
                rows["DC-SDE"]["signature_mmd2"] <= rows["neural SDE (SDE-GAN)"]["signature_mmd2"]
            )
    figures = _figures(samples, ts_by_name, config, out)
    table = [
        {
            "data set": r["dataset"],
            "generator": r["generator"],
            "signature MMD^2": r["signature_mmd2"],
            "signature MMD^2 (RBF)": r["signature_mmd2_rbf"],
            "discriminative": r["discriminative"],
            "predictive (MAE)": r["predictive"],
            "marginal W1": r["marginal_w1"],
            "modes": ", ".join(f"{m:.2f}" for m in r.get("modes", r.get("real_modes", []))) if "modes" in r else "",
            "bimodal": r.get("bimodal_reproduced", ""),
            "training s": r["train_s"],
        }
        for r in runs
    ]
    metrics = {"runs": runs, "data": data_info, "figures": figures}
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
