"""Run under several (forced host) devices by `tests/test_sharding.py`: each sharded computation against the same
computation on one device. Prints one JSON object: for each check, the largest absolute difference and the scale
of the values compared.

The decompositions run in float64 and compare like with like (jitted with jitted, eager with eager): these random
tiny transformers amplify rounding about 1e7-fold, so eager and jitted float32 runs differ in the first digits
whatever the sharding."""

import json
import pathlib
import sys
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import jaxinterp as ji
import models
from jaxinterp import sharding
from jaxinterp.features import SAEConfig, StoreSettings, build_activation_store, snmf, train_sae
from tests.helpers import model_sampler, tiny_transformer_configs, to_float64

SEQ = 5


def difference(a, b) -> dict:
    a, b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return {
        "max_abs_difference": max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b)),
        "scale": max(float(np.max(np.abs(np.asarray(x)))) for x in a),
        "shapes_equal": all(np.shape(x) == np.shape(y) for x, y in zip(a, b)),
    }


def decompositions() -> dict:
    """A CD sweep (eager, on 3 devices, jitted), an activation-patching sweep and an activation store, in
    float64."""
    rng = np.random.default_rng(0)
    cfg = tiny_transformer_configs()["gpt2"]
    model = model_sampler(lambda key: models.Transformer(cfg, key=key))(rng)
    model = jax.tree_util.tree_map(jnp.asarray, to_float64(model))
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, SEQ))
    full, part = sharding.mesh(), sharding.mesh(3)  # 3 devices: the item counts are not multiples, padding is used
    checks = {}

    # CD sweep: every head (8 sets) and every position (5 sets), eagerly and under jit
    stacks = [*ji.every_head(cfg.n_layers, cfg.n_heads), ji.every_position(SEQ)]
    plain = ji.cd_sweep(model, stacks, memory_budget=1 << 16)(tokens)
    for name, m in (("cd_sweep", full), ("cd_sweep_3_devices", part)):
        checks[name] = difference(plain, ji.cd_sweep(model, stacks, memory_budget=1 << 16, mesh=m)(tokens))
    jitted = eqx.filter_jit(lambda mdl, t, m: ji.cd_sweep(mdl, stacks, mesh=m)(t))
    checks["cd_sweep_jit"] = difference(jitted(model, tokens, None), jitted(model, tokens, full))

    # activation patching sweep: each head at each position, corrupted -> clean, mean logit of token 0
    clean = (jnp.asarray(rng.integers(0, cfg.vocab_size, (4, SEQ))),)
    corrupted = (jnp.asarray(rng.integers(0, cfg.vocab_size, (4, SEQ))),)

    def metric(logits):
        return logits[:, -1, 0].mean()

    sweep = dict(kind="head_out", by="pos", batch_size=4)
    plain = ji.patching.activation_sweep(model, corrupted, clean, metric, **sweep)
    checks["activation_sweep"] = difference(
        plain, ji.patching.activation_sweep(model, corrupted, clean, metric, mesh=full, **sweep)
    )

    # activation collection: a store built data-parallel against one built on one device
    texts = [" ".join(["word"] * int(n)) for n in rng.integers(1, 9, 30)]

    def tokenize(batch):
        return [[(3 * i + len(w)) % cfg.vocab_size for i, w in enumerate(t.split())] for t in batch]

    settings = StoreSettings(("blocks.1.resid_post",), context=8, chunk_tokens=64, batch_tokens=20)
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        one = build_activation_store(folder / "one", model, tokenize, texts, settings, progress=False)
        many = build_activation_store(folder / "many", model, tokenize, texts, settings, progress=False, mesh=full)
        chunks = range(len(one.manifest["chunks"]))
        checks["activation_store"] = difference(
            [one.chunk(i, settings.sites[0]) for i in chunks] + [one.chunk_rows(i) for i in chunks],
            [many.chunk(i, settings.sites[0]) for i in chunks] + [many.chunk_rows(i) for i in chunks],
        )
    return checks


def training() -> dict:
    """Three data-parallel TopK SAE steps against three on one device (batch 48 splits over 8 and over 3), float32."""
    checks = {}
    full = sharding.mesh()
    activations = jr.normal(jr.key(1), (480, 16), jnp.float32)
    config = SAEConfig(16, 64, "topk", k=4, batch_size=48)
    one, _ = train_sae(activations, config, key=jr.key(2), steps=3, progress=False)
    for name, m in (("sae_training", full), ("sae_training_3_devices", sharding.mesh(3))):
        sharded, _ = train_sae(activations, config, key=jr.key(2), steps=3, progress=False, mesh=m)
        checks[name] = difference(eqx.filter(one, eqx.is_array), eqx.filter(sharded, eqx.is_array))
    with sharding.training_mesh(full):  # what `python -m experiments.<slug> --devices N` sets up
        in_context, _ = train_sae(activations, config, key=jr.key(2), steps=3, progress=False)
    checks["sae_training_in_context"] = difference(eqx.filter(one, eqx.is_array), eqx.filter(in_context, eqx.is_array))
    # the trained SAE comes back replicated over the context's devices: the training ran on all of them
    checks["sae_training_in_context"]["devices"] = len(in_context.W_dec.sharding.device_set)

    # SNMF, data-parallel over the 480 rows: the loss trajectory of 30 iterations from the same start
    nonnegative = jnp.abs(activations)
    one = snmf(nonnegative, 6, key=jr.key(3), max_iterations=30, sparsity=0.25)
    sharded = snmf(nonnegative, 6, key=jr.key(3), max_iterations=30, sparsity=0.25, mesh=full)
    checks["snmf_losses"] = difference(one.losses, sharded.losses)
    return checks


if __name__ == "__main__":
    part, n_devices = sys.argv[1], int(sys.argv[2])
    assert jax.device_count() == n_devices, (jax.device_count(), n_devices)
    if part == "decompositions":
        jax.config.update("jax_enable_x64", True)
    print(json.dumps({"decompositions": decompositions, "training": training}[part]()))
