"""A tokenised text prepared for attribution: padded token ids, the features to score (words or single tokens), and
how a model sees the text with some features removed.

Every method in `jaxinterp.attribution` scores the *features* of a `Text`: groups of token positions (by default the
words, word pieces grouped; special tokens such as `[CLS]` and `[SEP]` are never features and are always present).
Texts are padded to a multiple of `width_multiple` tokens and their features to as many rows, so texts of similar
length share one compiled program.

The classifier is `f(tokens, attention_mask) -> logits [classes]`, for one text (`models.SentenceClassifier` is
one). Each method explains the same number, the *margin* `logits[target] - logits[competitor]`, with the competitor
the highest other class at the full text (for two classes: the log-odds of the target).
"""

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

WIDTH_MULTIPLE = 16

Classifier = Callable[[jax.Array, jax.Array], jax.Array]
"""`f(tokens [seq] int, attention_mask [seq] float) -> logits [classes]`."""


@dataclasses.dataclass(frozen=True)
class Text:
    """A text as attribution methods see it.

    **Fields:**

    - `tokens`: int32 `[width]`, padded with `pad_id` after the real tokens.
    - `attention_mask`: float32 `[width]`, 1 for real tokens.
    - `groups`: for each feature, its token positions.
    - `names`: for each feature, its text (the word).
    - `pieces`: the token strings of the real tokens (for pictures).
    """

    tokens: np.ndarray
    attention_mask: np.ndarray
    groups: tuple[tuple[int, ...], ...]
    names: tuple[str, ...]
    pieces: tuple[str, ...] = ()

    def __post_init__(self):
        tokens = np.asarray(self.tokens)
        if tokens.ndim != 1:
            raise ValueError(f"a Text holds one sequence of token ids, shape [seq]; got shape {tokens.shape}")
        if np.asarray(self.attention_mask).shape != tokens.shape:
            raise ValueError(f"attention_mask has shape {np.shape(self.attention_mask)}, tokens {tokens.shape}")
        if not self.groups:
            raise ValueError("a Text needs at least one feature to attribute to")
        if len(self.names) != len(self.groups):
            raise ValueError(f"{len(self.names)} feature names for {len(self.groups)} features")
        real = int(np.asarray(self.attention_mask).sum())
        for i, group in enumerate(self.groups):
            if not group or min(group) < 0 or max(group) >= real:
                raise ValueError(
                    f"feature {i} ({self.names[i]!r}) has positions {group}, outside the {real} real tokens"
                )

    @property
    def n_features(self) -> int:
        return len(self.groups)

    @property
    def width(self) -> int:
        return int(np.asarray(self.tokens).shape[0])

    @property
    def padded_features(self) -> int:
        """Rows of `feature_matrix`: the feature count rounded up to a multiple of `WIDTH_MULTIPLE`."""
        return -(-self.n_features // WIDTH_MULTIPLE) * WIDTH_MULTIPLE

    def feature_matrix(self) -> np.ndarray:
        """float32 `[padded_features, width]`: row `j` is 1 at feature `j`'s positions (rows past the features are 0)."""
        matrix = np.zeros((self.padded_features, self.width), np.float32)
        for j, group in enumerate(self.groups):
            matrix[j, list(group)] = 1.0
        return matrix

    @classmethod
    def from_encoding(
        cls,
        encoding,
        *,
        words: bool = True,
        max_tokens: int | None = None,
        width_multiple: int = WIDTH_MULTIPLE,
        pad_id: int = 0,
    ) -> "Text":
        """From a `tokenizers.Encoding`: features are its words (`words=True`, word pieces grouped by
        `encoding.word_ids`) or its single non-special tokens; padding is dropped and re-added to a multiple of
        `width_multiple`. With `max_tokens`, a longer encoding is cut to its first `max_tokens - 1` tokens and its
        last (the closing special token)."""
        real = int(sum(encoding.attention_mask))
        keep = list(range(real))
        if max_tokens is not None and real > max_tokens:
            keep = keep[: max_tokens - 1] + keep[-1:]
        ids = [encoding.ids[p] for p in keep]
        word_ids = [encoding.word_ids[p] for p in keep]
        pieces = [encoding.tokens[p] for p in keep]
        real = len(keep)
        grouped: dict[int, list[int]] = {}
        for position, word in enumerate(word_ids):
            if word is not None:
                grouped.setdefault(word if words else position, []).append(position)
        groups = tuple(tuple(g) for g in grouped.values())
        names = tuple(" ".join(pieces[p] for p in g).replace(" ##", "") for g in groups)
        width = -(-real // width_multiple) * width_multiple
        tokens = np.full(width, pad_id, np.int32)
        tokens[:real] = ids
        mask = np.zeros(width, np.float32)
        mask[:real] = 1.0
        return cls(tokens, mask, groups, names, tuple(pieces))

    @classmethod
    def from_tokens(cls, tokens, names: Sequence[str] | None = None) -> "Text":
        """Every position of `tokens` (`[seq]`, no padding) its own feature, named by `names` or its index."""
        tokens = np.asarray(tokens, np.int32)
        names = tuple(names) if names is not None else tuple(str(i) for i in range(tokens.shape[0]))
        groups = tuple((i,) for i in range(tokens.shape[0]))
        return cls(tokens, np.ones(tokens.shape, np.float32), groups, names, names)


def present_positions(feature_matrix: jax.Array, attention_mask: jax.Array, keep: jax.Array) -> jax.Array:
    """The attention mask with the features where `keep` (`[padded_features]`, 1 present / 0 absent) is 0 removed:
    a position is present if it is real and no absent feature covers it."""
    removed = jnp.max(feature_matrix * (1.0 - keep)[:, None], axis=0)
    return attention_mask * (1.0 - removed)


def masked_logits(f: Classifier, text_arrays, keep: jax.Array, removal: str | int = "drop") -> jax.Array:
    """The classifier's logits with the features where `keep` is 0 removed.

    **Arguments:** `f`; `text_arrays = (tokens, attention_mask, feature_matrix)` (arrays); `keep` (`[padded_features]`);
    `removal`: `"drop"` (absent tokens are masked out of attention and pooling, as if deleted) or a token id (absent
    tokens are replaced by it, e.g. `[MASK]` or `[PAD]`, and still attended to).

    **Returns:** logits `[classes]`.
    """
    tokens, attention_mask, features = text_arrays
    present = present_positions(features, attention_mask, keep)
    if isinstance(removal, str):
        if removal != "drop":
            raise ValueError(f"removal is 'drop' or a token id, got {removal!r}")
        return f(tokens, present)
    replaced = jnp.where((present > 0) | (attention_mask == 0), tokens, jnp.asarray(removal, tokens.dtype))
    return f(replaced, attention_mask)


def margin(logits: jax.Array, target, competitor) -> jax.Array:
    """`logits[..., target] - logits[..., competitor]`."""
    return logits[..., target] - logits[..., competitor]


def competitor_of(logits: ArrayLike, target: int) -> int:
    """The class with the highest logit other than `target`."""
    others = np.where(np.arange(logits.shape[-1]) == target, -np.inf, np.asarray(logits))
    return int(np.argmax(others))


def arrays(text: Text) -> tuple[jax.Array, jax.Array, jax.Array]:
    """`(tokens, attention_mask, feature_matrix)` of `text` as JAX arrays."""
    return jnp.asarray(text.tokens), jnp.asarray(text.attention_mask), jnp.asarray(text.feature_matrix())


def pad_keep(keep: jax.Array, text: Text) -> jax.Array:
    """Masks over the real features (`[..., n_features]`) padded with absent rows to `[..., padded_features]`."""
    extra = text.padded_features - text.n_features
    return jnp.pad(keep, [(0, 0)] * (keep.ndim - 1) + [(0, extra)])
