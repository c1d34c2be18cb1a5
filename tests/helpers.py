"""What several test modules share: tolerances, model factories and the fixture folder."""

import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

FIXTURES = pathlib.Path(__file__).parent / "fixtures"


def relative_error(a, b) -> float:
    """`max|a - b| / max|b|`: how far `a` is from the reference `b`, relative to the reference's scale."""
    return float(jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12))


def relative_size(a, b) -> float:
    """`max|a| / max|b|`: how large `a` is relative to the scale of `b`."""
    return float(jnp.max(jnp.abs(a)) / (jnp.max(jnp.abs(b)) + 1e-12))


def tree_allclose(x, y, *, rtol=1e-5, atol=1e-8) -> bool:
    """Whether two pytrees have the same structure and numerically close array leaves."""
    if jax.tree_util.tree_structure(x) != jax.tree_util.tree_structure(y):
        return False
    return all(
        np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)
        for a, b in zip(jax.tree_util.tree_leaves(x), jax.tree_util.tree_leaves(y))
    )


def to_float64(tree):
    """Cast every floating-point array of a pytree (a model, say) to float64 (needs `jax_enable_x64`)."""
    return jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if eqx.is_inexact_array(a) else a, tree)


def load_fixture(name: str):
    """The reference arrays stored in `tests/fixtures/NAME` (made by the generator script beside them)."""
    path = FIXTURES / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run tests/fixtures/make_reference_outputs.py to make it")
    return np.load(path, allow_pickle=False)


def tiny_transformer_configs() -> dict:
    """Two-layer BERT-, GPT-2- and Llama-shaped configs (d_model 32, 4 heads; Llama with 2 key/value heads)."""
    import models

    small = dict(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, vocab_size=50)
    return {
        "bert": models.bert_config(**small, max_positions=16),
        "gpt2": models.gpt2_config(**small, max_positions=16),
        "llama": models.llama_config(**{**small, "n_kv_heads": 2}),
    }


# ------------------------------------------------------------------------------ many random cases in one vmap
def draw_cases(draw, seeds):
    """`draw(rng)` for each seed, with `rng = numpy.random.default_rng(seed)`, stacked along a new leading axis.

    Drawing with NumPy costs no compilation (drawing weights with `jax.random` under `vmap` costs seconds of XLA
    compile per family on two cores), and each case can be drawn again alone from its seed.

    **Arguments:** `draw`, a function of a `numpy.random.Generator` returning a pytree (arrays, equinox Modules
    from `model_sampler`); `seeds`, a sequence of integers.

    **Returns:** the pytree with every array leaf stacked (as a JAX array), ready for `eqx.filter_vmap`.
    """
    cases = [draw(np.random.default_rng(seed)) for seed in seeds]
    return jax.tree_util.tree_map(lambda *leaves: jnp.asarray(np.stack(leaves)), *cases)


def model_sampler(make):
    """A function of a `numpy.random.Generator` returning a random model with the structure of `make(key)`.

    The structure comes from `jax.eval_shape`, so no initialiser runs (and nothing is compiled). Each
    floating-point array with two or more axes is drawn from a normal of mean 0 and variance `1 / fan_in`, `fan_in`
    being the product of all its axes but the first (the input size of an `eqx.nn.Linear` or `eqx.nn.Conv2d`
    weight); each vector or scalar (a bias, a norm's weight) from a normal of mean 0 and standard deviation 0.5.
    Every other array is kept as `make` builds it.

    **Arguments:** `make`, a function of a PRNG key returning an equinox Module.
    """
    structure = jax.eval_shape(lambda: make(jax.random.key(0)))
    is_floating = lambda a: isinstance(a, jax.ShapeDtypeStruct) and jnp.issubdtype(a.dtype, jnp.inexact)
    floating, static = eqx.partition(structure, is_floating)
    if any(isinstance(a, jax.ShapeDtypeStruct) for a in jax.tree_util.tree_leaves(static)):
        static = eqx.filter(make(jax.random.key(0)), lambda a: not eqx.is_inexact_array(a))  # integer arrays
    leaves, treedef = jax.tree_util.tree_flatten(floating)

    def spread(shape):
        return float(np.prod(shape[1:])) ** -0.5 if len(shape) >= 2 else 0.5

    def sample(rng):
        drawn = [(spread(a.shape) * rng.standard_normal(a.shape)).astype(a.dtype) for a in leaves]
        return eqx.combine(jax.tree_util.tree_unflatten(treedef, drawn), static)

    return sample


def assert_cases_within(errors, tolerance: float, seeds, what: str):
    """Fail, naming the worst case's index and seed, unless every case's error is at most `tolerance`.

    **Arguments:** `errors`, one number per case (NaN counts as a failure); `tolerance`; `seeds`, the seed of each
    case (as given to `draw_cases`); `what`, the property, for the message.
    """
    errors = np.asarray(errors, np.float64).reshape(len(seeds), -1).max(axis=1)
    bad = ~(errors <= tolerance)
    if bad.any():
        worst = int(np.argmax(np.where(np.isnan(errors), np.inf, errors)))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {len(errors)} cases exceed {tolerance:g}; worst is case {worst} "
            f"(seed {seeds[worst]}) with {errors[worst]:.3g}"
        )


def transformer_lens_config(ref):
    """The `models.gpt2_config` of a fixture made from a TransformerLens `HookedTransformerConfig` (its sizes under
    `config` / `config_names`, `norm_eps`), with an untied unembedding as TransformerLens has."""
    import models

    c = dict(zip((str(n) for n in ref["config_names"]), (int(v) for v in ref["config"])))
    return models.gpt2_config(
        vocab_size=c["d_vocab"], d_model=c["d_model"], n_layers=c["n_layers"], n_heads=c["n_heads"],
        d_head=c["d_head"], d_mlp=c["d_mlp"], max_positions=c["n_ctx"], norm_eps=float(ref["norm_eps"]),
        tie_embeddings=False,
    )  # fmt: skip


def small_fine_tuning():
    """The smallest fine-tuning the tests run: one MiniLM block on 256 SST-2 texts, scored on 128 dev sentences."""
    from models.text_classifiers import FineTuning

    return FineTuning(trained_blocks=1, train_rows=256, heldout_rows=128, epochs=1.0, learning_rate=2e-4)
