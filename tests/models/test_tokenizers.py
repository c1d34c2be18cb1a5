import gguf
import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest

from jaxinterp import assets
from models.tokenizers import gguf_tokenizer, gpt2_tokenizer, minilm_tokenizer
from tests.helpers import load_fixture


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def minilm_tokens():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def smollm2_reader():
    return gguf.GGUFReader(assets.resolve("smollm2-135m"))


@pytest.fixture(scope="module")
def smollm2(smollm2_reader):
    return gguf_tokenizer(smollm2_reader)


_example_texts = st.sampled_from(
    ["Hello world", "  two leading spaces", "tab\tand\nnewline", "naïve café 東京 🙂", "x = 12345 + 0.5;", ""]
)


def test_gpt2_known_encodings(gpt2):
    assert gpt2.get_vocab_size() == 50_257
    assert gpt2.encode("Hello world").ids == [15496, 995]
    assert gpt2.encode(" Hello").ids == [18435]
    assert gpt2.encode("<|endoftext|>").ids == [50256]


@hypothesis.given(st.text(max_size=60) | _example_texts)
@hypothesis.settings(max_examples=60, deadline=None)
def test_gpt2_round_trip(gpt2, text):
    assert gpt2.decode(gpt2.encode(text).ids) == text


def test_minilm_known_encoding(minilm_tokens):
    encoding = minilm_tokens.encode("Hello world")
    assert encoding.ids == [101, 7592, 2088, 102]
    assert minilm_tokens.decode(encoding.ids) == "hello world"


def test_minilm_pads_batches_and_truncates():
    tokenizer = minilm_tokenizer(max_length=8)
    short, long = tokenizer.encode_batch(["Great film!", "one two three four five six seven eight nine"])
    assert len(short.ids) == len(long.ids) == 8
    assert long.ids[-1] == tokenizer.token_to_id("[SEP]")
    assert short.ids[-1] == tokenizer.token_to_id("[PAD]") and short.attention_mask[-1] == 0


def test_minilm_matches_hugging_face(minilm_tokens):
    reference = load_fixture("minilm_reference.npz")
    encodings = minilm_tokens.encode_batch([str(text) for text in reference["texts"]])
    np.testing.assert_array_equal([encoding.ids for encoding in encodings], reference["input_ids"])
    np.testing.assert_array_equal([encoding.attention_mask for encoding in encodings], reference["attention_mask"])
    np.testing.assert_array_equal([encoding.type_ids for encoding in encodings], reference["token_type_ids"])


def test_smollm2_matches_hugging_face(smollm2):
    reference = load_fixture("smollm2_reference.npz")
    index = 0
    while f"prompt_{index}" in reference.files:
        prompt = str(reference[f"prompt_{index}"])
        assert smollm2.encode(prompt).ids == reference[f"input_ids_{index}"].tolist(), prompt
        index += 1
    assert index >= 2
    new_ids = reference["greedy_ids"][len(smollm2.encode(str(reference["greedy_prompt"])).ids) :]
    assert smollm2.decode(new_ids.tolist(), skip_special_tokens=False) == str(reference["greedy_text"])


def test_smollm2_special_tokens_and_digits(smollm2):
    assert smollm2.get_vocab_size() == 49_152
    chat = smollm2.encode("<|im_start|>user\nHi<|im_end|>")
    assert chat.ids[0] == 1 and chat.ids[-1] == 2
    assert smollm2.encode("2024").tokens == ["2", "0", "2", "4"]


def test_smollm2_bos_follows_the_file_unless_asked(smollm2, smollm2_reader):
    assert smollm2.encode("Hello").ids[0] != 1
    with_bos = gguf_tokenizer(smollm2_reader, add_bos=True)
    assert with_bos.encode("Hello").ids == [1, *smollm2.encode("Hello").ids]


def _byte_level_characters():
    """GPT-2's printable stand-in character for each byte, as byte-level BPE vocabularies spell bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return {**{byte: chr(byte) for byte in printable}, **{byte: chr(256 + n) for n, byte in enumerate(others)}}


def test_smollm2_vocabulary_lacks_tokens_for_some_bytes(smollm2):
    vocabulary = smollm2.get_vocab()
    missing = {byte for byte, character in _byte_level_characters().items() if character not in vocabulary}
    assert missing == {0x04, 0x06, 0x13, 0x14, 0x16, 0x1D, 0xC0, 0xC1, 0xF1, 0xF2, *range(0xF5, 0x100)}
    assert smollm2.encode("a\x04b").tokens == ["a", "b"]


_smollm2_encodable_texts = st.text(
    st.characters(codec="utf-8", max_codepoint=0x3FFFF, exclude_characters="\x04\x06\x13\x14\x16\x1d"), max_size=60
)


@hypothesis.given(_smollm2_encodable_texts | _example_texts)
@hypothesis.settings(max_examples=60, deadline=None)
def test_smollm2_round_trip(smollm2, text):
    assert smollm2.decode(smollm2.encode(text).ids, skip_special_tokens=False) == text


def _write_gguf(path, model, pre="gpt-2"):
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_tokenizer_model(model)
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(["<s>", "a", "b", "ab"])
    writer.add_token_types([3, 1, 1, 1])
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_add_bos_token(True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_tokenizer_on_a_written_file(tmp_path):
    _write_gguf(tmp_path / "tiny.gguf", "gpt2")
    tokenizer = gguf_tokenizer(tmp_path / "tiny.gguf")
    assert tokenizer.encode("abab").ids == [0, 3, 3]
    assert gguf_tokenizer(tmp_path / "tiny.gguf", add_bos=False).encode("ab<s>").ids == [3, 0]


def test_gguf_tokenizer_rejects_other_vocabularies(tmp_path):
    _write_gguf(tmp_path / "sentencepiece.gguf", "llama")
    with pytest.raises(ValueError, match="not 'llama'"):
        gguf_tokenizer(tmp_path / "sentencepiece.gguf")
    _write_gguf(tmp_path / "llama3.gguf", "gpt2", pre="llama-bpe")
    with pytest.raises(ValueError, match="'llama-bpe' is not supported"):
        gguf_tokenizer(tmp_path / "llama3.gguf")
