"""Fine-tuned MiniLM text classifiers for SST-2 (sentiment) and AG News (topic), trained once and cached.

`text_classifier(task)` returns a `SentenceClassifier` (all-MiniLM-L6-v2, mean pooling, a linear head) whose top
encoder blocks and head were fine-tuned on the task with the project's training loop (`jaxinterp.train`: fixed
seeds, progress bar, checkpoint and resume). The lower blocks and the embeddings stay frozen, so their output is
computed once per training sentence and cached in memory; each step then runs only the trained blocks, which keeps a
full fine-tuning run within CPU reach (`FineTuning` says how much is trained).

The fine-tuned parameters are written to the jaxinterp cache (`jaxinterp.assets.cache_dir()`) under a name that
holds the task and a hash of the settings; a later call with the same settings loads them. `FineTuning.quick()` is a
small stand-in (one trained block, a few hundred steps on a few thousand sentences) for tests and first looks.

Data: SST-2 trains on the GLUE training split (phrases and sentences) and reports GLUE dev accuracy; AG News trains
on a stratified 6,000-article part of the AG News test split and reports accuracy on the other 1,600
(`jaxinterp.data.ag_news_split`), since the AG News training split is not available offline.
"""

import dataclasses
import hashlib
import json
import pathlib
import time
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Float

import jaxinterp as ji

from .sentence_classifier import SentenceClassifier

TASK_LABELS = {
    "sst2": ("negative", "positive"),
    "agnews": ("World", "Sports", "Business", "Sci/Tech"),
}
_WIDTHS = (16, 32, 48, 64, 96, 128)


@dataclasses.dataclass(frozen=True)
class FineTuning:
    """How a classifier is fine-tuned.

    **Fields:** `trained_blocks` (how many of the encoder's top blocks are trained with the head; the rest and the
    embeddings are frozen), `epochs`, `batch_size`, `learning_rate` (peak of a linear warm-up over the first 6% of
    steps and a linear decay to zero), `weight_decay` (AdamW), `max_tokens` (longer texts are cut), `train_rows`
    (use only this many training texts after a seeded shuffle; `None`: all), `heldout_rows` (score on only this many
    held-out texts, the first of a seeded shuffle; `None`: all), `seed`.
    """

    trained_blocks: int = 3
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    head_learning_rate: float = 3e-3
    max_tokens: int = 64
    train_rows: int | None = None
    heldout_rows: int | None = None
    seed: int = 0

    @classmethod
    def quick(cls) -> "FineTuning":
        """The small stand-in: one trained block, 2,000 training texts, one epoch (a minute or two on 2 cores)."""
        return cls(trained_blocks=1, epochs=1.0, train_rows=2_000, learning_rate=2e-4)

    def fingerprint(self, task: str) -> str:
        text = json.dumps({"task": task, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


DEFAULTS = {
    "sst2": FineTuning(trained_blocks=3, epochs=1.0, learning_rate=1e-4),
    "agnews": FineTuning(trained_blocks=3, epochs=3.0, learning_rate=1e-4, max_tokens=96),
}


def task_data(task: str) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """`((train_texts, train_labels), (eval_texts, eval_labels))` of `"sst2"` (GLUE train / dev) or `"agnews"`
    (the stratified 6,000 / 1,600 split of the labelled AG News rows)."""
    _check_task(task)
    if task == "sst2":
        return ji.data.sst2("train"), ji.data.sst2("dev")
    return ji.data.ag_news_split(1_600, seed=0)


class _Top(eqx.Module):
    """The trained part: the top encoder blocks, mean pooling and the head, run on the frozen blocks' output."""

    blocks: list
    weight: Float[Array, "classes d_model"]
    bias: Float[Array, " classes"]
    first_layer: int = eqx.field(static=True)

    def __call__(self, encoder, x, attention_mask):
        mask = encoder.attention_mask(x.shape[0], attention_mask)
        for offset, block in enumerate(self.blocks):
            x = block(x, mask, encoder.cfg, self.first_layer + offset)
        x = encoder.readout(x)
        weights = attention_mask.astype(x.dtype) / jnp.maximum(attention_mask.sum(), 1.0)
        return self.weight @ (weights @ x) + self.bias


def _bottom(encoder, tokens, attention_mask, n_blocks: int):
    """The frozen part: embeddings and the first `n_blocks` blocks."""
    x = encoder.embed(tokens)
    mask = encoder.attention_mask(tokens.shape[0], attention_mask)
    for layer, block in enumerate(encoder.blocks[:n_blocks]):
        x = block(x, mask, encoder.cfg, layer)
    return x


def encode(tokenizer, texts: Sequence[str], max_tokens: int) -> list[np.ndarray]:
    """Token ids of each text without padding, `[CLS] ... [SEP]`, cut to `max_tokens` (keeping the `[SEP]`)."""
    ids = []
    for e in tokenizer.encode_batch(list(texts)):
        real = e.ids[: sum(e.attention_mask)]
        if len(real) > max_tokens:
            real = real[: max_tokens - 1] + real[-1:]
        ids.append(np.asarray(real, np.int32))
    return ids


def _buckets(lengths: np.ndarray) -> list[np.ndarray]:
    """Rows grouped by padded width (few shapes to compile), each group sorted by length."""
    widths = np.array([next(w for w in _WIDTHS if w >= n) for n in lengths])
    return [np.flatnonzero(widths == w) for w in _WIDTHS if (widths == w).any()]


def _pad(ids: list[np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = next(w for w in _WIDTHS if w >= max(len(ids[r]) for r in rows))
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), np.float32)
    for i, r in enumerate(rows):
        tokens[i, : len(ids[r])], mask[i, : len(ids[r])] = ids[r], 1.0
    return tokens, mask


def _by_length(run, ids: list[np.ndarray], size: int, batch_size: int, description: str, progress: bool):
    """`run(tokens [b, width], mask [b, width]) -> [b, size]` over `ids` in batches of similar length, rows back in
    the input order. **Returns:** `[len(ids), size]`."""
    from tqdm.auto import tqdm

    order = np.argsort([len(i) for i in ids], kind="stable")
    out = np.zeros((len(ids), size), np.float32)
    for start in tqdm(range(0, len(ids), batch_size), desc=description, leave=False, disable=not progress):
        rows = order[start : start + batch_size]
        tokens, mask = _pad(ids, rows)
        out[rows] = np.asarray(run(jnp.asarray(tokens), jnp.asarray(mask)))
    return out


def predict_logits(
    classifier: SentenceClassifier,
    tokenizer,
    texts: Sequence[str],
    *,
    max_tokens: int = 128,
    batch_size: int = 64,
    progress: bool = False,
) -> np.ndarray:
    """The classifier's logits `[n, classes]` for `texts`, batched by length."""
    batched = eqx.filter_jit(jax.vmap(lambda m, t, a: m(t, a), in_axes=(None, 0, 0)))
    ids = encode(tokenizer, texts, max_tokens)
    size = classifier.weight.shape[0]
    return _by_length(lambda t, a: batched(classifier, t, a), ids, size, batch_size, "classify", progress)


def accuracy(classifier: SentenceClassifier, tokenizer, texts: Sequence[str], labels: np.ndarray, **kwargs) -> float:
    """Fraction of `texts` whose highest logit is the label."""
    return float(np.mean(predict_logits(classifier, tokenizer, texts, **kwargs).argmax(-1) == np.asarray(labels)))


def fine_tune(
    task: str, config: FineTuning | None = None, *, checkpoint: pathlib.Path | None = None, progress: bool = True
) -> tuple[SentenceClassifier, "tokenizers.Tokenizer", dict]:  # noqa: F821
    """Fine-tune MiniLM with a fresh head on `task` (`"sst2"` or `"agnews"`) and score it on the held-out split.

    **Returns:** `(classifier, tokenizer, info)`, `info` holding the held-out accuracy, the training loss at the
    start and end, the step count and the wall time.
    """
    from . import loading

    config = config or DEFAULTS[task]
    (texts, labels), (eval_texts, eval_labels) = task_data(task)
    encoder, tokenizer = loading.load("minilm-l6")
    n_layers = encoder.cfg.n_layers
    if not 1 <= config.trained_blocks <= n_layers:
        raise ValueError(f"trained_blocks must be between 1 and {n_layers}, got {config.trained_blocks}")
    generator = np.random.default_rng(config.seed)
    rows = generator.permutation(len(texts))[: config.train_rows]
    texts, labels = [texts[i] for i in rows], np.asarray(labels)[rows]
    ids = encode(tokenizer, texts, config.max_tokens)
    frozen = n_layers - config.trained_blocks
    started = time.perf_counter()

    # the frozen blocks' output for every training text, once
    bottom = eqx.filter_jit(jax.vmap(lambda m, t, a: _bottom(m, t, a, frozen), in_axes=(None, 0, 0)))
    groups = _buckets(np.array([len(i) for i in ids]))
    cached = []
    from tqdm.auto import tqdm

    for group in tqdm(groups, desc=f"{task}: frozen blocks", leave=False, disable=not progress):
        parts = []
        for start in range(0, len(group), 256):
            tokens, mask = _pad(ids, group[start : start + 256])
            parts.append(np.asarray(bottom(encoder, jnp.asarray(tokens), jnp.asarray(mask)), np.float16))
        tokens, mask = _pad(ids, group)
        cached.append((np.concatenate(parts), mask, labels[group]))

    # a seeded order of batches over all epochs, each batch from one width group
    batches_per_epoch = [(g, b) for g, group in enumerate(groups) for b in range(0, len(group), config.batch_size)]
    steps = round(config.epochs * len(batches_per_epoch))
    schedule = []
    epoch = 0
    while len(schedule) < steps:
        shuffle = np.random.default_rng([config.seed, epoch])
        within = [shuffle.permutation(len(group)) for group in groups]
        order = shuffle.permutation(len(batches_per_epoch))
        schedule += [(batches_per_epoch[i][0], within[batches_per_epoch[i][0]], batches_per_epoch[i][1]) for i in order]
        epoch += 1
    schedule = schedule[:steps]

    def batch(step):
        g, permutation, start = schedule[step]
        chosen = permutation[start : start + config.batch_size]
        if len(chosen) < config.batch_size:  # a short last batch is topped up, so every batch has one shape
            chosen = np.concatenate([chosen, permutation[: config.batch_size - len(chosen)]])
        x, mask, y = cached[g]
        return jnp.asarray(x[chosen], jnp.float32), jnp.asarray(mask[chosen]), jnp.asarray(y[chosen])

    n_classes = len(TASK_LABELS[task])
    top = _Top(list(encoder.blocks[frozen:]), jnp.zeros((n_classes, encoder.cfg.d_model)), jnp.zeros(n_classes), frozen)

    def loss_fn(model, data, key):
        x, mask, y = data
        logits = jax.vmap(lambda xi, mi: model(encoder, xi, mi))(x, mask)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}

    warmup = max(1, int(0.06 * steps))

    def adamw(peak):
        schedule = optax.join_schedules(
            [optax.linear_schedule(0.0, peak, warmup), optax.linear_schedule(peak, 0.0, max(1, steps - warmup))],
            [warmup],
        )
        return optax.adamw(schedule, weight_decay=config.weight_decay)

    def groups_of(params):
        return _Top(jax.tree.map(lambda _: "blocks", params.blocks), "head", "head", params.first_layer)

    optimiser = optax.multi_transform(
        {"blocks": adamw(config.learning_rate), "head": adamw(config.head_learning_rate)}, groups_of
    )
    top, history = ji.train(
        top,
        loss_fn,
        batch,
        optimiser,
        steps=steps,
        key=jr.key(config.seed),
        has_aux=True,
        checkpoint=checkpoint,
        checkpoint_every=200,
        description=f"fine-tune {task}",
        progress=progress,
    )
    classifier = _assemble(encoder, top)
    scored = np.random.default_rng(config.seed + 1).permutation(len(eval_texts))[: config.heldout_rows]
    held_out = accuracy(
        classifier, tokenizer, [eval_texts[i] for i in scored], np.asarray(eval_labels)[scored],
        max_tokens=config.max_tokens,
    )  # fmt: skip
    loss = history["loss"]
    window = max(1, min(100, len(loss) // 10))
    info = {
        "task": task,
        "heldout_accuracy": held_out,
        "heldout_split": (
            f"GLUE dev ({len(scored)} of 872)" if task == "sst2" else f"AG News held out ({len(scored)} of 1,600)"
        ),
        "train_texts": len(texts),
        "steps": steps,
        "loss_first": float(np.mean(loss[:window])),
        "loss_last": float(np.mean(loss[-window:])),
        "train_accuracy_last": float(np.mean(history["accuracy"][-window:])),
        "trained_blocks": config.trained_blocks,
        "frozen": f"embeddings and blocks 0-{frozen - 1}" if frozen else "embeddings",
        "wall_time_s": time.perf_counter() - started,
        "config": dataclasses.asdict(config),
    }
    return classifier, tokenizer, info


def _assemble(encoder, top: _Top) -> SentenceClassifier:
    blocks = list(encoder.blocks[: top.first_layer]) + list(top.blocks)
    encoder = eqx.tree_at(lambda e: e.blocks, encoder, blocks)
    return SentenceClassifier(encoder, top.weight, top.bias)


def cache_path(task: str, config: FineTuning) -> pathlib.Path:
    """Where the fine-tuned parameters of `task` with `config` are cached."""
    return ji.assets.cache_dir() / f"{task}_minilm_finetuned_{config.fingerprint(task)}.eqx"


def text_classifier(
    task: str, config: FineTuning | None = None, *, train: bool = True, progress: bool = True
) -> tuple[SentenceClassifier, "tokenizers.Tokenizer", dict]:  # noqa: F821
    """The fine-tuned classifier of `task` (`"sst2"` or `"agnews"`), from the cache, or fine-tuned now and cached.

    **Arguments:** `config` (default `DEFAULTS[task]`; `FineTuning.quick()` for the small stand-in), `train`
    (`False`: raise `FileNotFoundError` with the command that makes the cache instead of training).

    **Returns:** `(classifier, tokenizer, info)`; `info` as `fine_tune` gives it, plus the cache path.
    """
    from . import loading

    _check_task(task)
    config = config or DEFAULTS[task]
    path = cache_path(task, config)
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        encoder, tokenizer = loading.load("minilm-l6")
        frozen = encoder.cfg.n_layers - config.trained_blocks
        n_classes = len(TASK_LABELS[task])
        like = _Top(
            list(encoder.blocks[frozen:]), jnp.zeros((n_classes, encoder.cfg.d_model)), jnp.zeros(n_classes), frozen
        )
        try:
            top = eqx.tree_deserialise_leaves(path, like)
        except (OSError, ValueError, RuntimeError) as error:  # a truncated or foreign file
            raise ValueError(f"the cached classifier {path} is unreadable ({error}); delete it to fine-tune again")
        return _assemble(encoder, top), tokenizer, {**json.loads(info_path.read_text()), "cache": str(path)}
    if not train:
        raise FileNotFoundError(
            f"no fine-tuned {task} classifier cached at {path}; make it with "
            f"`python -m experiments.cdt_local_attribution.fine_tune --task {task}`"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = path.with_suffix(".checkpoint")
    classifier, tokenizer, info = fine_tune(task, config, checkpoint=checkpoint, progress=progress)
    frozen = classifier.encoder.cfg.n_layers - config.trained_blocks
    top = _Top(list(classifier.encoder.blocks[frozen:]), classifier.weight, classifier.bias, frozen)
    eqx.tree_serialise_leaves(path, top)
    info_path.write_text(json.dumps(info, indent=1))
    checkpoint.unlink(missing_ok=True)
    return classifier, tokenizer, {**info, "cache": str(path)}


FROZEN_HEAD_TEXTS = {"sst2": 4_000, "agnews": 2_000}
FROZEN_HEAD_EVAL = {"sst2": None, "agnews": 400}


def frozen_features(
    encoder, tokenizer, texts: Sequence[str], *, max_tokens: int = 64, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """Mean-pooled final hidden states `[n, d_model]` of `texts` (padding excluded), batched by length."""
    from .sentence_classifier import mean_pooled_features

    ids = encode(tokenizer, texts, max_tokens)
    pooled = lambda t, a: mean_pooled_features(encoder, t, a)
    return _by_length(pooled, ids, encoder.cfg.d_model, batch_size, "MiniLM features", progress)


def frozen_head_classifier(task: str, seed: int = 0) -> tuple[SentenceClassifier, "tokenizers.Tokenizer", dict]:  # noqa: F821
    """The frozen-feature baseline: the pretrained MiniLM encoder, untouched, with a logistic-regression head on its
    mean-pooled features, fitted on first use and cached.

    SST-2: fitted on `FROZEN_HEAD_TEXTS["sst2"]` training sentences of at least six words (seeded shuffle), scored
    on the GLUE dev split. AG News: fitted on `FROZEN_HEAD_TEXTS["agnews"]` articles of the training part of the
    split, scored on `FROZEN_HEAD_EVAL["agnews"]` held-out articles. Texts are cut to 64 tokens.

    **Returns:** `(classifier, tokenizer, info)` with `info["heldout_accuracy"]` and the cache path.
    """
    from sklearn.linear_model import LogisticRegression

    from . import loading

    (texts, labels), (eval_texts, eval_labels) = task_data(task)
    encoder, tokenizer = loading.load("minilm-l6")
    path = ji.assets.cache_dir() / f"{task}_minilm_frozen_head.npz"
    if path.exists():
        stored = np.load(path)
        weight, bias, accuracy = stored["weight"], stored["bias"], float(stored["heldout_accuracy"])
    else:
        print(f"Fitting the {task} head on frozen MiniLM features (first run only; cached at {path}) ...")
        order = np.random.default_rng(seed).permutation(len(texts))
        if task == "sst2":
            order = [i for i in order if len(texts[i].split()) >= 6]
        chosen = order[: FROZEN_HEAD_TEXTS[task]]
        fit = LogisticRegression(C=10.0, max_iter=2000).fit(
            frozen_features(encoder, tokenizer, [texts[i] for i in chosen]), np.asarray(labels)[chosen]
        )
        evaluated = np.random.default_rng(seed + 1).permutation(len(eval_texts))[: FROZEN_HEAD_EVAL[task]]
        eval_x = frozen_features(encoder, tokenizer, [eval_texts[i] for i in evaluated])
        accuracy = float(fit.score(eval_x, np.asarray(eval_labels)[evaluated]))
        weight, bias = fit.coef_.astype(np.float32), fit.intercept_.astype(np.float32)
        if weight.shape[0] == 1:  # binary: two logits whose difference is the fitted log-odds
            weight, bias = np.concatenate([-weight, weight]) / 2, np.concatenate([-bias, bias]) / 2
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, weight=weight, bias=bias, heldout_accuracy=accuracy)
    classifier = SentenceClassifier(encoder, jnp.asarray(weight), jnp.asarray(bias))
    return classifier, tokenizer, {"heldout_accuracy": accuracy, "head": str(path)}


def _check_task(task: str) -> None:
    if task not in TASK_LABELS:
        raise ValueError(f"unknown task {task!r}; expected one of {', '.join(TASK_LABELS)}")
