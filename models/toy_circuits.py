"""Trained toy transformers whose circuit is known: ground truth for circuit discovery.

Two synthetic tasks, each with a small attention-only transformer of the family in `models.transformer` trained on
it by `jaxinterp.train`, and the circuit each model actually uses, established by exhaustive ablation
(`docs/circuits.md#trained-toy-models`):

- **Induction** (Olsson et al. 2022, "In-context learning and induction heads"): random tokens that repeat; in
  the repeat the next token is predictable by finding the previous occurrence of the current token and copying
  the token after it. The model trains on sequences whose period varies (a fixed period can be solved by position
  alone) and is evaluated on a repeated half. It solves the task with a previous-token head in layer 0 and an
  induction head in layer 1 (K-composition), found both from attention patterns (`induction_head_scores`) and by
  ablation (`true_circuit_by_ablation`).
- **Indirect-object identification** (Wang et al. 2022, "Interpretability in the wild"): templates such as
  `[BOS] A and B went to the F , B gave F to -> A` in a small synthetic vocabulary of template words, names and
  fillers; the answer is the name that appeared once (the indirect object, IO), not the repeated one (the subject,
  S). The corrupted prompts are the "ABC" distribution: the same template and fillers with three distinct fresh
  names, so no name is repeated and the answer information is gone. The metric is `logit(IO) - logit(S)`.

Nodes are named `"embed"` (the token and position embeddings, the `embed` site), `"blocks.L.attn.H"` (head `H` of
layer `L`, its slice of `blocks.L.attn.z`) and `"blocks.L.mlp"` (models with MLPs, the `blocks.L.mlp.out` site).
Trained weights are cached by `load_or_train` under `jaxinterp.assets.cache_dir() / "toy_circuits"`.
"""

import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

import jaxinterp
from jaxinterp import assets

from .transformer import Transformer, TransformerConfig, gpt2_config

BOS = 0
"""The beginning-of-sequence token of both tasks."""

CACHE_FOLDER = "toy_circuits"
"""The sub-folder of `jaxinterp.assets.cache_dir()` holding the cached toy models."""

ABLATIONS = ("mean", "resample", "zero")

Metric = Callable[[Float[Array, "batch seq vocab"]], Float[Array, ""]]
"""`metric(logits) -> scalar`: the task metric of a batch of logits (higher is better), e.g. `induction_metric` or
`ioi_metric`."""


def _check_positive_int(value, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------------
# Induction data
# ---------------------------------------------------------------------------------------------------------------


class InductionBatch(NamedTuple):
    """A batch of repeated random sequences.

    **Fields:**

    - `tokens`: int `[batch, seq]`, `[BOS, x_1 .. x_n, x_1 .. x_n, ...]`: `n` distinct random non-BOS tokens
      repeated until the sequence is full (for the repeated half, `seq = 1 + 2n`: exactly twice).
    - `targets`: int `[batch, seq]`, the next token at each position (`BOS` at the last position, which has none).
    - `mask`: bool `[batch, seq]`, True at the positions of the repeats whose next token is predictable by
      induction (from position `n + 1`, the first repeated token, to `seq - 2`): where the loss, the accuracy and
      the metric are taken.
    - `repeat`: int `[batch]`, the period `n` (the distance from a token back to its previous occurrence).
    """

    tokens: Int[Array, "batch seq"]
    targets: Int[Array, "batch seq"]
    mask: Bool[Array, "batch seq"]
    repeat: Int[Array, " batch"]


def induction_batch(
    key: PRNGKeyArray, batch: int, seq_len: int = 17, vocab: int = 32, min_repeat: int | None = None
) -> InductionBatch:
    """Random token sequences with a repeated half (Olsson et al. 2022), or repeating with a random period.

    By default each sequence is `[BOS, x_1 .. x_n, x_1 .. x_n]` with `n = (seq_len - 1) // 2` distinct random
    tokens: the second half repeats the first. With `min_repeat`, the period `n` is drawn uniformly from
    `min_repeat .. (seq_len - 1) // 2` per sequence and the `n` tokens are repeated until the sequence is full, so
    the distance back to the previous occurrence varies. The toy model trains on the latter: with a fixed distance
    a single layer-0 head attending a fixed number of positions back solves the task by position alone, with no
    induction circuit.

    **Arguments:**

    - `key`: a JAX PRNG key; the batch is a deterministic function of it.
    - `batch`: the number of sequences.
    - `seq_len`: the total length, BOS included; odd, at least 5.
    - `vocab`: the vocabulary size including BOS (token 0); the `n` tokens of a sequence are distinct, drawn from
      `1 .. vocab - 1`, so `vocab > (seq_len - 1) // 2`.
    - `min_repeat`: `None` (a repeated half), or the shortest period, from 2 to `(seq_len - 1) // 2`.

    **Returns:** an `InductionBatch` (tokens, next-token targets, the mask of predictable positions, the periods).
    """
    batch = _check_positive_int(batch, "induction_batch: batch")
    seq_len = _check_positive_int(seq_len, "induction_batch: seq_len", 5)
    if seq_len % 2 == 0:
        raise ValueError(f"induction_batch: seq_len must be odd (a BOS token and two halves), got {seq_len}")
    half = (seq_len - 1) // 2
    vocab = _check_positive_int(vocab, "induction_batch: vocab", half + 1)
    if min_repeat is None:
        min_repeat = half
    min_repeat = _check_positive_int(min_repeat, "induction_batch: min_repeat", 2)
    if min_repeat > half:
        raise ValueError(f"induction_batch: min_repeat must be at most (seq_len - 1) // 2 = {half}, got {min_repeat}")
    return _induction_batch(key, batch, seq_len, vocab, min_repeat)


@eqx.filter_jit
def _induction_batch(key, batch: int, seq_len: int, vocab: int, min_repeat: int) -> InductionBatch:
    half = (seq_len - 1) // 2

    def row(key):
        k_period, k_tokens = jr.split(key)
        n = jr.randint(k_period, (), min_repeat, half + 1)
        draws = jr.choice(k_tokens, vocab - 1, (half,), replace=False).astype(jnp.int32) + 1
        return draws[jnp.arange(seq_len - 1) % n], n

    body, n = jax.vmap(row)(jr.split(key, batch))
    bos = jnp.full((batch, 1), BOS, jnp.int32)
    tokens = jnp.concatenate([bos, body], axis=1)
    targets = jnp.concatenate([tokens[:, 1:], bos], axis=1)
    position = jnp.arange(seq_len)[None]
    mask = (position > n[:, None]) & (position < seq_len - 1)
    return InductionBatch(tokens, targets, mask, n.astype(jnp.int32))


def induction_metric(batch: InductionBatch) -> Metric:
    """The induction task metric for `batch`: the mean log-probability of the correct next token over the
    predictable positions of the repeated half.

    **Arguments:** `batch`, an `InductionBatch` (its targets and mask are used; the logits passed to the metric
    must come from `batch.tokens`).

    **Returns:** `metric(logits [batch, seq, vocab]) -> scalar`.
    """
    targets, mask = jnp.asarray(batch.targets), jnp.asarray(batch.mask)

    def metric(logits):
        if logits.shape[:2] != targets.shape:
            raise ValueError(f"induction metric: logits of shape {logits.shape} for targets {targets.shape}")
        logp = jax.nn.log_softmax(logits, axis=-1)
        picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
        return jnp.sum(jnp.where(mask, picked, 0.0)) / jnp.sum(mask)

    return metric


# ---------------------------------------------------------------------------------------------------------------
# IOI data
# ---------------------------------------------------------------------------------------------------------------

IOI_WORDS = ("<bos>", "and", "went", "to", "the", ",", "gave", "then", "had", "a", "at", "it")
"""The template words of the IOI vocabulary, tokens `0 .. len(IOI_WORDS) - 1` (`<bos>` is `BOS`)."""
IOI_NAMES = 16
"""Name tokens follow the template words."""
IOI_FILLERS = 8
"""Filler tokens (places, objects) follow the names."""
IOI_VOCAB = len(IOI_WORDS) + IOI_NAMES + IOI_FILLERS
"""The IOI vocabulary size."""

IOI_TEMPLATES = (
    "<bos> A and B went to the F , S gave F to",
    "<bos> then A and B had a F , S gave it to",
    "<bos> A and B F F , then S gave a F to",
    "<bos> at the F A and B had , S gave F to",
    "<bos> A and B went to F , then S gave it to",
)
"""The IOI templates, all of one length: `A`, `B` are the first mentions of the two names (IO and S in either
order: ABBA or BABA), `S` the second mention of the subject, `F` a filler; the answer follows the last `to`."""


def ioi_name_token(i: int) -> int:
    """The token of name number `i` (`0 <= i < IOI_NAMES`)."""
    if not 0 <= i < IOI_NAMES:
        raise ValueError(f"ioi_name_token: name index must be in [0, {IOI_NAMES}), got {i}")
    return len(IOI_WORDS) + i


def ioi_decode(tokens) -> str:
    """The IOI prompt `tokens` (int `[seq]`) as text, names written `N0, N1, ...` and fillers `F0, F1, ...`."""
    words = []
    for t in np.asarray(tokens).tolist():
        if t < len(IOI_WORDS):
            words.append(IOI_WORDS[t])
        elif t < len(IOI_WORDS) + IOI_NAMES:
            words.append(f"N{t - len(IOI_WORDS)}")
        else:
            words.append(f"F{t - len(IOI_WORDS) - IOI_NAMES}")
    return " ".join(words)


def _template_table() -> tuple[np.ndarray, np.ndarray]:
    """Each template as fixed tokens `[templates, seq]` (-1 at slots) and slot codes (0 fixed, 1 A, 2 B, 3 S,
    4 filler)."""
    codes = {"A": 1, "B": 2, "S": 3, "F": 4}
    split = [t.split() for t in IOI_TEMPLATES]
    if len({len(s) for s in split}) != 1:
        raise AssertionError("IOI templates must share one length")
    fixed = np.full((len(split), len(split[0])), -1, np.int32)
    slots = np.zeros_like(fixed)
    for i, words in enumerate(split):
        for j, word in enumerate(words):
            if word in codes:
                slots[i, j] = codes[word]
            else:
                fixed[i, j] = IOI_WORDS.index(word)
    return fixed, slots


_IOI_FIXED, _IOI_SLOTS = _template_table()
IOI_SEQ_LEN = _IOI_FIXED.shape[1]
"""The length of every IOI prompt."""


class IOIBatch(NamedTuple):
    """A batch of IOI prompts with their ABC corruptions.

    **Fields:**

    - `tokens`: int `[batch, seq]`, the clean prompts (the answer would follow the last token).
    - `corrupted`: int `[batch, seq]`, the same templates and fillers with three distinct fresh names.
    - `answer`: int `[batch]`, the indirect object's token.
    - `wrong`: int `[batch]`, the subject's token.
    - `template`: int `[batch]`, the index into `IOI_TEMPLATES`.
    - `abba`: bool `[batch]`, True where the IO is mentioned first (ABBA), False for BABA.
    - `io_position`, `s1_position`, `s2_position`: int `[batch]`, where the IO and the two mentions of S are.
    """

    tokens: Int[Array, "batch seq"]
    corrupted: Int[Array, "batch seq"]
    answer: Int[Array, " batch"]
    wrong: Int[Array, " batch"]
    template: Int[Array, " batch"]
    abba: Bool[Array, " batch"]
    io_position: Int[Array, " batch"]
    s1_position: Int[Array, " batch"]
    s2_position: Int[Array, " batch"]


def ioi_batch(key: PRNGKeyArray, batch: int) -> IOIBatch:
    """IOI prompts (Wang et al. 2022) in the synthetic vocabulary `IOI_WORDS` + names + fillers, with the
    standard ABC corruption.

    Each prompt draws a template of `IOI_TEMPLATES`, two distinct names (IO and S), the order of their first
    mentions (ABBA or BABA) and fillers; its corruption keeps the template and fillers and puts three distinct
    fresh names in the three name slots.

    **Arguments:** `key` (a JAX PRNG key; the batch is a deterministic function of it), `batch` (the number of
    prompts).

    **Returns:** an `IOIBatch`.
    """
    batch = _check_positive_int(batch, "ioi_batch: batch")
    return _ioi_batch(key, batch)


@eqx.filter_jit
def _ioi_batch(key, batch: int) -> IOIBatch:
    fixed, slots = jnp.asarray(_IOI_FIXED), jnp.asarray(_IOI_SLOTS)
    first_name, first_filler = len(IOI_WORDS), len(IOI_WORDS) + IOI_NAMES

    def one(key):
        k_template, k_names, k_order, k_fill, k_corrupt = jr.split(key, 5)
        template = jr.randint(k_template, (), 0, fixed.shape[0])
        io, s = jr.choice(k_names, IOI_NAMES, (2,), replace=False) + first_name
        abba = jr.bernoulli(k_order)
        a, b = jnp.where(abba, io, s), jnp.where(abba, s, io)
        fill = jr.randint(k_fill, (fixed.shape[1],), 0, IOI_FILLERS) + first_filler
        c_a, c_b, c_s = jr.choice(k_corrupt, IOI_NAMES, (3,), replace=False) + first_name
        code = slots[template]

        def fill_in(a, b, s):
            names = jnp.select([code == 1, code == 2, code == 3], [a, b, s], fixed[template])
            return jnp.where(code == 4, fill, names).astype(jnp.int32)

        a_at, b_at, s_at = (jnp.argmax(code == c).astype(jnp.int32) for c in (1, 2, 3))
        return (
            fill_in(a, b, s),
            fill_in(c_a, c_b, c_s),
            io.astype(jnp.int32),
            s.astype(jnp.int32),
            template.astype(jnp.int32),
            abba,
            jnp.where(abba, a_at, b_at),
            jnp.where(abba, b_at, a_at),
            s_at,
        )

    return IOIBatch(*jax.vmap(one)(jr.split(key, batch)))


def ioi_metric(batch: IOIBatch) -> Metric:
    """The IOI metric for `batch`: the mean logit difference `logit(IO) - logit(S)` at the last position.

    **Arguments:** `batch`, an `IOIBatch` (its answer and wrong tokens; the logits passed to the metric must come
    from `batch.tokens`, ablated or not).

    **Returns:** `metric(logits [batch, seq, vocab]) -> scalar`.
    """
    return logit_difference_metric(batch.answer, batch.wrong)


def logit_difference_metric(answer, wrong) -> Metric:
    """`metric(logits) = mean(logits[:, -1, answer] - logits[:, -1, wrong])` for int `[batch]` `answer`, `wrong`."""
    answer, wrong = jnp.asarray(answer), jnp.asarray(wrong)

    def metric(logits):
        if logits.shape[0] != answer.shape[0]:
            raise ValueError(f"logit-difference metric: {logits.shape[0]} logit rows for {answer.shape[0]} answers")
        return jnp.mean(_last_logit_difference(logits, answer, wrong))

    return metric


def _last_logit_difference(logits, answer, wrong):
    last = logits[:, -1]
    pick = jax.vmap(lambda row, t: row[t])
    return pick(last, answer) - pick(last, wrong)


# ---------------------------------------------------------------------------------------------------------------
# Models and training
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How one toy model is trained.

    **Fields:** `task` (`"induction"` or `"ioi"`); the architecture (`d_model`, `n_layers`, `n_heads` (`d_head`
    is `d_model // n_heads`), `d_mlp` (0: attention only), `norm`; learned positions, causal, untied unembedding);
    the optimisation (`steps`, `batch_size`, `learning_rate` (the peak of a linear warm-up over `warmup` steps and
    a cosine decay to a tenth), `weight_decay` (0: Adam, else AdamW), `head_sparsity` (the weight of a group-lasso
    penalty `sum_h |W_O^h|_F` on the heads' output weights, so that the task is done by as few heads as
    possible)); `eval_batches` held-out batches of `batch_size` for the reported accuracy; and for the induction
    task its data (`seq_len`, `vocab`, `min_repeat`: `induction_batch`'s arguments for the training batches).
    """

    task: str
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 0
    norm: str = "layer"
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 3e-3
    warmup: int = 50
    weight_decay: float = 0.0
    head_sparsity: float = 0.0
    eval_batches: int = 8
    seq_len: int = 17
    vocab: int = 32
    min_repeat: int = 3

    def __post_init__(self):
        if self.task not in ("induction", "ioi"):
            raise ValueError(f"Recipe.task must be 'induction' or 'ioi', got {self.task!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"Recipe: d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")

    def config(self) -> TransformerConfig:
        """The model architecture."""
        vocab, positions = (self.vocab, self.seq_len) if self.task == "induction" else (IOI_VOCAB, IOI_SEQ_LEN)
        return gpt2_config(
            vocab_size=vocab,
            d_model=self.d_model,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_head=self.d_model // self.n_heads,
            d_mlp=self.d_mlp,
            max_positions=positions,
            norm=self.norm,
            activation="gelu",
            tie_embeddings=False,
        )

    def fingerprint(self) -> str:
        """A short hash of the recipe (and the task data's sizes), naming its cache file."""
        text = repr((_CACHE_VERSION, dataclasses.asdict(self), IOI_TEMPLATES, IOI_VOCAB))
        return hashlib.sha256(text.encode()).hexdigest()[:12]


_CACHE_VERSION = 1
"""Raised whenever the training code changes what a recipe produces, so that old cache files are not read."""

RECIPES = {
    "induction": Recipe("induction", learning_rate=3e-3, head_sparsity=0.1),
    "ioi": Recipe("ioi", learning_rate=1e-2),
}
"""The default recipe of each toy model, by name."""


def _keys(seed: int):
    root = jr.key(_check_positive_int(seed, "seed", 0))
    return jr.fold_in(root, 0), jr.fold_in(root, 1), jr.fold_in(root, 2)


@functools.cache
def _schedule(recipe: Recipe):
    # one optimiser object per recipe, so that repeated runs share the compiled training step
    lr = optax.warmup_cosine_decay_schedule(
        0.0,
        recipe.learning_rate,
        max(recipe.warmup, 1),
        max(recipe.steps, recipe.warmup + 1),
        recipe.learning_rate * 0.1,
    )
    if recipe.weight_decay:
        return optax.adamw(lr, weight_decay=recipe.weight_decay)
    return optax.adam(lr)


def _batched(model):
    return jax.vmap(model)


@eqx.filter_jit
def _forward(model, tokens):
    return jax.vmap(model)(tokens)


def _induction_loss(model, batch: InductionBatch):
    logits = _batched(model)(batch.tokens)
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, batch.targets[..., None], axis=-1)[..., 0]
    n = jnp.sum(batch.mask)
    loss = -jnp.sum(jnp.where(batch.mask, picked, 0.0)) / n
    accuracy = jnp.sum(jnp.where(batch.mask, jnp.argmax(logits, -1) == batch.targets, False)) / n
    return loss, {"accuracy": accuracy}


def _ioi_loss(model, batch: IOIBatch):
    logits = _batched(model)(batch.tokens)[:, -1]
    logp = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(logp, batch.answer[:, None], axis=-1))
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch.answer)
    return loss, {"accuracy": accuracy}


class _TaskLoss(eqx.Module):
    """`loss_fn(model, batch, key)` for `jaxinterp.train` that draws its batch of the task from the step's key
    inside the compiled step (the loop's `batches` gives nothing)."""

    recipe: Recipe = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)

    def draw(self, key):
        if self.recipe.task == "induction":
            r = self.recipe
            return _induction_batch(key, self.batch_size, r.seq_len, r.vocab, r.min_repeat)
        return _ioi_batch(key, self.batch_size)

    def __call__(self, model, batch, key):
        del batch
        data = self.draw(key)
        loss, metrics = (_induction_loss if self.recipe.task == "induction" else _ioi_loss)(model, data)
        if not self.recipe.head_sparsity:
            return loss, metrics
        penalty = _w_o_norms(model).sum()
        return loss + self.recipe.head_sparsity * penalty, {**metrics, "task_loss": loss, "head_norms": penalty}


def _w_o_norms(model: Transformer) -> Float[Array, "layers heads"]:
    """The Frobenius norm of each head's output weights `W_O^h` (`[d_head, d_model]`), `[layers, heads]`: the
    group-lasso penalty of `Recipe.head_sparsity`."""
    return jnp.stack([jnp.sqrt(jnp.sum(block.attn.w_o**2, axis=(1, 2)) + 1e-12) for block in model.blocks])


def _initial_model(cfg: TransformerConfig, key) -> Transformer:
    """The untrained model, initialised in one compiled program (rather than one per weight)."""
    return eqx.filter_jit(lambda key: Transformer(cfg, key=key))(key)


def _train(recipe: Recipe, seed: int, checkpoint) -> tuple[Transformer, dict]:
    init_key, train_key, eval_key = _keys(seed)
    model = _initial_model(recipe.config(), init_key)
    started = time.perf_counter()
    model, history = jaxinterp.train(
        model,
        _TaskLoss(recipe, recipe.batch_size),
        lambda step: None,
        _schedule(recipe),
        steps=recipe.steps,
        key=train_key,
        has_aux=True,
        checkpoint=checkpoint,
        description=f"toy {recipe.task}",
        progress=False,
    )

    def last(name):  # the mean over the last 20 steps
        values = history.get(name, np.zeros(0))
        return float(np.mean(values[-20:])) if len(values) else float("nan")

    info = {
        "task": recipe.task,
        "seed": seed,
        "recipe": dataclasses.asdict(recipe),
        "train_time_s": time.perf_counter() - started,
        "compile_time_s": float(history["first_step_s"]),
        "final_loss": last("task_loss" if recipe.head_sparsity else "loss"),
        "final_train_accuracy": last("accuracy"),
    }
    info.update(_evaluate(model, recipe, eval_key))
    return model, info


def _evaluate(model, recipe: Recipe, key) -> dict:
    """Held-out accuracy (and, for IOI, logit differences) on `recipe.eval_batches` fresh batches."""
    n = recipe.eval_batches * recipe.batch_size
    if recipe.task == "induction":
        k_half, k_random = jr.split(key)
        r = recipe
        half = _induction_batch(k_half, n, r.seq_len, r.vocab, (r.seq_len - 1) // 2)
        varied = _induction_batch(k_random, n, r.seq_len, r.vocab, r.min_repeat)
        loss = eqx.filter_jit(_induction_loss)
        return {
            "accuracy": float(loss(model, half)[1]["accuracy"]),
            "accuracy_varied_repeat": float(loss(model, varied)[1]["accuracy"]),
            "heldout_examples": n,
        }
    batch = _ioi_batch(key, n)
    logits = _forward(model, batch.tokens)
    diff = np.asarray(_last_logit_difference(logits, batch.answer, batch.wrong))
    accuracy = float(np.mean(np.asarray(jnp.argmax(logits[:, -1], -1) == batch.answer)))
    return {
        "accuracy": accuracy,
        "logit_difference": float(diff.mean()),
        "positive_logit_difference": float(np.mean(diff > 0)),
        "heldout_examples": n,
    }


def train_induction_model(
    seed: int = 0, steps: int | None = None, checkpoint: str | os.PathLike | None = None
) -> tuple[Transformer, dict]:
    """Train the two-layer attention-only induction model (`RECIPES["induction"]`) with `jaxinterp.train`.

    **Arguments:**

    - `seed`: fixes the initialisation, the training data and the held-out data; the same seed gives the same
      weights bit for bit (on one machine and JAX version).
    - `steps`: optimiser steps (default: the recipe's).
    - `checkpoint`: a training checkpoint file to save to and resume from (`jaxinterp.train`), or `None`.

    **Returns:** `(model, info)` with `info["accuracy"]` the next-token accuracy on the predictable positions of
    held-out sequences with a repeated half (`info["accuracy_varied_repeat"]`: on the training distribution),
    `info["train_time_s"]` (wall time of `jaxinterp.train`, `info["compile_time_s"]` of it its first step),
    `info["final_loss"]` (the task's cross-entropy over the last 20 steps) and the recipe.
    """
    return _train(_recipe("induction", steps), seed, checkpoint)


def train_ioi_model(
    seed: int = 0, steps: int | None = None, checkpoint: str | os.PathLike | None = None
) -> tuple[Transformer, dict]:
    """Train the attention-only IOI model (`RECIPES["ioi"]`) with `jaxinterp.train`, cross-entropy on the
    indirect object at the last position of clean prompts.

    **Arguments:** as for `train_induction_model`.

    **Returns:** `(model, info)` with `info["accuracy"]` (the IO is the top token) and `info["logit_difference"]`,
    `info["positive_logit_difference"]` (the mean `logit(IO) - logit(S)` and the fraction of prompts where it is
    positive) on held-out prompts, `info["train_time_s"]`, `info["compile_time_s"]`, `info["final_loss"]` and the
    recipe.
    """
    return _train(_recipe("ioi", steps), seed, checkpoint)


def _recipe(name: str, steps: int | None) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown toy model {name!r}; the toy models are {sorted(RECIPES)}")
    recipe = RECIPES[name]
    if steps is not None:
        recipe = dataclasses.replace(recipe, steps=_check_positive_int(steps, "steps", 0))
    return recipe


# ---------------------------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------------------------


def cache_path(name: str, seed: int = 0, steps: int | None = None) -> pathlib.Path:
    """The `.eqx` file caching toy model `name` trained from `seed` (its name holds a hash of the recipe, so a
    changed recipe is never read from an old file); a `.json` file beside it holds the training info."""
    recipe = _recipe(name, steps)
    seed = _check_positive_int(seed, "seed", 0)
    return assets.cache_dir() / CACHE_FOLDER / f"{name}-seed{seed}-{recipe.fingerprint()}.eqx"


def load_or_train(name: str, seed: int = 0, *, steps: int | None = None) -> tuple[Transformer, dict]:
    """Toy model `name` (`"induction"` or `"ioi"`) trained from `seed`: read from the cache, or trained and cached.

    The weights are cached with `equinox.tree_serialise_leaves` at `cache_path(name, seed)`, and the training info
    (with the file's SHA-256) in a `.json` file beside it. A missing file is trained (with a message); an
    unreadable, truncated or altered one is reported with a warning and retrained.

    **Arguments:** `name`, `seed`, `steps` (optimiser steps instead of the recipe's; a separate cache entry).

    **Returns:** `(model, info)` as from `train_induction_model` / `train_ioi_model`, with `info["cache"]` the
    file and `info["from_cache"]` whether it was read rather than trained.
    """
    recipe = _recipe(name, steps)
    path = cache_path(name, seed, steps)
    sidecar = path.with_suffix(".json")
    like = jax.eval_shape(lambda: Transformer(recipe.config(), key=jr.key(0)))
    if path.exists():
        try:
            model, info = _read_cache(path, sidecar, like)
            return model, {**info, "cache": str(path), "from_cache": True}
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            warnings.warn(f"the cached toy model {path} is corrupt ({error}); retraining it", stacklevel=2)
    else:
        print(f"Training the {name} toy model (seed {seed}); cached at {path}")
    model, info = _train(recipe, seed, None)
    _write_cache(path, sidecar, model, info)
    return model, {**info, "cache": str(path), "from_cache": False}


def _read_cache(path: pathlib.Path, sidecar: pathlib.Path, like: Transformer) -> tuple[Transformer, dict]:
    data = path.read_bytes()
    if not sidecar.exists():
        raise ValueError(f"its info file {sidecar.name} is missing")
    info = json.loads(sidecar.read_text())
    if info.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ValueError("its contents do not match the SHA-256 recorded at training")
    buffer = io.BytesIO(data)
    model = eqx.tree_deserialise_leaves(buffer, like)
    if buffer.read(1):
        raise ValueError("it has data past the model's arrays")
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(model)):
        raise ValueError("it holds NaN or infinite weights")
    return model, {k: v for k, v in info.items() if k != "sha256"}


def _write_cache(path: pathlib.Path, sidecar: pathlib.Path, model: Transformer, info: dict) -> None:
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, model)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, payload in [
        (sidecar, json.dumps({**info, "sha256": hashlib.sha256(data).hexdigest()}, indent=1).encode()),
        (path, data),
    ]:
        handle, partial = tempfile.mkstemp(prefix=target.name + ".", suffix=".partial", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(payload)
            os.replace(partial, target)
        except BaseException:
            pathlib.Path(partial).unlink(missing_ok=True)
            raise


# ---------------------------------------------------------------------------------------------------------------
# Attention-pattern scores
# ---------------------------------------------------------------------------------------------------------------


@eqx.filter_jit
def _patterns(model: Transformer, tokens) -> Float[Array, "layers batch heads q k"]:
    _, sites = jax.vmap(jaxinterp.capture(model, "blocks.*.attn.pattern"))(tokens)
    return jnp.stack([sites[f"blocks.{layer}.attn.pattern"] for layer in range(model.cfg.n_layers)])


def _check_tokens(tokens, what: str, vocab: int | None = None) -> jax.Array:
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"{what}: tokens must be an integer array [batch, seq], got {tokens.dtype} {tokens.shape}")
    if tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"{what}: tokens need at least one sequence of at least two tokens, got {tokens.shape}")
    if vocab is not None and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"{what}: token ids must lie in [0, {vocab}), got [{int(tokens.min())}, {int(tokens.max())}]")
    return tokens


def induction_head_scores(model: Transformer, tokens) -> dict[str, np.ndarray]:
    """Per-head previous-token and induction scores from the attention patterns (Olsson et al. 2022).

    The previous-token score of a head is its mean attention from each position `q >= 1` to `q - 1`; the induction
    score is its mean attention from each position `q` whose token occurred before to the tokens after its earlier
    occurrences (the positions `p + 1 < q` with `tokens[p] == tokens[q]`; for a repeated half, the one token after
    the previous occurrence). Averaged over the batch.

    **Arguments:** `model` (a `Transformer`), `tokens` (int `[batch, seq]`; repeated random sequences such as
    `induction_batch(...).tokens` give clean scores).

    **Returns:** `{"previous_token": [layers, heads], "induction": [layers, heads]}`, NumPy arrays in `[0, 1]`.
    """
    tokens = _check_tokens(tokens, "induction_head_scores", model.cfg.vocab_size)
    patterns = np.asarray(_patterns(model, tokens), np.float64)  # [layers, batch, heads, q, k]
    toks = np.asarray(tokens)
    seq = toks.shape[1]
    q, k = np.arange(seq)[:, None], np.arange(seq)[None, :]
    # key k is the token after an earlier occurrence (at k - 1) of the query's token, and lies before the query
    after = np.zeros((toks.shape[0], seq, seq), bool)
    after[:, :, 1:] = toks[:, :, None] == toks[:, None, :-1]
    after &= (k < q)[None]
    valid = after.any(axis=2)  # [batch, q]
    if not valid.any():
        raise ValueError("induction_head_scores: no position of tokens repeats an earlier token")
    on_targets = np.einsum("lbhqk,bqk->lbhq", patterns, after.astype(np.float64))
    induction = (on_targets * valid[None, :, None]).sum(axis=(1, 3)) / valid.sum()
    previous_token = np.diagonal(patterns, offset=-1, axis1=3, axis2=4).mean(axis=(1, 3))
    return {"previous_token": previous_token, "induction": induction}


def induction_circuit_heads(model: Transformer, tokens, active: float = 0.1) -> tuple[str, str]:
    """The known induction mechanism located from attention patterns: the layer-0 head with the highest
    previous-token score and the layer-1 head with the highest induction score (`induction_head_scores`), among
    the heads that write to the residual stream (a head whose output is nearly zero may still have a
    previous-token pattern without doing anything).

    **Arguments:** `model` (at least two layers), `tokens` (int `[batch, seq]`, repeated sequences), `active`
    (a head counts when its mean output norm `|z_h W_O^h|` is at least this fraction of the largest in its layer).

    **Returns:** `(previous_token_head, induction_head)` as node names, e.g. `("blocks.0.attn.2", "blocks.1.attn.0")`.
    """
    if model.cfg.n_layers < 2:
        raise ValueError(
            f"induction_circuit_heads: an induction circuit needs two layers, the model has {model.cfg.n_layers}"
        )
    scores = induction_head_scores(model, tokens)
    sizes = head_output_sizes(model, tokens)
    used = sizes >= active * sizes.max(axis=1, keepdims=True)
    previous = np.where(used[0], scores["previous_token"][0], -np.inf)
    induction = np.where(used[1], scores["induction"][1], -np.inf)
    return f"blocks.0.attn.{int(np.argmax(previous))}", f"blocks.1.attn.{int(np.argmax(induction))}"


def head_output_sizes(model: Transformer, tokens) -> np.ndarray:
    """How much each head writes: the norm of its output `z_h W_O^h` (`[d_model]`) averaged over the positions and
    sequences of `tokens` (int `[batch, seq]`). **Returns:** a NumPy array `[layers, heads]`."""
    tokens = _check_tokens(tokens, "head_output_sizes", model.cfg.vocab_size)
    sites = tuple(f"blocks.{layer}.attn.z" for layer in range(model.cfg.n_layers))
    values = _site_values(model, tokens, sites)
    return np.stack(
        [
            np.asarray(
                jnp.linalg.norm(jnp.einsum("bshd,hdm->bshm", values[site], block.attn.w_o), axis=-1).mean((0, 1))
            )
            for site, block in zip(sites, model.blocks)
        ]
    )


def ioi_head_scores(model: Transformer, batch: IOIBatch) -> dict[str, np.ndarray]:
    """Per-head attention of the IOI roles (Wang et al. 2022), averaged over the clean prompts of `batch`.

    **Arguments:** `model`, `batch` (an `IOIBatch`).

    **Returns:** NumPy arrays `[layers, heads]`: `"end_to_io"`, `"end_to_s1"`, `"end_to_s2"` (attention from the
    last position to the IO, the first and the second mention of S: name movers attend to the IO, S-inhibition
    heads to S), `"s2_to_s1"` (from S2 to S1: duplicate-token heads), `"s2_to_previous"`, and
    `"direct_logit_difference"` (each head's direct contribution to `logit(IO) - logit(S)` at the last position,
    through the final norm with its scale frozen: positive for heads that copy the IO, negative for heads that copy
    S).
    """
    tokens = _check_tokens(batch.tokens, "ioi_head_scores", model.cfg.vocab_size)
    patterns = np.asarray(_patterns(model, tokens), np.float64).transpose(1, 0, 2, 3, 4)  # [batch, layers, ...]
    rows = np.arange(tokens.shape[0])
    io, s1, s2 = (np.asarray(x) for x in (batch.io_position, batch.s1_position, batch.s2_position))
    end = np.full_like(io, tokens.shape[1] - 1)

    def attention(q, k):
        return patterns[rows, :, :, q, k].mean(axis=0)  # [layers, heads]

    return {
        "end_to_io": attention(end, io),
        "end_to_s1": attention(end, s1),
        "end_to_s2": attention(end, s2),
        "s2_to_s1": attention(s2, s1),
        "s2_to_previous": attention(s2, s2 - 1),
        "direct_logit_difference": np.asarray(_direct_logit_difference(model, tokens, batch.answer, batch.wrong)),
    }


@eqx.filter_jit
def _direct_logit_difference(model: Transformer, tokens, answer, wrong) -> Float[Array, "layers heads"]:
    """Each head's direct effect on `logit(answer) - logit(wrong)` at the last position, through the final norm
    with its scale frozen at the clean run's (the usual direct logit attribution), averaged over the batch."""
    last = model.cfg.n_layers - 1
    sites = tuple(f"blocks.{layer}.attn.z" for layer in range(model.cfg.n_layers)) + (f"blocks.{last}.resid_post",)
    _, values = jax.vmap(jaxinterp.capture(model, *sites))(tokens)
    unembed = model.token_embed.T if model.unembed is None else model.unembed
    direction = (unembed[:, answer] - unembed[:, wrong]).T  # [batch, d_model]
    resid = values[f"blocks.{last}.resid_post"][:, -1]  # [batch, d_model]
    norm = model.ln_final
    if norm is not None:
        centred = norm.bias is not None
        x = resid - resid.mean(-1, keepdims=True) if centred else resid
        scale = jnp.sqrt(jnp.mean(x**2, -1, keepdims=True) + norm.eps)
        direction = direction * norm.weight / scale
    rows = []
    for layer, block in enumerate(model.blocks):
        out = jnp.einsum("bhd,hdm->bhm", values[f"blocks.{layer}.attn.z"][:, -1], block.attn.w_o)
        if norm is not None and norm.bias is not None:
            out = out - out.mean(-1, keepdims=True)
        rows.append(jnp.einsum("bhm,bm->h", out, direction) / tokens.shape[0])
    return jnp.stack(rows)


# ---------------------------------------------------------------------------------------------------------------
# The true circuit by exhaustive ablation
# ---------------------------------------------------------------------------------------------------------------


def circuit_nodes(model: Transformer) -> tuple[str, ...]:
    """The nodes of `model`'s computational graph at node level, in execution order: `"embed"`, then per layer
    `"blocks.L.attn.H"` for each head and `"blocks.L.mlp"` when the model has MLPs."""
    cfg = model.cfg
    nodes = ["embed"]
    for layer in range(cfg.n_layers):
        nodes += [f"blocks.{layer}.attn.{h}" for h in range(cfg.n_heads)]
        if cfg.d_mlp:
            nodes.append(f"blocks.{layer}.mlp")
    return tuple(nodes)


def _ablation_nodes(model: Transformer) -> list:
    """`circuit_nodes(model)` as `jaxinterp.circuits.Node`s (the embedding a node of its own), in the same order."""
    cfg = model.cfg
    embed = jaxinterp.circuits.Node("embed", "embed", jnp.ones(()), ())
    return [embed, *jaxinterp.circuits.transformer_nodes(cfg.n_layers, cfg.n_heads, mlps=bool(cfg.d_mlp))]


@eqx.filter_jit
def _site_values(model: Transformer, tokens, sites: tuple[str, ...]):
    _, values = jax.vmap(jaxinterp.capture(model, *sites))(tokens)
    return {site: values[site] for site in sites}


def _references(model: Transformer, clean, corrupted, ablation: str, nodes) -> dict[str, jax.Array]:
    """The value each ablated site takes, per clean example: `[batch, ...]` for every node's site."""
    sites = tuple(dict.fromkeys(node.site for node in nodes))
    values = _site_values(model, corrupted, sites)
    batch = clean.shape[0]
    if ablation == "resample":
        return values
    if ablation == "mean":
        return {s: jnp.broadcast_to(v.mean(0), (batch, *v.shape[1:])) for s, v in values.items()}
    return {s: jnp.zeros((batch, *v.shape[1:]), v.dtype) for s, v in values.items()}


class _Ablations:
    """The metric of `clean` under node ablations of `model`, for batches of keep-masks (bool `[masks, nodes]`,
    False: ablated), each batch padded to `nodes + 2` masks so that every call shares one compilation."""

    def __init__(self, model, clean, corrupted, metric, ablation):
        if not isinstance(model, Transformer):
            raise TypeError(f"the model must be a models.Transformer, got {type(model).__name__}")
        if not callable(metric):
            raise TypeError(f"metric must be a function logits -> scalar, got {type(metric).__name__}")
        if ablation not in ABLATIONS:
            raise ValueError(f"ablation must be one of {ABLATIONS}, got {ablation!r}")
        clean = _check_tokens(clean, "clean", model.cfg.vocab_size)
        corrupted = _check_tokens(corrupted, "corrupted", model.cfg.vocab_size)
        if corrupted.shape[1] != clean.shape[1]:
            raise ValueError(
                f"clean and corrupted prompts must have one length, got shapes {clean.shape} and {corrupted.shape}"
            )
        if ablation == "resample" and corrupted.shape != clean.shape:
            raise ValueError(
                f"resample ablation pairs each clean prompt with a corrupted one: shapes {clean.shape} and "
                f"{corrupted.shape} differ"
            )
        self.model, self.clean, self.metric = model, clean, metric
        self.nodes = circuit_nodes(model)
        self.ablation_nodes = _ablation_nodes(model)
        self.references = _references(model, clean, corrupted, ablation, self.ablation_nodes)

    def __call__(self, masks: np.ndarray) -> np.ndarray:
        masks = np.asarray(masks, bool)
        rows = len(self.nodes) + 2
        out = []
        for start in range(0, len(masks), rows):
            chunk = masks[start : start + rows]
            padded = np.concatenate([chunk, np.ones((rows - len(chunk), len(self.nodes)), bool)])
            values = jaxinterp.circuits.ablated_nodes_metric(
                self.model, self.ablation_nodes, self.references, self.metric, (self.clean,), padded, per_example=True
            )
            out.append(np.asarray(values, np.float64)[: len(chunk)])
        values = np.concatenate(out)
        if not np.all(np.isfinite(values)):
            raise FloatingPointError("the metric is NaN or infinite under ablation")
        return values

    def keep_mask(self, ablated: Iterable[str], what: str) -> np.ndarray:
        ablated = {ablated} if isinstance(ablated, str) else set(ablated)
        unknown = ablated - set(self.nodes)
        if unknown:
            raise ValueError(f"{what}: unknown nodes {sorted(unknown)}; the model's nodes are {list(self.nodes)}")
        return np.asarray([node not in ablated for node in self.nodes])


def ablated_metric(
    model: Transformer, clean, corrupted, metric: Metric, ablated: Iterable[str], ablation: str = "mean"
) -> float:
    """The task metric with the nodes `ablated` ablated (all others intact).

    **Arguments:** `model`, `clean` (int `[batch, seq]`, the prompts the metric is taken on), `corrupted` (int
    `[batch', seq]`: the reference batch for mean ablation, the paired corrupted prompts (`batch' == batch`) for
    resample ablation, unused values for zero ablation), `metric` (`metric(logits [batch, seq, vocab]) -> scalar`),
    `ablated` (node names, `circuit_nodes(model)`), `ablation` (`"mean"`, `"resample"` or `"zero"`).

    **Returns:** the metric, a float.
    """
    run = _Ablations(model, clean, corrupted, metric, ablation)
    return float(run(run.keep_mask(ablated, "ablated_metric")[None])[0])


def true_circuit_by_ablation(
    model: Transformer,
    clean,
    corrupted,
    metric: Metric,
    ablation: str = "mean",
    threshold: float = 0.1,
) -> tuple[frozenset[str], dict[str, float]]:
    """The circuit `model` uses for a task, by exhaustive node-level ablation.

    First the effect of each node alone: the change in the metric when that single node is ablated (all nodes in
    one `jax.vmap`). Then, to capture redundancy, greedy backward elimination: starting from all nodes, repeatedly
    ablate (together with those already ablated) the node whose ablation changes the metric least, as long as the
    metric stays within `threshold * |m_full - m_empty|` of the full model's `m_full` (`m_empty`: every node
    ablated). What remains is the circuit. Each elimination step is one `jax.vmap` over the candidates.

    **Arguments:**

    - `model`: a `Transformer`.
    - `clean`: int `[batch, seq]`, the prompts the metric is taken on.
    - `corrupted`: int `[batch', seq]`; mean ablation replaces a node's output by its mean over these prompts
        (per position), resample ablation by its value on the paired corrupted prompt (`batch' == batch`), zero
        ablation by zero (these are then only used for shapes).
    - `metric`: `metric(logits [batch, seq, vocab]) -> scalar`, higher is better (`induction_metric`,
        `ioi_metric`).
    - `ablation`: `"mean"`, `"resample"` or `"zero"`.
    - `threshold`: the tolerated change, a fraction in `(0, 1)` of the metric's range `|m_full - m_empty|`.

    **Returns:** `(nodes, effects)`: the circuit's node names (a frozenset of `circuit_nodes(model)`), and for
    every node the change `m(node ablated) - m_full`, a float (negative: the node helps).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be a number in (0, 1), got {threshold!r}")
    run = _Ablations(model, clean, corrupted, metric, ablation)
    nodes = run.nodes
    n = len(nodes)
    singles = ~np.eye(n, dtype=bool)
    values = run(np.concatenate([np.ones((1, n), bool), np.zeros((1, n), bool), singles]))
    full, empty, single = values[0], values[1], values[2:]
    effects = {node: float(single[i] - full) for i, node in enumerate(nodes)}
    tolerance = threshold * abs(full - empty)
    keep = np.ones(n, bool)
    while keep.any():
        changes = np.abs(run(keep[None] & singles) - full)
        changes[~keep] = np.inf  # already ablated
        best = int(np.argmin(changes))
        if not changes[best] <= tolerance:
            break
        keep[best] = False
    return frozenset(node for node, kept in zip(nodes, keep) if kept), effects
