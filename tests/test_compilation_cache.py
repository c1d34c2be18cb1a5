"""The persistent compilation cache of the command line, the experiments and the tests, checked in processes of its
own (the test processes have theirs configured already)."""

import os
import subprocess
import sys

import pytest

from jaxinterp import compilation_cache

PROGRAM = """
import sys, jax, jax.numpy as jnp
from jaxinterp import compilation_cache
folder = compilation_cache.enable()
if folder is None:
    assert jax.config.jax_compilation_cache_dir is None
else:
    assert jax.config.jax_compilation_cache_max_size == compilation_cache.MAX_BYTES
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compilation_cache.MIN_COMPILE_SECONDS
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # so that this tiny program is written
jax.jit(lambda x: jnp.sin(x) * 3.25 + 0.5)(jnp.arange(7.0)).block_until_ready()
print(folder)
"""


def run(env_value: str) -> str:
    env = {**os.environ, "JAXINTERP_JAX_CACHE": env_value}
    command = [sys.executable, "-c", PROGRAM]
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.slow  # two fresh Python processes importing JAX
def test_the_cache_is_locked_and_bounded_so_processes_can_share_it(tmp_path):
    folder = tmp_path / compilation_cache.BOUNDED
    assert run(str(tmp_path)) == str(folder)
    # JAX reads and writes entries under this lock only when the cache has a size limit, and keeps each entry's
    # access time beside it, which its eviction needs
    assert (folder / ".lockfile").exists()
    entries = [path.name.removesuffix("-cache") for path in folder.iterdir() if path.name.endswith("-cache")]
    assert entries and all((folder / f"{entry}-atime").exists() for entry in entries)


@pytest.mark.slow  # a fresh Python process importing JAX
def test_off_switches_the_cache_off(monkeypatch):
    monkeypatch.setenv("JAXINTERP_JAX_CACHE", "off")
    assert compilation_cache.location() is None
    assert run("off") == "None"
