"""Relative representations (P41): zero-shot stitching of one network's encoder to another's decoder, with
absolute latents and with relative ones (cosine similarity to shared anchors), across seeds and across MLP and CNN
encoders, on MNIST and Fashion-MNIST."""

import itertools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

from experiments.classifiers import accuracy, load_images, train_classifier
from experiments.record import results_dir, write_results
from jaxinterp import compare
from models.cnn import CNN
from models.mlp import MLP

from .config import RelativeRepresentationsConfig

SLUG = "relative_representations"
REPRESENTATIONS = ("absolute", "relative")


class FlatMLP(eqx.Module):
    """`models.mlp.MLP` on a flattened image."""

    mlp: MLP

    def __call__(self, image):
        return self.mlp(jnp.ravel(image))


class Decoder(eqx.Module):
    """A parameter-free layer norm of the decoder's input, then an MLP classifier."""

    mlp: MLP

    def __call__(self, z):
        z = (z - z.mean()) / jnp.sqrt(z.var() + 1e-5)
        return self.mlp(z)


def encoder(kind: str, config: RelativeRepresentationsConfig, key):
    if kind == "mlp":
        return FlatMLP(MLP(28 * 28, config.mlp_hidden, config.latent_width, key=key))
    if kind == "cnn":
        return CNN(1, 28, config.cnn_channels, config.latent_width, key=key)
    raise ValueError(f"unknown encoder {kind!r}; expected 'mlp' or 'cnn'")


def _logits(model, images, anchors):
    encoder_, decoder = model
    return jax.vmap(compare.stitch(encoder_, decoder, anchors))(images)


def _absolute_logits(model, images, anchors):
    return _logits(model, images, None)


@eqx.filter_jit
def _encode(encoder_, images):
    return jax.vmap(encoder_)(images)


def plot(path, rows: list[dict]) -> None:
    """Accuracy of each kind of stitching, absolute against relative, per data set."""
    kinds = ["end-to-end", "stitched across seeds", "stitched across architectures"]
    datasets = sorted({row["dataset"] for row in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.4), sharey=True)
    for ax, dataset in zip(np.atleast_1d(axes), datasets):
        for k, representation in enumerate(REPRESENTATIONS):
            values = [
                next((r["accuracy"] for r in rows if (r["dataset"], r["kind"], r["representation"]) ==
                      (dataset, kind, representation)), np.nan)
                for kind in kinds
            ]  # fmt: skip
            ax.bar(np.arange(3) + 0.38 * k, values, width=0.36, label=representation)
        ax.axhline(0.1, color="grey", linestyle=":", linewidth=1)
        ax.set_xticks(np.arange(3) + 0.19, ["end-to-end", "across\nseeds", "across\narchitectures"])
        ax.set_title(dataset)
        ax.set_ylim(0, 1)
    np.atleast_1d(axes)[0].set_ylabel("test accuracy")
    np.atleast_1d(axes)[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dataset(name: str, config: RelativeRepresentationsConfig) -> tuple[dict, list[dict]]:
    train_x, train_y, test_x, test_y = load_images(name, config.train_size)
    test_x, test_y = test_x[: config.test_size], test_y[: config.test_size]
    anchor_index = compare.select_anchors(
        train_x, config.num_anchors, strategy=config.anchor_strategy, labels=train_y, key=jr.key(config.seed + 7)
    )
    anchors = jnp.asarray(train_x[anchor_index])
    networks, training = {}, {}
    for kind, representation, i in itertools.product(config.encoders, REPRESENTATIONS, range(config.num_seeds)):
        stream = jr.fold_in(
            jr.key(config.seed + i), 2 * config.encoders.index(kind) + REPRESENTATIONS.index(representation)
        )
        encoder_key, decoder_key, train_key = jr.split(stream, 3)
        width = config.num_anchors if representation == "relative" else config.latent_width
        model = (encoder(kind, config, encoder_key), Decoder(MLP(width, config.decoder_hidden, 10, key=decoder_key)))
        relative = representation == "relative"
        model, summary = train_classifier(
            model, _logits if relative else _absolute_logits, train_x, train_y, steps=config.train_steps,
            batch_size=config.batch_size, learning_rate=config.learning_rate, key=train_key,
            extra=anchors if relative else None, description=f"{name} {kind} {representation} {i}",
        )  # fmt: skip
        networks[kind, representation, i] = model
        training[f"{kind} {representation} {i}"] = summary
    accuracies: dict[str, list[dict]] = {}
    for (kind_a, representation, i), (kind_b, representation_b, j) in itertools.product(networks, networks):
        if representation != representation_b:
            continue
        encoder_a, decoder_b = networks[kind_a, representation, i][0], networks[kind_b, representation, j][1]
        stitched = compare.stitch(encoder_a, decoder_b, anchors if representation == "relative" else None)
        if (kind_a, i) == (kind_b, j):
            kind = "end-to-end"
        elif kind_a == kind_b:
            kind = "stitched across seeds"
        else:
            kind = "stitched across architectures"
        accuracies.setdefault(f"{kind}|{representation}", []).append({
            "encoder": f"{kind_a} {i}", "decoder": f"{kind_b} {j}", "accuracy": accuracy(stitched, test_x, test_y)
        })  # fmt: skip
    rows = []
    for key_, runs in accuracies.items():
        kind, representation = key_.split("|")
        values = [run["accuracy"] for run in runs]
        rows.append({
            "dataset": name, "kind": kind, "representation": representation, "accuracy": float(np.mean(values)),
            "min": float(np.min(values)), "max": float(np.max(values)), "pairs": len(values),
        })  # fmt: skip
    latent_cka = {}
    probe = jnp.asarray(test_x[:1000])
    for kind_a, kind_b in itertools.combinations_with_replacement(config.encoders, 2):
        seeds = range(config.num_seeds)
        pairs = [(i, j) for i in seeds for j in seeds if kind_a != kind_b or i < j]
        values = []
        for i, j in pairs:
            za = _encode(networks[kind_a, "absolute", i][0], probe)
            zb = _encode(networks[kind_b, "absolute", j][0], probe)
            values.append(compare.linear_cka(np.asarray(za), np.asarray(zb)))
        if values:
            latent_cka[f"{kind_a}-{kind_b}"] = float(np.mean(values))
    end_to_end = {r["representation"]: r["accuracy"] for r in rows if r["kind"] == "end-to-end"}
    summary = {
        "end_to_end": end_to_end,
        "relative_stitching_over_end_to_end": {
            r["kind"]: r["accuracy"] / end_to_end["relative"]
            for r in rows
            if r["representation"] == "relative" and r["kind"] != "end-to-end"
        },
        "linear_cka_of_absolute_latents": latent_cka,
    }
    return {"training": training, "accuracies": accuracies, "rows": rows, "summary": summary}, rows


def main(config: RelativeRepresentationsConfig) -> dict:
    """Train absolute and relative networks per encoder kind and seed, then stitch every encoder to every decoder
    of the same representation; writes `results/relative_representations/`."""
    started = time.time()
    metrics, table = {}, []
    for name in config.datasets:
        metrics[name], rows = run_dataset(name, config)
        table += rows
    plot(results_dir(SLUG) / "stitching.png", table)
    write_results(SLUG, config, metrics, started=started, table=table)
    return metrics
