"""Circuit discovery against ground truth: CD-T (P1) beside path patching, EAP, EAP-IG, ACDC and activation
patching, on compiled tracr programs and trained toy models whose circuits are known, and on real models
(SmolLM2-135M on IOI, MiniLM classifiers) scored by faithfulness; node and edge ROC AUC, MIB's CPR and CMD, and
wall times, all in one run."""

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxinterp as ji
import models
from experiments.record import results_dir, write_results
from jaxinterp import circuits, patching
from models import toy_circuits

from .config import Config

SLUG = "cdt_circuits"
COMPILED = ("reverse", "frac_prevs", "sort", "histogram")
TRAINED = ("induction", "ioi")
REAL = ("smollm2_ioi", "minilm_sst2", "minilm_agnews")
NODE_METHODS = ("cdt", "path_patching", "activation_patching")
EDGE_METHODS = ("acdc", "eap", "eap_ig")
PAPER = {
    "claim": "P1 (ICLR 2025 version): CD-T recovers known circuits (IOI, greater-than, docstring) with 97% mean ROC "
    "AUC, beating ACDC and EAP, cutting runtime from hours to seconds, its circuits 80% more faithful than random "
    "ones up to 60% of model size; arXiv v1: more faithful than path patching with a 2x speed-up. ACDC (Conmy et "
    "al. 2023) recovers tracr-reverse's circuit with edge ROC AUC 1.0 under zero ablation.",
    "cdt_mean_node_roc_auc": 0.97,
    "acdc_reverse_edge_roc_auc": 1.0,
    "cdt_speedup_over_path_patching": 2.0,
}


class Task(NamedTuple):
    """One discovery task: a model of one example, batched inputs, what ablation replaces values with, the metric
    (higher is the task's behaviour), its CD-T form on the relevant part of the output, the candidate nodes, and
    the true circuit where one is known."""

    name: str
    family: str  # "compiled", "trained" or "real"
    model: Any
    inputs: tuple
    corrupted_inputs: tuple
    metric: Callable
    score: Callable
    distance: Callable | None  # ACDC's metric (lower is closer to the full model), None without a graph
    ablation: str
    nodes: list
    rules: ji.Rules
    true_nodes: frozenset | None
    true_edges: frozenset | None
    info: dict


def _agreement(readout, full):
    """`metric(residual) = mean <residual readout, full readout>`: how much the program's outputs agree with the full
    model's (linear, so its CD-T form on `rel` is the same formula)."""
    target = full @ readout
    return lambda outputs: jnp.mean(jnp.sum((outputs @ readout) * target, axis=-1))


def tracr_task(name: str, config: Config) -> Task:
    """A compiled RASP program: inputs of `max_seq_len - 2` tokens (effects are measured below the full length, as
    ACDC does), zero ablation, the circuit known by construction (`models.tracr.true_circuit`)."""
    compiled = models.compile_program(name)
    model = models.from_tracr(compiled)
    valid = compiled.inputs(max(1, compiled.max_seq_len - 2))
    rng = np.random.default_rng(config.seed)
    pick = rng.choice(len(valid), size=config.batch, replace=len(valid) < config.batch)
    other = rng.choice(len(valid), size=config.batch, replace=len(valid) < config.batch)
    tokens = jnp.stack([models.tracr.encode(compiled, valid[i]) for i in pick])
    corrupted = jnp.stack([models.tracr.encode(compiled, valid[i]) for i in other])
    full = jax.vmap(model)(tokens)
    readout = jnp.asarray(compiled.readout)
    metric = _agreement(readout, full)
    nodes_true, structural = models.tracr.true_circuit(compiled, model, "zero")
    distance = lambda outputs: jnp.mean(jnp.sum(((outputs - full) @ readout) ** 2, axis=-1))
    edges_true = effective_edges(model, (tokens,), distance, structural)
    nodes_true = {s for s, _ in edges_true}
    return Task(
        name, "compiled", model, (tokens,), (corrupted,), metric, metric,
        distance, "zero",
        circuits.transformer_nodes(model.cfg.n_layers, model.cfg.n_heads, mlps=True), ji.Rules.official_gpt2(),
        frozenset(nodes_true) - {"embed"}, frozenset(edges_true),
        {"program": name, "batch": config.batch, "structural_edges": len(structural)},
    )  # fmt: skip


def effective_edges(model, inputs: tuple, distance: Callable, structural, tol: float = 1e-6) -> frozenset:
    """The edges of a compiled program's circuit that matter: those of its construction (`structural`) whose zero
    ablation alone moves the output (`distance` above `tol`) on `inputs` (the canonical circuits ACDC scores
    against are drawn this way: tracr-reverse's 13 weight-level edges become its 10)."""
    edges = sorted(structural)
    effects = patching.edge_patching(model, inputs, inputs, distance, edges, ablation="zero")
    return frozenset(edge for edge, effect in zip(edges, np.asarray(effects)) if effect > tol)


def toy_task(name: str, config: Config) -> Task:
    """A trained toy model (`models.toy_circuits`) under mean ablation (over another induction batch, or over the
    ABC corruptions of the IOI prompts); the circuit established by exhaustive ablation."""
    model, trained = toy_circuits.load_or_train(name, seed=config.seed)
    key, other = jax.random.split(jax.random.key(config.seed + 1))
    if name == "induction":
        batch, reference = (
            toy_circuits.induction_batch(key, config.batch),
            toy_circuits.induction_batch(other, config.batch),
        )
        clean, corrupted, ablation = batch.tokens, reference.tokens, "mean"
        metric = toy_circuits.induction_metric(batch)
        targets, mask = jnp.asarray(batch.targets), jnp.asarray(batch.mask)

        def score(rel):  # the relevant logit of the correct next token against the mean logit (log-softmax's linear
            # part), over the predictable positions
            picked = jnp.take_along_axis(rel, targets[..., None], axis=-1)[..., 0] - rel.mean(-1)
            return jnp.sum(picked * mask) / jnp.sum(mask)
    else:
        batch = toy_circuits.ioi_batch(key, config.batch)
        clean, corrupted, ablation = batch.tokens, batch.corrupted, "mean"
        metric = toy_circuits.ioi_metric(batch)
        score = metric  # the logit difference is linear in the logits
    true_nodes, _ = toy_circuits.true_circuit_by_ablation(model, clean, corrupted, metric, ablation)
    full = jax.vmap(model)(clean)
    cfg = model.cfg
    rules = ji.Rules.official_gpt2() if cfg.d_mlp else ji.Rules()
    return Task(
        name, "trained", model, (clean,), (corrupted,), metric, score, circuits.kl_to_model(full), ablation,
        circuits.transformer_nodes(cfg.n_layers, cfg.n_heads, mlps=bool(cfg.d_mlp)), rules,
        frozenset(true_nodes) - {"embed"}, None, {"accuracy": trained.get("accuracy")},
    )  # fmt: skip


def real_task(name: str, config: Config) -> Task:
    """SmolLM2-135M on IOI prompts (resample ablation with ABC corruptions), or a MiniLM classifier (mean
    ablation over sentences of the other classes; node-level methods only); no true circuit."""
    from . import real_tasks

    if name == "smollm2_ioi":
        task = real_tasks.smollm2_ioi(n_prompts=config.real_batch, seed=config.seed)
        cfg = task.model.model.cfg
        full = jax.vmap(task.model)(*task.inputs)
        return Task(
            name, "real", task.model, task.inputs, task.corrupted_inputs, task.metric, task.score,
            circuits.kl_to_model(full), "resample",
            circuits.transformer_nodes(cfg.n_layers, cfg.n_heads, mlps=True, n_kv_heads=cfg.n_kv_heads),
            ji.Rules.official_gpt2(), None, None, task.info,
        )  # fmt: skip
    build = real_tasks.minilm_sentiment if name == "minilm_sst2" else real_tasks.minilm_news
    task = build(n=config.real_batch, seed=config.seed)
    cfg = task.info["config"] if "config" in task.info else models.bert_config()
    return Task(
        name, "real", task.model, task.inputs, task.corrupted_inputs, task.metric, task.score, None, "mean",
        circuits.transformer_nodes(cfg.n_layers, cfg.n_heads, mlps=True), ji.Rules.official_bert(), None, None,
        {k: v for k, v in task.info.items() if k != "config"},
    )  # fmt: skip


def build_task(name: str, config: Config) -> Task:
    if name in COMPILED:
        return tracr_task(name, config)
    if name in TRAINED:
        return toy_task(name, config)
    if name in REAL:
        return real_task(name, config)
    raise ValueError(f"unknown task {name!r}; choose from {COMPILED + TRAINED + REAL}")


def has_graph(task: Task) -> bool:
    return hasattr(task.model, "graph_layout") and not getattr(getattr(task.model, "cfg", None), "post_norm", False)


class Found(NamedTuple):
    """What a method found: node scores (every candidate node), edge scores (edge methods), its own circuit, and
    the fastest wall time of its calls."""

    node_scores: dict
    edge_scores: dict | None
    circuit: circuits.Circuit | None
    seconds: float


def _timed(run: Callable, repeats: int):
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = jax.block_until_ready(run())
        best = min(best, time.perf_counter() - start)
    return result, best


def _node_scores_from_edges(edge_scores: dict, names: list[str]) -> dict:
    """A node's score from edge scores: the sum of |score| over its outgoing edges."""
    totals = dict.fromkeys(names, 0.0)
    for key, value in edge_scores.items():
        sender, _ = circuits.parse_edge_key(key)
        if sender in totals:
            totals[sender] += abs(value)
    return totals


def run_method(method: str, task: Task, config: Config) -> Found | None:
    """Run one method on one task (None where the method does not apply: edge methods on a post-norm model).
    Real-model tasks are timed once (their first call, compilation included); the others `config.repeats` times."""
    if task.family == "real":
        config = config.replace(repeats=1)
    names = [node.name for node in task.nodes]
    graph_methods = ("path_patching", "acdc", "eap", "eap_ig")
    if method in graph_methods and not has_graph(task):
        return None
    if method == "cdt":
        found, seconds = _timed(lambda: circuits.cdt_circuit(
            task.model, task.inputs, task.corrupted_inputs, task.score, task.metric, task.nodes,
            top_k=config.cdt_top_k, keep_fraction=config.cdt_keep_fraction, rules=task.rules,
            prune_tolerance=config.cdt_prune_tolerance, ablation="zero" if task.ablation == "zero" else "mean"), config.repeats)  # fmt: skip
        return Found({n: found.scores.get(n, 0.0) for n in names}, None, found, seconds)
    if method == "path_patching":
        found, seconds = _timed(lambda: circuits.path_patching_circuit(
            task.model, task.inputs, task.corrupted_inputs, task.metric, top_k=config.cdt_top_k,
            keep_fraction=config.cdt_keep_fraction, ablation=task.ablation), config.repeats)  # fmt: skip
        return Found({n: found.scores.get(n, 0.0) for n in names}, None, found, seconds)
    if method == "activation_patching":

        def sweep():
            m_clean = task.metric(jax.vmap(task.model)(*task.inputs))
            heads = patching.activation_sweep(task.model, task.inputs, task.corrupted_inputs, task.metric, "head_out")
            if not any(name.endswith(".mlp") for name in names):
                return jnp.abs(heads - m_clean), None
            mlps = patching.activation_sweep(task.model, task.inputs, task.corrupted_inputs, task.metric, "mlp_out")
            return jnp.abs(heads - m_clean), jnp.abs(mlps - m_clean)

        (heads, mlps), seconds = _timed(sweep, config.repeats)
        scores = {}
        for name in names:
            layer, rest = int(name.split(".")[1]), name.split(".", 3)
            scores[name] = float(mlps[layer] if rest[2] == "mlp" else heads[layer, int(rest[3])])
        return Found(scores, None, None, seconds)
    graph = patching.Graph.of(task.model)
    if method == "acdc" and len(graph.edges) > config.acdc_max_edges:
        print(f"[{SLUG}] acdc skipped on {task.name}: {len(graph.edges)} edges, one forward each", flush=True)
        return None
    if method == "acdc":
        ablated = patching.ablation_values(task.model, task.corrupted_inputs, task.ablation)
        empty = float(patching.evaluate_mask(task.model, task.distance, graph, task.inputs, ablated,
                                             np.zeros(graph.valid.shape, np.float32)))  # fmt: skip
        threshold = config.acdc_threshold * abs(empty)
        found, seconds = _timed(lambda: circuits.acdc(task.model, task.inputs, task.corrupted_inputs, threshold,
                                                      task.distance, ablation=task.ablation), config.repeats)  # fmt: skip
        return Found(_node_scores_from_edges(found.scores, names), dict(found.scores), found, seconds)
    steps = 1 if method == "eap" else config.eap_ig_steps
    values, seconds = _timed(lambda: patching.eap(task.model, task.inputs, task.corrupted_inputs, task.metric,
                                                  ablation=task.ablation, steps=steps), config.repeats)  # fmt: skip
    edge_scores = {k: abs(v) for k, v in graph.scores(values).items()}
    return Found(_node_scores_from_edges(edge_scores, names), edge_scores, None, seconds)


class Evaluator:
    """The metric of a circuit under the task's ablation: edge circuits and node circuits on the residual-stream
    graph, node circuits by mean ablation on a post-norm model."""

    def __init__(self, task: Task):
        self.task = task
        self.names = [node.name for node in task.nodes]
        if has_graph(task):
            self.graph = patching.Graph.of(task.model)
            self.ablated = patching.ablation_values(task.model, task.corrupted_inputs, task.ablation)
            self.full = self.mask_metric(self.graph.valid.astype(np.float32))
            self.empty = self.mask_metric(np.zeros(self.graph.valid.shape, np.float32))
        else:
            self.graph = None
            self.means = circuits.site_means(task.model, task.nodes, task.corrupted_inputs)
            self.full = self.keep_metric(np.ones(len(self.names), np.float32))
            self.empty = self.keep_metric(np.zeros(len(self.names), np.float32))

    def mask_metric(self, mask) -> float:
        t = self.task
        return float(patching.evaluate_mask(t.model, t.metric, self.graph, t.inputs, self.ablated, mask))

    def keep_metric(self, keep) -> float:
        t = self.task
        return float(circuits.ablated_nodes_metric(t.model, t.nodes, self.means, t.metric, t.inputs, keep))

    def nodes(self, kept) -> float:
        """Faithfulness of the node circuit `kept` (the embeddings always kept)."""
        if self.graph is None:
            value = self.keep_metric(np.asarray([n in kept for n in self.names], np.float32))
        else:
            value = self.mask_metric(self.graph.node_mask(set(kept) | {"embed"}))
        return float(circuits.faithfulness(value, self.empty, self.full))

    def edges(self, kept) -> float:
        """Faithfulness of the edge circuit `kept` (edge keys)."""
        value = self.mask_metric(self.graph.edge_mask([circuits.parse_edge_key(k) for k in kept]))
        return float(circuits.faithfulness(value, self.empty, self.full))


def _has_negatives(truth, scores: dict) -> bool:
    """Whether ROC AUC is defined: a known truth with candidates on both sides (frac_prevs's nodes are all in its
    circuit, so only its edges are scored)."""
    return truth is not None and 0 < len(set(truth) & set(scores)) < len(scores)


def evaluate(task: Task, method: str, found: Found, evaluator: Evaluator, config: Config) -> dict:
    """The table row of one method on one task, and its faithfulness curve."""
    row = {"task": task.name, "method": method}
    if _has_negatives(task.true_nodes, found.node_scores):
        row["node_roc_auc"] = circuits.roc_auc(found.node_scores, task.true_nodes, list(found.node_scores))
    if task.true_edges is not None and found.edge_scores is not None:
        truth = {circuits.edge_key(s, r) for s, r in task.true_edges}
        if _has_negatives(truth, found.edge_scores):
            row["edge_roc_auc"] = circuits.roc_auc(found.edge_scores, truth, list(found.edge_scores))
    if found.edge_scores is not None and evaluator.graph is not None:
        axis, curve = "edges", circuits.faithfulness_curve(evaluator.edges, found.edge_scores)
    else:
        axis, curve = "nodes", circuits.faithfulness_curve(evaluator.nodes, found.node_scores)
    fractions, sizes, values = curve
    row.update(
        axis=axis, cpr=float(circuits.cpr(fractions, values)), cmd=float(circuits.cmd(fractions, values)),
        f_at_10=float(values[list(fractions).index(0.1)]), f_at_20=float(values[list(fractions).index(0.2)]),
    )  # fmt: skip
    if found.circuit is not None:
        circuit = found.circuit
        if circuit.edges is not None and evaluator.graph is not None:
            row["circuit_faithfulness"] = evaluator.edges(circuit.edge_keys)
            row["circuit_size"] = len(circuit.edges)
        else:
            row["circuit_faithfulness"] = evaluator.nodes(circuit.nodes)
            row["circuit_size"] = len(circuit.nodes)
    row["seconds"] = found.seconds
    return row, {"axis": axis, "fractions": list(fractions), "sizes": list(map(int, sizes)), "f": list(values)}


def random_curve(evaluator: Evaluator, config: Config) -> dict:
    """Faithfulness of random node circuits at MIB's node fractions: mean and standard deviation."""
    sizes = [int(n) for n in circuits.metrics.curve_sizes(len(evaluator.names))]
    mean, std = circuits.random_baseline(evaluator.nodes, evaluator.names, sizes, config.random_draws, config.seed)
    return {"fractions": list(circuits.MIB_EDGE_FRACTIONS), "sizes": list(map(int, sizes)),
            "mean": list(map(float, mean)), "std": list(map(float, std))}  # fmt: skip


def plot(curves: dict, out) -> None:
    """Faithfulness against circuit size per task: node methods and random node circuits against the fraction of
    nodes, edge methods against the fraction of edges."""
    tasks = list(curves)
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method, curve in curves[task].items():
            if method == "random":
                mean, std = np.asarray(curve["mean"]), np.asarray(curve["std"])
                ax.plot(curve["fractions"], mean, "k--", label="random nodes")
                ax.fill_between(curve["fractions"], mean - std, mean + std, color="k", alpha=0.1)
            else:
                style = "-" if curve["axis"] == "nodes" else ":"
                ax.plot(curve["fractions"], curve["f"], style, marker=".", label=f"{method} ({curve['axis']})")
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("fraction of nodes / edges kept")
        ax.axhline(1.0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("faithfulness")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "faithfulness.png", dpi=120)
    plt.close(fig)


def agreement(found: dict) -> dict:
    """Spearman's rank correlation of every pair of methods' node scores on one task."""
    methods = sorted(found)
    return {f"{a} vs {b}": circuits.rank_correlation(found[a].node_scores, found[b].node_scores)
            for i, a in enumerate(methods) for b in methods[i + 1 :]}  # fmt: skip


def summarise(rows: list[dict]) -> dict:
    """The figures the targets are about: CD-T's mean node ROC AUC over the compiled and trained tasks, ACDC's edge
    ROC AUC on tracr-reverse, and path patching's time over CD-T's with both circuits' faithfulness."""
    cdt_auc = [r["node_roc_auc"] for r in rows if r["method"] == "cdt" and "node_roc_auc" in r]
    summary = {"cdt_mean_node_roc_auc": float(np.mean(cdt_auc)) if cdt_auc else None}
    acdc = [r for r in rows if r["method"] == "acdc" and r["task"] == "reverse" and "edge_roc_auc" in r]
    summary["acdc_reverse_edge_roc_auc"] = acdc[0]["edge_roc_auc"] if acdc else None
    speed = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {r["method"]: r for r in rows if r["task"] == task}
        if "cdt" in by and "path_patching" in by:
            speed[task] = {
                "speedup": by["path_patching"]["seconds"] / by["cdt"]["seconds"],
                "cdt_faithfulness": by["cdt"].get("circuit_faithfulness"),
                "path_patching_faithfulness": by["path_patching"].get("circuit_faithfulness"),
            }
    summary["cdt_over_path_patching"] = speed
    return summary


def main(config: Config) -> dict:
    started = time.time()
    out = results_dir(SLUG)
    rows, curves, tasks_info = [], {}, {}
    for name in config.tasks:
        print(f"[{SLUG}] task {name}: building", flush=True)
        task = build_task(name, config)
        evaluator = Evaluator(task)
        tasks_info[name] = {**task.info, "family": task.family, "ablation": task.ablation, "m_full": evaluator.full,
                            "m_empty": evaluator.empty}  # fmt: skip
        if task.true_nodes is not None:
            tasks_info[name]["true_nodes"] = sorted(task.true_nodes)
        if task.true_edges is not None:
            tasks_info[name]["true_edges"] = len(task.true_edges)
        curves[name] = {"random": random_curve(evaluator, config)}
        found_by_method = {}
        methods = [m for m in config.methods if name != "smollm2_ioi" or m in config.smollm2_methods]
        for method in methods:
            print(f"[{SLUG}] task {name}: {method}", flush=True)
            found = run_method(method, task, config)
            if found is None:
                continue
            found_by_method[method] = found
            row, curve = evaluate(task, method, found, evaluator, config)
            rows.append(row)
            curves[name][method] = curve
            if found.circuit is not None:
                found.circuit.save(out / f"{name}.{method}.circuit.json")
        tasks_info[name]["agreement"] = agreement(found_by_method)
    plot(curves, out)
    summary = summarise(rows)
    metrics = {"summary": summary, "rows": rows, "curves": curves, "tasks": tasks_info}
    write_results(SLUG, config, metrics, started=started, table=rows, paper=PAPER)
    print(f"[{SLUG}] {summary}", flush=True)
    return metrics
