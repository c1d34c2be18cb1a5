"""Scoring circuits: ROC AUC against a known circuit, faithfulness, and MIB's integrated faithfulness (CPR, CMD).

Plain numpy. The model-facing part (running the model with only a set of edges or nodes kept) is the caller's: the
functions here take it as `evaluate(kept) -> float`, the faithfulness of that set.

Sources:

- MIB: Mueller, Geiger, Wiegreffe et al., "MIB: A Mechanistic Interpretability Benchmark", ICML 2025,
  arXiv:2504.13151, and its circuit-track evaluation code (`evaluate_area_under_curve` in the `MIB-circuit-track`
  repository): faithfulness, the circuit sizes, and CPR and CMD as trapezoid areas.
- ROC AUC with ties: the Mann-Whitney statistic with midranks, equal to the trapezoid area under the ROC curve that
  scikit-learn's `roc_auc_score` computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal

import numpy as np

MIB_EDGE_FRACTIONS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
"""The circuit sizes of MIB's circuit track: 0.1% to 100% of the candidates (edges, or nodes at node level)."""


def _midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of `values` ascending, tied values sharing the mean of their ranks (`-inf` ranks lowest)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # the rank of the last member of each tie group
    return (ends - (counts - 1) / 2)[inverse]


def rank_correlation(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Spearman's rank correlation of two score maps over the names they share (midranks for ties): how far two
    methods agree on which nodes or edges matter. `nan` when either is constant on the shared names."""
    names = sorted(set(a) & set(b))
    if len(names) < 2:
        raise ValueError(f"rank_correlation needs at least 2 shared names, got {len(names)}")
    x = _midranks(np.asarray([a[n] for n in names], float))
    y = _midranks(np.asarray([b[n] for n in names], float))
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator > 0 else float("nan")


def roc_auc(
    scores: Mapping[str, float],
    truth: Collection[str],
    candidates: Sequence[str] | None = None,
) -> float:
    """The area under the ROC curve of `scores` as a detector of the true set `truth`, over `candidates`.

    Candidates in `truth` are the positives, the others the negatives. The area is the probability that a random
    positive scores above a random negative, a tie counting one half: the Mann-Whitney `U / (P N)` with midranks,
    which equals the trapezoid area under the ROC curve with one point per distinct score, as scikit-learn's
    `roc_auc_score` computes it. Higher scores mean "more likely in the circuit".

    **Arguments:**

    - `scores`: a score per candidate (node names or edge keys).
    - `truth`: the true circuit's members; those outside `candidates` are ignored.
    - `candidates`: what is ranked; by default the keys of `scores`. A candidate missing from `scores` counts as
      score `-inf`: below every scored candidate, tied with the other unscored ones (a method that does not score a
      candidate is taken not to choose it).

    **Returns:** the area, in `[0, 1]` (1: every positive above every negative; 0.5: no better than chance).

    Raises `ValueError` when no candidate is in `truth`, when every candidate is, when a candidate repeats, or when a
    score is NaN.
    """
    candidates = list(scores) if candidates is None else list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError("roc_auc: the candidates repeat a name")
    truth = set(truth)
    labels = np.array([c in truth for c in candidates], dtype=bool)
    n_positive = int(labels.sum())
    n_negative = labels.size - n_positive
    if n_positive == 0:
        raise ValueError("roc_auc: no candidate is in the truth set (is the truth set empty, or named differently?)")
    if n_negative == 0:
        raise ValueError("roc_auc: the truth set covers every candidate, so there are no negatives")
    values = np.array([float(scores.get(c, -math.inf)) for c in candidates], dtype=np.float64)
    if np.isnan(values).any():
        raise ValueError("roc_auc: a score is NaN")
    ranks = _midranks(values)
    u = ranks[labels].sum() - n_positive * (n_positive + 1) / 2
    return float(u / (n_positive * n_negative))


def faithfulness(m_circuit, m_empty, m_full):
    """MIB's normalised faithfulness `(m(C) - m(empty)) / (m(N) - m(empty))` (arXiv:2504.13151).

    `m` is the task metric (e.g. a logit difference) with only the circuit `C` kept, with nothing kept (everything
    ablated), and with the full model `N`. 1 means the circuit recovers the model's metric, 0 that it does no
    better than the empty circuit. Not clipped: it can leave `[0, 1]`.

    **Arguments:**

    - `m_circuit`, `m_empty`, `m_full`: numbers or arrays, broadcast together.

    **Returns:** a float for scalar arguments, else an array. Raises `ValueError` where `m_full == m_empty` (the
    metric does not tell the model from the empty circuit, so the ratio is undefined).
    """
    circuit = np.asarray(m_circuit, dtype=np.float64)
    empty = np.asarray(m_empty, dtype=np.float64)
    full = np.asarray(m_full, dtype=np.float64)
    span = full - empty
    if np.any(span == 0):
        raise ValueError(
            "faithfulness: m_full equals m_empty, so the metric cannot tell the full model from the empty circuit"
        )
    result = (circuit - empty) / span
    return float(result) if result.ndim == 0 else result


def _trapezoid(fractions: Sequence[float] | np.ndarray, f, log_scale: bool, name: str):
    x = np.asarray(fractions, dtype=np.float64)
    y = np.asarray(f, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"{name}: needs at least two fractions")
    if y.shape[-1:] != x.shape:
        raise ValueError(f"{name}: f has {y.shape[-1] if y.ndim else 0} values along its last axis, {x.size} fractions")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"{name}: the fractions must increase")
    if log_scale:
        if np.any(x <= 0):
            raise ValueError(f"{name}: log_scale needs positive fractions")
        x = np.log(x)
    area = np.sum(np.diff(x) * (y[..., 1:] + y[..., :-1]) / 2, axis=-1)
    return float(area) if area.ndim == 0 else area


def cpr(fractions: Sequence[float] | np.ndarray, f, *, log_scale: bool = False):
    """MIB's circuit performance ratio: the area under the faithfulness curve.

    `CPR = sum_i (x_{i+1} - x_i) (f_i + f_{i+1}) / 2`, the trapezoid rule over the fractions `x_i` of kept
    candidates on a linear axis, as MIB's `evaluate_area_under_curve` computes it (its `area_under`): not normalised
    by the span of `x` (so with `MIB_EDGE_FRACTIONS`, `f = 1` everywhere gives 0.999) and with `f` not clipped.
    Higher is better. In MIB the curve for CPR ranks candidates by signed score (`faithfulness_curve` with
    `absolute=False`).

    **Arguments:**

    - `fractions`: the increasing fractions `x_i` (e.g. `MIB_EDGE_FRACTIONS`).
    - `f`: the faithfulness at each fraction; an array's last axis runs over the fractions.
    - `log_scale`: integrate over `log x` instead (MIB's `log_scale` option, off in the benchmark).

    **Returns:** the area (a float, or an array over the leading axes of `f`).
    """
    return _trapezoid(fractions, f, log_scale, "cpr")


def cmd(fractions: Sequence[float] | np.ndarray, f, *, log_scale: bool = False):
    """MIB's circuit-model distance: the area between the faithfulness curve and 1.

    `CMD = sum_i (x_{i+1} - x_i) (|1 - f_i| + |1 - f_{i+1}|) / 2`, the trapezoid rule on a linear axis as in MIB's
    `evaluate_area_under_curve` (its `area_from_1`), not normalised and with `f` not clipped. Lower is better (0:
    the circuit matches the model at every size). In MIB the curve for CMD ranks candidates by `|score|`
    (`faithfulness_curve` with `absolute=True`).

    **Arguments:** as `cpr`.

    **Returns:** the area (a float, or an array over the leading axes of `f`).
    """
    return _trapezoid(fractions, np.abs(1.0 - np.asarray(f, dtype=np.float64)), log_scale, "cmd")


def _ranked(scores: Mapping[str, float], candidates: Sequence[str] | None, absolute: bool) -> list[str]:
    """Candidates best first: by score (or `|score|`), missing ones last, ties in candidate order."""
    candidates = list(scores) if candidates is None else list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError("the candidates repeat a name")
    keys = []
    for name in candidates:
        score = scores.get(name)
        if score is None:
            keys.append(math.inf)
        else:
            score = float(score)
            if math.isnan(score):
                raise ValueError(f"the score of {name!r} is NaN")
            keys.append(-abs(score) if absolute else -score)
    order = sorted(range(len(candidates)), key=keys.__getitem__)  # stable
    return [candidates[i] for i in order]


def curve_sizes(
    n: int, fractions: Sequence[float] | np.ndarray = MIB_EDGE_FRACTIONS, rounding: Literal["ceil", "floor"] = "ceil"
) -> np.ndarray:
    """The number of candidates kept at each fraction of `n`.

    `"ceil"` gives `ceil(fraction * n)`, the product first rounded to 9 decimals so that float error such as
    `0.07 * 100 = 7.000000000000001` does not add one. `"floor"` gives `int(fraction * n)` on the raw product, as
    MIB's evaluation does.

    **Returns:** an integer array, one size per fraction.
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if np.any((fractions < 0) | (fractions > 1)):
        raise ValueError("the fractions must lie in [0, 1]")
    if rounding not in ("ceil", "floor"):
        raise ValueError(f"rounding must be 'ceil' or 'floor', got {rounding!r}")
    if rounding == "floor":
        return np.array([int(f * n) for f in fractions.tolist()], dtype=np.int64)
    return np.ceil(np.round(fractions * n, 9)).astype(np.int64)


def faithfulness_curve(
    evaluate: Callable[[frozenset[str]], float],
    scores: Mapping[str, float],
    fractions: Sequence[float] | np.ndarray = MIB_EDGE_FRACTIONS,
    candidates: Sequence[str] | None = None,
    *,
    absolute: bool = False,
    rounding: Literal["ceil", "floor"] = "ceil",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The faithfulness of the top-scored candidates at each circuit size.

    For each fraction, the best `ceil(fraction * n)` of the `n` candidates (by score, highest first; by `|score|`
    with `absolute=True`; unscored candidates last; ties in candidate order) are kept, and `evaluate(kept)` gives the
    faithfulness of that set. The sets are nested. A size met twice is evaluated once.

    MIB keeps `int(fraction * n)` (`rounding="floor"`), ranks by signed score for CPR and by `|score|` for CMD,
    and prunes edges that no longer connect input to output before evaluating: that last step, if wanted, belongs
    in `evaluate`.

    **Arguments:**

    - `evaluate`: `evaluate(kept: frozenset[str]) -> float`, the faithfulness with only `kept` in the circuit.
    - `scores`: a score per candidate.
    - `fractions`: the fractions of candidates kept, in `[0, 1]`.
    - `candidates`: what is ranked; by default the keys of `scores`.
    - `absolute`: rank by `|score|`.
    - `rounding`: `"ceil"` or `"floor"` of `fraction * n`.

    **Returns:** `(fractions, sizes, values)`: the fractions (float array), the number kept at each (int array),
    and the faithfulness values (float array).
    """
    ranked = _ranked(scores, candidates, absolute)
    fractions = np.asarray(fractions, dtype=np.float64)
    sizes = curve_sizes(len(ranked), fractions, rounding)
    cache: dict[int, float] = {}
    for size in sizes.tolist():
        if size not in cache:
            cache[size] = float(evaluate(frozenset(ranked[:size])))
    values = np.array([cache[size] for size in sizes.tolist()], dtype=np.float64)
    return fractions, sizes, values


def random_baseline(
    evaluate: Callable[[frozenset[str]], float],
    candidates: Sequence[str],
    sizes: Sequence[int],
    n_draws: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The faithfulness of random circuits of given sizes: the baseline a scoring method must beat.

    For each size, `n_draws` sets of that many candidates are drawn uniformly without replacement (independently
    across draws and sizes) and evaluated.

    **Arguments:**

    - `evaluate`: `evaluate(kept: frozenset[str]) -> float`, as in `faithfulness_curve`.
    - `candidates`: the pool drawn from.
    - `sizes`: the set sizes (e.g. the `sizes` of `faithfulness_curve`), each at most `len(candidates)`.
    - `n_draws`: sets drawn per size.
    - `seed`: seed of the draws (`numpy.random.default_rng`).

    **Returns:** `(mean, std)`, float arrays with one entry per size; the standard deviation is the sample one
    (`ddof=1`), 0 for a single draw.
    """
    candidates = list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError("random_baseline: the candidates repeat a name")
    if n_draws < 1:
        raise ValueError(f"random_baseline: n_draws must be at least 1, got {n_draws}")
    sizes = [int(s) for s in sizes]
    if any(s < 0 or s > len(candidates) for s in sizes):
        raise ValueError(f"random_baseline: every size must lie in [0, {len(candidates)}], got {sizes}")
    rng = np.random.default_rng(seed)
    values = np.empty((len(sizes), n_draws), dtype=np.float64)
    for i, size in enumerate(sizes):
        for j in range(n_draws):
            chosen = rng.choice(len(candidates), size=size, replace=False)
            values[i, j] = float(evaluate(frozenset(candidates[k] for k in chosen)))
    std = values.std(axis=1, ddof=1) if n_draws > 1 else np.zeros(len(sizes))
    return values.mean(axis=1), std
