"""Integrated gradients (Sundararajan, Taly and Yan 2017) at the embedding site, with a choice of baseline.

The path runs from the baseline's embedding to the text's, at the `embed` site (rewritten with
`jaxinterp.intervene`): `attr_p = (e_p - b_p) . sum_s w_s grad_e margin(b + a_s (e - b))`, summed over each feature's
positions. The nodes `a_s` and weights `w_s` are Gauss-Legendre on [0, 1], as Captum's default; by completeness the
attributions of all positions add up to `margin(text) - margin(baseline)`, to the quadrature error.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..capture import capture
from ..intervene import intervene
from .text import Classifier, Text, arrays, margin

SITE = "embed"


@eqx.filter_jit
def _position_attributions(
    f, tokens, attention_mask, baseline_tokens, zero_baseline, nodes, weights, target, competitor
):
    embedded = capture(f, SITE)
    _, sites = embedded(tokens, attention_mask)
    x = sites[SITE]
    _, baseline_sites = embedded(baseline_tokens, attention_mask)
    b = jnp.where(zero_baseline, 0.0, baseline_sites[SITE])

    def margin_at(e):
        logits = intervene(f, {SITE: lambda _: e})(tokens, attention_mask)
        return margin(logits, target, competitor)

    grads = jax.lax.map(lambda a: jax.grad(margin_at)(b + a * (x - b)), nodes)
    path_gradient = jnp.tensordot(weights, grads, 1)
    return ((x - b) * path_gradient).sum(-1), margin_at(x) - margin_at(b)


def integrated_gradients(
    f: Classifier, text: Text, target: int, competitor: int, *, steps: int = 32, baseline: int | str = 0
) -> tuple[np.ndarray, float]:
    """Integrated gradients of the margin for each feature of `text`.

    **Arguments:** `f`, `text`, `target`, `competitor`; `steps` (quadrature nodes, each one gradient);
    `baseline`: a token id put at every feature position (`0` is `[PAD]` in BERT vocabularies; `[MASK]` is 103), or
    `"zero"` for the zero vector at the embedding site (special tokens keep their embeddings under a token baseline
    and are zeroed with the rest under `"zero"`).

    **Returns:** `(scores [n_features], completeness_gap)`: the gap is `sum over all positions - (margin(text) -
    margin(baseline))`, the quadrature error.
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if not (baseline == "zero" or isinstance(baseline, (int, np.integer))):
        raise ValueError(f"baseline is a token id or 'zero', got {baseline!r}")
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    tokens, attention_mask, features = arrays(text)
    feature_positions = np.asarray(features).max(0) > 0
    baseline_tokens = np.where(feature_positions, 0 if baseline == "zero" else int(baseline), text.tokens)
    per_position, difference = _position_attributions(
        f,
        tokens,
        attention_mask,
        jnp.asarray(baseline_tokens, jnp.int32),
        jnp.asarray(baseline == "zero"),
        jnp.asarray((nodes + 1) / 2, jnp.float32),
        jnp.asarray(weights / 2, jnp.float32),
        jnp.asarray(target),
        jnp.asarray(competitor),
    )
    per_position = np.asarray(per_position) * text.attention_mask
    scores = np.array([per_position[list(g)].sum() for g in text.groups])
    return scores, float(per_position.sum() - difference)
