"""Convergent learning (P8): do networks trained from different seeds learn the same units? Correlation matrices
between the units of small CNNs on MNIST, one-to-one (Hungarian) and semi-matching, mutual-information matching,
one-to-many sparse prediction and many-to-many spectral clustering, per layer."""

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
from jaxinterp import capture, compare
from models.cnn import CNN

from .config import ConvergentLearningConfig

SLUG = "convergent_learning"


def _logits(model, images, extra):
    return jax.vmap(model)(images)


@eqx.filter_jit
def _site(captured, images):
    return jax.vmap(captured)(images)[1]


def samples(model: CNN, images: np.ndarray, site: str, rows: np.ndarray) -> np.ndarray:
    """The `rows` of the `[images x positions, channels]` activation matrix of `site` (channels are the units)."""
    value = np.asarray(_site(capture(model, site), jnp.asarray(images))[site])
    return np.moveaxis(value, 1, -1).reshape(-1, value.shape[1])[rows]


def sample_rows(config: ConvergentLearningConfig, positions: int, count: int, key) -> tuple[int, np.ndarray]:
    """How many test images to read for `count` samples of a site with `positions` positions, and which rows."""
    images = min(config.num_images, -(-2 * count // positions))
    count = min(count, images * positions)
    return images, np.sort(np.asarray(jr.choice(key, images * positions, (count,), replace=False)))


def _varying(*arrays: np.ndarray) -> np.ndarray:
    return np.all([x.std(axis=0) > 1e-6 for x in arrays], axis=0)


def one_to_many_and_many_to_many(config, a: np.ndarray, b: np.ndarray, matching: compare.Matching, key) -> dict:
    """Held-out explained variance of net B's units from net A's: one-to-one (the matched unit), one-to-many
    (sparse prediction at each penalty) and many-to-many (least squares on the A units of the B unit's spectral
    cluster)."""
    half = a.shape[0] // 2
    a_fit, a_eval, b_fit, b_eval = a[:half], a[half:], b[:half], b[half:]
    live = _varying(b_fit, b_eval)  # dead units (constant output) cannot be predicted and are left out
    partner = np.empty(b.shape[1], dtype=int)
    partner[matching.columns] = matching.rows
    one_to_one = compare.paired_correlations(a_eval[:, partner], b_eval) ** 2
    out = {"live_units_b": int(live.sum()), "one_to_one_r2": float(one_to_one[live].mean()), "sparse": []}
    for l1, l1_key in zip(config.l1_penalties, jr.split(key, len(config.l1_penalties))):
        prediction, history = compare.sparse_prediction(a_fit, b_fit, l1=l1, steps=config.prediction_steps, key=l1_key)
        predicted = np.asarray(jax.vmap(prediction)(jnp.asarray(a_eval, dtype=jnp.float32)))
        r2 = compare.paired_correlations(predicted, b_eval) ** 2
        out["sparse"].append({
            "l1": l1,
            "r2": float(r2[live].mean()),
            "inputs_per_target": float(prediction.inputs_per_target()[live].mean()),
            "final_loss": float(history["loss"][-1]),
        })  # fmt: skip
    correlations = compare.correlations(a_fit, b_fit)
    num_clusters = max(2, (a.shape[1] + b.shape[1]) // config.cluster_size)
    labels_a, labels_b = compare.spectral_clusters(correlations, num_clusters, seed=0)
    r2 = np.zeros(b.shape[1])
    for j in range(b.shape[1]):
        members = np.flatnonzero(labels_a == labels_b[j])
        if members.size == 0 or not live[j]:
            continue
        design = np.column_stack([a_fit[:, members], np.ones(half)])
        coefficients = np.linalg.lstsq(design, b_fit[:, j], rcond=None)[0]
        fitted = np.column_stack([a_eval[:, members], np.ones(a_eval.shape[0])]) @ coefficients
        r2[j] = compare.paired_correlations(fitted[:, None], b_eval[:, j : j + 1])[0] ** 2
    shared = [c for c in range(num_clusters) if (labels_a == c).any() and (labels_b == c).any()]
    out["spectral"] = {
        "num_clusters": num_clusters,
        "clusters_with_both_networks": len(shared),
        "r2": float(r2[live].mean()),
        "mean_a_units_per_b_unit": float(np.mean([np.sum(labels_a == labels_b[j]) for j in np.flatnonzero(live)])),
    }
    return out


def plot(path, layers: list[str], matched: dict, semi: dict) -> None:
    """Sorted best-match correlations per layer, one line per pair of networks (as the paper's figure)."""
    fig, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.2), sharey=True)
    for ax, layer in zip(np.atleast_1d(axes), layers):
        for k, pair in enumerate(matched[layer]):
            colour = f"C{k}"
            ax.plot(np.sort(matched[layer][pair])[::-1], color=colour, label=f"nets {pair}, one-to-one")
            ax.plot(np.sort(semi[layer][pair])[::-1], color=colour, linestyle="--", label=f"nets {pair}, semi")
        ax.set_title(layer)
        ax.set_xlabel("unit (sorted)")
        ax.set_ylim(-0.1, 1.02)
    np.atleast_1d(axes)[0].set_ylabel("correlation of the match")
    np.atleast_1d(axes)[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(config: ConvergentLearningConfig) -> dict:
    """Train the networks, then compare their units layer by layer; writes `results/convergent_learning/`."""
    started = time.time()
    train_x, train_y, test_x, test_y = load_images(config.dataset, config.train_size)
    networks, training = [], []
    for i in range(config.num_networks):
        init_key, train_key = jr.split(jr.key(config.seed + i))
        model = CNN(1, 28, config.channels, 10, key=init_key)
        model, summary = train_classifier(
            model, _logits, train_x, train_y, steps=config.train_steps, batch_size=config.batch_size,
            learning_rate=config.learning_rate, key=train_key, description=f"network {i}",
        )  # fmt: skip
        summary["test_accuracy"] = accuracy(model, test_x, test_y)
        networks.append(model)
        training.append(summary)
    layers = [f"convs.{i}.post" for i in range(len(config.channels))]
    images = test_x[: config.num_images]
    pairs = list(itertools.combinations(range(config.num_networks), 2))
    correlations = {
        pair: compare.unit_correlations(networks[pair[0]], networks[pair[1]], images, layers) for pair in pairs
    }
    matched = {layer: {} for layer in layers}
    semi = {layer: {} for layer in layers}
    for (i, j), found in correlations.items():
        for layer in layers:
            matched[layer][f"{i}-{j}"] = compare.match_units(found[layer].cross).values
            semi[layer][f"{i}-{j}"] = compare.semi_match(found[layer].cross).values
    per_layer = {}
    key = jr.key(config.seed + 1000)
    for depth, layer in enumerate(layers):
        best = np.stack([
            compare.semi_match(correlations[(0, j)][layer].cross).values for j in range(1, config.num_networks)
        ])  # fmt: skip
        worst_best = best.min(axis=0)
        positions = (28 // 2**depth) ** 2
        mi_key, prediction_key, sparse_key, key = jr.split(key, 4)
        count, rows = sample_rows(config, positions, config.mi_samples, mi_key)
        a, b = samples(networks[0], images[:count], layer, rows), samples(networks[1], images[:count], layer, rows)
        mutual = compare.mutual_information_matrix(a, b, bins=config.mi_bins)
        by_mi = compare.match_units(mutual)
        by_correlation = compare.match_units(correlations[(0, 1)][layer].cross)
        count, rows = sample_rows(config, positions, config.prediction_samples, prediction_key)
        a, b = samples(networks[0], images[:count], layer, rows), samples(networks[1], images[:count], layer, rows)
        order = np.asarray(jr.permutation(sparse_key, a.shape[0]))
        per_layer[layer] = {
            "units": int(config.channels[depth]),
            "mean_one_to_one": float(np.mean([v.mean() for v in matched[layer].values()])),
            "mean_semi": float(np.mean([v.mean() for v in semi[layer].values()])),
            "reliable_units_of_network_0": np.flatnonzero(worst_best >= config.reliable_threshold).tolist(),
            "unmatched_units_of_network_0": np.flatnonzero(worst_best < 0.5).tolist(),
            "best_match_of_network_0_units": worst_best.tolist(),
            "mutual_information": {
                "mean_matched_mi_nats": float(by_mi.values.mean()),
                "agreement_with_correlation_matching": float(np.mean(by_mi.columns == by_correlation.columns)),
            },
            "alignment_0_1": one_to_many_and_many_to_many(config, a[order], b[order], by_correlation, sparse_key),
            "matched": {pair: values.tolist() for pair, values in matched[layer].items()},
            "semi": {pair: values.tolist() for pair, values in semi[layer].items()},
        }
    plot(results_dir(SLUG) / "matched_correlations.png", layers, matched, semi)
    table = []
    for layer, result in per_layer.items():
        alignment = result["alignment_0_1"]
        sparse = {entry["l1"]: entry for entry in alignment["sparse"]}
        strongest = sparse[max(sparse)]
        table.append({
            "layer": layer,
            "units": result["units"],
            "one-to-one corr": result["mean_one_to_one"],
            "semi-matching corr": result["mean_semi"],
            f"reliable (>= {config.reliable_threshold})": len(result["reliable_units_of_network_0"]),
            "unmatched (< 0.5)": len(result["unmatched_units_of_network_0"]),
            "MI/corr matching agree": result["mutual_information"]["agreement_with_correlation_matching"],
            "R2 one-to-one": alignment["one_to_one_r2"],
            f"R2 sparse (l1 {max(sparse)})": strongest["r2"],
            "inputs per unit": strongest["inputs_per_target"],
            "R2 sparse (l1 0)": sparse[min(sparse)]["r2"],
            "R2 spectral": alignment["spectral"]["r2"],
        })  # fmt: skip
    metrics = {"training": training, "layers": per_layer}
    write_results(SLUG, config, metrics, started=started, table=table)
    return metrics
