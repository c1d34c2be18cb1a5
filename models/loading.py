"""Loading real pretrained weights into the transformer family.

`load(name)` returns `(model, tokenizer)`: `"minilm-l6"` (sentence-transformers all-MiniLM-L6-v2, a BERT encoder,
fp32 safetensors) and `"smollm2-135m"` (SmolLM2-135M-Instruct, Llama architecture, from a GGUF file dequantised to
float32). Files come from `jaxinterp.assets.resolve`, so an explicit path, an environment variable, the offline
package or the online source all work.
"""

import functools
import json
import pathlib
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxinterp import assets

from .tokenizers import gguf_tokenizer, minilm_tokenizer
from .transformer import Transformer, TransformerConfig, bert_config, llama_config


class WeightFileError(ValueError):
    """A weight file is missing, unreadable, or does not hold the tensors the architecture needs."""


def from_arrays(
    cfg: TransformerConfig, arrays: Mapping[str, np.ndarray], source: str | pathlib.Path = "arrays", dtype=np.float32
) -> Transformer:
    """A `Transformer` of architecture `cfg` whose every array is taken from `arrays`.

    **Arguments:**

    - `cfg`: the architecture.
    - `arrays`: one array per field of the model, keyed by its dotted path (`token_embed`, `blocks.0.attn.w_q`,
      `blocks.0.ln1.weight`, ...), in the model's layout (`models.transformer`); other keys are an error.
    - `source`: where the arrays come from, for error messages.
    - `dtype`: the floating-point type to store (`None` keeps each array's own).

    **Raises:** `WeightFileError` naming the key and `source` for a missing, extra, mis-shaped or non-finite array.
    """
    skeleton = jax.eval_shape(lambda: Transformer(cfg, key=jax.random.key(0)))
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(skeleton)
    leaves, wanted = [], set()
    for path, leaf in paths_leaves:
        key = re.sub(r"\[(\d+)\]", r".\1", jax.tree_util.keystr(path)).lstrip(".")
        wanted.add(key)
        if key not in arrays:
            raise WeightFileError(f"{source}: no tensor for {key} (shape {leaf.shape})")
        value = np.asarray(arrays[key], dtype)
        if value.shape != leaf.shape:
            raise WeightFileError(f"{source}: tensor for {key} has shape {value.shape}, expected {leaf.shape}")
        if not np.isfinite(value).all():
            raise WeightFileError(f"{source}: tensor for {key} holds NaN or infinite values")
        leaves.append(jnp.asarray(value))
    unused = sorted(set(arrays) - wanted)
    if unused:
        raise WeightFileError(f"{source}: tensors not used by the architecture: {unused[:5]}")
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _heads_in(w: np.ndarray, heads: int) -> np.ndarray:
    """A torch-layout projection `[heads * d_head, d_model]` as `[d_model, heads, d_head]`."""
    return w.T.reshape(w.shape[1], heads, -1)


def load_minilm(path: str | pathlib.Path | None = None) -> tuple[Transformer, "tokenizers.Tokenizer"]:  # noqa: F821
    """all-MiniLM-L6-v2 as a BERT encoder returning final hidden states `[seq, 384]`.

    **Arguments:** `path`: the folder with `model.safetensors`, `config.json` and `tokenizer.json` (default:
    resolved by `jaxinterp.assets`).

    **Returns:** `(model, tokenizer)`. Sentence embeddings are `sentence_embedding(hidden, attention_mask)`.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    folder = assets.resolve("minilm-l6", path)
    weights_file = folder / "model.safetensors"
    try:
        hf = json.loads((folder / "config.json").read_text())
        raw = load_file(weights_file)
    except (OSError, json.JSONDecodeError, SafetensorError) as err:
        raise WeightFileError(
            f"cannot read the MiniLM checkpoint in {folder}: {err}. Reinstall it with "
            "`jaxinterp assets install minilm-l6`"
        ) from err
    h = hf["num_attention_heads"]
    cfg = bert_config(
        vocab_size=hf["vocab_size"],
        d_model=hf["hidden_size"],
        n_layers=hf["num_hidden_layers"],
        n_heads=h,
        d_head=hf["hidden_size"] // h,
        d_mlp=hf["intermediate_size"],
        max_positions=hf["max_position_embeddings"],
        type_vocab_size=hf["type_vocab_size"],
        norm_eps=hf["layer_norm_eps"],
    )
    t = {
        "token_embed": raw["embeddings.word_embeddings.weight"],
        "position_embed": raw["embeddings.position_embeddings.weight"],
        "type_embed": raw["embeddings.token_type_embeddings.weight"],
        "embed_ln.weight": raw["embeddings.LayerNorm.weight"],
        "embed_ln.bias": raw["embeddings.LayerNorm.bias"],
    }
    for i in range(cfg.n_layers):
        p, b = f"encoder.layer.{i}.", f"blocks.{i}."
        for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
            t[f"{b}attn.w_{ours}"] = _heads_in(raw[f"{p}attention.self.{theirs}.weight"], h)
            t[f"{b}attn.b_{ours}"] = raw[f"{p}attention.self.{theirs}.bias"].reshape(h, -1)
        t[f"{b}attn.w_o"] = raw[f"{p}attention.output.dense.weight"].T.reshape(h, -1, cfg.d_model)
        t[f"{b}attn.b_o"] = raw[f"{p}attention.output.dense.bias"]
        t[f"{b}ln1.weight"] = raw[f"{p}attention.output.LayerNorm.weight"]
        t[f"{b}ln1.bias"] = raw[f"{p}attention.output.LayerNorm.bias"]
        t[f"{b}mlp.w_in"] = raw[f"{p}intermediate.dense.weight"].T
        t[f"{b}mlp.b_in"] = raw[f"{p}intermediate.dense.bias"]
        t[f"{b}mlp.w_out"] = raw[f"{p}output.dense.weight"].T
        t[f"{b}mlp.b_out"] = raw[f"{p}output.dense.bias"]
        t[f"{b}ln2.weight"] = raw[f"{p}output.LayerNorm.weight"]
        t[f"{b}ln2.bias"] = raw[f"{p}output.LayerNorm.bias"]
    return from_arrays(cfg, t, weights_file), minilm_tokenizer(folder / "tokenizer.json")


def sentence_embedding(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """sentence-transformers pooling for MiniLM: the mean of `hidden` (`[seq, d]`) over unmasked tokens,
    L2-normalised. **Returns:** `[d]`."""
    mask = jnp.asarray(attention_mask, hidden.dtype)[:, None]
    pooled = (hidden * mask).sum(0) / jnp.maximum(mask.sum(), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled), 1e-12)


def _gguf_field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        raise WeightFileError(f"GGUF metadata has no {key!r}")
    return field.contents()


def load_smollm2(path: str | pathlib.Path | None = None) -> tuple[Transformer, "tokenizers.Tokenizer"]:  # noqa: F821
    """SmolLM2-135M-Instruct (Llama) from its GGUF file, dequantised to float32.

    The GGUF layout permutes the rows of the query and key projections so that rotary embeddings act on adjacent
    pairs; the model is configured with `rope_interleaved=True` to match, which leaves every attention score, and
    so every output, the same as the Hugging Face layout.

    **Arguments:** `path`: the `.gguf` file (default: resolved by `jaxinterp.assets`).

    **Returns:** `(model, tokenizer)`; the model returns logits `[seq, 49152]`. The dequantised model is kept for
    the life of the process (keyed by the file, its size and modification time), so later calls return the same
    immutable model without reading the file again; each call gets its own tokenizer.
    """
    import tokenizers

    file = assets.resolve("smollm2-135m", path)
    if file.is_dir():
        found = sorted(file.glob("*.gguf"))
        if not found:
            raise WeightFileError(f"no .gguf file in {file}; run `jaxinterp assets install smollm2-135m`")
        file = found[0]
    stat = file.stat()
    model, tokenizer_json = _read_smollm2(str(file), stat.st_size, stat.st_mtime_ns)
    return model, tokenizers.Tokenizer.from_str(tokenizer_json)


@functools.lru_cache(maxsize=2)
def _read_smollm2(name: str, size: int, modified: int) -> tuple[Transformer, str]:
    """The model and the tokenizer's JSON from one GGUF file (`size` and `modified` key the cache)."""
    import gguf
    from gguf.quants import dequantize

    file = pathlib.Path(name)
    try:
        reader = gguf.GGUFReader(file)
    except (OSError, ValueError) as err:
        raise WeightFileError(
            f"cannot read the GGUF file {file}: {err}. Reinstall it with `jaxinterp assets install smollm2-135m`"
        ) from err
    arch = _gguf_field(reader, "general.architecture")
    if arch != "llama":
        raise WeightFileError(f"{file}: architecture {arch!r}, expected 'llama'")
    h, kvh = _gguf_field(reader, "llama.attention.head_count"), _gguf_field(reader, "llama.attention.head_count_kv")
    d = _gguf_field(reader, "llama.embedding_length")
    raw = {tensor.name: dequantize(tensor.data, tensor.tensor_type) for tensor in reader.tensors}
    cfg = llama_config(
        vocab_size=raw["token_embd.weight"].shape[0],
        d_model=d,
        n_layers=_gguf_field(reader, "llama.block_count"),
        n_heads=h,
        n_kv_heads=kvh,
        d_head=d // h,
        d_mlp=_gguf_field(reader, "llama.feed_forward_length"),
        norm_eps=_gguf_field(reader, "llama.attention.layer_norm_rms_epsilon"),
        rope_theta=_gguf_field(reader, "llama.rope.freq_base"),
        rope_interleaved=True,
        tie_embeddings="output.weight" not in raw,
    )
    t = {"token_embed": raw["token_embd.weight"], "ln_final.weight": raw["output_norm.weight"]}
    if "output.weight" in raw:
        t["unembed"] = raw["output.weight"].T
    for i in range(cfg.n_layers):
        p, b = f"blk.{i}.", f"blocks.{i}."
        t[f"{b}attn.w_q"] = _heads_in(raw[f"{p}attn_q.weight"], h)
        t[f"{b}attn.w_k"] = _heads_in(raw[f"{p}attn_k.weight"], kvh)
        t[f"{b}attn.w_v"] = _heads_in(raw[f"{p}attn_v.weight"], kvh)
        t[f"{b}attn.w_o"] = raw[f"{p}attn_output.weight"].T.reshape(h, -1, d)
        t[f"{b}ln1.weight"] = raw[f"{p}attn_norm.weight"]
        t[f"{b}ln2.weight"] = raw[f"{p}ffn_norm.weight"]
        t[f"{b}mlp.w_gate"] = raw[f"{p}ffn_gate.weight"].T
        t[f"{b}mlp.w_in"] = raw[f"{p}ffn_up.weight"].T
        t[f"{b}mlp.w_out"] = raw[f"{p}ffn_down.weight"].T
    return from_arrays(cfg, t, file), gguf_tokenizer(reader).to_str()


LOADERS = {"minilm-l6": load_minilm, "smollm2-135m": load_smollm2}


def load(name: str, path: str | pathlib.Path | None = None):
    """Load a pretrained model by name: `"minilm-l6"` or `"smollm2-135m"`.

    **Returns:** `(model, tokenizer)`, the model an equinox Module for one sequence, the tokenizer a
    `tokenizers.Tokenizer`.
    """
    if name not in LOADERS:
        raise KeyError(f"unknown model {name!r}; available: {sorted(LOADERS)}")
    return LOADERS[name](path)
