"""Invariants of contextual decomposition on thousands of random cases, each family checked in one compiled vmap.

Every case (a random model, input and mask) is drawn with NumPy from its own seed (`tests.helpers.draw_cases`);
a family's check runs all its cases in one `eqx.filter_jit(eqx.filter_vmap(check))` call and returns per-case
error measures, and a failure names the worst case and its seed. The families use disjoint seeds.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from tests.helpers import assert_cases_within, draw_cases, model_sampler, tiny_transformer_configs, to_float64

SEQ = 6
ACTIVATION_RULES = ("cdt", "acd", "shapley")
TRANSFORMER_RULES = tuple(
    ji.Rules(attention=a, activation=v) for a in ("frozen", "decomposed") for v in ACTIVATION_RULES
)


def seeds(family: str, n: int) -> list[int]:
    """`n` seeds for `family`, disjoint from every other family's."""
    return list(range(FAMILY_SEEDS[family], FAMILY_SEEDS[family] + n))


FAMILY_SEEDS = {
    name: 100_000 * (i + 1)
    for i, name in enumerate(
        ["mlp", "cnn", "gru", "lstm", "bert", "gpt2", "llama", "linear", "mlp zero", "cnn zero", "gru zero",
         "lstm zero", "bert zero", "gpt2 zero", "llama zero", "mask sweep"]
    )
}  # fmt: skip


def relative_error(a, b):
    """`max|a - b| / max|b|`, traceable (`tests.helpers.relative_error` returns a Python float)."""
    return jnp.max(jnp.abs(a - b)) / (jnp.max(jnp.abs(b)) + 1e-12)


def random_mask(rng, shape, fractional: bool = True):
    """A mask of `shape`: 0/1 entries, each on with a probability drawn per case (so all-zero and all-one masks
    occur), or, for a quarter of the cases when `fractional`, uniform entries in [0, 1]."""
    if fractional and rng.random() < 0.25:
        return rng.random(shape).astype(np.float32)
    return (rng.random(shape) < rng.random()).astype(np.float32)


# ------------------------------------------------------------------------------ small models, input sources
SMALL_MODELS = {
    # name: (the model's constructor, whose structure `model_sampler` fills with random weights, input shape, cases)
    "mlp": (lambda key: models.MLP(6, [16, 16], 3, activation="gelu", key=key), (6,), 2000),
    "cnn": (lambda key: models.CNN(1, 8, [4, 4], 3, key=key), (1, 8, 8), 1000),
    "gru": (lambda key: models.GRUClassifier(5, 8, 2, embed=False, key=key), (7, 5), 1000),
    "lstm": (lambda key: models.LSTMClassifier(5, 8, 2, embed=False, key=key), (7, 5), 1000),
}


def draw_small_model_cases(kind: str, family: str):
    make, shape, n = SMALL_MODELS[kind]
    sample = model_sampler(make)

    def draw(rng):
        x = rng.standard_normal(shape).astype(np.float32)
        return sample(rng), x, random_mask(rng, shape)

    case_seeds = seeds(family, n)
    return draw_cases(draw, case_seeds), case_seeds


@eqx.filter_jit
@eqx.filter_vmap
def check_small_model(model, x, mask):
    """Per activation rule: the relative error of `rel + irr` against the forward, and `max|rel|`."""
    out = model(x)
    errors, rel_sizes = [], []
    for variant in ACTIVATION_RULES:
        rel, irr = ji.cd(model, ji.Input(0, mask), rules=ji.Rules(activation=variant))(x)
        errors.append(relative_error(rel + irr, out))
        rel_sizes.append(jnp.max(jnp.abs(rel)))
    return jnp.stack(errors), jnp.stack(rel_sizes)


@pytest.mark.parametrize("kind", sorted(SMALL_MODELS))
def test_small_models_rel_plus_irr_is_the_forward(kind):
    """Float32, to 1e-5 of the forward. The worst case sits at 9.4e-6 by rounding alone: LSTM seed 400764, whose
    logits are fifty times smaller than its hidden state; in float64 the same case agrees to 9e-15."""
    (model, x, mask), case_seeds = draw_small_model_cases(kind, kind)
    errors, _ = check_small_model(model, x, mask)
    for j, variant in enumerate(ACTIVATION_RULES):
        assert_cases_within(errors[:, j], 1e-5, case_seeds, f"{kind}, activation rule {variant}: rel + irr vs forward")


@functools.cache
def small_model_cases_without_sources(kind: str):
    """The errors and `max|rel|` of `check_small_model` on fresh cases with an all-zero mask, and their seeds."""
    (model, x, mask), case_seeds = draw_small_model_cases(kind, f"{kind} zero")
    errors, rel_sizes = check_small_model(model, x, jnp.zeros_like(mask))
    return errors, rel_sizes, case_seeds


@pytest.mark.parametrize(
    "kind, variant", [(kind, variant) for kind in sorted(SMALL_MODELS) for variant in ACTIVATION_RULES]
)
def test_small_models_all_zero_mask_leaves_nothing_relevant(kind, variant):
    errors, rel_sizes, case_seeds = small_model_cases_without_sources(kind)
    j = ACTIVATION_RULES.index(variant)
    assert_cases_within(errors[:, j], 1e-5, case_seeds, f"{kind}, activation rule {variant}: rel + irr vs forward")
    assert_cases_within(rel_sizes[:, j], 0.0, case_seeds, f"{kind}, activation rule {variant}: max|rel|")


# ------------------------------------------------------------------------------ transformers, internal sources
TRANSFORMER_CASES = 340  # per kind: 1,020 cases over the three kinds, each decomposed under the six rule variants


def draw_transformer_cases(kind: str, family: str):
    cfg = tiny_transformer_configs()[kind]
    sample = model_sampler(lambda key: models.Transformer(cfg, key=key))

    def draw(rng):
        model = sample(rng)
        tokens = rng.integers(0, cfg.vocab_size, (2, SEQ)).astype(np.int32)  # the input, and a reference input
        masks = {
            "positions": random_mask(rng, (SEQ, 1), fractional=False),
            "heads": random_mask(rng, (cfg.n_layers, cfg.n_heads, 1), fractional=False),
            "neurons": random_mask(rng, (cfg.d_mlp,), fractional=False),
        }
        # each source is switched off (an all-zero mask) in about half of the cases
        masks = {name: m * (rng.random() < 0.5) for name, m in masks.items()}
        return model, tokens, masks

    case_seeds = seeds(family, TRANSFORMER_CASES)
    return draw_cases(draw, case_seeds), case_seeds


@eqx.filter_jit
@eqx.filter_vmap
def check_transformer(model, tokens, masks):
    """Per rule variant: the relative error of `rel + irr` against the forward, and `max|rel|`, with token positions
    at `embed`, heads at every `blocks.L.attn.z` and MLP neurons at `blocks.0.mlp.post` (mean-ablated towards
    their mean over the positions of the reference input) as sources."""
    tokens, reference = tokens[0], tokens[1]
    out = model(tokens)
    _, cache = ji.capture(model, "blocks.0.mlp.post")(reference)
    sources = [
        ji.Site("embed", masks["positions"]),
        *(ji.Site(f"blocks.{layer}.attn.z", masks["heads"][layer]) for layer in range(model.cfg.n_layers)),
        ji.Site("blocks.0.mlp.post", masks["neurons"], mean=cache["blocks.0.mlp.post"].mean(0)),
    ]
    errors, rel_sizes = [], []
    for rules in TRANSFORMER_RULES:
        rel, irr = ji.cd(model, sources, rules=rules)(tokens)
        errors.append(relative_error(rel + irr, out))
        rel_sizes.append(jnp.max(jnp.abs(rel)))
    return jnp.stack(errors), jnp.stack(rel_sizes)


def rules_name(rules) -> str:
    return f"attention={rules.attention}, activation={rules.activation}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_transformers_rel_plus_irr_is_the_forward(kind):
    (model, tokens, masks), case_seeds = draw_transformer_cases(kind, kind)
    errors, _ = check_transformer(model, tokens, masks)
    for j, rules in enumerate(TRANSFORMER_RULES):
        assert_cases_within(errors[:, j], 1e-5, case_seeds, f"{kind}, {rules_name(rules)}: rel + irr vs forward")


@pytest.mark.parametrize("kind", ["bert", "gpt2", "llama"])
def test_transformers_all_zero_masks_leave_nothing_relevant(kind):
    (model, tokens, masks), case_seeds = draw_transformer_cases(kind, f"{kind} zero")
    zeros = jax.tree_util.tree_map(jnp.zeros_like, masks)
    errors, rel_sizes = check_transformer(model, tokens, zeros)
    for j, rules in enumerate(TRANSFORMER_RULES):
        assert_cases_within(rel_sizes[:, j], 0.0, case_seeds, f"{kind}, {rules_name(rules)}: max|rel|")
        assert_cases_within(errors[:, j], 1e-5, case_seeds, f"{kind}, {rules_name(rules)}: rel + irr")


# ------------------------------------------------------------------------------ linear functions: known answers
LINEAR_CASES = 2000


@eqx.filter_jit
@eqx.filter_vmap
def check_linear(weights, x, mask):
    """For `x @ W` and a deeper bias-free linear map: how far `rel` is from `f(mask x)`, `irr` from
    `f((1 - mask) x)`, the relevant parts for `mask` and `1 - mask` together from the relevant part of the whole
    input, that from `f(x)`; and `max|irr|` with the whole input relevant."""
    w, w_deep = weights

    def deep(v):
        return (0.5 * (v @ w)).T.reshape(-1) @ w_deep

    measures = []
    for f in (lambda v: v @ w, deep):
        rel, irr = ji.cd(f, ji.Input(0, mask))(x)
        rel_complement, _ = ji.cd(f, ji.Input(0, 1 - mask))(x)
        rel_all, irr_all = ji.cd(f, ji.Input(0))(x)
        measures += [
            relative_error(rel, f(mask * x)),
            relative_error(irr, f((1 - mask) * x)),
            relative_error(rel + rel_complement, rel_all),
            relative_error(rel_all, f(x)),
            jnp.max(jnp.abs(irr_all)),
        ]
    return jnp.stack(measures)


def test_linear_functions_decompose_exactly(float64):
    """In float64, so that the known answers hold to rounding (1e-12) even where the parts nearly cancel."""

    def draw(rng):
        weights = rng.standard_normal((8, 5)), rng.standard_normal((15, 4))
        return weights, rng.standard_normal((3, 8)), random_mask(rng, (3, 8)).astype(np.float64)

    case_seeds = seeds("linear", LINEAR_CASES)
    measures = check_linear(*draw_cases(draw, case_seeds))
    names = ["rel vs f(mask x)", "irr vs f((1 - mask) x)", "rel(mask) + rel(1 - mask) vs rel_all", "rel_all vs f(x)"]
    for offset, f in ((0, "x @ W"), (5, "deep linear map")):
        for j, name in enumerate(names):
            assert_cases_within(measures[:, offset + j], 1e-12, case_seeds, f"{f}: {name}")
        assert_cases_within(measures[:, offset + 4], 0.0, case_seeds, f"{f}: max|irr| with the whole input relevant")


# ------------------------------------------------------------------------------ vmap over masks equals a loop
def mask_sweep(kind: str):
    """A float64 model of `kind`, a function of a mask (a pytree) decomposing one fixed input, and six masks."""
    rng = np.random.default_rng(FAMILY_SEEDS["mask sweep"])
    masks = lambda shape, **kw: np.stack([random_mask(rng, shape, **kw) for _ in range(6)]).astype(np.float64)
    if kind in ("mlp", "gru"):
        make, shape, _ = SMALL_MODELS[kind]
        model, x = to_float64(model_sampler(make)(rng)), jnp.asarray(rng.standard_normal(shape))
        mask_shape = shape if kind == "mlp" else (shape[0], 1)  # GRU: whole time steps
        return (lambda m: ji.cd(model, ji.Input(0, m))(x)[0]), jnp.asarray(masks(mask_shape))
    cfg = tiny_transformer_configs()[kind]
    model = to_float64(model_sampler(lambda key: models.Transformer(cfg, key=key))(rng))
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, SEQ))
    rules = ji.Rules(attention="decomposed", activation="shapley")

    def decompose(m):
        positions, heads = m
        return ji.cd(model, [ji.Site("embed", positions), ji.Site("blocks.1.attn.z", heads)], rules=rules)(tokens)[0]

    sweep = masks((SEQ, 1), fractional=False), masks((cfg.n_heads, 1), fractional=False)
    return decompose, jax.tree_util.tree_map(jnp.asarray, sweep)


@pytest.mark.parametrize("kind", ["mlp", "gru", "gpt2"])
def test_vmap_over_masks_equals_a_loop_of_single_calls(kind, float64):
    decompose, sweep = mask_sweep(kind)
    swept = jax.jit(jax.vmap(decompose))(sweep)
    single = jax.jit(decompose)
    for i in range(6):
        mask = jax.tree_util.tree_map(lambda m, i=i: m[i], sweep)
        np.testing.assert_allclose(swept[i], single(mask), rtol=1e-9, atol=1e-9, err_msg=f"{kind}, mask {i}")
