"""`cd_sweep` equals a loop of single `cd` calls; site-pattern sign normalisation; positional embeddings as data."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from tests.helpers import model_sampler, relative_error, tiny_transformer_configs, to_float64

SEQ = 6


def random_transformer(kind: str, seed: int = 0):
    """A tiny float64 transformer of `kind` with every weight, bias and norm parameter random, and its tokens."""
    rng = np.random.default_rng(seed)
    cfg = tiny_transformer_configs()[kind]
    model = to_float64(model_sampler(lambda key: models.Transformer(cfg, key=key))(rng))
    return jax.tree_util.tree_map(jnp.asarray, model), jnp.asarray(rng.integers(0, cfg.vocab_size, SEQ))


def source_sets(stacks, per_stack: int):
    """`(index in the sweep, the Sites cd takes)` for the first, last and evenly spaced sets of each stack."""
    chosen, offset = [], 0
    for stack in stacks:
        for i in sorted({round(k) for k in np.linspace(0, stack.size - 1, per_stack)}):
            chosen.append((offset + i, [ji.Site(s.pattern, s.mask[i], s.mean) for s in stack.sites]))
        offset += stack.size
    return chosen


def assert_sweep_equals_loop(model, tokens, stacks, rules, targets=None, per_stack=3, tol=1e-9):
    """The sweep against single `cd` calls (one compiled function per source structure) on `per_stack` sets of
    each stack, to `tol` of the largest value of the decomposed quantity."""
    swept = eqx.filter_jit(lambda m, t: ji.cd_sweep(m, stacks, targets=targets, rules=rules)(t))(model, tokens)
    single = eqx.filter_jit(lambda m, t, sources: ji.cd(m, sources, targets=targets, rules=rules)(t))
    for index, sources in source_sets(stacks, per_stack):
        expected = single(model, tokens, sources)
        scale = max(float(jnp.max(jnp.abs(r + i))) for r, i in zip(*map(jax.tree_util.tree_leaves, expected)))
        for got, want in zip(jax.tree_util.tree_leaves(swept), jax.tree_util.tree_leaves(expected)):
            assert float(jnp.max(jnp.abs(got[index] - want))) <= tol * scale, f"source set {index} ({rules})"


@pytest.mark.parametrize(
    ("kind", "rules"),
    [
        ("bert", ji.Rules()),
        ("bert", ji.Rules.official_bert()),
        ("gpt2", ji.Rules(attention="decomposed", activation="acd")),
        ("gpt2", ji.Rules.official_gpt2()),
        ("llama", ji.Rules(attention="decomposed", normalise_signs={"blocks.*.resid_post"})),
    ],
    ids=["bert-exact", "bert-official", "gpt2-acd", "gpt2-official", "llama-sites"],
)
def test_sweep_equals_a_loop_of_single_calls(kind, rules, float64):
    """Heads (one stack per layer), positions and spans; one stream for exact rules, two for the official split."""
    model, tokens = random_transformer(kind)
    cfg = model.cfg
    stacks = [*ji.every_head(cfg.n_layers, cfg.n_heads), ji.every_position(SEQ), ji.every_span(SEQ, 3)]
    assert ji.cd_sweep(model, stacks, rules=rules).one_stream == rules.exact
    assert_sweep_equals_loop(model, tokens, stacks, rules)


def test_sweep_to_internal_targets_with_mean_ablation(float64):
    model, tokens = random_transformer("gpt2")
    cfg = model.cfg
    mean = jnp.asarray(np.random.default_rng(1).standard_normal((SEQ, cfg.n_heads, cfg.d_head)))
    masks = jax.vmap(lambda h: ji.head_mask(h, cfg.n_heads))(jnp.arange(cfg.n_heads))
    stacks = [ji.SourceStack.at("blocks.0.attn.z", masks, mean=mean)]
    for rules in (ji.Rules(attention="decomposed"), ji.Rules.official_gpt2()):
        assert_sweep_equals_loop(
            model, tokens, stacks, rules, targets=["blocks.1.attn.q", "blocks.1.attn.z"], per_stack=2
        )


def test_sweep_is_complete_and_chunking_changes_nothing(float64):
    model, tokens = random_transformer("gpt2")
    stacks = ji.every_head(model.cfg.n_layers, model.cfg.n_heads)
    whole = ji.cd_sweep(model, stacks)
    one_at_a_time = ji.cd_sweep(model, stacks, memory_budget=1)
    assert one_at_a_time.chunk_sizes(tokens) == [1, 1]
    assert whole.chunk_sizes(tokens) == [4, 4]
    rel, irr = whole(tokens)
    assert rel.shape == (8, SEQ, model.cfg.vocab_size)
    assert relative_error(rel + irr, jnp.broadcast_to(model(tokens), rel.shape)) <= 1e-12
    np.testing.assert_allclose(one_at_a_time(tokens).rel, rel, rtol=0, atol=1e-12)
    assert whole.labels == [(layer, head) for layer in range(2) for head in range(4)]


def test_sweep_composes_with_vmap_over_inputs(float64):
    model, _ = random_transformer("llama")
    batch = jnp.asarray(np.random.default_rng(2).integers(0, 50, (3, SEQ)))
    sweep = ji.cd_sweep(model, ji.every_position(SEQ))
    batched = jax.jit(jax.vmap(sweep))(batch)
    for b in range(3):
        np.testing.assert_allclose(batched.rel[b], sweep(batch[b]).rel, rtol=0, atol=1e-12)


def test_span_and_head_stacks_select_what_they_say():
    spans = ji.every_span(4, 2)
    assert spans.labels == ((0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (1, 3), (2, 4))
    assert spans.sites[0].mask.shape == (7, 4, 1)
    np.testing.assert_array_equal(spans.sites[0].mask[5, :, 0], [0, 1, 1, 0])
    heads = ji.every_head(2, 3)
    assert [s.sites[0].pattern for s in heads] == ["blocks.0.attn.z", "blocks.1.attn.z"]
    np.testing.assert_array_equal(heads[1].sites[0].mask[2, :, 0], [0, 0, 1])


def test_sweep_rejects_bad_stacks():
    with pytest.raises(ValueError, match="same length"):
        ji.SourceStack((ji.Site("embed", jnp.ones((3, 6, 1))), ji.Site("blocks.0.attn.z", jnp.ones((2, 4, 1)))))
    with pytest.raises(ValueError, match="2 labels for 3"):
        ji.SourceStack.at("embed", jnp.ones((3, 6, 1)), labels=["a", "b"])
    with pytest.raises(TypeError, match="SourceStack"):
        ji.cd_sweep(lambda x: x, ji.Site("embed"))
    with pytest.raises(TypeError, match=r"SourceStack.at\('args.k', masks\)"):
        ji.SourceStack(ji.Input(0, jnp.ones((2, 3))))
    swept = ji.cd_sweep(lambda x: jnp.tanh(x) * 2.0, ji.SourceStack.at("args.0", jnp.eye(3)))(jnp.arange(3.0))
    np.testing.assert_allclose(swept.rel, jnp.diag(2.0 * jnp.tanh(jnp.arange(3.0))), rtol=1e-6)
    with pytest.raises(ValueError, match="streams"):
        ji.cd_sweep(lambda x: x, ji.every_position(3), streams=3)
    model, tokens = random_transformer("gpt2")
    with pytest.raises(ji.UnknownSiteError, match="blocks.0.attn.z"):
        ji.cd_sweep(model, ji.SourceStack.at("blocks.0.atn.z", jnp.ones((2, 4, 1))))(tokens)


# ---------------------------------------------------------------------------------- sign normalisation at sites
def test_signs_are_normalised_at_named_sites_only(float64):
    model, tokens = random_transformer("gpt2")
    source = ji.Site("blocks.0.attn.z", ji.head_mask(1, 4))
    sites = ["blocks.0.mlp.out", "blocks.0.attn.out"]
    plain = ji.cd(model, source, targets=sites, rules=ji.Rules(attention="decomposed"))(tokens)
    rules = ji.Rules(attention="decomposed", normalise_signs={"blocks.*.mlp.out"})
    normalised = ji.cd(model, source, targets=sites, rules=rules)(tokens)
    conflicts = lambda pair, name: int(jnp.sum(pair.rel[name] * pair.irr[name] < 0))
    assert conflicts(plain, "blocks.0.mlp.out") > 0 and conflicts(normalised, "blocks.0.mlp.out") == 0
    assert conflicts(normalised, "blocks.0.attn.out") == conflicts(plain, "blocks.0.attn.out") > 0
    for name in sites:
        assert relative_error(normalised.total[name], plain.total[name]) <= 1e-12


def test_an_unknown_normalisation_entry_names_the_kinds_and_the_sites():
    model, tokens = random_transformer("gpt2")
    rules = ji.Rules(normalise_signs={"residuals"})
    with pytest.raises(ji.UnknownSiteError, match=r"neither a kind of operation \(activation, attention"):
        ji.cd(model, ji.Site("embed"), rules=rules)(tokens)
    with pytest.raises(TypeError, match="normalise_signs"):
        ji.Rules(normalise_signs="linear")


def test_presets_name_what_they_reproduce():
    assert ji.Rules.official_bert() == ji.Rules(normalise_signs=True, bias_split="official")
    gpt2 = ji.Rules.official_gpt2()
    assert gpt2.attention == "decomposed" and gpt2.bias_split == "official" and not gpt2.exact
    assert gpt2.normalised_kinds == frozenset()
    assert gpt2.normalised_sites == {"blocks.*.mlp.pre", "blocks.*.mlp.out", "blocks.*.resid_post"}
    assert "cdt_source_to_target.py" in ji.Rules.official_gpt2.__doc__
    assert "cdt_basic.py" in ji.Rules.official_bert.__doc__


# --------------------------------------------------------------------------------- positional embeddings as data
def test_values_marked_as_data_are_irrelevant_not_split():
    offset = jnp.array([0.5, -2.0, 3.0])
    x, mask = jnp.array([1.0, 2.0, -1.0]), jnp.array([1.0, 0.0, 1.0])
    rules = ji.Rules(bias_split="official")
    rel, irr = ji.cd(lambda v: v + ji.as_data(offset), ji.Input(0, mask), rules=rules)(x)
    np.testing.assert_array_equal(rel, mask * x)
    np.testing.assert_array_equal(irr, (1 - mask) * x + offset)
    rel_split, _ = ji.cd(lambda v: v + offset, ji.Input(0, mask), rules=rules)(x)
    assert float(jnp.max(jnp.abs(rel_split - rel))) > 0.4  # a parameter is split by magnitude
    np.testing.assert_array_equal(jax.jit(ji.as_data)(offset), offset)
    assert float(jax.grad(lambda v: jnp.sum(ji.as_data(v) ** 2))(offset)[1]) == -4.0


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_positional_embeddings_start_irrelevant(positional, float64):
    cfg = tiny_transformer_configs()["gpt2"]
    cfg = models.TransformerConfig(**{**cfg.__dict__, "positional": positional})
    model = to_float64(model_sampler(lambda key: models.Transformer(cfg, key=key))(np.random.default_rng(3)))
    tokens = jnp.arange(SEQ)
    # everything before the first source is the forward's value, exactly, under the published split too
    rel, irr = ji.cd(model, ji.Site("blocks.1.attn.z"), targets="embed", rules=ji.Rules.official_gpt2())(tokens)
    assert float(jnp.max(jnp.abs(rel["embed"]))) == 0.0
    np.testing.assert_array_equal(irr["embed"], model.embed(tokens))


def test_sinusoids_and_config_checks():
    table = models.transformer.sinusoids(5, 6)
    p, i = 3, 2
    np.testing.assert_allclose(table[p, 2 * i], np.sin(p / 10000 ** (2 * i / 6)), rtol=1e-6)
    np.testing.assert_allclose(table[p, 2 * i + 1], np.cos(p / 10000 ** (2 * i / 6)), rtol=1e-6)
    with pytest.raises(ValueError, match="positional"):
        models.gpt2_config(positional="absolute")


# ------------------------------------------------------------------------------ the forward's values, and where not
W = jnp.array([[1.0, -2.0], [0.5, 1.5]])
X = jnp.array([0.3, -0.7])


def layer(x):
    return ji.tag(jnp.tanh(x @ W + 0.1), "h") @ W


def test_sites_inside_called_functions_and_loops_are_reached():
    """The forward's cached values stand in for plain computations, never for ones holding a site."""
    source = ji.Site("h", jnp.array([1.0, 0.0]))
    rel = ji.cd(layer, source)(X).rel
    assert float(jnp.max(jnp.abs(rel))) > 0.05
    np.testing.assert_allclose(ji.cd(lambda v: jax.jit(layer)(v), source)(X).rel, rel, rtol=1e-6)
    recorded = ji.cd(lambda v: jax.jit(layer)(v), ji.Input(0), targets="h")(X)
    np.testing.assert_allclose(recorded.rel["h"], jnp.tanh(X @ W + 0.1), rtol=1e-6)

    def unrolled(x):
        return layer(layer(x))

    def scanned(x):
        return jax.lax.scan(lambda c, _: (layer(c), None), x, None, length=2)[0]

    np.testing.assert_allclose(ji.cd(scanned, source)(X).rel, ji.cd(unrolled, source)(X).rel, rtol=1e-6)
    offset = jnp.array([0.5, -2.0])
    marked = ji.cd(lambda v: jax.jit(lambda u: u + ji.as_data(offset))(v), ji.Input(0, jnp.array([1.0, 0.0])))(X)
    np.testing.assert_allclose(marked.rel, [X[0], 0.0], rtol=1e-6)


def test_a_target_before_the_sources_changes_nothing_after_it():
    bias = jnp.array([0.5, -0.25])

    def f(x):
        y = ji.tag(ji.tag(2.0 * x, "e") + bias, "y")
        return ji.tag(jnp.tanh(y), "z") @ W

    source = ji.Site("z", jnp.array([1.0, 0.0]))
    x = jnp.array([0.0, 1.0])  # a zero where the published split would lose the bias if it ran on y
    alone = ji.cd(f, source, targets=["y"], rules=ji.Rules(bias_split="official"))(x)
    with_e = ji.cd(f, source, targets=["e", "y"], rules=ji.Rules(bias_split="official"))(x)
    np.testing.assert_array_equal(with_e.rel["y"], alone.rel["y"])
    np.testing.assert_array_equal(with_e.irr["y"], 2.0 * x + bias)
    np.testing.assert_array_equal(with_e.rel["e"], jnp.zeros(2))


def test_infinities_stay_whole_in_one_stream():
    rel, irr = ji.cd(lambda x: 2.0 * x, ji.Input(0))(jnp.array([jnp.inf, 1.0]))
    np.testing.assert_array_equal(rel, [jnp.inf, 2.0])
    np.testing.assert_array_equal(irr, [0.0, 0.0])


def test_one_stream_needs_exact_rules():
    with pytest.raises(ValueError, match="exact rules"):
        ji.cd_sweep(lambda x: x, ji.every_position(3), rules=ji.Rules.official_bert(), streams=1)
