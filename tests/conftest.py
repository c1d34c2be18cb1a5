import os
import pathlib

import jax
import pytest

os.environ.setdefault("JAXINTERP_OFFLINE", "1")

jax.config.update("jax_compilation_cache_dir", str(pathlib.Path(__file__).parent.parent / ".cache" / "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on each call, deterministic per test."""
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    return lambda: next(keys)


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXINTERP_RESULTS", str(tmp_path / "results"))
