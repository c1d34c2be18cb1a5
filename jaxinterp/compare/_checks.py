"""Input validation shared by the comparison methods: every error names the function, the argument and, for
non-finite values, where the first one is."""

import jax
import numpy as np


def as_matrix(x, name: str, where: str, *, min_rows: int = 1) -> np.ndarray:
    """`x` as a finite float64 `[rows, columns]` NumPy array, or a `ValueError` saying what is wrong with it."""
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{where}: {name} must be a matrix [examples, units], got shape {array.shape}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{where}: {name} has {array.shape[0]} examples; at least {min_rows} are needed")
    if array.shape[1] < 1:
        raise ValueError(f"{where}: {name} has no units (shape {array.shape})")
    check_finite(array, name, where)
    return array


def check_finite(x, name: str, where: str) -> None:
    """Raise a `ValueError` naming the first non-finite entry of `x`, if there is one (a traced value, inside
    `jit` or `vmap`, has no values yet and is not checked)."""
    if isinstance(x, jax.core.Tracer):
        return
    array = np.asarray(x)
    finite = np.isfinite(array)
    if not finite.all():
        index = tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(~finite)[0]), array.shape))
        raise ValueError(
            f"{where}: {name} has {int((~finite).sum())} non-finite values (NaN or infinite), the first "
            f"{array[index]} at index {index}"
        )


def same_rows(a: np.ndarray, b: np.ndarray, names: tuple[str, str], where: str) -> None:
    """Raise a `ValueError` unless `a` and `b` have the same number of examples (first axis)."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{where}: {names[0]} and {names[1]} must hold the same examples, but have {a.shape[0]} and "
            f"{b.shape[0]} rows (shapes {a.shape} and {b.shape})"
        )
