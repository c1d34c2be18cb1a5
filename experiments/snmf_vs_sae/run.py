"""SNMF features of SmolLM2-135M's MLP activations against SAE latents and difference-in-means (P5): concept
detection (held-out AUROC of each method's best concept feature), reconstruction at fixed L0, and causal steering,
every direction at the strength that moves the next-token distribution after neutral prompts by the same KL, with
`+alpha` and `-alpha`, judged by MiniLM classifiers (concept) and the unsteered model's perplexity (fluency)."""

import hashlib
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
from experiments.latent_steering.run import Judge, bootstrap_interval, encode_texts, first_blocks, labelled_texts
from experiments.record import results_dir, write_results
from jaxinterp import features

from .config import SNMFvsSAEConfig

SLUG = "snmf_vs_sae"
PAPER = {
    "P5 causal steering (Llama-3.1-8B, Gemma-2-2B, GPT-2 Small; LLM-judged concept and fluency)": (
        "SNMF features outperform SAEs and difference-in-means"
    ),
    "P5 concept detection": "SNMF features align with human-interpretable concepts",
}
GENERATION_ROWS = 96  # continuations per compiled generation call


def sae_api():
    """`(SAEConfig, train_sae)` from `jaxinterp.features`, or `None` where that module is not present."""
    try:
        from jaxinterp.features import SAEConfig, train_sae
    except ImportError:
        return None
    return SAEConfig, train_sae


def corpus(config: SNMFvsSAEConfig, rng) -> dict:
    """The labelled texts of every task named in the targets: texts, task, class index and split per text."""
    texts, tasks, classes, train = [], [], [], []
    for task in dict.fromkeys(task for task, _ in config.targets):
        for label, (_, members) in enumerate(labelled_texts(task, config, rng).items()):
            texts += members
            tasks += [task] * len(members)
            classes += [label] * len(members)
            train += [i < config.train_per_class for i in range(len(members))]
    return {"texts": texts, "task": np.array(tasks), "class": np.array(classes), "train": np.array(train)}


def pool(values: np.ndarray, text_index: np.ndarray, n_texts: int) -> np.ndarray:
    """The mean of `values` `[rows, m]` over each text's rows: `[n_texts, m]`."""
    sums = np.zeros((n_texts, values.shape[1]), np.float64)
    np.add.at(sums, text_index, values)
    counts = np.bincount(text_index, minlength=n_texts)
    return (sums / np.maximum(counts, 1)[:, None]).astype(np.float32)


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """`jaxinterp.circuits.roc_auc` of per-text scores against a boolean concept label."""
    names = [str(i) for i in range(len(scores))]
    return ji.circuits.roc_auc(dict(zip(names, map(float, scores))), {n for n, p in zip(names, positive) if p})


def choose_feature(pooled: np.ndarray, text: dict, target, task_names) -> tuple[int, float]:
    """The feature (column of `pooled`) whose per-text score best detects `target` among its task's training
    texts (largest AUROC). **Returns:** `(feature, training AUROC)`."""
    task, name = target
    rows = (text["task"] == task) & text["train"]
    positive = text["class"][rows] == task_names[task].index(name)
    candidates = np.flatnonzero(pooled[rows].std(0) > 0)
    scores = [auroc(pooled[rows][:, j], positive) for j in candidates]
    best = int(np.argmax(scores))
    return int(candidates[best]), float(scores[best])


def heldout_auroc(scores: np.ndarray, text: dict, target, task_names) -> float:
    task, name = target
    rows = (text["task"] == task) & ~text["train"]
    return auroc(scores[rows], text["class"][rows] == task_names[task].index(name))


def top_l0(codes: np.ndarray, l0: int) -> np.ndarray:
    """Each row of non-negative `codes` with all but its `l0` largest entries set to zero."""
    if l0 >= codes.shape[1]:
        return codes
    threshold = -np.partition(-codes, l0 - 1, axis=1)[:, l0 - 1 : l0]
    return np.where(codes >= threshold, codes, 0.0)


def explained_variance(x: np.ndarray, reconstruction: np.ndarray) -> float:
    """`1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2` over every token."""
    residual = np.sum((x.astype(np.float64) - reconstruction) ** 2)
    return float(1.0 - residual / np.sum((x - x.mean(0)) ** 2, dtype=np.float64))


def token_contexts(rows: np.ndarray) -> dict[int, list[int]]:
    """Each text's token ids, from the store's (text, position, token) rows."""
    by_text: dict[int, dict[int, int]] = {}
    for t, p, token in rows:
        by_text.setdefault(int(t), {})[int(p)] = int(token)
    return {t: [positions[p] for p in sorted(positions)] for t, positions in by_text.items()}


def examples(scores: np.ndarray, rows: np.ndarray, contexts, tokenizer, n: int) -> list[str]:
    """The `n` top-scoring tokens, each with the text before it and the token in brackets."""
    out = []
    for r in np.argsort(-scores)[:n]:
        t, p, _ = rows[r]
        ids = contexts[int(t)]
        before = tokenizer.decode(ids[max(0, p - 12) : p])
        out.append(f"{before}[[{tokenizer.decode([ids[p]])}]] ({scores[r]:.3g})")
    return out


def promoted_tokens(model, layer: int, direction: np.ndarray, tokenizer, n: int = 8) -> list[str]:
    """The tokens whose logits a unit of `direction` at `blocks.L.mlp.post` raises most through the MLP's output
    projection and the unembedding (the final norm left out)."""
    unembed = model.token_embed.T if model.unembed is None else model.unembed
    logits = np.asarray((jnp.asarray(direction) @ model.blocks[layer].mlp.w_out) @ unembed)
    return [tokenizer.decode([int(i)]) for i in np.argsort(-logits)[:n]]


def fit_sae(store, site, config, api):
    SAEConfig, train_sae = api
    sae_config = SAEConfig(d_in=store.width(site), d_sae=config.sae_width, architecture="topk", k=config.sae_k,
                           batch_size=config.sae_batch)  # fmt: skip
    batches = store.batches(site, config.sae_batch, seed=config.seed, epochs=10_000)
    sae, _ = train_sae(batches, sae_config, key=jax.random.key(config.seed), steps=config.sae_steps)
    return sae


def sae_codes(sae, x: np.ndarray, batch: int = 1024) -> np.ndarray:
    """The SAE's latents of every row of `x`, `[n, d_sae]`."""
    encode = eqx.filter_jit(lambda sae, x: sae.encode(x))
    return np.concatenate([np.asarray(encode(sae, jnp.asarray(x[i : i + batch]))) for i in range(0, len(x), batch)])


def steering(model, tokenizer, site, directions, config, judge, rng) -> dict:
    """Every `(target, method)` unit direction at `site`, with `+alpha` and `-alpha`, at each target KL: the
    strength by `features.strength_for_divergence` on the mean KL of the next-token distribution after the neutral
    prompts; continuations generated for all conditions in a few batched calls; concept (`+`: the judge's
    probability of the target; `-`: one minus it), fluency and their harmonic mean per continuation."""
    prompts, mask = encode_texts(tokenizer, config.prompts, 64)
    lengths = mask.sum(1)
    batch, width = len(config.prompts), next(iter(directions.values())).shape[0]
    zeros = {site: jnp.zeros((batch, width), jnp.float32)}
    base = models.next_token_logits(model, prompts, lengths, directions=zeros, alpha=0.0)
    conditions = [(None, "none", 0, 0.0, 0.0, 0.0)]
    searches = {}
    for (target, method), unit in tqdm(directions.items(), desc="strengths"):
        for sign in (1, -1):
            vectors = {site: jnp.broadcast_to(jnp.asarray(sign * unit, jnp.float32), (batch, width))}
            measured = {}

            def divergence(alpha, vectors=vectors, measured=measured):
                if alpha not in measured:
                    steered = models.next_token_logits(model, prompts, lengths, directions=vectors, alpha=alpha)
                    measured[alpha] = float(features.kl_divergence(base, steered))
                return measured[alpha]

            for kl in config.target_kls:
                try:
                    strength = features.strength_for_divergence(divergence, kl, initial=1.0)
                except RuntimeError as error:
                    searches[f"{target[0]}: {target[1]}|{method}|{sign}|{kl}"] = str(error)
                    continue
                conditions.append((target, method, sign, kl, strength.alpha, strength.divergence))
            searches[f"{target[0]}: {target[1]}|{method}|{sign}"] = len(measured)
    unit_of = {(None, "none"): np.zeros(width, np.float32)} | directions
    row_vectors = np.concatenate(
        [np.broadcast_to(c[2] * c[4] * unit_of[(c[0], c[1])], (batch, width)) for c in conditions]
    ).astype(np.float32)
    row_prompts = np.tile(prompts, (len(conditions), 1))
    row_lengths = np.tile(lengths, len(conditions))
    key = jax.random.key(config.seed)
    new, ppl = [], []
    total = len(row_vectors)
    per_call = -(-total // -(-total // GENERATION_ROWS))  # the fewest calls of at most GENERATION_ROWS, evened out
    for start in tqdm(range(0, total, per_call), desc="continuations"):
        rows = np.arange(start, start + per_call) % total  # one shape for every call
        vectors = {site: jnp.asarray(row_vectors[rows])}
        tokens = models.generate(model, row_prompts[rows], row_lengths[rows], config.new_tokens, key=key,
                                 temperature=config.temperature, directions=vectors, alpha=1.0)  # fmt: skip
        keep = min(per_call, total - start)
        new.append(np.asarray(tokens)[:keep])
        ppl.append(
            np.asarray(models.continuation_perplexity(model, row_prompts[rows], row_lengths[rows], tokens))[:keep]
        )
    new, ppl = np.concatenate(new), np.concatenate(ppl)
    texts = [config.prompts[i % batch] + tokenizer.decode([int(t) for t in row]) for i, row in enumerate(new)]
    reference = float(np.median(ppl[:batch]))
    fluency = np.minimum(1.0, reference / ppl)
    rows_out, per_prompt, example_texts = [], {}, {}
    targets = list(dict.fromkeys(c[0] for c in conditions[1:]))
    for i, (target, method, sign, kl, alpha, reached) in enumerate(conditions):
        part = slice(i * batch, (i + 1) * batch)
        for scored in targets if target is None else [target]:
            task, name = scored
            p = judge.concept(task, name, texts[part])
            concept = p if sign >= 0 else 1.0 - p
            combined = 2 * concept * fluency[part] / np.maximum(concept + fluency[part], 1e-12)
            label = f"{task}: {name}"
            per_prompt[(label, method, sign, kl)] = combined
            rows_out.append({
                "target": label, "method": method, "sign": "+" if sign > 0 else ("-" if sign < 0 else ""),
                "target KL": kl, "KL": reached, "alpha": alpha,
                "concept": float(concept.mean()), "concept 95% CI": bootstrap_interval(concept, rng, config.bootstrap),
                "fluency": float(fluency[part].mean()), "perplexity (median)": float(np.median(ppl[part])),
                "combined": float(combined.mean()), "combined 95% CI": bootstrap_interval(combined, rng, config.bootstrap),
            })  # fmt: skip
            if target is None:  # the unsteered texts scored for suppression too
                suppressed = 1.0 - p
                per_prompt[(label, "none", -1, 0.0)] = (
                    2 * suppressed * fluency[part] / np.maximum(suppressed + fluency[part], 1e-12)
                )
        where = "unsteered" if target is None else f"{target[0]}: {target[1]}|{method}|{sign}|{kl}"
        example_texts[where] = texts[part][:3]
    return {
        "rows": rows_out,
        "per_prompt": per_prompt,
        "examples": example_texts,
        "reference_perplexity": reference,
        "searches": searches,
    }


def paired_differences(per_prompt: dict, methods, config, rng) -> list[dict]:
    """For each pair of methods, the mean over every (target, sign, KL) condition both reached of the per-prompt
    difference of the combined score, with a bootstrap interval over the prompts (conditions resampled with them)."""
    out = []
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            keys = [k for k in per_prompt if k[1] == a and (k[0], b, k[2], k[3]) in per_prompt]
            if not keys:
                continue
            differences = np.stack([per_prompt[k] - per_prompt[(k[0], b, k[2], k[3])] for k in keys])  # [c, prompts]
            means = differences.mean(0)
            out.append({"comparison": f"{a} - {b}", "conditions": len(keys), "mean difference": float(means.mean()),
                        "95% CI": bootstrap_interval(means, rng, config.bootstrap)})  # fmt: skip
    return out


def plot(path, rows, methods, kls) -> None:
    targets = list(dict.fromkeys(r["target"] for r in rows if r["method"] != "none"))
    fig, axes = plt.subplots(2, len(targets), figsize=(4.2 * len(targets), 6.4), squeeze=False)
    for column, target in enumerate(targets):
        for line, sign in enumerate(("+", "-")):
            ax = axes[line, column]
            for method, colour in zip(methods, plt.cm.tab10.colors):
                chosen = [r for r in rows if r["target"] == target and r["method"] == method and r["sign"] == sign]
                if not chosen:
                    continue
                x = [r["target KL"] for r in chosen]
                y = [r["combined"] for r in chosen]
                low = [r["combined"] - r["combined 95% CI"][0] for r in chosen]
                high = [r["combined 95% CI"][1] - r["combined"] for r in chosen]
                ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=2, color=colour, label=method)
            plain = [r for r in rows if r["target"] == target and r["method"] == "none"]
            if plain and sign == "+":
                ax.axhline(plain[0]["combined"], color="grey", ls=":", label="unsteered")
            ax.set_xscale("log")
            ax.set(title=f"{target}, {sign}alpha", xlabel="target KL (nats)", ylabel="combined (harmonic mean)")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(config: SNMFvsSAEConfig) -> dict:
    """SNMF features, SAE latents and difference-in-means of SmolLM2-135M's MLP activations: concept detection,
    reconstruction at fixed L0, steering at matched KL. Writes `results/snmf_vs_sae/`."""
    started = time.time()
    stages = {}

    def stage(name):
        stages[name] = round(time.time() - started - sum(stages.values()), 2)

    rng = np.random.default_rng(config.seed)
    key = jax.random.key(config.seed)
    task_names = models.text_classifiers.TASK_LABELS
    for task, name in config.targets:
        if name not in task_names.get(task, ()):
            raise ValueError(f"unknown target {task}: {name}; known: {task_names}")
    model, tokenizer = models.load_smollm2()
    if config.blocks is not None:
        model = first_blocks(model, config.blocks)
    if not 0 <= config.layer < model.cfg.n_layers:
        raise ValueError(f"layer must lie in [0, {model.cfg.n_layers - 1}]; got {config.layer}")
    site = f"blocks.{config.layer}.mlp.post"
    text = corpus(config, rng)
    n_texts = len(text["texts"])
    stage("load")

    settings = features.StoreSettings(sites=(site,), context=config.max_tokens, chunk_tokens=8_192,
                                      model_name="SmolLM2-135M-Instruct", seed=config.seed)  # fmt: skip
    tag = hashlib.sha256(repr((settings, text["texts"])).encode()).hexdigest()[:12]
    store = features.build_activation_store(
        results_dir(SLUG) / f"store_{tag}", model, tokenizer, text["texts"], settings
    )
    x = store.load(site)
    rows = store.rows_info()
    text_index = rows[:, 0]
    pooled_x = pool(x, text_index, n_texts)
    stage("activations")

    fitted = features.snmf(x, config.snmf_rank, key=key, init="random", sparsity=config.snmf_sparsity,
                           max_iterations=config.snmf_iterations, patience=config.snmf_patience)  # fmt: skip
    G, F = np.asarray(fitted.G), np.asarray(fitted.F)
    codes = {"SNMF": G}
    decoders = {"SNMF": F.T}  # [features, d]
    stage("snmf")
    api = sae_api()
    if api is not None:
        sae = fit_sae(store, site, config, api)
        codes["SAE"] = sae_codes(sae, x)
        decoders["SAE"] = np.asarray(sae.W_dec)
        stage("sae")
    methods = list(codes) + ["diff-in-means"]

    detection, directions, chosen = [], {}, {}
    contexts = token_contexts(rows)
    concepts = [(task, name) for task in dict.fromkeys(t for t, _ in config.targets) for name in task_names[task]]
    for target in concepts:
        task, name = target
        label = f"{task}: {name}"
        in_task = text["task"] == task
        positive = in_task & (text["class"] == task_names[task].index(name))
        negative = in_task & ~positive
        v = np.asarray(features.diff_in_means(pooled_x[positive & text["train"]], pooled_x[negative & text["train"]]))
        is_target = target in config.targets
        if is_target:
            directions[(target, "diff-in-means")] = v / np.linalg.norm(v)
        entry = {"target": label, "diff-in-means": heldout_auroc(pooled_x @ v, text, target, task_names)}
        chosen[(label, "diff-in-means")] = {"promotes": promoted_tokens(model, config.layer, v / np.linalg.norm(v),
                                                                         tokenizer)}  # fmt: skip
        for method, values in codes.items():
            pooled = pool(values, text_index, n_texts)
            j, train_auroc = choose_feature(pooled, text, target, task_names)
            entry[method] = heldout_auroc(pooled[:, j], text, target, task_names)
            entry[f"{method} feature"] = j
            entry[f"{method} training AUROC"] = train_auroc
            direction = decoders[method][j] / np.linalg.norm(decoders[method][j])
            if is_target:
                directions[(target, method)] = direction
            chosen[(label, method)] = {
                "feature": j,
                "top contexts": examples(values[:, j], rows, contexts, tokenizer, config.examples),
                "promotes": promoted_tokens(model, config.layer, direction, tokenizer),
                "density": float(np.mean(values[:, j] > 1e-3 * values[:, j].max())),
            }
        detection.append(entry)
    stage("detection")

    reconstruction = []
    for l0 in config.l0s:
        row = {"L0": l0, "SNMF": explained_variance(x, top_l0(G, l0) @ F.T)}
        if "SAE" in codes:
            row["SAE"] = explained_variance(x, np.asarray(sae.decode(jnp.asarray(top_l0(codes["SAE"], l0)))))
        reconstruction.append(row)
    reconstruction.append({"L0": f"all {config.snmf_rank} (SNMF)", "SNMF": explained_variance(x, G @ F.T)})
    stage("reconstruction")

    judge = Judge(config, tuple(dict.fromkeys(task for task, _ in config.targets)))
    stage("judges")
    steered = steering(model, tokenizer, site, directions, config, judge, rng)
    differences = paired_differences(steered["per_prompt"], methods, config, rng)
    stage("steering")

    summary = []
    for method in methods:
        for kl in config.target_kls:
            for sign in ("+", "-"):
                chosen_rows = [r for r in steered["rows"] if r["method"] == method and r["target KL"] == kl
                               and r["sign"] == sign]  # fmt: skip
                if chosen_rows:
                    summary.append({"method": method, "target KL": kl, "sign": sign, "conditions": len(chosen_rows),
                                    "concept": float(np.mean([r["concept"] for r in chosen_rows])),
                                    "fluency": float(np.mean([r["fluency"] for r in chosen_rows])),
                                    "combined": float(np.mean([r["combined"] for r in chosen_rows]))})  # fmt: skip
    plot(results_dir(SLUG) / "steering.png", steered["rows"], methods, config.target_kls)
    metrics = {
        "methods": methods,
        "sae": "trained" if api is not None else "not run: jaxinterp.features.sae is not present in this build",
        "tokens": len(x),
        "texts": n_texts,
        "store": store.manifest["build"],
        "snmf": {"iterations": int(fitted.iterations), "best_iteration": int(fitted.best_iteration),
                 "loss": float(np.nanmin(np.asarray(fitted.losses))),
                 "relative_loss": float(np.nanmin(np.asarray(fitted.losses)) / np.sum(x.astype(np.float64) ** 2))},
        "detection_auroc": detection,
        "reconstruction_explained_variance": reconstruction,
        "steering": {k: v for k, v in steered.items() if k != "per_prompt"},
        "steering_summary": summary,
        "paired_differences": differences,
        "features": {f"{t} | {m}": v for (t, m), v in chosen.items()},
        "judges": {task: info.get("accuracy") for task, (_, _, info) in judge.classifiers.items()},
        "stage_seconds": stages,
    }  # fmt: skip
    table = detection + reconstruction + summary + differences
    write_results(SLUG, config, metrics, started=started, table=table, paper=PAPER)
    return metrics
