import os
import pathlib

import jax
import pytest
from jaxtyping import install_import_hook

# run-time checking of the library's jaxtyping annotations (shapes and dtypes) with beartype, in every test
with install_import_hook("jaxinterp", "beartype.beartype"):
    import jaxinterp  # noqa: F401

os.environ.setdefault("JAXINTERP_OFFLINE", "1")
# the data sets kept as plain files (SST-2, AG News) are in the shared data folder beside the checkout
os.environ.setdefault("JAXINTERP_DATA", str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"))

from jaxinterp import compilation_cache

# every program is cached, however short: the tests build many functions anew (a `cd(model, sources)` per call)
# whose programs are ones compiled before, and the two test processes share what either compiled. Without a size
# limit: with one, JAX lists the whole folder under its lock at every write, which, with thousands of entries,
# left the two workers waiting on each other a third of the time.
compilation_cache.enable(min_compile_seconds=0.0, max_bytes=None)


@pytest.fixture
def getkey():
    """A function returning a fresh PRNG key on each call, deterministic per test."""
    keys = iter(jax.random.split(jax.random.key(0), 1000))
    return lambda: next(keys)


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXINTERP_RESULTS", str(tmp_path / "results"))


@pytest.fixture
def offline_cache(monkeypatch, tmp_path):
    """No downloads, and an empty download cache in the test's temporary folder."""
    monkeypatch.setenv("JAXINTERP_OFFLINE", "1")
    monkeypatch.setenv("JAXINTERP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def float64():
    """Switch on float64 for one test and return a function casting a pytree (a model) to it.

    CD-T's magnitude-proportional bias split is ill-conditioned where both parts are tiny, so two float32
    computations of the same decomposition that round differently (batched vs single matmuls, two separately
    written implementations) drift apart layer by layer; in float64 they agree to ~1e-11.
    """
    from tests.helpers import to_float64

    jax.config.update("jax_enable_x64", True)
    yield to_float64
    jax.config.update("jax_enable_x64", False)


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 encoder and its tokenizer, loaded once per test session."""
    import models

    return models.load("minilm-l6")


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct model and its tokenizer, loaded once per test session."""
    import models

    return models.load("smollm2-135m")


@pytest.fixture(scope="session")
def text_classifier_cache(tmp_path_factory):
    """A jaxinterp cache folder shared by the tests that fine-tune the small text classifier (`SMALL_FINE_TUNING`),
    so that it is fine-tuned once per test process."""
    return tmp_path_factory.mktemp("text-classifier-cache")


def pytest_collection_modifyitems(items):
    """Every test that loads real pretrained weights (through the `minilm` or `smollm2` fixtures) is marked
    `pretrained`."""
    for item in items:
        if {"minilm", "smollm2"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.pretrained)
