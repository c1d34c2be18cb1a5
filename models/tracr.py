"""Compiled RASP programs (tracr) in the transformer family, and their circuits by construction.

tracr compiles a RASP program into the weights of a transformer whose every residual direction has a meaning
(`tokens:3`, `indices:0`, `one`, `length:4`, ...), so which component reads what, and so the circuit, is known
without any search. `compile_program(name)` compiles one of tracr's library programs; `from_tracr` loads the
weights into a `models.Transformer`; `true_circuit` derives the circuit in the project's graph naming
(`Transformer.graph_layout()`).

Conventions of the loaded model (`from_tracr`):

- No normalisation (`norm="none"`), ReLU MLPs, non-causal attention (tracr's default; a program compiled with
  `causal=True` gives a causal model), learned token and position embeddings, zero biases kept as arrays.
- tracr's layer `L` (an attention sublayer then an MLP sublayer) is our block `L`; a sublayer tracr leaves empty is
  all zeros, and so are the heads tracr pads a layer with.
- Heads: tracr already pads every head to one `key_size` and every layer to one head count; `d_head = key_size`.
  tracr divides attention scores by `sqrt(key_size)` and we divide by `sqrt(d_head)`, the same number, so `w_q`
  needs no rescaling.
- The model has no language-model head (`lm_head=False`): `model(tokens)` is the final residual stream
  `[seq, d_model]`, equal to tracr's `transformer_output`. tracr reads its result by projecting the residual
  onto the program's output space, which has a different size from the input vocabulary, so it cannot be our
  `unembed` (`[d_model, vocab_size]`); `unembed(compiled, residual)` applies that projection (tracr's output
  logits, or the value of a numerical program) and `decode` turns it into values as tracr's `apply(...).decoded`.

Inputs are token ids `[seq]` with the BOS token first (`encode`); position 0 (BOS) has no position embedding and
the first real token has `indices:0`, as in tracr.
"""

import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .loading import from_arrays
from .transformer import Transformer, TransformerConfig


class _Program(NamedTuple):
    make: Callable  # (tracr.compiler.lib, tracr.rasp.rasp) -> the RASP expression
    vocab: tuple
    unique: bool  # valid inputs hold each token at most once


PROGRAMS = {
    # reverse and frac_prevs use the vocabularies, length and BOS of ACDC's tracr tasks ("reverse", "proportion")
    "reverse": _Program(lambda lib, rasp: lib.make_reverse(rasp.tokens), (1, 2, 3), False),
    "frac_prevs": _Program(lambda lib, rasp: lib.make_frac_prevs(rasp.tokens == "x"), ("w", "x", "y", "z"), False),
    "sort": _Program(lambda lib, rasp: lib.make_sort_unique(rasp.tokens, rasp.tokens), (1, 2, 3, 4, 5, 6), True),
    "histogram": _Program(lambda lib, rasp: lib.make_hist(), ("a", "b", "c"), False),
}


class CompiledProgram(NamedTuple):
    """A RASP program compiled by tracr, with what it takes to feed and read it.

    **Fields:** `name`, `assembled` (tracr's `AssembledTransformerModel`), `vocab` (the input values, sorted),
    `bos` (the BOS token), `max_seq_len` (tokens after BOS), `unique` (valid inputs repeat no token),
    `categorical` (the output is a category rather than a number), `readout` (`[d_model, n_out]`, the projection
    of the residual stream onto the output space), `output_values` (the value of each output column for a
    categorical program, `()` for a numerical one).
    """

    name: str
    assembled: Any
    vocab: tuple
    bos: str
    max_seq_len: int
    unique: bool
    categorical: bool
    readout: np.ndarray
    output_values: tuple

    def inputs(self, length: int | None = None) -> list[tuple]:
        """Every valid input of `length` tokens (default `max_seq_len`), BOS not included: all sequences over
        `vocab`, or all sequences of distinct tokens when `unique`."""
        length = self.max_seq_len if length is None else length
        if not 1 <= length <= self.max_seq_len:
            raise ValueError(f"{self.name}: input length must be between 1 and {self.max_seq_len}, got {length}")
        if self.unique:
            return list(itertools.permutations(self.vocab, length))
        return list(itertools.product(self.vocab, repeat=length))


def compile_program(
    name: str,
    *,
    max_seq_len: int = 5,
    vocab: Sequence | None = None,
    bos: str = "BOS",
    causal: bool = False,
    mlp_exactness: int = 100,
) -> CompiledProgram:
    """Compile one of tracr's library programs (`tracr.compiler.lib`).

    **Arguments:**

    - `name`: `"reverse"` (`make_reverse(tokens)`, vocabulary `{1, 2, 3}`), `"frac_prevs"` (`make_frac_prevs(tokens
      == "x")`, the running fraction of `"x"`, vocabulary `{"w", "x", "y", "z"}`), `"sort"`
      (`make_sort_unique(tokens, tokens)`, vocabulary `{1, ..., 5}`, inputs of distinct tokens) or `"histogram"`
      (`make_hist()`, vocabulary `{"a", "b", "c"}`). The first two are ACDC's tracr tasks with their vocabularies.
    - `max_seq_len`: the longest input, BOS not counted.
    - `vocab`: the input values, replacing the program's default vocabulary.
    - `bos`: the BOS token, which must not be in the vocabulary.
    - `causal`: compile a causally masked model.
    - `mlp_exactness`: tracr's accuracy parameter for MLPs that compute numerical functions.

    **Returns:** a `CompiledProgram`. Compiling takes seconds, so equal arguments return the same (immutable)
    object, compiled once per process.

    **Raises:** `ValueError` for an unknown program name, listing the known ones.
    """
    if name not in PROGRAMS:
        raise ValueError(f"unknown tracr program {name!r}; known programs: {sorted(PROGRAMS)}")
    vocab = PROGRAMS[name].vocab if vocab is None else vocab
    return _compile(name, max_seq_len, tuple(sorted(set(vocab))), bos, causal, mlp_exactness)


@functools.lru_cache(maxsize=32)
def _compile(name, max_seq_len, vocab, bos, causal, mlp_exactness) -> CompiledProgram:
    import haiku as hk
    from tracr.compiler import compiling, lib
    from tracr.rasp import rasp
    from tracr.transformer import encoder

    assembled = compiling.compile_rasp_to_model(
        PROGRAMS[name].make(lib, rasp),
        vocab=set(vocab),
        max_seq_len=max_seq_len,
        causal=causal,
        compiler_bos=bos,
        mlp_exactness=mlp_exactness,
    )
    d_model = len(assembled.residual_labels)
    # tracr's unembedding is a fixed projection onto the output space, built inside its Haiku model; applying it
    # to the identity recovers the matrix
    project = hk.transform(lambda x: assembled.get_compiled_model().unembed(x, use_unembed_argmax=False))
    readout = np.asarray(project.apply(assembled.params, None, jnp.eye(d_model)), np.float32).reshape(d_model, -1)
    readout.setflags(write=False)
    categorical = isinstance(assembled.output_encoder, encoder.CategoricalEncoder)
    if categorical:
        by_index = {i: value for value, i in assembled.output_encoder.encoding_map.items()}
        output_values = tuple(by_index[i] for i in range(len(by_index)))
    else:
        output_values = ()
    return CompiledProgram(
        name, assembled, vocab, bos, max_seq_len, PROGRAMS[name].unique, categorical, readout, output_values
    )


def _assembled(compiled):
    return compiled.assembled if isinstance(compiled, CompiledProgram) else compiled


def from_tracr(compiled: "CompiledProgram | Any", dtype=np.float32) -> Transformer:
    """A `Transformer` with the weights of a tracr-compiled model.

    **Arguments:** `compiled` (a `CompiledProgram`, or tracr's `AssembledTransformerModel` itself), `dtype` (the
    floating-point type to store).

    **Returns:** a model with `lm_head=False` whose `model(tokens)` (`tokens`: int `[seq]`, BOS first, `encode`)
    is tracr's final residual stream `[seq, d_model]`; `unembed` and `decode` read the program's output from it.
    The conventions are in the module docstring.

    **Raises:** `ValueError` if the tracr model uses layer norm (the compiler never does).
    """
    assembled = _assembled(compiled)
    config, params = assembled.model_config, assembled.params
    if config.layer_norm:
        raise ValueError("from_tracr: a tracr model with layer norm cannot be loaded (tracr compiles without one)")
    tokens = np.asarray(params["token_embed"]["embeddings"])
    positions = np.asarray(params["pos_embed"]["embeddings"])
    heads, d_head = config.num_heads, config.key_size
    cfg = TransformerConfig(
        vocab_size=tokens.shape[0],
        d_model=tokens.shape[1],
        n_layers=config.num_layers,
        n_heads=heads,
        d_head=d_head,
        d_mlp=config.mlp_hidden_size,
        max_positions=positions.shape[0],
        norm="none",
        activation="relu",
        positional="learned",
        causal=bool(config.causal),
        bias=True,
        lm_head=False,
        tie_embeddings=False,
    )
    arrays = {"token_embed": tokens, "position_embed": positions}
    for layer in range(cfg.n_layers):
        attn, mlp, ours = f"transformer/layer_{layer}/attn", f"transformer/layer_{layer}/mlp", f"blocks.{layer}"
        for theirs, name in (("query", "q"), ("key", "k"), ("value", "v")):
            w, b = (np.asarray(params[f"{attn}/{theirs}"][p]) for p in "wb")
            arrays[f"{ours}.attn.w_{name}"] = w.reshape(cfg.d_model, heads, d_head)
            arrays[f"{ours}.attn.b_{name}"] = b.reshape(heads, d_head)
        arrays[f"{ours}.attn.w_o"] = np.asarray(params[f"{attn}/linear"]["w"]).reshape(heads, d_head, cfg.d_model)
        arrays[f"{ours}.attn.b_o"] = np.asarray(params[f"{attn}/linear"]["b"])
        for theirs, name in (("linear_1", "in"), ("linear_2", "out")):
            arrays[f"{ours}.mlp.w_{name}"] = np.asarray(params[f"{mlp}/{theirs}"]["w"])
            arrays[f"{ours}.mlp.b_{name}"] = np.asarray(params[f"{mlp}/{theirs}"]["b"])
    return from_arrays(cfg, arrays, f"tracr model ({len(tokens)} tokens, {cfg.n_layers} layers)", dtype)


def encode(compiled: CompiledProgram, inputs: Sequence) -> jax.Array:
    """Token ids for one input.

    **Arguments:** `compiled`, `inputs` (a sequence of vocabulary values, with or without the BOS token first).

    **Returns:** int32 `[len + 1]`, BOS first.

    **Raises:** `ValueError` (from tracr's encoder) for a value outside the vocabulary or an input that is too long.
    """
    return jnp.asarray(_ids(compiled, inputs))


def _ids(compiled: CompiledProgram, inputs: Sequence) -> np.ndarray:
    inputs = list(inputs)
    if not inputs or inputs[0] != compiled.bos:
        inputs = [compiled.bos, *inputs]
    return np.asarray(compiled.assembled.input_encoder.encode(inputs), np.int32)


def unembed(compiled: CompiledProgram, residual: jax.Array) -> jax.Array:
    """The program's output read from the final residual stream, as tracr reads it.

    **Arguments:** `compiled`, `residual` (`[..., seq, d_model]`, what the loaded model returns).

    **Returns:** `[..., seq, n_out]` (tracr's output logits, one column per output value) for a categorical program,
    `[..., seq]` (the computed number) for a numerical one.
    """
    out = residual @ jnp.asarray(compiled.readout, residual.dtype)
    return out if compiled.categorical else out[..., 0]


def decode(compiled: CompiledProgram, residual: jax.Array) -> list:
    """The program's output values for one input, as tracr's `apply(...).decoded`.

    **Arguments:** `compiled`, `residual` (`[seq, d_model]`, what the loaded model returns).

    **Returns:** a list of `seq` values: the BOS token, then the output at each input position (the arg-max value
    for a categorical program, a float for a numerical one).
    """
    out = np.asarray(unembed(compiled, residual))
    values = [compiled.output_values[i] for i in out.argmax(-1)] if compiled.categorical else out.tolist()
    return [compiled.bos, *values[1:]]


def _node_outputs(model: Transformer, tokens: jax.Array) -> jax.Array:
    seen = []

    def mix(receivers, outputs, constant):
        seen.append(outputs)
        return jnp.broadcast_to(constant + outputs.sum(0), (len(receivers), *constant.shape))

    model.forward_graph(mix, tokens)
    return seen[-1]


@eqx.filter_jit
def node_outputs(model: Transformer, tokens: jax.Array) -> jax.Array:
    """What every node of the model's graph adds to the residual stream, on a batch of inputs.

    **Arguments:** `model`, `tokens` (int `[batch, seq]`).

    **Returns:** `[batch, nodes, seq, d_model]`, the nodes in `graph_layout()` order (`embed`, then per layer each
    head and the MLP): the values a resample ablation patches in.
    """
    return jax.vmap(_node_outputs, in_axes=(None, 0))(model, tokens)


def _graph(model: Transformer, compiled: CompiledProgram):
    """The graph's nodes with what each writes (`[n, d_model]`), and receivers with their node(s) and what each
    reads (`[d_model, r]`), from the model's weights."""
    cfg = model.cfg
    group = cfg.n_heads // cfg.kv_heads
    as_np = functools.partial(np.asarray, dtype=np.float64)
    writes = {"embed": np.concatenate([as_np(model.token_embed), as_np(model.position_embed)])}
    reads = {}
    for layer, block in enumerate(model.blocks):
        site, attn = f"blocks.{layer}.attn", block.attn
        for h in range(cfg.n_heads):
            reads[f"{site}.{h}.q"] = ([f"{site}.{h}"], as_np(attn.w_q[:, h]))
            writes[f"{site}.{h}"] = as_np(attn.w_o[h])
        for g in range(cfg.kv_heads):
            owners = [f"{site}.{h}" for h in range(g * group, (g + 1) * group)]
            reads[f"{site}.{g}.k"] = (owners, as_np(attn.w_k[:, g]))
            reads[f"{site}.{g}.v"] = (owners, as_np(attn.w_v[:, g]))
        if block.mlp is not None:
            mlp = f"blocks.{layer}.mlp"
            reads[mlp] = ([mlp], as_np(block.mlp.w_in))
            writes[mlp] = np.concatenate([as_np(block.mlp.w_out), as_np(block.mlp.b_out)[None]])
    reads["logits" if cfg.lm_head else "output"] = ([], as_np(compiled.readout))
    return writes, reads


def true_circuit(
    compiled: CompiledProgram,
    model: Transformer | None = None,
    ablation: str = "zero",
    *,
    inputs: Sequence[Sequence] | None = None,
    tol: float = 1e-5,
) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
    """The circuit of a compiled program, derived by construction, in the naming of `Transformer.graph_layout()`.

    **Arguments:**

    - `compiled`: the program.
    - `model`: `from_tracr(compiled)` (made when omitted).
    - `ablation`: what a missing edge is replaced with, which decides which edges are needed:
      - `"zero"`: an edge `(sender, receiver)` is in the circuit when the sender writes into a residual subspace the
        receiver reads, `max |W_write W_read| > tol`, where `embed` writes its token and position embedding rows, a
        head `W_O[h]`, an MLP `W_out` and `b_out`, and receivers read through `W_Q[h]`, `W_K[g]`, `W_V[g]`, `W_in`
        and the output projection (`compiled.readout`).
      - `"resample"`: an edge of the zero-ablation circuit is kept when what the sender writes, seen through what
        the receiver reads, varies between valid inputs of one length at some position, so that patching it with
        its value on another input can change the output; this drops edges that carry only input-independent
        information (the constant `one` direction, BOS, positions, and quantities such as the length that
        depend on positions only).
      In both cases edges into a component that does not reach the output are dropped.
    - `inputs`: for `"resample"`, the inputs to compare (sequences of vocabulary values of one length, BOS not
      included); default `compiled.inputs()`, every valid input of length `max_seq_len`.
    - `tol`: the threshold on weight products (zero) and on the spread of values across inputs (resample).

    **Returns:** `(nodes, edges)`: the senders (`"embed"`, `"blocks.L.attn.H"`, `"blocks.L.mlp"`) with an edge, and
    the edges `(sender, receiver)`, receivers named `"blocks.L.attn.H.q"`, `"blocks.L.attn.G.k"`,
    `"blocks.L.attn.G.v"`, `"blocks.L.mlp"` and `"output"`.

    **Counts and ACDC:** with the default programs (`compile_program(name)`), zero / resample ablation give

    | program      | nodes | edges | nodes | edges |
    |--------------|-------|-------|-------|-------|
    | `reverse`    | 6     | 13    | 2     | 2     |
    | `frac_prevs` | 3     | 5     | 3     | 3     |
    | `sort`       | 4     | 10    | 4     | 6     |
    | `histogram`  | 3     | 6     | 3     | 4     |

    Resample ablation of `reverse` leaves `embed -> blocks.3.attn.0.v` and `blocks.3.attn.0 -> output`, ACDC's 2
    edges. ACDC's zero-ablation circuits, once their separate token and position embeddings are counted as the
    one node `embed`, have 10 edges for `reverse` and 5, the same as here, for `frac_prevs` ("proportion"). The 3
    more edges of `reverse` are in the weights but zeroing any one of them alone leaves the output unchanged, so an
    effect-based search such as ACDC drops them: the query and the key of the length head (`blocks.0.attn.0`,
    whose all-true selector gives the same uniform pattern when either is zero) and the query of the reversing head
    from `embed` (the `one` direction, which makes the head attend to BOS when no key matches, never the case for a
    valid input). On inputs of the full length `max_seq_len` two more edges happen not to matter (the length head's
    value and its output into `blocks.0.mlp`: a zeroed length decodes as the largest one), which is why effects
    are better measured on shorter inputs, as ACDC does (length 3).

    **Raises:** `ValueError` for an unknown ablation, or `inputs` of different lengths.
    """
    if ablation not in ("zero", "resample"):
        raise ValueError(f"true_circuit: ablation must be 'zero' or 'resample', got {ablation!r}")
    model = from_tracr(compiled) if model is None else model
    writes, reads = _graph(model, compiled)
    layout = model.graph_layout()
    order, senders = {}, []
    for step, (kind, names) in enumerate(layout):
        for name in names:
            order[(kind, name)] = step
            if kind == "send":
                senders.append(name)
    edges = {
        (s, r)
        for s in senders
        for r, (_, read) in reads.items()
        if order[("send", s)] < order[("read", r)] and np.abs(writes[s] @ read).max() > tol
    }
    if ablation == "resample":
        inputs = compiled.inputs() if inputs is None else [tuple(i) for i in inputs]
        if len({len(i) for i in inputs}) != 1:
            raise ValueError("true_circuit: resample ablation compares inputs of one length")
        tokens = jnp.asarray(np.stack([_ids(compiled, i) for i in inputs]))
        outputs = np.asarray(node_outputs(model, tokens), np.float64)
        index = {name: i for i, name in enumerate(senders)}

        def varies(s, r):
            seen = outputs[:, index[s]] @ reads[r][1]
            return (seen.max(0) - seen.min(0)).max() > tol

        edges = {e for e in edges if varies(*e)}
    # keep only edges into components that reach the output, from the last receiver back
    reaching, kept = set(), set()
    for s, r in sorted(edges, key=lambda e: -order[("read", e[1])]):
        owners = reads[r][0]
        if not owners or reaching.intersection(owners):
            kept.add((s, r))
            reaching.add(s)
    return frozenset(reaching), frozenset(kept)
