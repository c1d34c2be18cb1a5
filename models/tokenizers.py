"""Tokenizers for the real checkpoints, as `tokenizers.Tokenizer` objects built from the files that ship them."""

import json
import pathlib

import gguf
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from jaxinterp import assets

_GGUF_CONTROL_TOKEN = 3
_GGUF_USER_DEFINED_TOKEN = 4
_GPT2_END_OF_TEXT = "<|endoftext|>"


def minilm_tokenizer(path: pathlib.Path | str | None = None, *, max_length: int = 512) -> tokenizers.Tokenizer:
    """The WordPiece tokenizer of all-MiniLM-L6-v2 (lower-casing BERT vocabulary of 30,522 tokens).

    Encodings are `[CLS] ... [SEP]`, truncated to `max_length` tokens; `encode_batch` pads to the longest
    encoding with `[PAD]` (id 0), as Hugging Face's `tokenizer(texts, padding=True, truncation=True)` does.

    **Arguments:**

    - `path`: the `tokenizer.json` file or the folder holding it; by default the `minilm-l6` asset.
    - `max_length`: the most tokens in one encoding, special tokens included (the model has 512 positions).

    **Returns:**

    A `tokenizers.Tokenizer`.
    """
    path = assets.resolve("minilm-l6") if path is None else pathlib.Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    tokenizer = tokenizers.Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]"), pad_token="[PAD]")
    return tokenizer


def _byte_level_bpe(
    vocab: dict[str, int], merges: list[tuple[str, str]], pre_tokenizer: pre_tokenizers.PreTokenizer
) -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def gpt2_tokenizer(path: pathlib.Path | str | None = None) -> tokenizers.Tokenizer:
    """GPT-2's byte-level BPE tokenizer (50,257 tokens), built from OpenAI's `encoder.json` and `vocab.bpe`.

    Text is split with GPT-2's pattern and no prefix space is added, so `"Hello world"` encodes to
    `[15496, 995]`. `<|endoftext|>` (id 50256) is a special token: it is matched whole in the input and left out
    of `decode` unless `skip_special_tokens=False`.

    **Arguments:**

    - `path`: the folder holding `encoder.json` and `vocab.bpe`; by default the `gpt2-bpe` asset.

    **Returns:**

    A `tokenizers.Tokenizer`.
    """
    folder = assets.resolve("gpt2-bpe", path)
    with open(folder / "encoder.json", encoding="utf-8") as stream:
        vocab = json.load(stream)
    with open(folder / "vocab.bpe", encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tokenizer = _byte_level_bpe(vocab, merges, pre_tokenizers.ByteLevel(add_prefix_space=False))
    tokenizer.add_special_tokens([tokenizers.AddedToken(_GPT2_END_OF_TEXT, special=True, normalized=False)])
    return tokenizer


_GGUF_PRE_TOKENIZERS = {
    "gpt-2": lambda: pre_tokenizers.ByteLevel(add_prefix_space=False),
    "smollm": lambda: pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    ),
}


def _gguf_value(reader: gguf.GGUFReader, key: str, default=None):
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def gguf_tokenizer(
    source: pathlib.Path | str | gguf.GGUFReader | None = None, *, add_bos: bool | None = None
) -> tokenizers.Tokenizer:
    """The tokenizer stored in a GGUF file's metadata, for byte-level BPE vocabularies (`tokenizer.ggml.model`
    `gpt2`, which covers SmolLM2).

    Tokens come from `tokenizer.ggml.tokens`, merges from `tokenizer.ggml.merges`, and the text splitting from
    `tokenizer.ggml.pre` (`gpt-2`, or `smollm`: every digit on its own, then GPT-2's pattern). Control and
    user-defined tokens (such as `<|im_start|>`) are special tokens, matched whole in the input. Bytes that the
    vocabulary has no token for are dropped: SmolLM2 lacks 21 of the 256, six control characters and lead bytes
    that valid UTF-8 never or rarely uses (0xC0, 0xC1, 0xF1, 0xF2, 0xF5 to 0xFF).

    **Arguments:**

    - `source`: the path of a `.gguf` file, or a `gguf.GGUFReader` already open on one (reading the metadata of a
        file takes seconds, so a model loader can share its reader); by default the `smollm2-135m` asset.
    - `add_bos`: whether encodings start with the BOS token `tokenizer.ggml.bos_token_id`; `None` follows the
        file's `tokenizer.ggml.add_bos_token` (false for SmolLM2, matching its Hugging Face tokenizer).

    **Returns:**

    A `tokenizers.Tokenizer`. A vocabulary type or split pattern other than those above raises `ValueError`.
    """
    if source is None:
        source = assets.resolve("smollm2-135m")
    reader = source if isinstance(source, gguf.GGUFReader) else gguf.GGUFReader(source)
    vocabulary_type = _gguf_value(reader, "tokenizer.ggml.model")
    if vocabulary_type != "gpt2":
        raise ValueError(f"only byte-level BPE ('gpt2') GGUF vocabularies are supported, not {vocabulary_type!r}")
    split_pattern = _gguf_value(reader, "tokenizer.ggml.pre", "gpt-2")
    if split_pattern not in _GGUF_PRE_TOKENIZERS:
        raise ValueError(
            f"GGUF pre-tokenizer {split_pattern!r} is not supported; supported: {', '.join(_GGUF_PRE_TOKENIZERS)}"
        )
    tokens = _gguf_value(reader, "tokenizer.ggml.tokens")
    merges = [tuple(merge.split(" ")) for merge in _gguf_value(reader, "tokenizer.ggml.merges")]
    token_types = _gguf_value(reader, "tokenizer.ggml.token_type", [])
    tokenizer = _byte_level_bpe(
        {token: index for index, token in enumerate(tokens)}, merges, _GGUF_PRE_TOKENIZERS[split_pattern]()
    )
    tokenizer.add_special_tokens(
        [
            tokenizers.AddedToken(tokens[index], special=True, normalized=False)
            for index, token_type in enumerate(token_types)
            if token_type in (_GGUF_CONTROL_TOKEN, _GGUF_USER_DEFINED_TOKEN)
        ]
    )
    if add_bos is None:
        add_bos = bool(_gguf_value(reader, "tokenizer.ggml.add_bos_token", False))
    if add_bos:
        bos_id = int(_gguf_value(reader, "tokenizer.ggml.bos_token_id"))
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos_id]} $A", special_tokens=[(tokens[bos_id], bos_id)]
        )
    return tokenizer
