"""The same small neural ODE solved by diffrax and by torchdiffeq (CPU), timed side by side in one run.

A batch of 256 states of size 16 under `dy/dt = W2 tanh(W1 y + b1) + b2` (hidden width 64, the same float32 weights
in both), Dopri5 in both libraries and Tsit5 in diffrax, rtol = atol = 1e-5, to t1 = 1 and t1 = 20. Each solve is
timed after a warm-up (diffrax compiled, so compilation is excluded and reported apart); the median of `repeats`
runs is reported. Writes `results/benchmarks/node_solvers.json`.

    python -m experiments.benchmarks.node_solvers

Needs the `bench` extra (torch, torchdiffeq); torch is imported only here.
"""

import argparse
import importlib.metadata
import json
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from experiments.record import results_dir
from jaxinterp.dynamics.regularisers import solve_with_heuristics

SIZE, HIDDEN, BATCH, TOL = 16, 64, 256, 1e-5


def _weights(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.normal(size=(HIDDEN, SIZE)) / np.sqrt(SIZE)).astype(np.float32),
        "b1": (0.1 * rng.normal(size=HIDDEN)).astype(np.float32),
        "w2": (rng.normal(size=(SIZE, HIDDEN)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b2": (0.1 * rng.normal(size=SIZE)).astype(np.float32),
        "y0": rng.normal(size=(BATCH, SIZE)).astype(np.float32),
    }


def _median_s(fn, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _field(t, y, p):
    return jnp.tanh(y @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]


def time_diffrax(weights: dict, solver_name: str, t1: float, repeats: int) -> dict:
    """Median wall time of one jitted diffrax solve (the batch as one state), its compile time, NFE and steps."""
    params = {k: jnp.asarray(v) for k, v in weights.items() if k != "y0"}
    y0 = jnp.asarray(weights["y0"])
    solver = {"tsit5": diffrax.Tsit5(), "dopri5": diffrax.Dopri5()}[solver_name]

    @jax.jit
    def solve(params, y0):
        sol, heuristics = solve_with_heuristics(
            diffrax.ODETerm(_field),
            solver,
            0.0,
            t1,
            None,
            y0,
            params,
            stepsize_controller=diffrax.PIDController(rtol=TOL, atol=TOL),
            max_steps=100_000,
        )
        return sol.ys[0], heuristics.nfe, heuristics.num_steps

    started = time.perf_counter()
    y1, nfe, steps = jax.block_until_ready(solve(params, y0))
    compile_s = time.perf_counter() - started
    seconds = _median_s(lambda: jax.block_until_ready(solve(params, y0)), repeats)
    return {"seconds": seconds, "compile_s": compile_s, "nfe": int(nfe), "steps": int(steps), "y1": np.asarray(y1)}


def time_torchdiffeq(weights: dict, t1: float, repeats: int) -> dict:
    """Median wall time of one torchdiffeq `odeint` (dopri5) solve, and its NFE."""
    import torch
    import torchdiffeq

    torch.set_grad_enabled(False)
    p = {k: torch.from_numpy(v) for k, v in weights.items()}

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.nfe = 0

        def forward(self, t, y):
            self.nfe += 1
            return torch.tanh(y @ p["w1"].T + p["b1"]) @ p["w2"].T + p["b2"]

    field = Field()
    ts = torch.tensor([0.0, t1])

    def solve():
        return torchdiffeq.odeint(field, p["y0"], ts, method="dopri5", rtol=TOL, atol=TOL)

    solve()
    field.nfe = 0
    y1 = solve()[-1]
    nfe = field.nfe
    seconds = _median_s(solve, repeats)
    return {"seconds": seconds, "nfe": nfe, "y1": y1.numpy()}


def main(repeats: int = 20, seed: int = 0, torch_threads: int = 1) -> dict:
    """Run every case; write `results/benchmarks/node_solvers.json`.

    **Arguments:**

    - `repeats`: timed runs per case (the median is reported).
    - `seed`: the seed of the weights and initial states.
    - `torch_threads`: torch's intra-op threads. One by default: this problem is too small to gain from more, and
        torch's spinning worker threads slow it down by orders of magnitude when the cores are busy.

    **Returns:** the record written.
    """
    import torch

    torch.set_num_threads(torch_threads)
    weights = _weights(seed)
    cases = []
    for t1 in (1.0, 20.0):
        torch_run = time_torchdiffeq(weights, t1, repeats)
        for solver_name in ("dopri5", "tsit5"):
            jax_run = time_diffrax(weights, solver_name, t1, repeats)
            cases.append(
                {
                    "t1": t1,
                    "diffrax_solver": solver_name,
                    "torchdiffeq_solver": "dopri5",
                    "diffrax_ms": 1e3 * jax_run["seconds"],
                    "diffrax_compile_s": jax_run["compile_s"],
                    "torchdiffeq_ms": 1e3 * torch_run["seconds"],
                    "ratio_torchdiffeq_over_diffrax": torch_run["seconds"] / jax_run["seconds"],
                    "diffrax_nfe": jax_run["nfe"],
                    "torchdiffeq_nfe": torch_run["nfe"],
                    "diffrax_steps": jax_run["steps"],
                    "max_abs_difference_y1": float(np.abs(jax_run["y1"] - torch_run["y1"]).max()),
                }
            )
            print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in cases[-1].items()}, flush=True)
    record = {
        "benchmark": "node_solvers",
        "setup": {
            "size": SIZE,
            "hidden": HIDDEN,
            "batch": BATCH,
            "rtol": TOL,
            "atol": TOL,
            "repeats": repeats,
            "seed": seed,
            "torch_threads": torch.get_num_threads(),
        },
        "cases": cases,
        "versions": {name: importlib.metadata.version(name) for name in ("jax", "diffrax", "torch", "torchdiffeq")},
    }
    path = results_dir("benchmarks") / "node_solvers.json"
    path.write_text(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--torch-threads", type=int, default=1)
    arguments = parser.parse_args()
    main(repeats=arguments.repeats, torch_threads=arguments.torch_threads)
