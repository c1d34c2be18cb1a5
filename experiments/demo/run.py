"""The demo: CD-T word and phrase attributions for an SST-2 sentiment classifier on MiniLM (paper P1).

`python -m experiments.demo [TEXT] [--html PATH]` (also `make demo`, `jaxinterp demo`).

The classifier is the real all-MiniLM-L6-v2 encoder with mean pooling and a logistic-regression head trained on
SST-2 sentences; the head is trained on first use (about a minute on 2 cores) and cached. For each word and each
phrase of 2-3 words, contextual decomposition (`jaxinterp.cd`, source = those token positions at `embed`) gives
the relevant part of the logits, scored as `rel[predicted] - rel[other class]` (`jaxinterp.classification_score`).
All words and phrases are decomposed in one `jax.vmap` over source masks.
"""

import html
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinterp as ji
import models
from experiments.record import results_dir, write_results
from models.sentence_classifier import SentenceClassifier, mean_pooled_features

SLUG = "demo"
DEFAULT_TEXT = "the acting is superb , but the plot is painfully slow and utterly predictable ."
LABELS = ("negative", "positive")
HEAD_FILE = "sst2_minilm_head.npz"
TRAIN_SENTENCES = 4000
MAX_TOKENS = 64


def _features(encoder, tokenizer, texts, batch=64):
    """Mean-pooled MiniLM features of `texts`, in batches of similar length padded to a multiple of 16 tokens
    (few distinct shapes to compile, little padding)."""
    from tqdm import tqdm

    encodings = tokenizer.encode_batch(list(texts))
    order = np.argsort([len(e.ids) for e in encodings])
    features = np.zeros((len(texts), encoder.cfg.d_model), np.float32)
    for start in tqdm(range(0, len(texts), batch), desc="MiniLM features", unit="batch", leave=False):
        rows = order[start : start + batch]
        width = min(MAX_TOKENS, -(-max(len(encodings[r].ids) for r in rows) // 16) * 16)
        ids = np.zeros((batch, width), np.int32)
        mask = np.zeros((batch, width), np.float32)
        for i, r in enumerate(rows):
            n = min(len(encodings[r].ids), width)
            ids[i, :n], mask[i, :n] = encodings[r].ids[:n], 1.0
        features[rows] = np.asarray(mean_pooled_features(encoder, jnp.asarray(ids), jnp.asarray(mask)))[: len(rows)]
    return features


def sst2_classifier(seed: int = 0) -> tuple[SentenceClassifier, "tokenizers.Tokenizer", dict]:  # noqa: F821
    """MiniLM with an SST-2 logistic-regression head, trained on first use and cached in the jaxinterp cache.

    The head is fitted on the full-sentence rows of the SST-2 training split (the first `TRAIN_SENTENCES` of them
    after a seeded shuffle) and scored on the dev split.

    **Returns:** `(classifier, tokenizer, info)` with `info` holding the dev accuracy and the cache path.
    """
    from sklearn.linear_model import LogisticRegression

    encoder, tokenizer = models.load("minilm-l6")
    path = ji.assets.cache_dir() / HEAD_FILE
    if path.exists():
        stored = np.load(path)
        weight, bias, accuracy = stored["weight"], stored["bias"], float(stored["dev_accuracy"])
    else:
        print(f"Training the SST-2 head on MiniLM features (first run only; cached at {path}) ...")
        sentences, labels = ji.data.sst2("train")
        order = np.random.default_rng(seed).permutation(len(sentences))
        chosen = [i for i in order if len(sentences[i].split()) >= 6][:TRAIN_SENTENCES]
        train_x = _features(encoder, tokenizer, [sentences[i] for i in chosen])
        fit = LogisticRegression(C=10.0, max_iter=2000).fit(train_x, labels[chosen])
        dev_sentences, dev_labels = ji.data.sst2("dev")
        accuracy = float(fit.score(_features(encoder, tokenizer, dev_sentences), dev_labels))
        weight = np.concatenate([-fit.coef_, fit.coef_]).astype(np.float32) / 2
        bias = np.array([-fit.intercept_[0], fit.intercept_[0]], np.float32) / 2
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, weight=weight, bias=bias, dev_accuracy=accuracy)
    classifier = SentenceClassifier(encoder, jnp.asarray(weight), jnp.asarray(bias))
    return classifier, tokenizer, {"dev_accuracy": accuracy, "head": str(path)}


def spans_of(encoding, max_width: int = 3) -> tuple[list[tuple[str, list[int]]], list[tuple[str, list[int]]]]:
    """Words (word pieces grouped, special tokens dropped) and phrases of 2..`max_width` consecutive words,
    each as `(text, token positions)`."""
    pieces: dict[int, list[int]] = {}
    for position, word in enumerate(encoding.word_ids):
        if word is not None:
            pieces.setdefault(word, []).append(position)
    words = [(" ".join(encoding.tokens[p] for p in ps).replace(" ##", ""), ps) for ps in pieces.values()]
    phrases = [
        (" ".join(w for w, _ in words[i : i + n]), [p for _, ps in words[i : i + n] for p in ps])
        for n in range(2, max_width + 1)
        for i in range(len(words) - n + 1)
    ]
    return words, phrases


def explain(classifier: SentenceClassifier, tokenizer, text: str) -> dict:
    """CD-T scores of every word and short phrase of `text` for the classifier's predicted class.

    **Returns:** `{"prediction", "probability", "words": [(word, score)], "phrases": [(phrase, score)]}`.
    """
    encoding = tokenizer.encode(text)
    tokens = jnp.asarray(encoding.ids)
    words, phrases = spans_of(encoding)
    spans = words + phrases
    masks = jnp.stack([ji.position_mask(ps, tokens.shape[0]) for _, ps in spans])
    logits = eqx.filter_jit(lambda m: m(tokens))(classifier)
    label = int(jnp.argmax(logits))

    def score(m, mask):
        rel, irr = ji.cd(m, ji.Site("embed", mask))(tokens)
        return ji.classification_score(rel, rel + irr, label)

    scores = np.asarray(eqx.filter_jit(jax.vmap(score, in_axes=(None, 0)))(classifier, masks))
    return {
        "prediction": LABELS[label],
        "probability": float(jax.nn.softmax(logits)[label]),
        "words": [(w, float(s)) for (w, _), s in zip(words, scores[: len(words)])],
        "phrases": [(p, float(s)) for (p, _), s in zip(phrases, scores[len(words) :])],
    }


def _colour(text: str, score: float, scale: float) -> str:
    level = min(int(abs(score) / scale * 5 + 0.5), 5)
    shades = (231, 224, 217, 210, 203, 196) if score > 0 else (231, 195, 159, 123, 87, 51)
    return f"\033[48;5;{shades[level]}m\033[30m {text} \033[0m"


def write_html(path: pathlib.Path, text: str, result: dict) -> None:
    """Write the word attributions as a coloured HTML page and the phrase scores as a table."""
    scale = max(abs(s) for _, s in result["words"]) or 1.0
    cells = "".join(
        f'<span title="{s:+.3f}" style="background:rgba({"200,30,30" if s > 0 else "30,90,220"},'
        f'{min(abs(s) / scale, 1):.2f});padding:2px 5px;margin:1px;border-radius:3px">{html.escape(w)}</span>'
        for w, s in result["words"]
    )
    top = sorted(result["phrases"], key=lambda p: -abs(p[1]))[:8]
    rows = "".join(f"<tr><td>{html.escape(p)}</td><td>{s:+.3f}</td></tr>" for p, s in top)
    path.write_text(
        f"<html><body style='font-family:sans-serif'><h3>CD-T attributions, MiniLM SST-2 classifier</h3>"
        f"<p>{html.escape(text)}<br>prediction: <b>{result['prediction']}</b> ({result['probability']:.2f}); "
        f"red supports it, blue opposes it</p><p style='font-size:22px'>{cells}</p>"
        f"<table><tr><th>phrase</th><th>score</th></tr>{rows}</table></body></html>"
    )


def main(text: str | None = None, html_path: pathlib.Path | str | None = None) -> dict:
    """Print CD-T attributions of `text` (a built-in sentence by default), write them as HTML (default
    `results/demo/demo.html`) and as `results/demo/results.json`.

    **Returns:** the result of `explain`, with the classifier's dev accuracy.
    """
    started = time.time()
    text = text or DEFAULT_TEXT
    html_path = pathlib.Path(html_path) if html_path else results_dir(SLUG) / "demo.html"
    classifier, tokenizer, info = sst2_classifier()
    result = explain(classifier, tokenizer, text)
    scale = max(abs(s) for _, s in result["words"]) or 1.0
    print(f"\nMiniLM + SST-2 head (dev accuracy {info['dev_accuracy']:.3f})")
    print(f"Text: {text}\nPrediction: {result['prediction']} (p = {result['probability']:.2f})\n")
    print("CD-T word scores (red: for the prediction, blue: against):")
    print(" ".join(_colour(w, s, scale) for w, s in result["words"]))
    print("\nStrongest phrases:")
    for phrase, s in sorted(result["phrases"], key=lambda p: -abs(p[1]))[:6]:
        print(f"  {s:+7.3f}  {phrase}")
    html_path.parent.mkdir(parents=True, exist_ok=True)
    write_html(html_path, text, result)
    result = {**result, "text": text, "dev_accuracy": info["dev_accuracy"]}
    write_results(SLUG, {"text": text, "head_sentences": TRAIN_SENTENCES}, result, started=started)
    print(f"\nWrote {html_path} and {results_dir(SLUG) / 'results.json'}")
    return result
