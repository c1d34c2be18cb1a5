import csv
import pathlib

import numpy as np

from .. import assets

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")
"""The AG News class names, indexed by label."""

_AG_NEWS_SIZE = 7_600


def ag_news(root: pathlib.Path | str | None = None) -> tuple[list[str], np.ndarray]:
    """The AG News test split (Zhang et al. 2015): 7,600 news articles, 1,900 in each of four classes.

    This is the only AG News split available offline; `ag_news_split` makes a train / held-out split of it.

    **Arguments:**

    - `root`: the folder holding `test.csv`; by default `jaxinterp.assets.resolve("ag_news")` (the shared data
        folder, or `$JAXINTERP_ASSET_AG_NEWS`).

    **Returns:**

    `(texts, labels)`: texts `title + " " + description` and int32 labels `0..3`, indexing `AG_NEWS_CLASSES`
    (World, Sports, Business, Sci/Tech; the file's labels 1..4 minus one).
    """
    path = assets.resolve("ag_news", root) / "test.csv"
    texts = []
    labels = []
    with open(path, encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader, None)
        if header != ["label", "title", "description"]:
            raise assets.AssetIntegrityError.for_file(
                "ag_news", path, f"header is {header}, expected label,title,description"
            )
        for row in reader:
            if len(row) != 3 or row[0] not in ("1", "2", "3", "4"):
                raise assets.AssetIntegrityError.for_file(
                    "ag_news", path, f"line {reader.line_num} is not label,title,description"
                )
            labels.append(int(row[0]) - 1)
            texts.append(f"{row[1]} {row[2]}")
    if len(texts) != _AG_NEWS_SIZE:
        raise assets.AssetIntegrityError.for_file("ag_news", path, f"{len(texts)} rows, expected {_AG_NEWS_SIZE}")
    return texts, np.asarray(labels, dtype=np.int32)


def ag_news_split(
    n_heldout: int = 1_600, *, seed: int = 0, root: pathlib.Path | str | None = None
) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray]]:
    """A stratified, seeded train / held-out split of the AG News test split (by default 6,000 / 1,600).

    The AG News training split is not available offline, so experiments train on part of the test split and
    evaluate on the rest; results that use this should say so.

    **Arguments:**

    - `n_heldout`: how many articles to hold out, a multiple of 4 so that each class gives `n_heldout // 4`.
    - `seed`: seeds the choice of held-out articles; the same seed gives the same split.
    - `root`: passed to `ag_news`.

    **Returns:**

    `((train_texts, train_labels), (heldout_texts, heldout_labels))`, each part in file order.
    """
    texts, labels = ag_news(root)
    n_classes = len(AG_NEWS_CLASSES)
    if n_heldout % n_classes or not 0 <= n_heldout <= len(texts):
        raise ValueError(f"n_heldout must be a multiple of {n_classes} between 0 and {len(texts)}, got {n_heldout}")
    generator = np.random.default_rng(seed)
    heldout = np.zeros(len(texts), dtype=bool)
    for label in range(n_classes):
        members = np.flatnonzero(labels == label)
        heldout[generator.choice(members, size=n_heldout // n_classes, replace=False)] = True
    train_indices = np.flatnonzero(~heldout)
    heldout_indices = np.flatnonzero(heldout)
    return (
        ([texts[i] for i in train_indices], labels[train_indices]),
        ([texts[i] for i in heldout_indices], labels[heldout_indices]),
    )
