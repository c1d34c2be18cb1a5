"""Steering SmolLM2-135M toward a sentiment or a news topic (P25: static activation steering, ACT, against G-ACT's
clustered, probe-chosen directions; P36: model-native skill directions). Per-layer probe accuracy of ACT's
direction against G-ACT's online-refined probes; continuations after neutral prompts steered at the same KL,
judged by fine-tuned MiniLM classifiers (concept) and the unsteered model's perplexity (fluency); and data
selection along skill directions for training a sentiment classifier, against random selections."""

import dataclasses
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from tqdm.auto import tqdm

import jaxinterp as ji
import models
from experiments.record import results_dir, write_results
from jaxinterp import features
from models import text_classifiers

from .config import LatentSteeringConfig

SLUG = "latent_steering"
METHODS = ("ACT", "G-ACT", "skill")
PAPER = {
    "P25 G-ACT vs ACT, mean probe accuracy over layers (LLaMA-3.2 3B)": "+15%",
    "P25 G-ACT vs ACT, probe accuracy over layers 0-6": "+61.5%",
    "P36 skill-directed data selection (Pass@1, MATH / AMC)": "up to +20% / +41% over human-skill selection",
    "P36 skill vectors as steering (Pass@8, MATH)": "up to +4.8%",
}


def encode_texts(tokenizer, texts, max_tokens):
    """Tokenise `texts`, each cut to `max_tokens`, right-padded: `(tokens int32 [n, width], mask bool [n, width])`."""
    ids = [e.ids[:max_tokens] for e in tokenizer.encode_batch(list(texts))]
    width = max(len(i) for i in ids)
    tokens = np.zeros((len(ids), width), np.int32)
    mask = np.zeros((len(ids), width), bool)
    for row, i in enumerate(ids):
        tokens[row, : len(i)] = i
        mask[row, : len(i)] = True
    return tokens, mask


def pooled_activations(model, tokenizer, texts, layers, max_tokens: int, batch_size: int = 16) -> np.ndarray:
    """Mean-pooled residual streams `blocks.L.resid_post` of `texts` at `layers`: `[len(layers), n, d_model]`.
    Only the blocks up to the last layer asked for are run."""
    sites = [f"blocks.{layer}.resid_post" for layer in layers]

    @eqx.filter_jit
    def run(model, tokens, mask):
        cache = jax.vmap(lambda t: ji.capture(model, *sites)(t)[1])(tokens)
        return jnp.stack([features.mean_pool(cache[site], mask) for site in sites])

    tokens, mask = encode_texts(tokenizer, texts, max_tokens)
    out = []
    for start in tqdm(range(0, len(texts), batch_size), desc="activations", leave=False):
        rows = slice(start, start + batch_size)
        t, m = tokens[rows], mask[rows]
        pad = batch_size - len(t)  # one shape for every batch
        t, m = np.pad(t, ((0, pad), (0, 0))), np.pad(m, ((0, pad), (0, 0)))
        m[len(m) - pad :, 0] = True
        out.append(np.asarray(run(model, t, m))[:, : batch_size - pad])
    return np.concatenate(out, 1)


def labelled_texts(task: str, config: LatentSteeringConfig, rng: np.random.Generator) -> dict[str, list[str]]:
    """`train_per_class + test_per_class` texts of each class of `task`: SST-2 training sentences of at least six
    words, or held-out AG News articles."""
    if task == "sst2":
        texts, labels = ji.data.sst2("train")
        keep = np.array([len(t.split()) >= 6 for t in texts])
    else:
        _, (texts, labels) = ji.data.ag_news_split()
        keep = np.ones(len(texts), bool)
    n = config.train_per_class + config.test_per_class
    out = {}
    for label, name in enumerate(text_classifiers.TASK_LABELS[task]):
        rows = rng.permutation(np.flatnonzero(keep & (np.asarray(labels) == label)))[:n]
        out[name] = [texts[r] for r in rows]
    return out


def _balanced_accuracy(predicted_concept, is_concept) -> float:
    predicted_concept, is_concept = np.asarray(predicted_concept), np.asarray(is_concept)
    return float(0.5 * (predicted_concept[is_concept].mean() + (~predicted_concept[~is_concept]).mean()))


def _split(activations, config):
    return activations[:, : config.train_per_class], activations[:, config.train_per_class :]


def probe_comparison(pooled: dict, target: tuple[str, str], layers, config: LatentSteeringConfig) -> dict:
    """Per layer, how well a concept is read from the pooled residual stream: ACT's direction (a threshold on the
    projection, midway between the training means) against a logistic probe fitted on half of the training texts
    and refined online, `online_batch` texts at a time, on the other half. Balanced accuracy on held-out texts."""
    task, name = target
    train_c, test_c = _split(pooled[task][name], config)
    others = [pooled[task][o] for o in pooled[task] if o != name]
    train_b = np.concatenate([_split(o, config)[0] for o in others], 1)
    test_b = np.concatenate([_split(o, config)[1] for o in others], 1)
    rng = np.random.default_rng(config.seed)
    train_b = train_b[:, rng.permutation(train_b.shape[1])[: train_c.shape[1]]]  # as many as the concept
    test_b = test_b[:, rng.permutation(test_b.shape[1])[: test_c.shape[1]]]
    half = train_c.shape[1] // 2
    act, probe = [], []
    is_concept = np.r_[np.ones(test_c.shape[1], bool), np.zeros(test_b.shape[1], bool)]
    for i, _ in enumerate(layers):
        direction = features.act_direction(train_c[i], train_b[i])
        act.append(features.direction_accuracy(direction, train_c[i], train_b[i], test_c[i], test_b[i]))
        x = np.concatenate([train_c[i, :half], train_b[i, :half]])
        y = np.r_[np.ones(half, np.int32), np.zeros(half, np.int32)]
        fitted = features.fit_probe(x, y, 2)
        stream_x = np.concatenate([train_c[i, half:], train_b[i, half:]])
        stream_y = np.r_[np.ones(train_c.shape[1] - half, np.int32), np.zeros(train_b.shape[1] - half, np.int32)]
        order = rng.permutation(len(stream_y))
        for start in range(0, len(order), config.online_batch):
            rows = order[start : start + config.online_batch]
            fitted = features.refine_probe(fitted, stream_x[rows], stream_y[rows])
        predicted = np.asarray(fitted.predict(np.concatenate([test_c[i], test_b[i]]))) == 1
        probe.append(_balanced_accuracy(predicted, is_concept))
    return {"layers": list(layers), "ACT": act, "G-ACT probe": probe}


def bootstrap_interval(values, rng, resamples: int) -> list[float]:
    """The 95% percentile bootstrap interval `[low, high]` of the mean of `values`, from `resamples` resamples."""
    values = np.asarray(values)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


class Judge:
    """Scores continuations: the MiniLM classifier's probability of the target class (concept), and fluency,
    `min(1, reference / perplexity)` with the unsteered model's perplexity and `reference` the median perplexity of
    the unsteered continuations; combined per text as their harmonic mean."""

    def __init__(self, config: LatentSteeringConfig, tasks):
        self.classifiers = {}
        for task in tasks:
            fine_tuning = config.classifiers or text_classifiers.DEFAULTS[task]
            classifier, tokenizer, info = text_classifiers.text_classifier(task, fine_tuning)
            self.classifiers[task] = (classifier, tokenizer, info)

    def concept(self, task: str, name: str, texts) -> np.ndarray:
        classifier, tokenizer, _ = self.classifiers[task]
        logits = text_classifiers.predict_logits(classifier, tokenizer, texts)
        probs = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))
        return probs[:, text_classifiers.TASK_LABELS[task].index(name)]


def steering_comparison(model, tokenizer, pooled, prompt_pooled, basis, config, judge, rng) -> dict:
    """Each target concept steered by ACT, G-ACT and the most concept-aligned skill direction at the layer
    `config.steer_layer`, each at the strength that moves the next-token distribution by `config.target_kl`."""
    site = f"blocks.{config.steer_layer}.resid_post"
    prompts, mask = encode_texts(tokenizer, config.prompts, 64)
    lengths = mask.sum(1)
    batch, width = len(config.prompts), model.cfg.d_model

    def per_prompt(direction):
        """Every direction as one row per prompt, so that every method, and the unsteered run (a zero direction
        at strength 0, which adds exactly nothing), share one compilation of each function."""
        return {site: jnp.broadcast_to(jnp.asarray(direction, jnp.float32), (batch, width))}

    unsteered = per_prompt(jnp.zeros(width))
    base_logits = models.next_token_logits(model, prompts, lengths, directions=unsteered, alpha=0.0)
    key = jax.random.key(config.seed)

    def continue_and_score(directions, alpha):
        new = models.generate(
            model,
            prompts,
            lengths,
            config.new_tokens,
            key=key,
            temperature=config.temperature,
            directions=directions,
            alpha=alpha,
        )
        texts = [p + tokenizer.decode([int(t) for t in row]) for p, row in zip(config.prompts, np.asarray(new))]
        return texts, models.continuation_perplexity(model, prompts, lengths, new)

    plain_texts, plain_ppl = continue_and_score(unsteered, 0.0)
    reference = float(np.median(plain_ppl))
    rows, examples = [], {}
    for task, name in tqdm(config.targets, desc="targets"):
        concept = pooled[task][name][0, : config.train_per_class]
        baseline = np.concatenate([pooled[task][o][0, : config.train_per_class] for o in pooled[task] if o != name])
        half = len(concept) // 2
        gact = features.fit_gact(concept[:half], baseline, config.k, key=jax.random.fold_in(key, len(rows)))
        for start in range(half, len(concept), config.online_batch):
            gact = features.refine_gact(gact, concept[start : start + config.online_batch], baseline.mean(0))
        scores_c, scores_b = basis.scores(concept), basis.scores(baseline)
        separation = (scores_c.mean(0) - scores_b.mean(0)) / (jnp.concatenate([scores_c, scores_b]).std(0) + 1e-9)
        j = int(jnp.argmax(jnp.abs(separation)))
        directions = {
            "ACT": features.act_direction(concept, baseline),
            "G-ACT": gact.direction(prompt_pooled),
            "skill": basis.directions[j] * jnp.sign(separation[j]),
        }
        plain_concept = judge.concept(task, name, plain_texts)
        rows.append(_score_row(task, name, "none", 0.0, 0.0, 0.0, plain_concept, plain_ppl, reference, rng, config))
        examples[f"{task}:{name}:none"] = plain_texts[:3]
        for method in METHODS:
            vectors = per_prompt(directions[method])

            def divergence(alpha, vectors=vectors):
                steered = models.next_token_logits(model, prompts, lengths, directions=vectors, alpha=alpha)
                return features.kl_divergence(base_logits, steered)

            strength = features.strength_for_divergence(divergence, config.target_kl, initial=1.0)
            texts, ppl = continue_and_score(vectors, strength.alpha)
            added = float(jnp.mean(jnp.linalg.norm(vectors[site], axis=-1)) * strength.alpha)
            rows.append(
                _score_row(
                    task,
                    name,
                    method,
                    strength.alpha,
                    strength.divergence,
                    added,
                    judge.concept(task, name, texts),
                    ppl,
                    reference,
                    rng,
                    config,
                )
            )
            if method == "skill":
                rows[-1]["skill direction"] = j
            examples[f"{task}:{name}:{method}"] = texts[:3]
    return {"rows": rows, "examples": examples, "reference_perplexity": reference}


def _score_row(task, name, method, alpha, kl, added_norm, concept, ppl, reference, rng, config) -> dict:
    fluency = np.minimum(1.0, reference / np.asarray(ppl))
    combined = 2 * concept * fluency / np.maximum(concept + fluency, 1e-12)
    return {
        "target": f"{task}: {name}",
        "method": method,
        "alpha": float(alpha),
        "KL": float(kl),
        "added norm": added_norm,
        "concept": float(concept.mean()),
        "concept 95% CI": bootstrap_interval(concept, rng, config.bootstrap),
        "perplexity (median)": float(np.median(ppl)),
        "fluency": float(fluency.mean()),
        "combined": float(combined.mean()),
        "combined 95% CI": bootstrap_interval(combined, rng, config.bootstrap),
    }


def skill_selection(model, tokenizer, config: LatentSteeringConfig, rng) -> tuple[dict, features.SkillBasis]:
    """Model-native skills (P36) for data selection: the orthonormal basis of SmolLM2's pooled residual stream at
    `steer_layer` over a pool of SST-2 training texts; a sentiment classifier (a logistic head on frozen MiniLM
    sentence features) trained on `selection_size` texts chosen (a) along the skill direction and pole that scores
    best on validation texts, (b) to cover every direction's two poles, (c) at random; accuracy on SST-2 dev."""
    texts, labels = ji.data.sst2("train")
    rows = rng.permutation(len(texts))[: config.pool_size + config.validation_size]
    pool_rows, validation_rows = rows[: config.pool_size], rows[config.pool_size :]
    pool = [texts[r] for r in pool_rows]
    pool_labels = np.asarray(labels)[pool_rows]
    pooled = pooled_activations(model, tokenizer, pool, [config.steer_layer], config.max_tokens)[0]
    basis = features.skill_basis(pooled, config.skills)
    scores = np.asarray(basis.scores(pooled))

    encoder, minilm_tokenizer = models.load_minilm()
    featurise = lambda t: text_classifiers.frozen_features(encoder, minilm_tokenizer, t, progress=False)
    pool_x = featurise(pool)
    validation_x, validation_y = featurise([texts[r] for r in validation_rows]), np.asarray(labels)[validation_rows]
    dev_texts, dev_y = ji.data.sst2("dev")
    dev_texts, dev_y = dev_texts[: config.dev_size], np.asarray(dev_y)[: config.dev_size]
    dev_x = featurise(dev_texts)

    def trained_on(selection):
        probe = features.fit_probe(pool_x[selection], pool_labels[selection].astype(np.int32), 2)
        return (
            features.probe_accuracy(probe, validation_x, validation_y.astype(np.int32)),
            features.probe_accuracy(probe, dev_x, np.asarray(dev_y, np.int32)),
        )

    along = []
    for j in range(config.skills):
        for sign in (1, -1):
            validation, test = trained_on(features.select_along(scores[:, j], config.selection_size, sign=sign))
            along.append({"direction": j, "sign": sign, "validation": validation, "test": test})
    best = max(along, key=lambda row: row["validation"])
    coverage = trained_on(features.select_for_coverage(scores, config.selection_size))
    random = [
        trained_on(rng.permutation(config.pool_size)[: config.selection_size])[1] for _ in range(config.random_draws)
    ]
    table = [
        {
            "selection": f"along skill {best['direction']} ({'+' if best['sign'] > 0 else '-'}), chosen on validation",
            "dev accuracy": best["test"],
        },
        {"selection": f"covering {config.skills} skills' poles", "dev accuracy": coverage[1]},
        {
            "selection": f"random (mean of {config.random_draws})",
            "dev accuracy": float(np.mean(random)),
            "sd": float(np.std(random)),
        },
    ]
    result = {
        "table": table,
        "along": along,
        "random": random,
        "explained_variance": np.asarray(basis.explained).tolist(),
        "orthonormality_error": float(jnp.abs(basis.directions @ basis.directions.T - jnp.eye(config.skills)).max()),
    }
    return result, basis


def plot(path, probes: dict, steering_rows) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for (target, result), colour in zip(probes.items(), plt.cm.tab10.colors):
        axes[0].plot(result["layers"], result["ACT"], "--", color=colour, label=f"{target}: ACT direction")
        axes[0].plot(result["layers"], result["G-ACT probe"], "-", color=colour, label=f"{target}: G-ACT probe")
    axes[0].set(xlabel="layer", ylabel="balanced accuracy (held out)", title="reading the concept, per layer")
    axes[0].legend(fontsize=6)
    targets = list(dict.fromkeys(row["target"] for row in steering_rows))
    methods = list(dict.fromkeys(row["method"] for row in steering_rows))
    width = 0.8 / len(methods)
    for m, method in enumerate(methods):
        rows = [next(r for r in steering_rows if r["target"] == t and r["method"] == method) for t in targets]
        values = [r["concept"] for r in rows]
        errors = np.array(
            [[r["concept"] - r["concept 95% CI"][0], r["concept 95% CI"][1] - r["concept"]] for r in rows]
        )
        axes[1].bar(np.arange(len(targets)) + m * width, values, width, yerr=errors.T, label=method, capsize=2)
    axes[1].set_xticks(np.arange(len(targets)) + 0.4 - width / 2, targets, rotation=15, fontsize=7)
    axes[1].set(ylabel="judge's probability of the target", title="steered continuations (same KL)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def first_blocks(model, n: int):
    """`model` with only its first `n` blocks, followed by its final norm and unembedding."""
    if not 1 <= n <= model.cfg.n_layers:
        raise ValueError(f"blocks must be between 1 and {model.cfg.n_layers}; got {n}")
    shell = models.Transformer(dataclasses.replace(model.cfg, n_layers=n), key=jax.random.key(0))
    parts = ("token_embed", "position_embed", "type_embed", "embed_ln", "ln_final", "unembed")
    kept = [p for p in parts if getattr(model, p) is not None]
    return eqx.tree_at(
        lambda m: [getattr(m, p) for p in kept] + [m.blocks],
        shell,
        [getattr(model, p) for p in kept] + [list(model.blocks[:n])],
    )


def main(config: LatentSteeringConfig) -> dict:
    """Steering SmolLM2-135M with ACT, G-ACT and skill directions; probe accuracy per layer; skill-based data
    selection. Writes `results/latent_steering/`."""
    started = time.time()
    stages = {}

    def stage(name):
        stages[name] = round(time.time() - started - sum(stages.values()), 2)

    rng = np.random.default_rng(config.seed)
    model, tokenizer = models.load_smollm2()
    if config.blocks is not None:
        model = first_blocks(model, config.blocks)
    stage("load SmolLM2")
    layers = tuple(range(model.cfg.n_layers)) if config.layers is None else tuple(config.layers)
    if config.steer_layer not in layers:
        raise ValueError(f"steer_layer {config.steer_layer} must be one of the probed layers {layers}")
    tasks = tuple(dict.fromkeys(task for task, _ in config.targets))
    for task, name in config.targets:
        if name not in text_classifiers.TASK_LABELS.get(task, ()):
            raise ValueError(f"unknown target {task}: {name}; known: {text_classifiers.TASK_LABELS}")
    texts = {task: labelled_texts(task, config, rng) for task in tasks}
    pooled = {
        task: {name: pooled_activations(model, tokenizer, t, layers, config.max_tokens) for name, t in by_class.items()}
        for task, by_class in texts.items()
    }
    stage("activations")
    probes = {
        f"{task}: {name}": probe_comparison(pooled, (task, name), layers, config) for task, name in config.targets
    }
    stage("probes")
    at_layer = {
        task: {name: a[[layers.index(config.steer_layer)]] for name, a in by_class.items()}
        for task, by_class in pooled.items()
    }
    prompt_pooled = pooled_activations(model, tokenizer, config.prompts, [config.steer_layer], 64)[0]
    skills, basis = skill_selection(model, tokenizer, config, rng)
    stage("skills")
    judge = Judge(config, tasks)
    stage("judges")
    steering = steering_comparison(model, tokenizer, at_layer, prompt_pooled, basis, config, judge, rng)
    stage("steering")

    probe_table = []
    for target, result in probes.items():
        act, probe = np.asarray(result["ACT"]), np.asarray(result["G-ACT probe"])
        early = [i for i, layer in enumerate(result["layers"]) if layer <= 6]
        probe_table.append(
            {
                "target": target,
                "ACT, mean over layers": float(act.mean()),
                "G-ACT probe, mean over layers": float(probe.mean()),
                "ACT, layers 0-6": float(act[early].mean()),
                "G-ACT probe, layers 0-6": float(probe[early].mean()),
            }
        )
    plot(results_dir(SLUG) / "steering.png", probes, steering["rows"])
    metrics = {
        "probe_accuracy": probes,
        "probe_table": probe_table,
        "steering": steering,
        "skills": skills,
        "judges": {task: info.get("heldout_accuracy") for task, (_, _, info) in judge.classifiers.items()},
        "stage_seconds": stages,
    }
    table = (
        [{k: v for k, v in row.items() if not k.endswith("CI")} for row in steering["rows"]]
        + probe_table
        + skills["table"]
    )
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
