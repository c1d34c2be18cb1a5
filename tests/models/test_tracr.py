"""tracr-compiled RASP programs loaded into the transformer family, and their circuits by construction."""

import ast
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinterp

pytest.importorskip("tracr")
pytest.importorskip("haiku")

from models import tracr

NAMES = ["reverse", "frac_prevs", "sort", "histogram"]
# (nodes, edges) under zero ablation, then under resample ablation, for the default programs
COUNTS = {
    "reverse": (6, 13, 2, 2),
    "frac_prevs": (3, 5, 3, 3),
    "sort": (4, 10, 4, 6),
    "histogram": (3, 6, 3, 4),
}
# inputs of the full length, so that tracr's eager forward compiles its operations once per program
EXAMPLES = {
    "reverse": [(1, 2, 3, 3, 2), (3, 3, 1, 2, 1), (2, 1, 1, 1, 3)],
    "frac_prevs": [("x", "w", "x", "x", "y"), ("y", "x", "z", "z", "x"), ("w", "w", "w", "w", "w")],
    "sort": [(3, 1, 5, 2, 6), (6, 4, 2, 1, 3), (2, 3, 4, 5, 1)],
    "histogram": [("a", "b", "a", "c", "a"), ("c", "c", "c", "c", "c"), ("b", "a", "a", "b", "c")],
}


@pytest.fixture(scope="module")
def programs():
    """Every default program compiled once, with its loaded model."""
    out = {}
    for name in NAMES:
        compiled = tracr.compile_program(name)
        out[name] = (compiled, tracr.from_tracr(compiled))
    return out


def outputs_agree(compiled, a, b) -> bool:
    """Whether two readouts `[..., seq, n_out]` decode to the same values at every position after BOS."""
    if compiled.categorical:
        return bool((a[..., 1:, :].argmax(-1) == b[..., 1:, :].argmax(-1)).all())
    return bool(np.abs(a[..., 1:, 0] - b[..., 1:, 0]).max() < 1e-4)


def encode_all(compiled, inputs):
    return jnp.asarray(np.stack([tracr.encode(compiled, i) for i in inputs]))


@eqx.filter_jit
def run_batch(model, tokens):
    return jax.vmap(model)(tokens)


def readout(compiled, residual):
    return np.asarray(residual) @ compiled.readout


def test_unknown_program_lists_the_known_ones():
    with pytest.raises(ValueError, match="known programs: .*'frac_prevs'.*'reverse'"):
        tracr.compile_program("palindrome")


def test_importing_models_imports_no_tracr():
    """tracr and Haiku are imported inside the functions that need them, never when `models` is imported."""
    tree = ast.parse(pathlib.Path(tracr.__file__).read_text())
    imported = set()
    for statement in tree.body:
        if isinstance(statement, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in statement.names}
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0:
            imported.add(statement.module.split(".")[0])
    assert not imported & {"tracr", "haiku"}


@pytest.mark.parametrize("name", NAMES)
def test_matches_tracr(programs, name):
    compiled, model = programs[name]
    assembled = compiled.assembled
    assert model.cfg.norm == "none" and not model.cfg.lm_head and not model.cfg.causal
    # every input of the full length at once, against tracr's own forward
    inputs = compiled.inputs()
    tokens = encode_all(compiled, inputs)
    theirs = jax.jit(assembled.forward)(assembled.params, tokens)
    residuals = run_batch(model, tokens)
    np.testing.assert_allclose(residuals, theirs.transformer_output.output, rtol=1e-5, atol=1e-5)
    values = tracr.unembed(compiled, residuals)
    if compiled.categorical:
        assert (values.argmax(-1)[:, 1:] == theirs.unembedded_output[:, 1:]).all()
    else:
        np.testing.assert_allclose(values, theirs.unembedded_output, rtol=1e-5, atol=1e-5)
    # a few of them through tracr's `apply`, which decodes
    for example in EXAMPLES[name]:
        theirs = assembled.apply([compiled.bos, *example])
        ours = residuals[inputs.index(example)]
        np.testing.assert_allclose(ours, theirs.transformer_output[0], rtol=1e-5, atol=1e-5)
        assert tracr.decode(compiled, ours) == pytest.approx(theirs.decoded, abs=1e-5)
        values = np.asarray(tracr.unembed(compiled, ours))
        if compiled.categorical:
            assert (values.argmax(-1)[1:] == np.asarray(theirs.unembedded[0])[1:]).all()
        else:
            np.testing.assert_allclose(values, theirs.unembedded[0], rtol=1e-5, atol=1e-5)


def test_from_tracr_takes_the_assembled_model(programs):
    compiled, model = programs["frac_prevs"]
    again = tracr.from_tracr(compiled.assembled)
    assert all(bool((a == b).all()) for a, b in zip(jax.tree.leaves(model), jax.tree.leaves(again)))


def test_encode_adds_bos_and_checks_the_vocabulary(programs):
    compiled, _ = programs["reverse"]
    ids = tracr.encode(compiled, [1, 2])
    assert ids.tolist() == tracr.encode(compiled, ["BOS", 1, 2]).tolist()
    assert ids[0] == compiled.assembled.input_encoder.bos_encoding
    with pytest.raises(ValueError):
        tracr.encode(compiled, [1, 7])


@pytest.mark.parametrize("name", NAMES)
def test_true_circuit_counts(programs, name):
    compiled, model = programs[name]
    nodes, edges = tracr.true_circuit(compiled, model, "zero")
    rnodes, redges = tracr.true_circuit(compiled, model, "resample")
    assert (len(nodes), len(edges), len(rnodes), len(redges)) == COUNTS[name]
    assert redges <= edges and rnodes <= nodes
    layout = model.graph_layout()
    senders = {n for kind, names in layout if kind == "send" for n in names}
    receivers = {r for kind, names in layout if kind == "read" for r in names}
    assert nodes <= senders and {s for s, _ in edges} == nodes
    assert {r for _, r in edges} <= receivers and "output" in {r for _, r in edges}
    if name == "reverse":
        assert redges == {("embed", "blocks.3.attn.0.v"), ("blocks.3.attn.0", "output")}


def test_true_circuit_rejects_an_unknown_ablation(programs):
    compiled, model = programs["reverse"]
    with pytest.raises(ValueError, match="ablation"):
        tracr.true_circuit(compiled, model, "mean")


def node_ablated(model, keep_heads, keep_mlps):
    """The model with head `h` of layer `L` scaled by `keep_heads[L, h]` and MLP `L` by `keep_mlps[L]`."""

    def scale(factor):
        return lambda x: x * factor

    edits = {}
    for layer in range(model.cfg.n_layers):
        edits[f"blocks.{layer}.attn.z"] = scale(keep_heads[layer][None, :, None])
        edits[f"blocks.{layer}.mlp.out"] = scale(keep_mlps[layer])
    return jaxinterp.intervene(model, edits)


@eqx.filter_jit
def run_node_ablations(model, tokens, keep_heads, keep_mlps):
    """Readouts `[variants, inputs, seq, d_model]` for each variant of the node masks."""
    one = lambda kh, km, t: node_ablated(model, kh, km)(t)
    per_variant = jax.vmap(one, in_axes=(None, None, 0))
    return jax.vmap(per_variant, in_axes=(0, 0, None))(keep_heads, keep_mlps, tokens)


@pytest.mark.parametrize("name", NAMES)
def test_zeroing_nodes(programs, name):
    """Zeroing every node outside the zero-ablation circuit leaves the outputs unchanged; zeroing any node of the
    circuit changes them on some input."""
    compiled, model = programs[name]
    nodes, _ = tracr.true_circuit(compiled, model, "zero")
    cfg = model.cfg
    heads = [f"blocks.{layer}.attn.{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
    mlps = [f"blocks.{layer}.mlp" for layer in range(cfg.n_layers)]
    outside = [n for n in heads + mlps if n not in nodes]
    inside = sorted(nodes - {"embed"})
    variants = [(), tuple(outside), *[(n,) for n in inside]]
    keep_heads = np.ones((len(variants), cfg.n_layers, cfg.n_heads), np.float32)
    keep_mlps = np.ones((len(variants), cfg.n_layers), np.float32)
    for v, zeroed in enumerate(variants):
        for node in zeroed:
            parts = node.split(".")
            if parts[2] == "attn":
                keep_heads[v, int(parts[1]), int(parts[3])] = 0.0
            else:
                keep_mlps[v, int(parts[1])] = 0.0
    # inputs shorter than the longest: on those a zeroed length (reverse) happens to decode as the right one
    tokens = encode_all(compiled, compiled.inputs(3))
    out = readout(compiled, run_node_ablations(model, tokens, jnp.asarray(keep_heads), jnp.asarray(keep_mlps)))
    assert outputs_agree(compiled, out[1], out[0]), f"zeroing {outside} changed the output"
    unchanged = [n for i, n in enumerate(inside) if outputs_agree(compiled, out[2 + i], out[0])]
    assert not unchanged, f"zeroing {unchanged} changed nothing"


@eqx.filter_jit
def run_edge_patches(model, tokens, corrupt, keeps, receivers):
    """Readouts `[variants, inputs, seq, d_model]`: every edge `(sender, receiver)` with `keeps[v, receiver,
    sender] == 0` carries the sender's output on the corrupted input (`corrupt`, node outputs per input) instead."""

    def one(keep, t, other):
        def mix(names, outputs, constant):
            n = outputs.shape[0]
            kept = keep[np.asarray([receivers[r] for r in names]), :n]
            return constant + jnp.einsum("rn,nsd->rsd", kept, outputs - other[:n]) + other[:n].sum(0)

        return model.forward_graph(mix, t)

    per_variant = jax.vmap(one, in_axes=(None, 0, 0))
    return jax.vmap(per_variant, in_axes=(0, None, None))(keeps, tokens, corrupt)


@pytest.mark.parametrize("ablation", ["zero", "resample"])
@pytest.mark.parametrize("name", NAMES)
def test_edges_outside_the_circuit_do_not_matter(programs, name, ablation):
    """Ablating every edge outside the circuit leaves the outputs unchanged; ablating the circuit's edges changes
    them. Resampling patches an edge with the sender's output on another input of the same length."""
    compiled, model = programs[name]
    _, edges = tracr.true_circuit(compiled, model, ablation)
    layout = model.graph_layout()
    senders = [n for kind, names in layout if kind == "send" for n in names]
    receivers = {r: i for i, r in enumerate(r for kind, names in layout if kind == "read" for r in names)}
    circuit_only = np.zeros((len(receivers), len(senders)), np.float32)
    for s, r in edges:
        circuit_only[receivers[r], senders.index(s)] = 1.0
    keeps = jnp.asarray(np.stack([np.ones_like(circuit_only), circuit_only, 1.0 - circuit_only]))
    tokens = encode_all(compiled, compiled.inputs())
    others = tokens[np.random.default_rng(0).permutation(len(tokens))]
    corrupt = tracr.node_outputs(model, others)
    if ablation == "zero":
        corrupt = jnp.zeros_like(corrupt)
    out = readout(compiled, run_edge_patches(model, tokens, corrupt, keeps, receivers))
    np.testing.assert_allclose(out[0], readout(compiled, run_batch(model, tokens)), rtol=1e-5, atol=1e-5)
    assert outputs_agree(compiled, out[1], out[0])
    assert not outputs_agree(compiled, out[2], out[0])
