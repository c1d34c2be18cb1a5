"""The anchor of the SNMF benchmark: the official semi-NMF of P5 (PyTorch, `NMFSemiNMF.fit` of
`factorization/seminmf.py` in GitHub `ordavid-s/snmf-mlp-decomposition`), timed on a given matrix from a given
start.

Runs under a separate virtual environment with torch and numpy, never under the project's own; the official code is
imported, unchanged, from the checkout named by `SNMF_OFFICIAL_PATH`, and none of it is copied here.
`experiments/benchmarks/snmf_official.py` calls it as a subprocess:

    SNMF_OFFICIAL_PATH=<checkout> "$VENV"/bin/python experiments/benchmarks/snmf_official_torch.py \
        --npz IN.npz --out OUT.json [--threads N] [--repeats N]

`IN.npz` holds `X` (float32 `[n, d]`, rows are tokens), `G0` (float32 `[n, k]`, the initial codes), `sparsity` and
`iterations`. The official fit takes the matrix as `A = X^T` (`[d, n]`); it is started from `G0` by replacing its
`init_svd` with a function returning `(F0, G0)` and calling `fit(init="svd")` (the fit solves for `F` first, so
`F0` is never used), with `patience` above `iterations` so that every run does all of them. The loss of each
iteration is read by wrapping `torch.norm` (the one call with the keyword `p="fro"` is the loss). Each of `repeats`
fits is timed (wall clock, after one warm-up fit of 3 iterations); the loss trajectory is the first run's.

Writes `OUT.json`: `times_s` (every run), `median_s`, `losses`, `threads`, `versions`, `shape`.
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import torch


def official_fit(seminmf, X: np.ndarray, G0: np.ndarray, sparsity: float, max_iter: int, patience: int, tol: float):
    """The official `NMFSemiNMF.fit` on `A = X^T` from the codes `G0`.

    **Arguments:** `seminmf`, the official module; `X` float32 `[n, d]`; `G0` float32 `[n, k]`; the official
    fit's `sparsity`, `max_iter`, `patience` and `tol`.

    **Returns:** `(model, losses)`, the fitted `NMFSemiNMF` and the loss of every iteration run (a numpy array).
    """
    losses = []
    real_norm = torch.norm

    def recording_norm(*args, **kwargs):
        value = real_norm(*args, **kwargs)
        if kwargs.get("p") == "fro":  # the loss; `Tensor.norm` (the rescaling) passes `p` by position
            losses.append(float(value) ** 2)
        return value

    start = torch.from_numpy(np.ascontiguousarray(G0))
    seminmf.init_svd = lambda A, K: (torch.randn(A.shape[0], K), start.clone())
    model = seminmf.NMFSemiNMF(G0.shape[1], sparsity=sparsity)
    A = torch.from_numpy(np.ascontiguousarray(X.T))
    # the fit appends a line to `training_summary.log` in the working directory
    with tempfile.TemporaryDirectory() as folder, contextlib.chdir(folder):
        torch.norm = recording_norm
        try:
            model.fit(A, max_iter=max_iter, tol=tol, patience=patience, verbose=False, init="svd")
        finally:
            torch.norm = real_norm
    return model, np.asarray(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--npz", required=True, type=pathlib.Path)
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    sys.path.insert(0, os.environ["SNMF_OFFICIAL_PATH"])
    from factorization import seminmf

    torch.set_num_threads(options.threads)
    torch.manual_seed(0)
    data = np.load(options.npz)
    X, G0 = data["X"].astype(np.float32), data["G0"].astype(np.float32)
    sparsity, iterations = float(data["sparsity"]), int(data["iterations"])
    official_fit(seminmf, X, G0, sparsity, 3, 10, 1e-4)  # warm-up
    times, trajectory = [], None
    for run in range(options.repeats):
        started = time.perf_counter()
        _, losses = official_fit(seminmf, X, G0, sparsity, iterations, iterations + 1, 1e-4)
        times.append(time.perf_counter() - started)
        trajectory = losses if trajectory is None else trajectory
        print(f"official fit {run + 1}/{options.repeats}: {times[-1]:.2f} s", file=sys.stderr, flush=True)
    record = {
        "shape": list(X.shape),
        "k": int(G0.shape[1]),
        "iterations": iterations,
        "times_s": times,
        "median_s": statistics.median(times),
        "losses": trajectory.tolist(),
        "threads": options.threads,
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__},
    }
    options.out.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
