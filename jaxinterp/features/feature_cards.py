"""Feature cards: what one SAE latent (or any feature with a direction) responds to and what it writes. Its
top-activating token contexts and quantile samples (`jaxinterp.neurons.top_contexts` with the SAE's encoder as the
transform), the tokens its decoder direction promotes and suppresses through the final norm and the unembedding
(`jaxinterp.neurons.decode_directions`), and its activation density, rendered as a standalone HTML page."""

import dataclasses
import html
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Bool, Float, Int

from ..attribution.render import SUPPORTS_RGB, write_html
from ..neurons import Readout, context_window, decode_directions, readout, top_contexts
from .sae import SparseAutoencoder


@dataclasses.dataclass(frozen=True)
class FeatureContext:
    """One context of a feature: the text (row of the token array), the position, the activation there, and the
    tokens shown (`before`, the token `at` the position, `after`) as strings."""

    text: int
    position: int
    activation: float
    before: tuple[str, ...]
    at: str
    after: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class FeatureCard:
    """What a feature responds to and writes.

    - `feature`: its index; `site`: the site read.
    - `density`: the fraction of unmasked tokens at which it is active (above the threshold).
    - `top`: its top-activating contexts, the largest first.
    - `quantiles`: contexts drawn from its activation quantile bands, band 0 the lowest.
    - `promoted`, `suppressed`: `(token, logit)` pairs, the largest and the smallest logits of its decoder
      direction through the final norm and the unembedding (empty where the site does not write to the residual
      stream).
    """

    feature: int
    site: str
    density: float
    top: tuple[FeatureContext, ...]
    quantiles: tuple[tuple[FeatureContext, ...], ...]
    promoted: tuple[tuple[str, float], ...]
    suppressed: tuple[tuple[str, float], ...]


def feature_cards(
    model: Any,
    sae: SparseAutoencoder,
    site: str,
    tokens: Int[ArrayLike, "texts seq"],
    features: Sequence[int],
    *,
    decode: Callable[[int], str],
    mask: Bool[ArrayLike, "texts seq"] | None = None,
    projection: Readout | None | bool = True,
    k: int = 10,
    bands: int = 4,
    per_band: int = 3,
    logit_k: int = 10,
    before: int = 12,
    after: int = 3,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> list[FeatureCard]:
    """Feature cards of chosen latents of an SAE reading `site` of `model`.

    **Arguments:**

    - `model`: a model `model(tokens) -> logits` for one text, with the site tagged.
    - `sae`: the `SparseAutoencoder`; the site's value for one text is `[seq, d_in]` (or flattens to it).
    - `site`: the site's name; `tokens`, `mask`: int and bool `[texts, seq]` (mask False for padding).
    - `features`: the latents to describe.
    - `decode`: a token id to its text (e.g. `lambda i: tokenizer.decode([i])`).
    - `projection`: the `Readout` the decoder directions are decoded through; `True` for `readout(model)`, `None`
      or `False` for no promoted and suppressed tokens (a site that does not write to the residual stream).
    - `k`, `bands`, `per_band`: top contexts, quantile bands and samples per band (`top_contexts`).
    - `logit_k`: promoted and suppressed tokens per feature.
    - `before`, `after`: tokens of context shown around each position.
    - `batch_size`, `seed`, `progress`: as for `top_contexts`.

    **Returns:** one `FeatureCard` per feature, in order.
    """
    features = [int(f) for f in features]
    bad = [f for f in features if not 0 <= f < sae.d_sae]
    if not features or bad:
        raise ValueError(f"feature_cards: features must be latents in [0, {sae.d_sae}), got {features}")

    def transform(value):
        return sae.encode(value.reshape(value.shape[0], -1))[:, jnp.asarray(features)]

    contexts = top_contexts(
        model, site, tokens, mask, k=k, bands=bands, per_band=per_band, transform=transform,
        batch_size=batch_size, seed=seed, progress=progress,
    )  # fmt: skip
    if projection is True:
        projection = readout(model)
    decoded = None
    if projection:
        decoded = decode_directions(sae.W_dec[jnp.asarray(features)], projection, logit_k)

    def context(text, position, value):
        ids_before, id_at, ids_after = context_window(
            tokens, mask, int(text), int(position), before=before, after=after
        )
        return FeatureContext(
            int(text), int(position), float(value),
            tuple(decode(i) for i in ids_before), decode(id_at), tuple(decode(i) for i in ids_after),
        )  # fmt: skip

    cards = []
    for row, feature in enumerate(features):
        top = tuple(
            context(t, p, v)
            for t, p, v in zip(contexts.texts[row], contexts.positions[row], contexts.values[row])
            if t >= 0 and v > 0
        )
        quantiles = tuple(
            tuple(
                context(t, p, v)
                for t, p, v in zip(
                    contexts.sample_texts[row, band],
                    contexts.sample_positions[row, band],
                    contexts.sample_values[row, band],
                )
                if t >= 0
            )
            for band in range(bands)
        )
        promoted = suppressed = ()
        if decoded is not None:
            promoted = tuple((decode(int(i)), float(v)) for i, v in zip(decoded.top_ids[row], decoded.top_logits[row]))
            suppressed = tuple(
                (decode(int(i)), float(v)) for i, v in zip(decoded.bottom_ids[row], decoded.bottom_logits[row])
            )
        cards.append(FeatureCard(feature, site, float(contexts.density[row]), top, quantiles, promoted, suppressed))
    return cards


_STYLE = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; margin: 16px; color: #202020; background: #ffffff; }
h1 { font-size: 18px; margin: 0 0 4px 0; }
h2 { font-size: 15px; margin: 14px 0 4px 0; }
.subtitle { color: #505050; margin: 0 0 8px 0; }
.context { font-family: "DejaVu Sans Mono", monospace; font-size: 14px; line-height: 1.8; white-space: pre-wrap; }
.value { display: inline-block; width: 70px; color: #505050; }
.token { padding: 1px 2px; border-radius: 3px; white-space: pre; }
table.logits { border-collapse: collapse; display: inline-table; margin-right: 24px; vertical-align: top; }
table.logits td, table.logits th { border: 1px solid #d0d0d0; padding: 2px 8px; font-size: 14px; }
table.logits th { background: #f0f0f0; }
"""


def _token(text: str, opacity: float, **data) -> str:
    red, green, blue = SUPPORTS_RGB
    colour = "#ffffff" if opacity > 0.6 else "#000000"
    attrs = "".join(f' data-{name}="{html.escape(str(value))}"' for name, value in data.items())
    return (
        f'<span class="token"{attrs} style="background-color: rgba({red}, {green}, {blue}, {opacity:.3f}); '
        f'color: {colour}">{html.escape(text)}</span>'
    )


def _context_line(item: FeatureContext, scale: float, kind: str) -> str:
    opacity = min(max(item.activation, 0.0) / scale, 1.0) if scale > 0 else 0.0
    pieces = [html.escape("".join(item.before)), _token(item.at, opacity, activation=repr(item.activation))]
    pieces.append(html.escape("".join(item.after)))
    return (
        f'<div class="context {kind}" data-text="{item.text}" data-position="{item.position}">'
        f'<span class="value">{item.activation:.3g}</span>{"".join(pieces)}</div>'
    )


def _logit_table(title: str, rows: Sequence[tuple[str, float]], kind: str) -> str:
    body = "".join(
        f'<tr class="{kind}"><td>{html.escape(repr(token))}</td><td data-logit="{value!r}">{value:+.3f}</td></tr>'
        for token, value in rows
    )
    return f'<table class="logits"><tr><th colspan="2">{html.escape(title)}</th></tr>{body}</table>'


def feature_card_html(card: FeatureCard, *, title: str = "") -> str:
    """A standalone HTML page of one `FeatureCard`: its density, its top contexts and quantile samples (the token
    at each context's position highlighted in red with opacity by activation, scaled to the largest), and its
    promoted and suppressed tokens.

    **Arguments:** `card`: the card; `title`: a heading (default: the feature and its site).

    **Returns:** the page, as text.
    """
    title = title or f"Feature {card.feature} at {card.site}"
    values = [c.activation for c in card.top] + [c.activation for band in card.quantiles for c in band]
    finite = [v for v in values if math.isfinite(v)]
    scale = max(finite, default=0.0)
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        (
            f'<p class="subtitle" data-density="{card.density!r}">Active on {100 * card.density:.3g}% of tokens; '
            f"largest activation {scale:.3g}.</p>"
        ),
        "<h2>Top activations</h2>",
        *(_context_line(c, scale, "top") for c in card.top),
    ]
    for band in range(len(card.quantiles) - 1, -1, -1):
        if card.quantiles[band]:
            parts.append(f'<h2 data-band="{band}">Quantile band {band + 1} of {len(card.quantiles)}</h2>')
            parts.extend(_context_line(c, scale, f"quantile band-{band}") for c in card.quantiles[band])
    if card.promoted or card.suppressed:
        parts.append("<h2>Output logits of the decoder direction</h2><div>")
        parts.append(_logit_table("promoted", card.promoted, "promoted"))
        parts.append(_logit_table("suppressed", card.suppressed, "suppressed"))
        parts.append("</div>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def write_feature_card(path, card: FeatureCard, *, title: str = ""):
    """Write `feature_card_html(card)` to `path` (its folder created if need be); returns the path."""
    return write_html(path, feature_card_html(card, title=title))


def feature_density(sae: SparseAutoencoder, activations: Float[ArrayLike, "n d_in"]) -> np.ndarray:
    """The fraction of inputs on which each latent is active: float32 `[d_sae]`."""
    x = jnp.asarray(activations, jnp.float32).reshape(-1, sae.d_in)
    return np.asarray(jnp.mean((sae.encode(x) > 0).astype(jnp.float32), axis=0))
