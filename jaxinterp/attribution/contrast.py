"""Contrast mining (paper P1's local analysis): the words and phrases with the most positive and most negative CD-T
scores across a data set, per class.

Each occurrence of a phrase in a text contributes its score toward a class; a phrase's score is the mean over its
occurrences, and phrases seen fewer than `min_count` times are left out (a single striking sentence says little).
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping


def mine_phrases(
    scored: Iterable[tuple[int, Mapping[str, float]]],
    *,
    top: int = 10,
    min_count: int = 3,
) -> dict[int, dict[str, list[tuple[str, float, int]]]]:
    """The strongest phrases for and against each class.

    **Arguments:**

    - `scored`: one `(class, {phrase: score toward that class})` per text (a phrase appearing twice in a text
      counts once, with its first score).
    - `top`: how many phrases to keep on each side.
    - `min_count`: the fewest occurrences a phrase needs.

    **Returns:** `{class: {"positive": [(phrase, mean score, count)], "negative": [...]}}`, most extreme first.
    """
    if top < 1 or min_count < 1:
        raise ValueError(f"top and min_count must be at least 1, got {top} and {min_count}")
    sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for label, phrases in scored:
        for phrase, score in phrases.items():
            sums[int(label)][phrase.lower()].append(float(score))
    mined = {}
    for label in sorted(sums):
        kept = [(p, sum(s) / len(s), len(s)) for p, s in sums[label].items() if len(s) >= min_count]
        kept.sort(key=lambda item: item[1])
        mined[label] = {"positive": kept[::-1][:top], "negative": kept[:top]}
    return mined
