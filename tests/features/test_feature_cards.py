import html.parser

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from PIL import Image

import models
from jaxinterp import capture, features
from jaxinterp.attribution import render
from tests.attribution.test_render import _chromium_or_skip

SITE = "blocks.0.resid_post"


class _Card(html.parser.HTMLParser):
    """The contexts (class, activation of the highlighted token) and logit rows of a feature card."""

    def __init__(self):
        super().__init__()
        self.contexts, self.logits, self._row = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "div" and "context" in attrs.get("class", ""):
            self.contexts.append([attrs["class"], None])
        if tag == "span" and attrs.get("class") == "token":
            self.contexts[-1][1] = float(attrs["data-activation"])
        if tag == "tr" and attrs.get("class") in ("promoted", "suppressed"):
            self._row = attrs["class"]
        if tag == "td" and "data-logit" in attrs:
            self.logits.append((self._row, float(attrs["data-logit"])))


def test_feature_card_lists_top_contexts_logits_and_density_and_renders_in_chromium(tmp_path):
    cfg = models.llama_config(vocab_size=40, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, d_head=8, d_mlp=12)
    model = models.Transformer(cfg, key=jr.key(0))
    tokens = np.random.default_rng(0).integers(0, 40, (12, 8)).astype(np.int32)
    mask = np.ones(tokens.shape, bool)
    mask[::4, 6:] = False
    W_dec = jr.normal(jr.key(1), (5, 16))
    sae = features.SparseAutoencoder(W_dec.T, jnp.zeros(5), W_dec, jnp.zeros(16), apply_b_dec_to_input=False)
    [card] = features.feature_cards(
        model, sae, SITE, tokens, [3], decode=lambda i: f"t{i} ", mask=mask, k=4, logit_k=3, progress=False
    )
    # the top contexts are the largest activations of the latent over the unmasked tokens
    resid = jax.vmap(lambda t: capture(model, SITE)(t)[1][SITE])(jnp.asarray(tokens))
    acts = np.asarray(sae.encode(resid))[..., 3]
    values = np.sort(acts[mask])[::-1]
    np.testing.assert_allclose([c.activation for c in card.top], values[:4], rtol=1e-5)
    first = card.top[0]
    assert acts[first.text, first.position] == np.float32(first.activation)
    assert first.at == f"t{tokens[first.text, first.position]} "
    assert card.density == pytest.approx(np.mean(acts[mask] > 0), rel=1e-6)
    # promoted and suppressed: the decoder row through the final norm's weight and the unembedding
    logits = np.asarray((W_dec[3] * model.ln_final.weight) @ model.token_embed.T)
    np.testing.assert_allclose([v for _, v in card.promoted], np.sort(logits)[::-1][:3], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in card.suppressed], np.sort(logits)[:3], rtol=1e-5)
    assert card.promoted[0][0] == f"t{int(np.argmax(logits))} "

    page = features.feature_card_html(card)
    parsed = _Card()
    parsed.feed(page)
    tops = [value for kind, value in parsed.contexts if kind.split()[1] == "top"]
    np.testing.assert_allclose(tops, values[:4], rtol=1e-5)
    assert len(parsed.contexts) > 4  # quantile samples follow the top contexts
    assert [row for row, _ in parsed.logits] == ["promoted"] * 3 + ["suppressed"] * 3

    binary = _chromium_or_skip()
    path = features.write_feature_card(tmp_path / "card.html", card)
    png = render.screenshot(path, tmp_path / "card.png", width=900, height=500, chromium=binary)
    hsv = np.asarray(Image.open(png).convert("RGB").convert("HSV")).astype(int)
    red = (hsv[..., 1] > 128) & (hsv[..., 2] > 80) & ((hsv[..., 0] < 15) | (hsv[..., 0] > 240))
    rows = np.flatnonzero(red.sum(axis=1) > 5)
    assert rows.size > 20, "the highlighted tokens of the top contexts should show in red"
