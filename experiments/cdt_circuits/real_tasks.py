"""The real-model tasks of the circuit experiment: indirect-object identification on SmolLM2-135M and sentence
classification (SST-2 sentiment, AG News topic) on all-MiniLM-L6-v2 with a logistic-regression head.

Each task is a `CircuitTask`: a model of one example, a clean batch and a corrupted (reference) batch of its
positional inputs, a metric of the batched outputs (higher means more of the task behaviour) and the same formula as
a score of CD-T's relevant part of the outputs.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
import models
from models import text_classifiers
from models.transformer import LastPosition


class CircuitTask(NamedTuple):
    """A task for circuit discovery on a real model.

    **Fields:**

    - `name`: the task's name (`smollm2_ioi`, `minilm_sst2`, `minilm_agnews`).
    - `model`: an equinox Module for one example, called as `model(*one_example_of_inputs)`.
    - `inputs`: the clean batch, a tuple of positional arguments of `model`, each with a leading batch axis.
    - `corrupted_inputs`: the corrupted or reference batch, shaped as `inputs`.
    - `metric`: a function of the batched outputs (`jax.vmap(model)(*inputs)`) returning a scalar; higher means more
      of the task behaviour.
    - `score`: the same formula as a function of the batched relevant part of the outputs (CD-T's `rel`).
    - `info`: what a report needs (metric values on the clean and corrupted batches, accuracy, sizes, ...).
    """

    name: str
    model: Any
    inputs: tuple
    corrupted_inputs: tuple
    metric: Callable[[jax.Array], jax.Array]
    score: Callable[[jax.Array], jax.Array]
    info: dict


@eqx.filter_jit
def _vmapped(model, *inputs):
    return jax.vmap(lambda *args: model(*args))(*inputs)


def _run(model, inputs: tuple) -> jax.Array:
    """`jax.vmap(model)(*inputs)`, compiled once per model structure and input shapes."""
    return _vmapped(model, *inputs)


# ----------------------------------------------------------------------------------------------------------------
# IOI on SmolLM2-135M

IOI_TEMPLATES = (
    "Then, {A} and {B} went to the store. {S} gave a drink to",
    "Then, {A} and {B} went to the park. {S} gave a ball to",
    "Then, {A} and {B} went to the garden. {S} gave a flower to",
    "Then, {A} and {B} went to the school. {S} gave a book to",
    "Then, {A} and {B} went to the restaurant. {S} passed the salt to",
    "While {A} and {B} were working at the hospital, {S} gave a letter to",
    "Friends {A} and {B} found a necklace at the garden. {S} gave it to",
    "When {A} and {B} went to the big store, {S} gave a drink to",
)
"""IOI templates (after Wang et al. 2022): `{A}` and `{B}` are the first mentions of the two names, `{S}` the second
mention of the subject; the answer (the indirect object) would follow. With one-token names they all have the same
length in SmolLM2's tokenizer."""

IOI_NAMES = (
    "Mary", "John", "Alice", "Bob", "Tom", "James", "Michael", "David", "Sarah", "Emma", "Anna", "Paul", "Mark",
    "Peter", "Kate", "Lisa", "Jack", "Susan", "Robert", "William", "Richard", "Thomas", "Daniel", "Matthew",
    "Andrew", "Joseph", "Charles", "George", "Edward", "Henry", "Laura", "Rachel", "Jessica", "Emily", "Amy",
    "Helen", "Linda", "Karen", "Nancy", "Jane", "Sam", "Ben", "Adam", "Ryan", "Kevin", "Brian", "Eric", "Steven",
    "Jason", "Chris", "Mike", "Joe", "Tim", "Luke", "Max", "Alex", "Rose", "Grace", "Lucy", "Sophie", "Claire",
    "Julia", "Maria", "Anne", "Kelly", "Michelle", "Nicole", "Jennifer", "Elizabeth", "Patrick", "Frank", "Scott",
    "Harry", "Oliver", "Jacob", "Ethan", "Noah", "Olivia", "Ella", "Ian", "Tony", "Victoria", "Diana", "Martin",
    "Simon", "Liam", "Ava",
)  # fmt: skip
"""Candidate first names; those that are not one token with a leading space in the tokenizer are dropped."""


def one_token_names(tokenizer, names=IOI_NAMES) -> dict[str, int]:
    """The names of `names` that `tokenizer` encodes as one token with a leading space.

    **Returns:** `{name: token id of " name"}`, in the order of `names`.
    """
    kept = {}
    for name in names:
        ids = tokenizer.encode(" " + name, add_special_tokens=False).ids
        if len(ids) == 1:
            kept[name] = ids[0]
    return kept


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False).ids


def _equal_length_templates(tokenizer, templates, name: str) -> tuple[list[str], int]:
    """The largest group of `templates` of one token length with one-token names (ties: the group of the earliest
    template). **Returns:** `(templates, length)`."""
    groups: dict[int, list[str]] = {}
    for template in templates:
        groups.setdefault(len(_encode(tokenizer, template.format(A=name, B=name, S=name))), []).append(template)
    length = max(groups, key=lambda n: (len(groups[n]), -templates.index(groups[n][0])))
    return groups[length], length


def _logit_difference(io: jax.Array, s: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """The mean over prompts of `x[:, -1, io] - x[:, -1, s]`, for `x` of shape `[batch, positions, vocab]`."""

    def logit_difference(x):
        last = x[:, -1]
        rows = jnp.arange(last.shape[0])
        return jnp.mean(last[rows, io] - last[rows, s])

    return logit_difference


def smollm2_ioi(n_prompts: int = 16, seed: int = 0, *, loaded: tuple | None = None) -> CircuitTask:
    """Indirect-object identification (Wang et al. 2022) on SmolLM2-135M-Instruct.

    Prompt `i` uses template `(i // 2) % T` of the equal-length group of `IOI_TEMPLATES`, with the indirect object
    named first (ABBA) for even `i` and second (BABA) for odd `i`, and two distinct names drawn (seeded) from the
    one-token names. Its corruption is the standard ABC prompt: the same template with three distinct names, all
    different from the clean prompt's two, so the answer cannot be read from it.

    **Arguments:**

    - `n_prompts`: the number of prompts.
    - `seed`: seeds the choice of names.
    - `loaded`: `(model, tokenizer)` as `models.load_smollm2()` returns them (loaded when omitted).

    **Returns:** a `CircuitTask` named `smollm2_ioi` whose model is `LastPosition(SmolLM2)` (logits `[1, vocab]`),
    inputs `(tokens,)` (int `[n_prompts, seq]`), metric and score the mean logit difference
    `logits[-1, IO] - logits[-1, S]` of `[batch, 1, vocab]` outputs. `info` holds `clean_logit_diff`,
    `fraction_positive`, `corrupted_logit_diff`, `n_prompts`, `seq_len`, `templates`, `names`, `prompts`,
    `corrupted_prompts`, `io_tokens`, `s_tokens`.

    **Raises:** `ValueError` for fewer than one prompt, too few one-token names, a prompt that does not tokenise to
    the template's length, or a model that does not prefer the indirect object on average.
    """
    if n_prompts < 1:
        raise ValueError(f"smollm2_ioi: n_prompts must be at least 1, got {n_prompts}")
    model, tokenizer = loaded if loaded is not None else models.load_smollm2()
    names = one_token_names(tokenizer)
    if len(names) < 5:
        raise ValueError(f"smollm2_ioi: only {len(names)} of the candidate names are one token: {list(names)}")
    templates, seq_len = _equal_length_templates(tokenizer, IOI_TEMPLATES, next(iter(names)))
    name_list = list(names)
    rng = np.random.default_rng(seed)
    clean, corrupted, prompts, corrupted_prompts, io_tokens, s_tokens = [], [], [], [], [], []
    for i in range(n_prompts):
        template = templates[(i // 2) % len(templates)]
        io, s, c_a, c_b, c_s = (name_list[j] for j in rng.choice(len(name_list), 5, replace=False))
        a, b = (io, s) if i % 2 == 0 else (s, io)
        for text, rows, texts in (
            (template.format(A=a, B=b, S=s), clean, prompts),
            (template.format(A=c_a, B=c_b, S=c_s), corrupted, corrupted_prompts),
        ):
            ids = _encode(tokenizer, text)
            if len(ids) != seq_len:
                raise ValueError(f"smollm2_ioi: {text!r} is {len(ids)} tokens, expected {seq_len}")
            rows.append(ids)
            texts.append(text)
        io_tokens.append(names[io])
        s_tokens.append(names[s])
    tokens = jnp.asarray(clean, jnp.int32)
    corrupted_tokens = jnp.asarray(corrupted, jnp.int32)
    metric = _logit_difference(jnp.asarray(io_tokens), jnp.asarray(s_tokens))
    last = LastPosition(model)
    clean_last = np.asarray(_run(last, (tokens,))[:, -1])
    rows = np.arange(n_prompts)
    differences = clean_last[rows, io_tokens] - clean_last[rows, s_tokens]
    clean_value = float(differences.mean())
    corrupted_value = float(metric(_run(last, (corrupted_tokens,))))
    if not clean_value > 0:
        raise ValueError(
            f"smollm2_ioi: the model does not prefer the indirect object: mean logit difference "
            f"{clean_value:.3f} over {n_prompts} prompts (positive on {float((differences > 0).mean()):.0%})"
        )
    info = {
        "clean_logit_diff": clean_value,
        "fraction_positive": float((differences > 0).mean()),
        "corrupted_logit_diff": corrupted_value,
        "n_prompts": n_prompts,
        "seq_len": seq_len,
        "templates": list(templates),
        "names": name_list,
        "prompts": prompts,
        "corrupted_prompts": corrupted_prompts,
        "io_tokens": io_tokens,
        "s_tokens": s_tokens,
    }
    return CircuitTask("smollm2_ioi", last, (tokens,), (corrupted_tokens,), metric, metric, info)


# ----------------------------------------------------------------------------------------------------------------
# Sentence classification on MiniLM


def _unpadded(tokenizer):
    """A copy of `tokenizer` with padding switched off (so that `len(encoding.ids)` is the true length)."""
    import tokenizers

    copy = tokenizers.Tokenizer.from_str(tokenizer.to_str())
    copy.no_padding()
    return copy


def _margin(rel: jax.Array, total: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(ji.classification_score(rel, total, labels))


def _classification_task(
    name: str, classifier, tokenizer, texts, labels, classes, n: int, seed: int, max_tokens: int, head_info: dict
) -> CircuitTask:
    """A classification `CircuitTask` on `n` held-out `texts` of at most `max_tokens` tokens, cycling through the
    classes, with a reference batch of other held-out texts each of a different class than its clean text."""
    if n < 1:
        raise ValueError(f"{name}: n must be at least 1, got {n}")
    n_classes = len(classes)
    labels = np.asarray(labels)
    encodings = _unpadded(tokenizer).encode_batch(list(texts))
    short = np.asarray([len(e.ids) <= max_tokens for e in encodings])
    rng = np.random.default_rng(seed)
    pools = {c: list(rng.permutation(np.flatnonzero((labels == c) & short))) for c in range(n_classes)}
    clean_labels = np.arange(n) % n_classes
    corrupted_labels = (clean_labels + 1 + rng.integers(0, n_classes - 1, n)) % n_classes
    needed = np.bincount(np.concatenate([clean_labels, corrupted_labels]), minlength=n_classes)
    for c in range(n_classes):
        if needed[c] > len(pools[c]):
            raise ValueError(
                f"{name}: {needed[c]} texts of class {classes[c]!r} needed, but only {len(pools[c])} held-out texts "
                f"of that class have at most {max_tokens} tokens; lower n or raise max_tokens"
            )
    clean_rows = [pools[c].pop() for c in clean_labels]
    corrupted_rows = [pools[c].pop() for c in corrupted_labels]
    width = max(len(encodings[r].ids) for r in clean_rows + corrupted_rows)
    pad = tokenizer.token_to_id("[PAD]")

    def batch(rows):
        ids = np.full((len(rows), width), pad, np.int32)
        mask = np.zeros((len(rows), width), np.float32)
        for i, r in enumerate(rows):
            length = len(encodings[r].ids)
            ids[i, :length], mask[i, :length] = encodings[r].ids, 1.0
        return jnp.asarray(ids), jnp.asarray(mask)

    inputs, corrupted_inputs = batch(clean_rows), batch(corrupted_rows)
    target = jnp.asarray(clean_labels, jnp.int32)
    clean_logits = _run(classifier, inputs)
    corrupted_logits = _run(classifier, corrupted_inputs)

    def metric(logits):
        return _margin(logits, logits, target)

    def score(rel):
        return _margin(rel, clean_logits, target)

    predictions = np.asarray(jnp.argmax(clean_logits, -1))
    info = {
        "clean_margin": float(metric(clean_logits)),
        "corrupted_margin": float(metric(corrupted_logits)),
        "accuracy": float((predictions == clean_labels).mean()),
        "corrupted_accuracy": float((np.asarray(jnp.argmax(corrupted_logits, -1)) == corrupted_labels).mean()),
        "n": n,
        "seq_len": width,
        "max_tokens": max_tokens,
        "classes": list(classes),
        "labels": clean_labels.tolist(),
        "corrupted_labels": corrupted_labels.tolist(),
        "texts": [texts[r] for r in clean_rows],
        "corrupted_texts": [texts[r] for r in corrupted_rows],
        **head_info,
    }
    return CircuitTask(name, classifier, inputs, corrupted_inputs, metric, score, info)


def minilm_sentiment(n: int = 32, seed: int = 0, *, max_tokens: int = 32) -> CircuitTask:
    """SST-2 sentiment on MiniLM with the frozen-feature logistic-regression head
    (`models.text_classifiers.frozen_head_classifier("sst2")`, fitted on first use and cached).

    The clean batch is `n` SST-2 dev sentences (never trained on) of at most `max_tokens` tokens, alternating
    negative and positive, drawn with `seed`; the reference batch is `n` other dev sentences, each of the other
    class than its clean sentence. Both are padded to one length with `[PAD]` and a zero attention mask.

    **Arguments:** `n` (sentences per batch), `seed`, `max_tokens` (the longest sentence allowed, `[CLS]` and
    `[SEP]` included).

    **Returns:** a `CircuitTask` named `minilm_sst2` whose model is a `SentenceClassifier` called as
    `model(tokens, attention_mask)` (logits `[2]`), inputs `(tokens, attention_mask)` (`[n, seq]`), metric the mean
    classification margin `logit[label] - max other logit` (`jaxinterp.classification_score`) and score the same
    with the competitor fixed by the clean logits. `info` holds `clean_margin`, `corrupted_margin` (the clean labels'
    margin on the reference batch), `accuracy`, `corrupted_accuracy` (against the reference batch's own labels), the
    head's `heldout_accuracy` (GLUE dev) and cache path, the texts and labels. The encoder is post-norm (BERT): only node-level
    methods apply.
    """
    classifier, tokenizer, head_info = text_classifiers.frozen_head_classifier("sst2")
    texts, labels = ji.data.sst2("dev")
    return _classification_task(
        "minilm_sst2", classifier, tokenizer, texts, labels, ("negative", "positive"), n, seed, max_tokens, head_info
    )


def minilm_news(n: int = 32, seed: int = 0, *, max_tokens: int = 48) -> CircuitTask:
    """AG News topic classification on MiniLM with the frozen-feature logistic-regression head
    (`models.text_classifiers.frozen_head_classifier("agnews")`, fitted on
    first use and cached).

    The clean batch is `n` articles from the held-out part of `jaxinterp.data.ag_news_split(seed=0)` of at most
    `max_tokens` tokens, cycling through the four classes, drawn with `seed`; the reference batch is `n` other
    held-out articles, each of a class (drawn at random) other than its clean article's. Both are padded to one
    length.

    **Arguments:** `n` (articles per batch), `seed`, `max_tokens` (the longest article allowed, `[CLS]` and `[SEP]`
    included).

    **Returns:** a `CircuitTask` named `minilm_agnews`, as `minilm_sentiment` but with four classes
    (`jaxinterp.data.AG_NEWS_CLASSES`) and the head's `heldout_accuracy` in `info`.
    """
    classifier, tokenizer, head_info = text_classifiers.frozen_head_classifier("agnews")
    _, (texts, labels) = ji.data.ag_news_split(seed=0)
    return _classification_task(
        "minilm_agnews", classifier, tokenizer, texts, labels, ji.data.AG_NEWS_CLASSES, n, seed, max_tokens, head_info
    )
