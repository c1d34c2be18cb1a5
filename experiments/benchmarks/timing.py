"""Timing and memory measurements shared by the benchmarks: ahead-of-time compilation with its times, interleaved
medians, XLA's memory analysis, and a description of the machine."""

import dataclasses
import importlib.metadata
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import equinox as eqx
import jax


@dataclasses.dataclass
class Compiled:
    """A function compiled ahead of time (`call`), its XLA executable, and its trace-and-lower and compile
    times."""

    call: Callable
    executable: object
    lower_s: float
    compile_s: float


def compile_timed(fn: Callable, *args) -> Compiled:
    """Trace, lower and compile `eqx.filter_jit(fn)` for `args`, timing the two stages."""
    start = time.perf_counter()
    lowered = eqx.filter_jit(fn).lower(*args)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    return Compiled(compiled, compiled.compiled, lowered_at - start, time.perf_counter() - lowered_at)


def interleaved_medians(thunks: Mapping[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, float]]:
    """Time each thunk: one warm-up call each, then `repeats` rounds in which every thunk runs once in turn (so
    slow drifts of a shared machine hit all alike). A thunk must block until its results are ready.

    **Returns:** `{name: {"wall_s", "cpu_s"}}`, the medians of the wall-clock time and of the CPU time of this
    process (all its threads); the second is less sensitive to other processes competing for the cores.
    """
    for thunk in thunks.values():
        thunk()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in thunks}
    for _ in range(repeats):
        for name, thunk in thunks.items():
            wall, cpu = time.perf_counter(), time.process_time()
            thunk()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: {"wall_s": statistics.median(w for w, _ in runs), "cpu_s": statistics.median(c for _, c in runs)}
        for name, runs in samples.items()
    }


def blocking(fn: Callable, *args) -> Callable[[], object]:
    """A thunk calling `fn(*args)` and waiting for the result."""
    return lambda: jax.block_until_ready(fn(*args))


def memory_stats(executable) -> dict[str, int]:
    """Buffer sizes of a compiled XLA executable, in bytes: arguments, outputs, temporaries, their sum
    (`total_bytes`) and outputs + temporaries (`activations_bytes`: what one call allocates beyond its inputs)."""
    stats = executable.memory_analysis()
    out = {
        "argument_bytes": int(stats.argument_size_in_bytes),
        "output_bytes": int(stats.output_size_in_bytes),
        "temp_bytes": int(stats.temp_size_in_bytes),
        "alias_bytes": int(stats.alias_size_in_bytes),
    }
    out["total_bytes"] = out["argument_bytes"] + out["output_bytes"] + out["temp_bytes"] - out["alias_bytes"]
    out["activations_bytes"] = out["output_bytes"] + out["temp_bytes"]
    return out


def cost_stats(executable) -> dict[str, float | None]:
    """XLA's cost estimate of one call: GFLOP, transcendental operations (millions) and GB of memory traffic
    (None where the backend gives no estimate)."""
    cost = executable.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}

    def scaled(key, unit):
        value = cost.get(key)
        return float(value) / unit if value else None

    return {
        "gflops": scaled("flops", 1e9),
        "transcendentals_m": scaled("transcendentals", 1e6),
        "bytes_accessed_gb": scaled("bytes accessed", 1e9),
    }


def machine_info() -> dict:
    """Where the numbers were taken: platform, CPU count, load, library versions, JAX backend."""
    versions = {}
    for name in ("jax", "jaxlib", "equinox", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **versions,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "load_average_1min_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
