"""Neurons decoded through the final projection (P39) and labelled in a sentence encoder's space (SemanticLens, P23):
(a) every SmolLM2-135M MLP neuron decoded, specialised neurons found by token and confirmed by clamping; (b) the
fraction of neurons keeping their top token between a small model trained here and its fine-tuned checkpoint, and
between two seeds with neurons matched by activation correlation; (c) SemanticLens labels, text search and scores of
SmolLM2 neurons over real text."""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

import models
from experiments.record import results_dir, write_results
from jaxinterp import compare, neurons
from jaxinterp import data as datasets
from jaxinterp.training import minibatches, train
from models import text_classifiers

from .config import CONCEPTS, QUERIES, NeuronDecodingConfig

SLUG = "neuron_decoding"
PAPER = {
    "P39 neurons keeping their top token, Llama-3.1-8B base vs instruct (up projection)": 0.754,
    "P39 minutes to decode every neuron of Llama-3.1-8B": "under 15 (abstract); 10 s in the text",
}


# ------------------------------------------------------------------------------------------- (a) SmolLM2 neurons
def continuations(model, tokenizer, prompts: list[list[int]], steps: int) -> list[str]:
    """The greedy continuations of the tokenised `prompts` by `model` (`steps` tokens each), decoded."""
    width = max(len(ids) for ids in prompts)
    padded = np.array([ids + [0] * (width - len(ids)) for ids in prompts], np.int32)
    new = models.generate(model, padded, [len(ids) for ids in prompts], steps, key=jax.random.key(0), temperature=0)
    return [tokenizer.decode([int(t) for t in row]) for row in np.asarray(new)]


def smollm2_neurons(config: NeuronDecodingConfig, model, tokenizer) -> dict:
    """Every neuron of the chosen layers decoded (timed), and each concept's neuron clamped."""
    started = time.perf_counter()
    decoded = neurons.decode_neurons(model, k=10, layers=config.decode_layers)
    jax.block_until_ready(decoded.top_ids)
    seconds = time.perf_counter() - started
    encoded = [tokenizer.encode(prompt).ids for prompt in config.prompts]
    found = []
    for concept in config.concepts:
        (token,) = tokenizer.encode(concept).ids
        hits = neurons.search_token(decoded, token)
        if hits.layers.size == 0:
            hits = neurons.top_neurons_for_token(model, token, n=1, layers=decoded.layers, score="z")
        layer, neuron = int(hits.layers[0]), int(hits.neurons[0])
        at = decoded.layers.index(layer)
        entry = {
            "concept": concept, "layer": layer, "neuron": neuron, "rank_of_concept": int(hits.ranks[0]),
            "neurons_listing_it": int(neurons.search_token(decoded, token).layers.size),
            "top_tokens": [tokenizer.decode([int(t)]) for t in decoded.top_ids[at, neuron]],
            "prompts": [],
        }  # fmt: skip
        clamped = neurons.clamp(model, layer, neuron, config.clamp_value)
        for prompt, ids in zip(config.prompts, encoded):
            last = len(ids) - 1
            effect = neurons.clamp_effect(model, jnp.asarray(ids), layer, neuron, config.clamp_value, positions=last)
            entry["prompts"].append({
                "prompt": prompt, "top_mass": float(effect.top_mass[last]),
                "top_mass_clamped": float(effect.top_mass_clamped[last]), "shift_nats": float(effect.top_shift[last]),
                "kl_nats": float(effect.kl[last]),
            })  # fmt: skip
        if config.generate_steps:
            plain = continuations(model, tokenizer, encoded, config.generate_steps)
            steered = continuations(clamped, tokenizer, encoded, config.generate_steps)
            for row, before, after in zip(entry["prompts"], plain, steered):
                row["continuation"], row["continuation_clamped"] = before, after
        found.append(entry)
    n = int(np.prod(decoded.top_ids.shape[:2]))
    return {"neurons_decoded": n, "layers": list(decoded.layers), "decode_seconds": seconds, "concepts": found}


# ------------------------------------------------------------------------------- (b) base against fine-tuned
class Corpus:
    """Texts as windows of a reduced vocabulary: id 0 the separator between texts, ids `1..V-2` the most frequent
    SmolLM2 tokens of the base corpus, id `V-1` every other token."""

    def __init__(self, tokenizer, base_texts: list[str], vocab_size: int):
        self.tokenizer = tokenizer
        counts = np.zeros(tokenizer.get_vocab_size(), np.int64)
        for ids in self._encode(base_texts):
            np.add.at(counts, ids, 1)
        frequent = np.argsort(-counts, kind="stable")[: vocab_size - 2]
        self.kept = frequent  # reduced id i + 1 is SmolLM2 token kept[i]
        self.mapping = np.full(tokenizer.get_vocab_size(), vocab_size - 1, np.int32)
        self.mapping[frequent] = np.arange(1, vocab_size - 1, dtype=np.int32)
        self.vocab_size = vocab_size
        self.coverage = float(counts[frequent].sum() / counts.sum())

    def _encode(self, texts):
        return [np.asarray(e.ids, np.int64) for e in self.tokenizer.encode_batch(list(texts))]

    def windows(self, texts: list[str], length: int) -> np.ndarray:
        """The texts mapped, joined with separators and cut into `[n, length + 1]` windows."""
        stream = np.concatenate([np.concatenate([[0], self.mapping[ids]]) for ids in self._encode(texts)])
        n = stream.size // (length + 1)
        return stream[: n * (length + 1)].reshape(n, length + 1).astype(np.int32)

    def token_text(self, reduced: int) -> str:
        """A reduced id as text."""
        if reduced == 0:
            return "<sep>"
        if reduced == self.vocab_size - 1:
            return "<unk>"
        return self.tokenizer.decode([int(self.kept[reduced - 1])])


def _lm_loss(model, batch, key):
    logits = jax.vmap(model)(batch[:, :-1])
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch[:, 1:]))


def _evaluate(model, windows: np.ndarray) -> float:
    return float(eqx.filter_jit(_lm_loss)(model, jnp.asarray(windows[:256]), None))


def _top_overlap(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The fraction of rows with the same first token, and the mean overlap of the top-10 sets."""
    same = float(np.mean(a[:, 0] == b[:, 0]))
    overlap = float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b)]))
    return same, overlap


def small_models(config: NeuronDecodingConfig, tokenizer) -> dict:
    """Two base seeds trained on AG News + SST-2, the first fine-tuned on Rotten Tomatoes; decoded and compared."""
    news, _ = datasets.ag_news()
    sst, _ = datasets.sst2("train")
    reviews, _ = datasets.rotten_tomatoes()
    rng = np.random.default_rng(config.seed)
    base_texts = list(news) + [sst[i] for i in rng.permutation(len(sst))[: config.sst2_sentences]]
    corpus = Corpus(tokenizer, base_texts, config.vocab_size)
    base = corpus.windows([base_texts[i] for i in rng.permutation(len(base_texts))], config.seq_len)
    tuned_windows = corpus.windows(list(reviews), config.seq_len)
    held = max(config.match_windows, 256)
    base_train, base_held = base[held:], base[:held]
    tune_train, tune_held = tuned_windows[256:], tuned_windows[:256]
    cfg = models.llama_config(
        vocab_size=config.vocab_size, d_model=config.d_model, n_layers=config.n_layers, n_heads=config.n_heads,
        n_kv_heads=config.n_heads // 2, d_head=config.d_model // config.n_heads, d_mlp=config.d_mlp,
        rope_theta=10000.0, tie_embeddings=False,
    )  # fmt: skip
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, min(50, config.base_steps // 2), config.base_steps, 0.1 * config.learning_rate
    )
    optimiser = optax.adamw(schedule, weight_decay=0.01)
    trained, losses = {}, {}
    for offset in (0, 1):
        key = jr.fold_in(jr.key(config.seed), offset)
        init_key, data_key, train_key = jr.split(key, 3)
        model = models.Transformer(cfg, key=init_key)
        batches = minibatches(jnp.asarray(base_train), config.batch_size, key=data_key)
        trained[f"base seed {offset}"], history = train(
            model, _lm_loss, batches, optimiser, steps=config.base_steps, key=train_key,
            description=f"base seed {offset}",
        )  # fmt: skip
        losses[f"base seed {offset} train"] = float(np.mean(history["loss"][-50:]))
    tune_key = jr.fold_in(jr.key(config.seed), 2)
    trained["tuned"], history = train(
        trained["base seed 0"], _lm_loss, minibatches(jnp.asarray(tune_train), config.batch_size, key=tune_key),
        optax.adamw(config.tune_learning_rate, weight_decay=0.01), steps=config.tune_steps,
        key=jr.fold_in(tune_key, 1), description="fine-tune",
    )  # fmt: skip
    held_out = {}
    for name, model in trained.items():
        held_out[name] = {"base corpus": _evaluate(model, base_held), "reviews": _evaluate(model, tune_held)}

    comparisons = {}
    for weights in ("out", "in"):
        decoded = {
            name: np.asarray(neurons.decode_neurons(m, k=10, weights=weights).top_ids) for name, m in trained.items()
        }
        base0, tuned, base1 = decoded["base seed 0"], decoded["tuned"], decoded["base seed 1"]
        flat = [x.reshape(-1, 10) for x in (base0, tuned, base1)]
        same, overlap = _top_overlap(flat[0], flat[1])
        shuffled = flat[1][rng.permutation(flat[1].shape[0])]
        chance_same, chance_overlap = _top_overlap(flat[0], shuffled)
        comparisons[f"base vs tuned ({weights})"] = {
            "same_top_token": same, "top10_overlap": overlap, "chance_same_top_token": chance_same,
            "chance_top10_overlap": chance_overlap,
        }  # fmt: skip
        comparisons[f"base vs tuned ({weights})"]["top_tokens_example"] = [
            [corpus.token_text(int(t)) for t in base0[0, i, :5]] for i in range(3)
        ]
    correlations = compare.unit_correlations(
        trained["base seed 0"], trained["base seed 1"], jnp.asarray(base_held[: config.match_windows, :-1]),
        "blocks.*.mlp.post", unit_axis=1, batch_size=64,
    )  # fmt: skip
    for weights in ("out", "in"):
        decoded = {
            name: np.asarray(neurons.decode_neurons(trained[name], k=10, weights=weights).top_ids)
            for name in ("base seed 0", "base seed 1")
        }
        same, overlap, chance_same, chance_overlap, matched = [], [], [], [], []
        for layer in range(config.n_layers):
            matching = compare.match_units(correlations[f"blocks.{layer}.mlp.post"].cross)
            a, b = decoded["base seed 0"][layer][matching.rows], decoded["base seed 1"][layer][matching.columns]
            s, o = _top_overlap(a, b)
            cs, co = _top_overlap(a, b[rng.permutation(b.shape[0])])
            same.append(s), overlap.append(o), chance_same.append(cs), chance_overlap.append(co)
            matched.append(float(np.mean(matching.values)))
        comparisons[f"seed 0 vs seed 1, matched ({weights})"] = {
            "same_top_token": float(np.mean(same)), "top10_overlap": float(np.mean(overlap)),
            "chance_same_top_token": float(np.mean(chance_same)), "chance_top10_overlap": float(np.mean(chance_overlap)),
            "mean_matched_correlation": float(np.mean(matched)),
        }  # fmt: skip
    return {
        "vocabulary_coverage": corpus.coverage, "base_windows": int(base_train.shape[0]),
        "tune_windows": int(tune_train.shape[0]), "train_loss": losses, "held_out_loss": held_out,
        "comparisons": comparisons,
    }  # fmt: skip


# ----------------------------------------------------------------------------------------- (c) SemanticLens
def minilm_encoder(max_tokens: int = 64):
    """MiniLM's sentence embedding (mean-pooled, L2-normalised) as a function of a list of strings (`[n, 384]`)."""
    model, tokenizer = models.load_minilm()

    def embed(texts: list[str]) -> np.ndarray:
        pooled = text_classifiers.frozen_features(model, tokenizer, texts, max_tokens=max_tokens, progress=False)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    return embed


def lens_texts(config: NeuronDecodingConfig) -> tuple[list[str], np.ndarray, list[str]]:
    """AG News articles and Rotten Tomatoes sentences, `lens_texts` of each, with their category (0-3 the AG News
    topics, 4 positive and 5 negative reviews) and the category names."""
    rng = np.random.default_rng(config.seed + 1)
    news, topics = datasets.ag_news()
    reviews, sentiment = datasets.rotten_tomatoes()
    pick_news = rng.permutation(len(news))[: config.lens_texts]
    pick_reviews = rng.permutation(len(reviews))[: config.lens_texts]
    texts = [news[i] for i in pick_news] + [reviews[i] for i in pick_reviews]
    categories = np.concatenate([topics[pick_news], np.where(sentiment[pick_reviews] == 1, 4, 5)])
    return texts, categories.astype(int), [name for name, _ in CONCEPTS]


def semantic_lens(config: NeuronDecodingConfig, model, tokenizer, embed) -> dict:
    """Top texts of SmolLM2 neurons, their concept database in MiniLM's space, labels, search and scores."""
    texts, categories, names = lens_texts(config)
    encoded = [tokenizer.encode(text).ids[: config.lens_tokens] for text in texts]
    tokens = np.zeros((len(texts), config.lens_tokens), np.int32)
    mask = np.zeros_like(tokens, bool)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)], mask[row, : len(ids)] = ids, True
    sites = [f"blocks.{layer}.mlp.post" for layer in config.lens_layers]
    started = time.perf_counter()
    found = neurons.top_contexts(model, sites, tokens, mask, k=config.lens_k, per_text=True, batch_size=16)
    contexts_seconds = time.perf_counter() - started
    started = time.perf_counter()
    text_vectors = neurons.concept_database(embed, [texts], batch_size=128)[0]  # every text embedded once
    concept_vectors = neurons.embed_queries(embed, [description for _, description in CONCEPTS])
    embed_seconds = time.perf_counter() - started
    rng = np.random.default_rng(config.seed + 2)
    baseline_sets = text_vectors[rng.integers(0, len(texts), (config.baseline_sets, config.lens_k))]
    chance_clarity = neurons.clarity(baseline_sets)
    layers, search = {}, {}
    for layer, site in zip(config.lens_layers, sites):
        top = found[site]
        database = text_vectors[top.texts]  # [neurons, k, d]
        labelled = neurons.label_components(database, names, concept_vectors=concept_vectors)
        majority = np.array([np.bincount(categories[row], minlength=len(names)).argmax() for row in top.texts])
        agreement = np.array([np.mean(categories[row] == m) for row, m in zip(top.texts, majority)])
        clear = agreement >= 0.75
        clarity = neurons.clarity(database)
        poly_units = rng.permutation(database.shape[0])[: config.polysemanticity_units]
        poly = neurons.polysemanticity(database[poly_units])
        layers[layer] = {
            "neurons": int(database.shape[0]),
            "label_counts": {name: int(np.sum(labelled.label_ids == i)) for i, name in enumerate(names)},
            "label_matches_majority": float(np.mean(labelled.label_ids == majority)),
            "label_matches_majority_clear_neurons": float(np.mean(labelled.label_ids[clear] == majority[clear]))
            if clear.any() else float("nan"),
            "clear_neurons": int(clear.sum()),
            "chance_label_match": float(np.sum(np.bincount(majority, minlength=len(names)) / len(majority)
                                               * np.bincount(labelled.label_ids, minlength=len(names)) / len(majority))),
            "clarity": clarity.tolist(), "clarity_median": float(np.median(clarity)),
            "polysemanticity": poly.tolist(), "polysemanticity_median": float(np.median(poly)),
            "redundancy": neurons.redundancy(database), "density_median": float(np.median(top.density)),
        }  # fmt: skip
        for query in QUERIES:
            ids, scores = neurons.search_components(database, query, embed=embed, top=3)
            for neuron, score in zip(ids[0], scores[0]):
                search.setdefault(query, []).append({
                    "layer": layer, "neuron": int(neuron), "similarity": float(score),
                    "top_texts": [texts[t][:70] for t in top.texts[neuron][:3]],
                })  # fmt: skip
    for query in search:
        search[query] = sorted(search[query], key=lambda hit: -hit["similarity"])[:3]
    best = {}
    for layer, site in zip(config.lens_layers, sites):
        clarity = np.asarray(layers[layer]["clarity"])
        neuron = int(np.argmax(clarity))
        best[layer] = {"neuron": neuron, "clarity": float(clarity[neuron]),
                       "top_texts": [texts[t][:70] for t in found[site].texts[neuron][:3]]}  # fmt: skip
    return {
        "texts": len(texts), "contexts_seconds": contexts_seconds, "embed_seconds": embed_seconds,
        "chance_clarity_median": float(np.median(chance_clarity)), "chance_clarity": chance_clarity.tolist(),
        "layers": {str(k): v for k, v in layers.items()}, "search": search, "clearest": {str(k): v for k, v in best.items()},
    }  # fmt: skip


# --------------------------------------------------------------------------------------------------- report
def plot(path, small: dict, lens: dict) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    names = list(small["comparisons"])
    same = [small["comparisons"][n]["same_top_token"] for n in names]
    chance = [small["comparisons"][n]["chance_same_top_token"] for n in names]
    x = np.arange(len(names))
    axes[0].bar(x - 0.2, same, 0.4, label="same top token")
    axes[0].bar(x + 0.2, chance, 0.4, label="random pairs")
    axes[0].axhline(PAPER[next(iter(PAPER))], color="k", ls="--", lw=1, label="P39 (Llama-3.1-8B)")
    axes[0].set_xticks(x, [n.replace(", matched", "\nmatched") for n in names], fontsize=6)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=6)
    axes[0].set_title("small model: neurons keeping their top token", fontsize=8)
    for layer, entry in lens["layers"].items():
        axes[1].hist(entry["clarity"], bins=30, histtype="step", density=True, label=f"layer {layer}")
        axes[2].hist(entry["polysemanticity"], bins=20, histtype="step", density=True, label=f"layer {layer}")
    axes[1].hist(
        lens["chance_clarity"], bins=30, histtype="step", density=True, color="k", ls=":", label="random texts"
    )
    axes[1].set_title("SmolLM2 neurons: clarity (MiniLM)", fontsize=8)
    axes[2].set_title("SmolLM2 neurons: polysemanticity", fontsize=8)
    for ax in axes[1:]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table_rows(decoding: dict, small: dict, lens: dict) -> list[dict]:
    """The results table: ours beside the papers' claims."""
    rows = [{
        "measure": f"every SmolLM2 neuron decoded ({decoding['neurons_decoded']:,} neurons, top and bottom 10)",
        "ours": f"{decoding['decode_seconds']:.1f} s", "paper": "Llama-3.1-8B: under 15 min (P39)",
    }]  # fmt: skip
    for name, entry in small["comparisons"].items():
        rows.append({
            "measure": f"small model, {name}: same top token / top-10 overlap (random pairs)",
            "ours": f"{entry['same_top_token']:.1%} / {entry['top10_overlap']:.1%} "
            f"({entry['chance_same_top_token']:.1%} / {entry['chance_top10_overlap']:.1%})",
            "paper": "75.4 % (base vs instruct, up projection, P39)" if name.startswith("base vs tuned") else "",
        })  # fmt: skip
    for entry in decoding["concepts"]:
        shifts = [p["shift_nats"] for p in entry["prompts"]]
        if not shifts:
            continue
        rows.append({
            "measure": f"clamping the {entry['concept']!r} neuron (layer {entry['layer']}, {entry['neuron']}): "
            "shift of log-mass on its top 10",
            "ours": f"{np.mean(shifts):+.2f} nats", "paper": "concept probability raised (P39)",
        })  # fmt: skip
    for layer, entry in lens["layers"].items():
        rows.append({
            "measure": f"SmolLM2 layer {layer}: label = majority category of top texts (chance)",
            "ours": f"{entry['label_matches_majority']:.1%} ({entry['chance_label_match']:.1%}); clarity median "
            f"{entry['clarity_median']:.3f} (random texts {lens['chance_clarity_median']:.3f})",
            "paper": "labels, search and scores (P23, qualitative here)",
        })  # fmt: skip
    return rows


def main(config: NeuronDecodingConfig) -> dict:
    """Decode SmolLM2's neurons and clamp concept neurons; compare a small model's neurons across fine-tuning and
    seeds; label SmolLM2 neurons with SemanticLens. Writes `results/neuron_decoding/`."""
    started = time.time()
    model, tokenizer = models.load_smollm2()
    decoding = smollm2_neurons(config, model, tokenizer)
    lens = semantic_lens(config, model, tokenizer, minilm_encoder())
    small = small_models(config, tokenizer)
    metrics = {"decoding": decoding, "small_models": small, "semantic_lens": lens}
    plot(results_dir(SLUG) / "neuron_decoding.png", small, lens)
    write_results(SLUG, config, metrics, started=started, table=table_rows(decoding, small, lens), paper=PAPER)
    return metrics
