import dataclasses

PROMPTS = (
    "My favourite animal is the",
    "When I got home from work, the first thing I saw was the",
    "The best place to spend a holiday is",
)

CONCEPTS = (
    ("World", "world news: politics, governments, elections and war"),
    ("Sports", "sports: games, teams, players and matches"),
    ("Business", "business: companies, markets, shares and the economy"),
    ("Sci/Tech", "science and technology: computers, software, the internet and space"),
    ("Positive review", "a positive, enthusiastic review of a film"),
    ("Negative review", "a negative, critical review of a film"),
)
"""The concept descriptions components are labelled against: AG News's four topics and film-review sentiment (the
Rotten Tomatoes sentences), each with its name."""

QUERIES = ("sports", "the stock market", "a boring film", "war and violence", "computers and software")


@dataclasses.dataclass(frozen=True)
class NeuronDecodingConfig:
    """Settings of the neuron-decoding experiment (P39, P23).

    **Fields:**

    - `seed`: the seed of everything random (the small models' initialisation and batches, text sampling).
    - `decode_layers`: SmolLM2 layers decoded (None: all 30).
    - `concepts`, `prompts`, `clamp_value`, `generate_steps`: the clamping section: the neuron listing each concept
      token first (`search_token`), clamped at `clamp_value` at the prompt's last token (`clamp_effect`) and at
      every position of a greedy continuation of `generate_steps` tokens.
    - `vocab_size`, `d_model`, `n_layers`, `n_heads`, `d_mlp`, `seq_len`: the small Llama-shaped model (its
      vocabulary: the separator, the `vocab_size - 2` most frequent SmolLM2 tokens of the base corpus, unknown).
    - `sst2_sentences`: SST-2 training sentences in the base corpus (with all of AG News).
    - `base_steps`, `tune_steps`, `batch_size`, `learning_rate`, `tune_learning_rate`: training of the base
      models (AG News + SST-2) and of the fine-tuned one (Rotten Tomatoes only).
    - `match_windows`: held-out base-corpus windows on which neurons of two seeds are correlated.
    - `lens_layers`, `lens_texts`, `lens_tokens`, `lens_k`: SemanticLens on SmolLM2: the layers, the texts per
      source (AG News, Rotten Tomatoes), the tokens kept per text and the top texts per neuron.
    - `polysemanticity_units`: neurons per layer scored for polysemanticity (k-means per neuron).
    - `baseline_sets`: random text sets for the clarity of chance.
    """

    seed: int = 0
    decode_layers: tuple[int, ...] | None = None
    concepts: tuple[str, ...] = (" dog", " California")
    prompts: tuple[str, ...] = PROMPTS
    clamp_value: float = 20.0
    generate_steps: int = 10
    vocab_size: int = 2048
    d_model: int = 128
    n_layers: int = 2
    n_heads: int = 4
    d_mlp: int = 256
    seq_len: int = 48
    sst2_sentences: int = 30000
    base_steps: int = 1000
    tune_steps: int = 300
    batch_size: int = 16
    learning_rate: float = 3e-3
    tune_learning_rate: float = 1e-3
    match_windows: int = 256
    lens_layers: tuple[int, ...] = (4, 12, 20)
    lens_texts: int = 256
    lens_tokens: int = 32
    lens_k: int = 8
    polysemanticity_units: int = 128
    baseline_sets: int = 500

    @classmethod
    def quick(cls) -> "NeuronDecodingConfig":
        """The `--quick` variant: the last layer decoded, short training, fewer texts, one layer labelled."""
        return cls(
            decode_layers=(29,), concepts=(" dog",), prompts=PROMPTS[:1], generate_steps=4, base_steps=100,
            tune_steps=30, sst2_sentences=5000, match_windows=64, lens_layers=(4,), lens_texts=48, lens_tokens=24,
            polysemanticity_units=16, baseline_sets=50,
        )  # fmt: skip
