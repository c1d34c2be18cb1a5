"""Sharded sweeps and data-parallel training equal their one-device runs: checked on 8 forced host devices in a
process of their own (`tests/sharded_equivalence.py`), and the mesh helpers' checks on this process's device."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinterp import sharding

ROOT = pathlib.Path(__file__).resolve().parents[1]
N_DEVICES = 8


def run_on_forced_devices(part: str) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={N_DEVICES}",
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "tests.sharded_equivalence", part, str(N_DEVICES)]
    done = subprocess.run(command, check=False, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a fresh process compiling the sweeps for 8 devices
def test_sharded_sweeps_and_activation_collection_equal_one_device():
    checks = run_on_forced_devices("decompositions")
    assert set(checks) == {"cd_sweep", "cd_sweep_3_devices", "cd_sweep_jit", "activation_sweep", "activation_store"}
    for name, check in checks.items():
        assert check["shapes_equal"], name
        # float64; the jitted sweeps agree bit for bit, the eager ones to rounding
        assert check["max_abs_difference"] <= 1e-12 * check["scale"], (name, check)
    assert checks["cd_sweep_jit"]["max_abs_difference"] == 0.0


@pytest.mark.slow  # a fresh process compiling an SAE step for 8 and for 3 devices, and an SNMF fit
def test_data_parallel_sae_and_snmf_training_equal_one_device():
    checks = run_on_forced_devices("training")
    assert set(checks) == {
        "sae_training",
        "sae_training_3_devices",
        "sae_training_in_context",
        "snmf_losses",
    }
    assert checks["sae_training_in_context"]["devices"] == N_DEVICES
    for name, check in checks.items():
        assert check["shapes_equal"], name
        # float32: the all-reduce sums the gradient (or X^T G) in another order than one device does
        tolerance = 1e-5 if name == "snmf_losses" else 1e-6
        assert check["max_abs_difference"] <= tolerance * max(check["scale"], 1.0), (name, check)


def test_map_items_on_a_mesh_equals_lax_map_and_keeps_the_item_count():
    items = jnp.arange(7.0 * 3).reshape(7, 3)
    fn = lambda x: jnp.sin(x).sum() * 2.0
    mesh = sharding.mesh()
    got = sharding.map_items(fn, items, batch_size=2, mesh=mesh)
    np.testing.assert_array_equal(got, jax.lax.map(fn, items, batch_size=2))
    assert got.shape == (7,)
    placed = sharding.shard_batch({"x": np.ones((4, 2)), "scale": 3.0}, mesh)
    assert placed["scale"] == 3.0 and placed["x"].sharding.mesh == mesh


def test_mesh_arguments_are_checked():
    with pytest.raises(ValueError, match="are available"):
        sharding.mesh(jax.device_count() + 1)
    with pytest.raises(ValueError, match="empty"):
        sharding.mesh([])
    with pytest.raises(TypeError, match="mesh"):
        sharding.map_items(lambda x: x, jnp.ones((2,)), batch_size=1, mesh="cpu")
    two_axes = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1), ("a", "b"))
    with pytest.raises(ValueError, match="one-dimensional"):
        sharding.shard_batch(jnp.ones((2,)), two_axes)
