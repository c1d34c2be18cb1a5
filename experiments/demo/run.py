"""The demo and `jaxinterp explain`: word and phrase attributions for a fine-tuned MiniLM classifier (paper P1).

`python -m experiments.demo [TEXT] [--html PATH]` (also `make demo`, `jaxinterp demo`), and
`jaxinterp explain TEXT --task sst2|agnews [--method cd|hierarchical|shap|lime|ig|occlusion] [--html PATH]`.

The classifier is all-MiniLM-L6-v2 with its top blocks and a head fine-tuned on the task
(`models.text_classifiers`). When the fine-tuned classifier is not cached yet, the small stand-in
(`FineTuning.quick()`, about two minutes to fine-tune on 2 cores) is used and the command says how to make the full
one. The method scores every word for the predicted class (`jaxinterp.attribution.attribute`); with CD-T, every
phrase of two or three words is scored in the same sweep. Compiled programs go to JAX's persistent cache, so runs
after the first skip most compilation.
"""

import pathlib
import time

import jax
import numpy as np

from experiments.record import results_dir, write_results
from jaxinterp import attribution
from models import text_classifiers

SLUG = "demo"
DEFAULT_TEXT = "the acting is superb , but the plot is painfully slow and utterly predictable ."
MAX_TOKENS = 128
PHRASE_WIDTH = 3
TASK_NAMES = {"sst2": "SST-2", "agnews": "AG News"}


def classifier_for(task: str, choice: str = "auto"):
    """The classifier `explain` uses: `choice` `"full"` (the fine-tuned one, fine-tuned now if not cached),
    `"stand-in"` (`FineTuning.quick()`), or `"auto"` (the full one if cached, else the stand-in).

    **Returns:** `(classifier, tokenizer, info)` with `info["classifier"]` naming which.
    """
    if choice not in ("auto", "full", "stand-in"):
        raise ValueError(f"choice is 'auto', 'full' or 'stand-in', got {choice!r}")
    full = text_classifiers.DEFAULTS[task]
    use_full = choice == "full" or (choice == "auto" and text_classifiers.cache_path(task, full).exists())
    config = full if use_full else text_classifiers.FineTuning.quick()
    if not use_full:
        print(
            f"Using the small stand-in {task} classifier (one fine-tuned block). For the full one run "
            f"`python -m experiments.cdt_local_attribution.fine_tune --task {task}` once."
        )
    classifier, tokenizer, info = text_classifiers.text_classifier(task, config)
    return classifier, tokenizer, {**info, "classifier": "fine-tuned" if use_full else "stand-in"}


def explain(classifier, tokenizer, text: str, *, task: str = "sst2", method: str = "cd") -> dict:
    """Attribute `classifier`'s prediction on `text` to its words (and, for CD-T, its phrases).

    **Returns:** `{"prediction", "probability", "method", "words": [(word, score)], "phrases": [(phrase, score)],
    "seconds"}`; `phrases` is empty for methods other than CD-T.
    """
    prepared = attribution.Text.from_encoding(tokenizer.encode(text), max_tokens=MAX_TOKENS)
    max_width = PHRASE_WIDTH if method in ("cd", "cdt") else 1
    result = attribution.attribute(classifier, prepared, method, max_width=max_width)
    probabilities = np.asarray(jax.nn.softmax(result.logits))
    phrases = [(" ".join(prepared.names[a:b]), score) for (a, b), score in (result.spans or {}).items() if b - a > 1]
    return {
        "prediction": text_classifiers.TASK_LABELS[task][result.target],
        "probability": float(probabilities[result.target]),
        "method": result.method,
        "words": [(w, float(s)) for w, s in zip(prepared.names, result.scores)],
        "phrases": phrases,
        "seconds": result.seconds,
    }


def _colour(text: str, score: float, scale: float) -> str:
    level = min(int(abs(score) / scale * 5 + 0.5), 5)
    shades = (231, 224, 217, 210, 203, 196) if score > 0 else (231, 195, 159, 123, 87, 51)
    return f"\033[48;5;{shades[level]}m\033[30m {text} \033[0m"


def main(
    text: str | None = None,
    html_path: pathlib.Path | str | None = None,
    *,
    task: str = "sst2",
    method: str = "cd",
    classifier: str = "auto",
) -> dict:
    """Print the attributions of `text` (a built-in sentence by default), write them as an HTML heatmap (default
    `results/demo/demo.html`) and as `results/demo/results.json`.

    **Returns:** the result of `explain`, with the classifier's held-out accuracy and which classifier it was.
    """
    started = time.time()
    text = text or DEFAULT_TEXT
    html_path = pathlib.Path(html_path) if html_path else results_dir(SLUG) / "demo.html"
    model, tokenizer, info = classifier_for(task, classifier)
    result = explain(model, tokenizer, text, task=task, method=method)
    scale = max(abs(s) for _, s in result["words"]) or 1.0
    print(
        f"\nMiniLM {TASK_NAMES[task]} classifier, {info['classifier']} (held-out accuracy {info['heldout_accuracy']:.3f})"
    )
    print(f"Text: {text}\nPrediction: {result['prediction']} (p = {result['probability']:.2f})\n")
    method_name = attribution.METHOD_NAMES[result["method"]]
    print(f"{method_name} word scores (red: for the prediction, blue: against), {result['seconds']:.2f} s:")
    print(" ".join(_colour(w, s, scale) for w, s in result["words"]))
    if result["phrases"]:
        print("\nStrongest phrases:")
        for phrase, s in sorted(result["phrases"], key=lambda p: -abs(p[1]))[:6]:
            print(f"  {s:+7.3f}  {phrase}")
    words, scores = zip(*result["words"])
    page = attribution.render.heatmap_html(
        words,
        scores,
        title=f"{method_name} attributions, MiniLM {TASK_NAMES[task]} classifier ({info['classifier']})",
        subtitle=f"prediction: {result['prediction']} ({result['probability']:.2f}); red supports it, blue opposes it",
    )
    attribution.render.write_html(html_path, page)
    result = {**result, "text": text, "heldout_accuracy": info["heldout_accuracy"], "classifier": info["classifier"]}
    write_results(SLUG, {"text": text, "task": task, "method": method}, result, started=started)
    print(f"\nWrote {html_path} and {results_dir(SLUG) / 'results.json'}")
    return result
