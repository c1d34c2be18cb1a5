"""How a CD sweep's time scales with the number of devices it is split across (`jaxinterp.sharding`).

The workload: a GPT-2-shaped model with seeded random weights (4 blocks, d_model 256, 8 heads, 32 positions;
`--quick`: 2 blocks, d_model 64, 4 heads, 8 positions), every head and every position as a source set (64 sets;
`--quick`: 16), decomposed to the logits with `cd_sweep(..., mesh=jaxinterp.sharding.mesh(n))`. Each device count
runs in a fresh process, compiled ahead of time and timed as the median of interleaved repeats; its results are
compared with the one-device run's.

On a CPU the devices are XLA's forced host devices (`--xla_force_host_platform_device_count`), which share the
machine's cores: the sweep cannot get faster than the cores allow, and this measures the overhead of splitting. On
a multi-GPU host (or a TPU slice) the same command uses the real devices, as many as each count asks:

    python -m experiments.benchmarks.sharded_sweep [--quick] [--counts 1,2,4,8]

Writes `results/benchmarks/sharded_sweep.json` and `sharded_sweep.md`.
"""

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

NAME = "sharded_sweep"


@dataclasses.dataclass(frozen=True)
class Workload:
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 8
    seq: int = 32
    vocab_size: int = 512
    repeats: int = 5

    @classmethod
    def quick(cls) -> "Workload":
        return cls(n_layers=2, d_model=64, n_heads=4, seq=8, vocab_size=64, repeats=2)


def worker(workload: Workload, n_devices: int) -> dict:
    """Time the sweep on the first `n_devices` devices of this process. **Returns:** the timings and a checksum
    array (the decomposition's relevant parts) as a list, for the comparison across counts."""
    import jaxinterp as ji
    import models
    from experiments.benchmarks.timing import blocking, compile_timed, interleaved_medians

    cfg = models.gpt2_config(
        n_layers=workload.n_layers,
        d_model=workload.d_model,
        n_heads=workload.n_heads,
        d_head=workload.d_model // workload.n_heads,
        d_mlp=4 * workload.d_model,
        vocab_size=workload.vocab_size,
        max_positions=workload.seq,
    )
    model = models.Transformer(cfg, key=jax.random.key(0))
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, cfg.vocab_size, workload.seq))
    stacks = [*ji.every_head(cfg.n_layers, cfg.n_heads), ji.every_position(workload.seq)]
    mesh = ji.sharding.mesh(n_devices)
    compiled = compile_timed(lambda m, t: ji.cd_sweep(m, stacks, mesh=mesh)(t).rel, model, tokens)
    rel = np.asarray(compiled.call(model, tokens))
    timing = interleaved_medians({"sweep": blocking(compiled.call, model, tokens)}, workload.repeats)["sweep"]
    return {
        "devices": n_devices,
        "platform": jax.devices()[0].platform,
        "source_sets": int(rel.shape[0]),
        "compile_s": compiled.compile_s,
        "wall_s": timing["wall_s"],
        "cpu_s": timing["cpu_s"],
        "rel": rel.tolist(),
    }


def run_count(n_devices: int, quick: bool) -> dict:
    """Run `worker` for `n_devices` in a fresh process (forcing that many host devices when the platform is a CPU
    with fewer devices)."""
    env = dict(os.environ)
    if jax.devices()[0].platform == "cpu":
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}".strip()
    command = [sys.executable, "-m", "experiments.benchmarks.sharded_sweep", "--worker", str(n_devices)]
    command += ["--quick"] if quick else []
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"the {n_devices}-device run failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(quick: bool = False, counts: tuple[int, ...] = (1, 2, 4, 8)) -> dict:
    """Run every device count and write the record. **Returns:** the record."""
    from experiments.benchmarks.timing import machine_info
    from experiments.record import write_benchmark

    started = time.time()
    workload = Workload.quick() if quick else Workload()
    record = {
        "benchmark": NAME,
        "quick": quick,
        "workload": dataclasses.asdict(workload),
        "machine": machine_info(),
        "runs": [],
    }
    reference = None
    for n in counts:
        run = run_count(n, quick)
        rel = np.asarray(run.pop("rel"))
        reference = rel if reference is None else reference
        run["max_abs_difference_from_first"] = float(np.max(np.abs(rel - reference)))
        record["runs"].append(run)
    base = record["runs"][0]["wall_s"]
    rows = [
        {
            "devices": run["devices"],
            "platform": run["platform"],
            "source sets": run["source_sets"],
            "sweep s (median)": f"{run['wall_s']:.3f}",
            "speed-up over the first": f"{base / run['wall_s']:.2f}x",
            "CPU s": f"{run['cpu_s']:.3f}",
            "compile s": f"{run['compile_s']:.1f}",
            "max abs difference": f"{run['max_abs_difference_from_first']:.1e}",
        }
        for run in record["runs"]
    ]
    write_benchmark(NAME, record, rows, started=started)
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, a smoke run")
    parser.add_argument("--counts", default="1,2,4,8", help="device counts, comma-separated (default 1,2,4,8)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    workload = Workload.quick() if options.quick else Workload()
    if options.worker is not None:
        print(json.dumps(worker(workload, options.worker)))
    else:
        main(options.quick, tuple(int(c) for c in options.counts.split(",")))
