"""Sampling throughput of the jitted GBM samplers against a straightforward PyTorch loop of the same update (CPU).

Two workloads, each timed side by side in one run:

1. **Update rule.** The Dale-Langevin and ambient multiplicative updates with the exact score of a log-normal target
   (elementwise), `paths` independent paths and `levels` noise levels. JAX: `dale_langevin_sample` /
   `ambient_multiplicative_sample` (one `lax.scan`, compiled ahead of time, compile time reported apart). PyTorch: a
   Python loop over the levels with the same arithmetic, `torch.randn` per step, under `torch.no_grad()`.
2. **U-Net score.** The Dale-Langevin sampler driven by `models.score_net.ScoreUNet` on a batch of images; the
   PyTorch side runs the same network (same weights, ported layer by layer and checked against the JAX output)
   inside the same loop.

Timings are medians of `repeats` runs after a warm-up; PyTorch is timed with one intra-op thread and with its
default count, and the faster is compared. Writes `results/benchmarks/gbm_sampling.json`.

    python -m experiments.benchmarks.gbm_sampling [--quick]

Needs the `bench` extra (torch); torch is imported only here.
"""

import argparse
import dataclasses
import importlib.metadata
import json
import math
import os
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import torch
import torch.nn.functional as F

from experiments.record import markdown_table, results_dir
from jaxinterp.dynamics import gbm
from models.score_net import Conv, GroupNorm, ResidualBlock, ScoreUNet

NAME = "gbm_sampling"
LOC, SCALE = 0.3, 0.2


@dataclasses.dataclass(frozen=True)
class Config:
    """**Fields:** `paths` and `levels` of the update-rule workload; `batch`, `image_size`, `widths` and
    `net_levels` of the U-Net workload; `repeats` timed runs per measurement; `seed`."""

    paths: int = 10_000
    levels: int = 1_000
    batch: int = 256
    image_size: int = 14
    widths: tuple[int, ...] = (16, 32)
    net_levels: int = 100
    repeats: int = 3
    seed: int = 0


QUICK = Config(paths=1_000, levels=100, batch=16, net_levels=10, repeats=2)


def _median_s(fn, repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _time_torch(fn, repeats: int) -> dict[str, float]:
    """Median seconds of `fn` (after a warm-up) with one intra-op thread and with torch's default count.

    Two threads can lose badly to one when the machine is shared, because the threads spin-wait for each other.
    """
    default = torch.get_num_threads()
    timings = {}
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        fn()
        timings[str(threads)] = _median_s(fn, repeats)
    torch.set_num_threads(default)
    return timings


def _time_jax(fn, args, repeats: int) -> tuple[float, float, np.ndarray]:
    started = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - started
    out = jax.block_until_ready(compiled(*args))
    run_s = _median_s(lambda: jax.block_until_ready(compiled(*args)), repeats)
    return run_s, compile_s, np.asarray(out)


def _torch_sample(update: str, score, x, ts, process, seed: int) -> torch.Tensor:
    """The multiplicative samplers as a plain PyTorch loop: score, noise, update; the last step adds no noise."""
    generator = torch.Generator().manual_seed(seed)
    sigma, mu = process.sigma, process.mu
    sigma2 = sigma**2
    times = [float(t) for t in ts]
    with torch.no_grad():
        for k, t in enumerate(times):
            delta = t - (times[k + 1] if k + 1 < len(times) else 0.0)
            s = score(x, t)
            noise = torch.randn(x.shape, generator=generator) if k + 1 < len(times) else torch.zeros_like(x)
            if update == "dale":
                drift = delta * sigma2 * x * s - delta * (mu - 1.5 * sigma2)
                x = x * torch.exp(drift + math.sqrt(delta) * sigma * noise)
            else:
                factor = 1 + 2 * delta * sigma2 - delta * mu + delta * sigma2 * x * s
                x = x * (factor + math.sqrt(delta) * sigma * noise)
    return x


def _torch_lognormal_score(process):
    def score(x, t):
        mean = LOC + process.log_drift * t
        var = SCALE**2 + process.sigma**2 * t
        return -(1 + (torch.log(x) - mean) / var) / x

    return score


def _t(array) -> torch.Tensor:
    return torch.from_numpy(np.array(array))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _to_torch(leaf):
    """A JAX array as a torch tensor; 4-D convolution kernels go from HWIO to torch's OIHW layout."""
    if not eqx.is_array(leaf):
        return leaf
    tensor = _t(leaf)
    return tensor.permute(3, 2, 0, 1).contiguous() if tensor.ndim == 4 else tensor


def _torch_conv(conv: Conv, x: torch.Tensor) -> torch.Tensor:
    kernel = conv.weight.shape[2]
    top, bottom = _same_padding(x.shape[2], kernel, conv.stride)
    left, right = _same_padding(x.shape[3], kernel, conv.stride)
    return F.conv2d(F.pad(x, (left, right, top, bottom)), conv.weight, conv.bias, stride=conv.stride)


def _torch_group_norm(norm: GroupNorm, x: torch.Tensor) -> torch.Tensor:
    return F.group_norm(x, norm.groups, norm.weight, norm.bias, norm.eps)


def _torch_linear(linear: eqx.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x, linear.weight, linear.bias)


def _torch_block(block: ResidualBlock, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    h = _torch_conv(block.conv1, F.silu(_torch_group_norm(block.norm1, x)))
    h = h + _torch_linear(block.time_proj, F.silu(embedding))[:, None, None]
    h = _torch_conv(block.conv2, F.silu(_torch_group_norm(block.norm2, h)))
    return h + (x if block.skip is None else _torch_conv(block.skip, x))


def torch_unet(net: ScoreUNet):
    """`ScoreUNet`'s forward in PyTorch, channel-first and batched, with the JAX weights; `(x, t) -> output`."""
    net = jax.tree.map(_to_torch, net)

    def forward(x: torch.Tensor, t: float) -> torch.Tensor:
        angles = t * torch.exp(torch.linspace(0.0, math.log(1000.0), net.embedding.half))
        features = torch.cat([torch.sin(angles), torch.cos(angles)])
        embedding = _torch_linear(net.embedding.linear2, F.silu(_torch_linear(net.embedding.linear1, features)))
        h = _torch_conv(net.conv_in, x)
        skips = []
        for i, block in enumerate(net.down_blocks):
            h = _torch_block(block, h, embedding)
            skips.append(h)
            if i < len(net.downsample):
                h = _torch_conv(net.downsample[i], h)
        h = _torch_block(net.middle, h, embedding)
        for block, skip in zip(net.up_blocks, reversed(skips)):
            if h.shape[2:] != skip.shape[2:]:
                h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = _torch_block(block, torch.cat([h, skip], dim=1), embedding)
        return _torch_conv(net.conv_out, F.silu(_torch_group_norm(net.norm_out, h)))

    return forward


def update_rule(config: Config) -> list[dict]:
    """Both samplers with the exact log-normal score, JAX scan against the PyTorch loop."""
    process = gbm.GeometricBrownianMotion()
    score = gbm.log_normal_marginal_score(process, LOC, SCALE)
    ts = jnp.linspace(1.0, 1.0 / config.levels, config.levels)
    prior = gbm.LogNormalPrior(jnp.asarray(LOC + process.log_drift), jnp.sqrt(SCALE**2 + process.sigma**2))
    x_init = prior.sample((config.paths,), key=jr.key(config.seed))
    rows = []
    for name, sampler, update in [
        ("Dale-Langevin", gbm.dale_langevin_sample, "dale"),
        ("ambient multiplicative", gbm.ambient_multiplicative_sample, "ambient"),
    ]:
        jax_s, compile_s, out = _time_jax(
            lambda x, key, sampler=sampler: sampler(score, process, x, ts, key=key),
            (x_init, jr.key(config.seed + 1)),
            config.repeats,
        )
        torch_x = _t(x_init)
        torch_score = _torch_lognormal_score(process)
        torch_s = _time_torch(
            lambda u=update, s=torch_score, x=torch_x: _torch_sample(u, s, x, np.asarray(ts), process, config.seed),
            config.repeats,
        )
        torch_out = _torch_sample(update, torch_score, torch_x, np.asarray(ts), process, config.seed).numpy()
        rows.append(
            {
                "workload": f"{name}, exact log-normal score, {config.paths} paths x {config.levels} levels",
                "jax_s": jax_s,
                "jax_compile_s": compile_s,
                "torch_s_by_threads": torch_s,
                "torch_s": min(torch_s.values()),
                "torch_over_jax": min(torch_s.values()) / jax_s,
                "jax_log_mean_std": [float(np.log(out).mean()), float(np.log(out).std())],
                "torch_log_mean_std": [float(np.log(torch_out).mean()), float(np.log(torch_out).std())],
            }
        )
    return rows


def unet_score(config: Config) -> list[dict]:
    """The Dale-Langevin sampler with a `ScoreUNet` score, JAX scan against the PyTorch loop with the same network."""
    process = gbm.GeometricBrownianMotion()
    params, static = eqx.partition(ScoreUNet(1, config.widths, 32, key=jr.key(config.seed)), eqx.is_inexact_array)
    # Perturb every weight, so that the zero-initialised output layer does not make the port check vacuous.
    leaves, treedef = jax.tree.flatten(params)
    keys = jr.split(jr.key(config.seed + 2), len(leaves))
    params = jax.tree.unflatten(treedef, [leaf + 0.05 * jr.normal(k, leaf.shape) for leaf, k in zip(leaves, keys)])
    net = eqx.combine(params, static)
    shape = (config.batch, 1, config.image_size, config.image_size)
    x_init = jnp.exp(0.2 + 0.8 * jr.normal(jr.key(config.seed + 3), shape))
    ts = jnp.linspace(1.0, 1.0 / config.net_levels, config.net_levels)

    def jax_sample(params, x, key):
        model = eqx.combine(params, static)

        def score(x, t):
            return process.score_from_noise(model(jnp.log(x), t), x, t)

        return gbm.dale_langevin_sample(score, process, x, ts, key=key)

    forward = torch_unet(net)
    probe = np.asarray(x_init[:4])
    expected = np.asarray(jax.vmap(net, in_axes=(0, None))(jnp.log(probe), 0.3))
    got = forward(torch.log(_t(probe)), 0.3).detach().numpy()
    max_difference = float(np.abs(expected - got).max())
    if max_difference > 1e-3:
        raise AssertionError(f"PyTorch port of ScoreUNet differs from JAX by {max_difference}")

    def torch_score(x, t):
        noise = forward(torch.log(x), t)
        return -(1 + noise / (process.sigma * math.sqrt(t))) / x

    jax_s, compile_s, _ = _time_jax(jax_sample, (params, x_init, jr.key(config.seed + 4)), config.repeats)
    torch_x = _t(x_init)
    torch_s = _time_torch(
        lambda: _torch_sample("dale", torch_score, torch_x, np.asarray(ts), process, config.seed), config.repeats
    )
    return [
        {
            "workload": f"Dale-Langevin, ScoreUNet{config.widths} score, {config.batch} images "
            f"{config.image_size}x{config.image_size} x {config.net_levels} levels",
            "jax_s": jax_s,
            "jax_compile_s": compile_s,
            "torch_s_by_threads": torch_s,
            "torch_s": min(torch_s.values()),
            "torch_over_jax": min(torch_s.values()) / jax_s,
            "port_max_abs_difference": max_difference,
        }
    ]


def main(config: Config) -> dict:
    """Run both workloads and write `results/benchmarks/gbm_sampling.json`; returns the record."""
    torch.manual_seed(config.seed)
    load_before = os.getloadavg()
    rows = update_rule(config) + unet_score(config)
    record = {
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "config": dataclasses.asdict(config),
        "rows": rows,
        "torch_threads": torch.get_num_threads(),
        "versions": {name: importlib.metadata.version(name) for name in ("jax", "jaxlib", "equinox", "torch")},
    }
    out = results_dir("benchmarks")
    (out / f"{NAME}.json").write_text(json.dumps(record, indent=2))
    table = [{k: row[k] for k in ("workload", "jax_s", "jax_compile_s", "torch_s", "torch_over_jax")} for row in rows]
    print(markdown_table(table))
    return record


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, seconds")
    main(QUICK if parser.parse_args().quick else Config())
