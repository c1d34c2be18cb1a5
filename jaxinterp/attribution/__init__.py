"""Local attributions: how much each word of a text moves a classifier's prediction (`docs/attribution.md`).

One calling convention for every method:

    text = attribution.Text.from_encoding(tokenizer.encode("a gripping , funny film"))
    result = attribution.attribute(classifier, text, method="cd")      # or "hierarchical", "shap", "lime",
    result.scores                                                       #    "ig", "occlusion"

`classifier(tokens, attention_mask) -> logits` is one text's classifier (`models.SentenceClassifier`). Each method
scores the text's features (words) for the margin `logits[target] - logits[competitor]`; positive scores support the
target. `curves` measures how faithful the scores are (deletion and insertion, AOPC), `mine_phrases` finds the
phrases a model leans on across a data set, and `render` draws token heatmaps.
"""

import dataclasses
import time

import jax
import numpy as np

from ..cdt.rules import Rules
from . import render as render
from .contrast import mine_phrases as mine_phrases
from .decomposition import cd_hierarchy as cd_hierarchy
from .decomposition import cd_spans as cd_spans
from .decomposition import source_margins as source_margins
from .decomposition import word_spans as word_spans
from .faithfulness import FRACTIONS as FRACTIONS
from .faithfulness import Curves as Curves
from .faithfulness import curves as curves
from .gradients import integrated_gradients as integrated_gradients
from .lime import lime as lime
from .perturbation import logits_with as logits_with
from .perturbation import margins_with as margins_with
from .perturbation import occlusion as occlusion
from .perturbation import value_function as value_function
from .shapley import exact_shapley as exact_shapley
from .shapley import kernel_shap as kernel_shap
from .text import Text as Text
from .text import competitor_of as competitor_of

METHODS = ("cd", "hierarchical", "shap", "lime", "ig", "occlusion")
METHOD_NAMES = {
    "cd": "CD-T",
    "hierarchical": "hierarchical CD-T",
    "shap": "KernelSHAP",
    "lime": "LIME",
    "ig": "integrated gradients",
    "occlusion": "occlusion",
}
"""How each method is named in tables and pictures."""
ALIASES = {"cdt": "cd", "kernel_shap": "shap", "integrated_gradients": "ig", "acd": "hierarchical"}


@dataclasses.dataclass(frozen=True)
class Attribution:
    """What `attribute` returns.

    **Fields:** `method`; `scores` (`[n_features]`, the text's features in order); `names` (the features' text);
    `logits` (`[classes]`, on the full text); `target`, `competitor` (classes) and `margin` (their logit difference
    on the full text); `evaluations` (model
    evaluations used: forwards, gradients or decomposed source sets); `seconds` (wall time, compilation included on
    a text width's first call); `spans` (`{(start, stop): score}` of every span up to `max_width` words, CD-T); `hierarchy` (levels
    of `((start, stop), score)`, hierarchical CD-T); `completeness_gap` (integrated gradients' quadrature error).
    """

    method: str
    scores: np.ndarray
    names: tuple[str, ...]
    logits: np.ndarray
    target: int
    competitor: int
    margin: float
    evaluations: int
    seconds: float
    spans: dict | None = None
    hierarchy: list | None = None
    completeness_gap: float | None = None


def attribute(
    f,
    text: Text,
    method: str = "cd",
    *,
    target: int | None = None,
    budget: int = 256,
    max_width: int = 1,
    removal: str | int = "drop",
    baseline: int | str = 0,
    key=None,
    rules: Rules = Rules(),
) -> Attribution:
    """Attribute `f`'s prediction on `text` to the text's features.

    **Arguments:**

    - `f`: `f(tokens [seq], attention_mask [seq]) -> logits [classes]`; CD-T and integrated gradients also need it
      to tag its embeddings `embed` (every transformer in `models` does).
    - `text`: a `Text` (`Text.from_encoding(tokenizer.encode(...))`).
    - `method`: `"cd"` (CD-T), `"hierarchical"` (agglomerative CD-T), `"shap"` (KernelSHAP), `"lime"`, `"ig"`
      (integrated gradients) or `"occlusion"`.
    - `target`: the class to explain; the predicted class by default.
    - `budget`: model evaluations for the sampling and path methods: KernelSHAP's and LIME's samples, integrated
      gradients' steps.
    - `max_width`: CD-T also scores every span of up to this many words (`Attribution.spans`), in the same sweep.
    - `removal`: how SHAP, LIME and occlusion remove a word: `"drop"` (masked out of attention and pooling) or a
      token id put in its place.
    - `baseline`: integrated gradients' baseline, a token id or `"zero"`.
    - `key`: a JAX key for KernelSHAP and LIME (default `jax.random.key(0)`: same text, same scores).
    - `rules`: CD-T's rule variants.

    **Returns:** an `Attribution`.
    """
    method = ALIASES.get(method, method)
    if method not in METHODS:
        import difflib

        close = difflib.get_close_matches(method, METHODS + tuple(ALIASES), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown attribution method {method!r}{hint} Methods: {', '.join(METHODS)}")
    if budget < 1:
        raise ValueError(f"budget must be at least 1, got {budget}")
    started = time.perf_counter()
    logits = np.asarray(f(jax.numpy.asarray(text.tokens), jax.numpy.asarray(text.attention_mask)))
    if not np.isfinite(logits).all():
        raise FloatingPointError(f"the classifier's logits on this text are not finite: {logits}")
    n_classes = logits.shape[-1]
    target = int(np.argmax(logits)) if target is None else int(target)
    if not 0 <= target < n_classes:
        raise ValueError(f"target {target} is out of range for {n_classes} classes")
    competitor = competitor_of(logits, target)
    key = jax.random.key(0) if key is None else key
    extra = {}
    n = text.n_features
    if method == "cd":
        spans = cd_spans(f, text, target, competitor, max_width, rules)
        scores = np.array([spans[(i, i + 1)] for i in range(n)])
        evaluations = len(spans)
        extra["spans"] = spans
    elif method == "hierarchical":
        levels = cd_hierarchy(f, text, target, competitor, rules)
        scores = np.array([s for _, s in levels[0]])
        evaluations = n + sum(len(level) - 1 for level in levels[:-1])
        extra["hierarchy"] = levels
    elif method == "ig":
        scores, gap = integrated_gradients(f, text, target, competitor, steps=budget, baseline=baseline)
        evaluations = budget
        extra["completeness_gap"] = gap
    else:
        value = value_function(f, text, target, competitor, removal=removal)
        if method == "occlusion":
            scores = occlusion(f, text, target, competitor, removal=removal)
            evaluations = n + 1
        elif method == "shap":
            scores = np.asarray(kernel_shap(value, n, n_samples=budget, key=key))
            evaluations = min(budget, 2**n - 2) + 2
        else:
            scores = np.asarray(lime(value, n, n_samples=budget, key=key))
            evaluations = budget
    return Attribution(
        method,
        np.asarray(scores, np.float64),
        text.names,
        logits,
        target,
        competitor,
        float(logits[target] - logits[competitor]),
        int(evaluations),
        time.perf_counter() - started,
        **extra,
    )
