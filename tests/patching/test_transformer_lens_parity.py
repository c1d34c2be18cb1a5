"""jaxinterp's activation patching against TransformerLens's `transformer_lens.patching`.

The reference (`tests/fixtures/patching_reference.npz`, made by `tests/fixtures/make_patching_reference.py`) holds a
small random TransformerLens GPT-2 (2 layers, d_model 32, 4 heads, float32, perturbed biases and layer norms), a
clean and a corrupted batch of 2 x 6 tokens, both runs' logits, and what each `get_act_patch_*` function returns
for the metric "logit difference between two tokens at the last position, averaged over the batch", called as
TransformerLens intends: `fn(model, corrupted_tokens, clean_cache, metric)`, the corrupted run with one part of it
replaced by the clean run's value.

A jaxinterp model takes one sequence (batch with `jax.vmap`), so the batch metric is the mean over the batch of each
example's logit difference. Each TransformerLens function is reproduced twice:

- by `ji.capture` and `ji.intervene` directly, one example at a time and averaged over the batch (one-hot masks over
  the indexed axes of the site, `jax.vmap` over the masks), which checks the fixture, the weight conversion and that
  the sites mean what TransformerLens's hooks mean;
- by `jaxinterp.patching.activation_sweep(model, (corrupted,), (clean,), metric, kind, by=by)`: the corrupted run
  patched from the clean one (TransformerLens's direction), the token batches `[batch, seq]` with a leading batch
  axis, `metric` a function of the batched logits `[batch, seq, vocab]` returning the batch mean, `kind` a key of
  `KINDS` and `by` one of `"all_pos"`, `"pos"` and (for `"head_pattern"`) `"dest_src"`; it returns TransformerLens's
  layout (`[layers, pos]`, `[layers, heads]`, `[layers, pos, heads]`, `[layers, heads, dest_pos, src_pos]`).
  `activation_sweep` has no sweep over the destination positions of a pattern alone (TransformerLens's
  `get_act_patch_attn_head_pattern_by_pos`), so that case is checked the first way only.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp as ji
import models
from tests.helpers import load_fixture, relative_error, transformer_lens_config

FIXTURE = "patching_reference.npz"
# float32 throughout, TransformerLens and jaxinterp summing in different orders: the logits agree to 3e-7 of their
# largest value, the patched metrics to 7e-7 of the metric's scale (`assert_matches`; measured, largest absolute
# difference 9e-7)
TOLERANCE = 1e-5
# what each kind patches: the site of layer L is f"blocks.{L}.{KINDS[kind]}"
KINDS = {
    "resid_pre": "resid_pre",
    "resid_mid": "resid_mid",
    "attn_out": "attn.out",
    "mlp_out": "mlp.out",
    "head_out": "attn.z",
    "head_q": "attn.q",
    "head_k": "attn.k",
    "head_v": "attn.v",
    "head_pattern": "attn.pattern",
}
# (TransformerLens function, kind, by, the axes of the site indexed one at a time, in TransformerLens's order).
# Sites are [seq, d_model] (residual kinds), [seq, heads, d_head] (q, k, v, z) and [heads, dest, src] (pattern);
# an axis not indexed is patched whole.
CASES = [
    ("get_act_patch_resid_pre", "resid_pre", "pos", (0,)),
    ("get_act_patch_resid_mid", "resid_mid", "pos", (0,)),
    ("get_act_patch_attn_out", "attn_out", "pos", (0,)),
    ("get_act_patch_mlp_out", "mlp_out", "pos", (0,)),
    ("get_act_patch_attn_head_out_all_pos", "head_out", "all_pos", (1,)),
    ("get_act_patch_attn_head_q_all_pos", "head_q", "all_pos", (1,)),
    ("get_act_patch_attn_head_k_all_pos", "head_k", "all_pos", (1,)),
    ("get_act_patch_attn_head_v_all_pos", "head_v", "all_pos", (1,)),
    ("get_act_patch_attn_head_pattern_all_pos", "head_pattern", "all_pos", (0,)),
    ("get_act_patch_attn_head_out_by_pos", "head_out", "pos", (0, 1)),
    ("get_act_patch_attn_head_q_by_pos", "head_q", "pos", (0, 1)),
    ("get_act_patch_attn_head_k_by_pos", "head_k", "pos", (0, 1)),
    ("get_act_patch_attn_head_v_by_pos", "head_v", "pos", (0, 1)),
    ("get_act_patch_attn_head_pattern_by_pos", "head_pattern", "pos", (0, 1)),
    ("get_act_patch_attn_head_pattern_dest_src_pos", "head_pattern", "dest_src", (0, 1, 2)),
]
# the by-hand check (each compiles its own sweep) runs on one case of each site shape and on the one sweep
# activation_sweep does not offer
HAND_CASES = [case for case in CASES if case[0].removeprefix("get_act_patch_") in
              ("resid_pre", "attn_head_out_by_pos", "attn_head_k_all_pos", "attn_head_pattern_by_pos")]  # fmt: skip
CASE_IDS = [name.removeprefix("get_act_patch_") for name, *_ in HAND_CASES]
# the cases `activation_sweep` offers: every one but a pattern swept over destination positions alone
SWEEP_CASES = [case for case in CASES if case[0] != "get_act_patch_attn_head_pattern_by_pos"]
SWEEP_IDS = [name.removeprefix("get_act_patch_") for name, *_ in SWEEP_CASES]


@pytest.fixture(scope="module")
def ref():
    return load_fixture(FIXTURE)


@pytest.fixture(scope="module")
def model(ref) -> models.Transformer:
    """The fixture's model as a `models.Transformer` (float32), every array from the fixture."""
    cfg = transformer_lens_config(ref)
    arrays = {str(n): ref[f"weights/{n}"] for n in ref["weight_names"]}
    return models.from_arrays(cfg, arrays, source=FIXTURE)


def logit_difference(ref):
    """The fixture's metric for one example: a function of logits `[seq, vocab]` returning the scalar
    `logits[-1, answer] - logits[-1, distractor]`."""
    answer, distractor = (int(t) for t in ref["answer_tokens"])
    return lambda logits: logits[-1, answer] - logits[-1, distractor]


def batch_logit_difference(ref):
    """The fixture's metric for a batch, as TransformerLens computes it: a function of logits `[batch, seq, vocab]`
    returning the mean over the batch of `logits[:, -1, answer] - logits[:, -1, distractor]`."""
    return lambda logits: jnp.mean(jax.vmap(logit_difference(ref))(logits))


def batch_mean(sweep, ref):
    """`sweep(clean_tokens, corrupted_tokens)` for each example of the fixture's batch, averaged over the batch (the
    TransformerLens metric is a batch mean and each patch acts on every example alike). **Returns:** a NumPy array."""
    clean, corrupted = ref["clean_tokens"], ref["corrupted_tokens"]
    return np.mean([np.asarray(sweep(jnp.asarray(c), jnp.asarray(x))) for c, x in zip(clean, corrupted)], axis=0)


def assert_matches(ours, name: str, ref):
    """Assert that `ours` has the shape of the fixture's `ref[name]` and differs from it by at most `TOLERANCE`
    times the metric's scale: the largest of `|clean metric|`, `|corrupted metric|` and `max |ref[name]|` (some
    sweeps barely move the metric, so their own largest value would be a needlessly small yardstick)."""
    reference = ref[name]
    assert ours.shape == reference.shape, (ours.shape, reference.shape)
    scale = max(abs(float(ref["clean_metric"])), abs(float(ref["corrupted_metric"])), float(np.abs(reference).max()))
    error = float(np.abs(ours - reference).max()) / scale
    assert error <= TOLERANCE, f"{name}: differs from TransformerLens by {error:.2e} of the metric's scale {scale:.3g}"


def one_hot_masks(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[np.ndarray, tuple[int, ...]]:
    """Boolean masks selecting one index of `axes` of an array of `shape` each, the other axes whole.

    **Arguments:** `shape`, the site's shape; `axes`, the indexed axes (increasing).

    **Returns:** `(masks, sizes)`: `masks` `[prod(sizes), *shape with the axes not indexed of size 1]`, in
    row-major order of the indices, and `sizes`, the sizes of `axes`.
    """
    sizes = tuple(shape[a] for a in axes)
    masks = np.zeros((int(np.prod(sizes)), *(shape[a] if a in axes else 1 for a in range(len(shape)))), bool)
    for n, index in enumerate(np.ndindex(*sizes)):
        where = [0] * len(shape)
        for axis, i in zip(axes, index):
            where[axis] = i
        masks[(n, *where)] = True
    return masks, sizes


def intervene_sweep(model, metric, kind: str, axes: tuple[int, ...]):
    """Activation patching written with `ji.capture` and `ji.intervene`, for one example.

    **Arguments:** `model`; `metric`, a function of the logits returning a scalar; `kind`, a key of `KINDS`;
    `axes`, the axes of the site indexed one at a time.

    **Returns:** a jitted function of `(clean_tokens, corrupted_tokens)` (`[seq]` each) returning
    `[layers, *sizes of axes]`: the metric of the corrupted run with that layer's site at that index replaced by
    its value in the clean run.
    """
    sites = [f"blocks.{layer}.{KINDS[kind]}" for layer in range(model.cfg.n_layers)]

    @jax.jit
    def sweep(clean, corrupted):
        _, clean_values = ji.capture(model, *sites)(clean)
        rows = []
        for site in sites:
            masks, sizes = one_hot_masks(clean_values[site].shape, axes)

            def patched(mask, site=site):
                edit = {site: lambda x: jnp.where(mask, clean_values[site], x)}
                return metric(ji.intervene(model, edit)(corrupted))

            rows.append(jax.vmap(patched)(jnp.asarray(masks)).reshape(sizes))
        return jnp.stack(rows)

    return sweep


def test_fixture_biases_and_norms_are_not_trivial(ref):
    """Every bias and layer-norm bias is far from zero and every layer-norm weight far from one, so the parity
    tests see them."""
    for name in (str(n) for n in ref["weight_names"]):
        value = ref[f"weights/{name}"]
        if name.endswith(".weight") and ".ln" in f".{name}":
            assert np.abs(value - 1).mean() > 0.03, name
        elif name.endswith(".bias") or ".b_" in name:
            assert np.abs(value).mean() > 0.03, name


def test_logits_match_transformer_lens(model, ref):
    for which in ("clean", "corrupted"):
        ours = jax.vmap(model)(jnp.asarray(ref[f"{which}_tokens"]))
        assert relative_error(ours, ref[f"{which}_logits"]) <= TOLERANCE, which


def test_metric_matches_transformer_lens(model, ref):
    metric = logit_difference(ref)
    for which in ("clean", "corrupted"):
        ours = batch_mean(lambda c, x, which=which: metric(model(c if which == "clean" else x)), ref)
        np.testing.assert_allclose(ours, ref[f"{which}_metric"], rtol=TOLERANCE, atol=TOLERANCE)
    # the corruption moves the metric a long way, so the patching results are far from constant
    assert ref["clean_metric"] - ref["corrupted_metric"] > 1.0


@pytest.mark.parametrize("name, kind, by, axes", HAND_CASES, ids=CASE_IDS)
def test_capture_and_intervene_reproduce_transformer_lens(model, ref, name, kind, by, axes):
    """The fixture's patching results, rebuilt from the sites with `ji.capture` and `ji.intervene`."""
    assert_matches(batch_mean(intervene_sweep(model, logit_difference(ref), kind, axes), ref), name, ref)


@pytest.mark.parametrize("name, kind, by, axes", SWEEP_CASES, ids=SWEEP_IDS)
def test_activation_sweep_matches_transformer_lens(model, ref, name, kind, by, axes):
    """`jaxinterp.patching.activation_sweep` on the batch, the corrupted run patched from the clean one with the
    batch metric, is TransformerLens's result, in TransformerLens's layout."""
    from jaxinterp import patching

    clean, corrupted = jnp.asarray(ref["clean_tokens"]), jnp.asarray(ref["corrupted_tokens"])
    ours = patching.activation_sweep(model, (corrupted,), (clean,), batch_logit_difference(ref), kind, by=by)
    assert_matches(np.asarray(ours), name, ref)
