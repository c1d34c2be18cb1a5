"""Top-activating contexts of any units of any site: for every unit (a column of a site's `[seq, units]` value,
optionally after a user function such as a sparse autoencoder's encoder), its top-k (text, position, activation),
examples drawn from bands of its activation quantiles, and its activation density, streamed over batches of
token ids in one compiled call per batch. See `docs/neurons.md#top-activating-contexts`."""

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax import lax
from jaxtyping import ArrayLike, Bool, Int
from tqdm.auto import tqdm

from ..capture import capture


class TopContexts(NamedTuple):
    """What each unit of one site responds to most, over a set of texts (NumPy arrays, units first).

    - `values`: float32 `[units, k]`, the largest activations, the largest first; `-inf` where the unit had fewer
      than `k` candidates.
    - `texts`, `positions`: int32 `[units, k]`, the text (row of the token array) and the token position of each;
      -1 where there is none.
    - `sample_values`, `sample_texts`, `sample_positions`: `[units, bands, per_band]`, examples drawn from the
      unit's activation quantile bands: a uniform sample (without replacement) of the unit's active candidates,
      sorted by activation and cut into `bands` bands of equal count, band 0 the lowest; NaN and -1 where a unit
      had too few active candidates to fill a band.
    - `density`: float32 `[units]`, the fraction of unmasked tokens at which the unit's activation exceeds the
      threshold (over tokens, also with `per_text`).
    - `tokens`: the number of unmasked tokens seen.
    - `per_text`: whether candidates were texts (each text's largest activation and its position) rather than
      single tokens; with `per_text`, a text appears at most once in a unit's top-k.
    """

    values: np.ndarray
    texts: np.ndarray
    positions: np.ndarray
    sample_values: np.ndarray
    sample_texts: np.ndarray
    sample_positions: np.ndarray
    density: np.ndarray
    tokens: int
    per_text: bool

    @property
    def num_units(self) -> int:
        """The number of units."""
        return self.values.shape[0]


class _State(NamedTuple):
    top_values: jax.Array  # [units, k]
    top_texts: jax.Array
    top_positions: jax.Array
    priorities: jax.Array  # [units, reservoir]; -1 where empty
    sample_values: jax.Array
    sample_texts: jax.Array
    sample_positions: jax.Array
    active: jax.Array  # [units], active token counts


def _default_forward(model, tokens, mask):
    return model(tokens)


def _count(value, name: str, *, low: int) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"top_contexts: {name} must be an integer of at least {low}, got {value!r}")
    return int(value)


def _initial(units: int, k: int, reservoir: int) -> _State:
    def empty(width, fill, dtype):
        return jnp.full((units, width), fill, dtype)

    return _State(
        empty(k, -jnp.inf, jnp.float32), empty(k, -1, jnp.int32), empty(k, -1, jnp.int32),
        empty(reservoir, -1.0, jnp.float32), empty(reservoir, jnp.nan, jnp.float32), empty(reservoir, -1, jnp.int32),
        empty(reservoir, -1, jnp.int32), jnp.zeros(units, jnp.int32),
    )  # fmt: skip


def _keep_largest(scores, carried, candidates, width):
    """The `width` largest of `scores` (`[units, n]`) and the matching columns of each array in `carried` and
    `candidates` (concatenated along the last axis)."""
    _, order = lax.top_k(scores, width)
    return [jnp.take_along_axis(jnp.concatenate([a, b], axis=1), order, axis=1) for a, b in zip(carried, candidates)]


def _merge(state: _State, values, texts, positions, valid, active_tokens, key, threshold) -> _State:
    """`state` updated with one batch's candidates (`[candidates, units]` values, texts, positions and validity)."""
    k, reservoir = state.top_values.shape[1], state.priorities.shape[1]
    values, texts, positions, valid = values.T, texts.T, positions.T, valid.T
    candidates = jnp.where(valid, values, -jnp.inf)
    top = _keep_largest(
        jnp.concatenate([state.top_values, candidates], axis=1),
        (state.top_values, state.top_texts, state.top_positions),
        (candidates, jnp.where(valid, texts, -1), jnp.where(valid, positions, -1)),
        k,
    )
    draws = jnp.where(valid & (values > threshold), jr.uniform(key, values.shape), -1.0)
    sample = _keep_largest(
        jnp.concatenate([state.priorities, draws], axis=1),
        (state.priorities, state.sample_values, state.sample_texts, state.sample_positions),
        (draws, values, texts, positions),
        reservoir,
    )
    return _State(*top, *sample, state.active + active_tokens)


@eqx.filter_jit
def _step(model, forward, transform, sites, states, tokens, mask, offset, key, threshold, per_text):
    def one(tokens, mask):
        _, records = capture(lambda m, t, a: forward(m, t, a), *sites)(model, tokens, mask)
        return {site: records[site] if transform is None else transform(records[site]) for site in sites}

    activations = jax.vmap(one)(tokens, mask)
    batch, seq = tokens.shape
    texts = offset + jnp.arange(batch, dtype=jnp.int32)
    new = {}
    for index, site in enumerate(sites):
        acts = activations[site].astype(jnp.float32)  # [batch, seq, units]
        units = acts.shape[-1]
        active = jnp.sum((acts > threshold) & mask[..., None], axis=(0, 1), dtype=jnp.int32)
        if per_text:
            masked = jnp.where(mask[..., None], acts, -jnp.inf)
            values = masked.max(axis=1)
            positions = jnp.argmax(masked, axis=1).astype(jnp.int32)
            text_ids = jnp.broadcast_to(texts[:, None], (batch, units))
            valid = jnp.broadcast_to(mask.any(axis=1)[:, None], (batch, units))
        else:
            values = acts.reshape(batch * seq, units)
            positions = jnp.broadcast_to(jnp.tile(jnp.arange(seq, dtype=jnp.int32), batch)[:, None], values.shape)
            text_ids = jnp.broadcast_to(jnp.repeat(texts, seq)[:, None], values.shape)
            valid = jnp.broadcast_to(mask.reshape(-1)[:, None], values.shape)
        new[site] = _merge(states[site], values, text_ids, positions, valid, active, jr.fold_in(key, index), threshold)
    return new


def _shape_checked(tokens, mask) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or 0 in tokens.shape or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"top_contexts: tokens must be a non-empty integer array [texts, seq], got {tokens.shape}")
    if mask is None:
        mask = np.ones(tokens.shape, bool)
    mask = np.asarray(mask)
    if mask.shape != tokens.shape:
        raise ValueError(f"top_contexts: mask must have the tokens' shape {tokens.shape}, got {mask.shape}")
    return tokens.astype(np.int32), mask.astype(bool)


def _quantile_samples(state: _State, bands: int, per_band: int):
    """`[units, bands, per_band]` values, texts and positions from the reservoir: its filled entries sorted by
    activation and cut into `bands` bands of equal count (as equal as the count allows)."""
    priorities, values = np.asarray(state.priorities), np.asarray(state.sample_values)
    texts, positions = np.asarray(state.sample_texts), np.asarray(state.sample_positions)
    units = values.shape[0]
    out_values = np.full((units, bands, per_band), np.nan, np.float32)
    out_texts = np.full((units, bands, per_band), -1, np.int32)
    out_positions = np.full((units, bands, per_band), -1, np.int32)
    for unit in range(units):
        filled = np.flatnonzero(priorities[unit] >= 0)
        if not filled.size:
            continue
        filled = filled[np.argsort(values[unit, filled], kind="stable")]
        for band, chosen in enumerate(np.array_split(filled, bands)):
            chosen = chosen[:per_band]
            out_values[unit, band, : chosen.size] = values[unit, chosen]
            out_texts[unit, band, : chosen.size] = texts[unit, chosen]
            out_positions[unit, band, : chosen.size] = positions[unit, chosen]
    return out_values, out_texts, out_positions


def top_contexts(
    model: Any,
    sites: str | Sequence[str],
    tokens: Int[ArrayLike, "texts seq"],
    mask: Bool[ArrayLike, "texts seq"] | None = None,
    *,
    k: int = 10,
    bands: int = 4,
    per_band: int = 4,
    threshold: float = 0.0,
    per_text: bool = False,
    transform: Callable | None = None,
    forward: Callable | None = None,
    batch_size: int = 32,
    seed: int = 0,
    progress: bool = True,
) -> TopContexts | dict[str, TopContexts]:
    """The top-activating contexts, quantile samples and activation density of every unit of one or more sites.

    Each batch of texts is run through `forward(model, tokens, mask)` (vmapped over the texts) with the sites read
    by `jaxinterp.capture`; a site's value for one text is `[seq, units]`, or whatever `transform` maps it to (a
    function `[seq, units_in] -> [seq, units]`, such as a sparse autoencoder's encoder; an equinox Module's arrays
    are traced, not baked in). One compiled call per batch keeps a running top-k and a random reservoir per unit,
    so memory does not grow with the number of texts. Padding (`mask` False) is never a candidate.

    **Arguments:**

    - `model`: any model that `forward` can call (an equinox Module: its arrays are arguments of the compiled
      step).
    - `sites`: a site name (`"blocks.3.mlp.post"`), or several, read in the same forward passes.
    - `tokens`: int `[texts, seq]`; `mask`: bool `[texts, seq]`, False for padding (all True when None).
    - `k`: top contexts per unit.
    - `bands`, `per_band`: the quantile samples: a reservoir of `bands * per_band` active candidates per unit
      (activation above `threshold`), drawn uniformly, sorted and cut into `bands` bands.
    - `threshold`: what counts as active, for the density and the quantile samples.
    - `per_text`: candidates are texts (a text's largest activation, at its position) rather than tokens.
    - `transform`: applied to each site's `[seq, units]` value of one text before anything else.
    - `forward`: `forward(model, tokens, mask)` for one text (default `model(tokens)`; pass the mask on for a
      bidirectional encoder: `lambda m, t, a: m(t, attention_mask=a)`).
    - `batch_size`: texts per compiled call (the last batch is padded, so every call has one shape).
    - `seed`: the reservoir's random draws.
    - `progress`: show a progress bar over batches.

    **Returns:** a `TopContexts` for one site name, or `{site: TopContexts}` for a sequence of them.
    """
    single = isinstance(sites, str)
    chosen = (sites,) if single else tuple(sites)
    if not chosen or not all(isinstance(site, str) for site in chosen):
        raise ValueError(f"top_contexts: sites must be a site name or a non-empty sequence of them, got {sites!r}")
    tokens, mask = _shape_checked(tokens, mask)
    k = _count(k, "k", low=1)
    bands, per_band = _count(bands, "bands", low=1), _count(per_band, "per_band", low=1)
    batch_size = _count(batch_size, "batch_size", low=1)
    forward = _default_forward if forward is None else forward
    texts, seq = tokens.shape
    batch_size = min(batch_size, texts)

    def activations_shape():
        def one(t, a):
            _, records = capture(lambda m, t_, a_: forward(m, t_, a_), *chosen)(model, t, a)
            missing = [site for site in chosen if site not in records]
            if missing:
                raise ValueError(f"top_contexts: the sites {missing} were not captured; use exact site names")
            return {site: records[site] if transform is None else transform(records[site]) for site in chosen}

        return jax.eval_shape(one, jax.ShapeDtypeStruct((seq,), jnp.int32), jax.ShapeDtypeStruct((seq,), bool))

    shapes = activations_shape()
    states = {}
    for site, shape in shapes.items():
        if len(shape.shape) != 2 or shape.shape[0] != seq:
            raise ValueError(
                f"top_contexts: the site {site!r} (after transform) must be [seq, units] = [{seq}, units] for one "
                f"text, got {shape.shape}"
            )
        states[site] = _initial(shape.shape[1], k, bands * per_band)
    key = jr.key(seed)
    threshold = jnp.float32(threshold)
    starts = range(0, texts, batch_size)
    for number, start in enumerate(tqdm(starts, desc="top contexts", disable=not progress, leave=False)):
        batch_tokens, batch_mask = tokens[start : start + batch_size], mask[start : start + batch_size]
        short = batch_size - batch_tokens.shape[0]
        if short:
            batch_tokens = np.pad(batch_tokens, ((0, short), (0, 0)))
            batch_mask = np.pad(batch_mask, ((0, short), (0, 0)))
        states = _step(
            model, forward, transform, chosen, states, jnp.asarray(batch_tokens), jnp.asarray(batch_mask),
            jnp.int32(start), jr.fold_in(key, number), threshold, per_text,
        )  # fmt: skip
    counted = int(mask.sum())
    results = {}
    for site, state in states.items():
        sample_values, sample_texts, sample_positions = _quantile_samples(state, bands, per_band)
        results[site] = TopContexts(
            np.asarray(state.top_values), np.asarray(state.top_texts), np.asarray(state.top_positions),
            sample_values, sample_texts, sample_positions,
            np.asarray(state.active, np.float32) / max(counted, 1), counted, per_text,
        )  # fmt: skip
    return results[chosen[0]] if single else results


def context_window(
    tokens: Int[ArrayLike, "texts seq"],
    mask: Bool[ArrayLike, "texts seq"] | None,
    text: int,
    position: int,
    *,
    before: int = 12,
    after: int = 0,
) -> tuple[list[int], int, list[int]]:
    """The tokens around one context, for display: up to `before` unmasked tokens before `position`, the token at
    it, and up to `after` unmasked tokens after it.

    **Arguments:** `tokens` and `mask` as given to `top_contexts`, `text` and `position` (from a `TopContexts`),
    `before`, `after`.

    **Returns:** `(ids_before, id_at, ids_after)`.
    """
    tokens = np.asarray(tokens)
    mask = np.ones(tokens.shape, bool) if mask is None else np.asarray(mask, bool)
    if tokens.ndim != 2 or mask.shape != tokens.shape:
        raise ValueError(f"context_window: tokens and mask must be [texts, seq] alike, got {tokens.shape}")
    if not 0 <= text < tokens.shape[0] or not 0 <= position < tokens.shape[1] or not mask[text, position]:
        raise ValueError(
            f"context_window: no context at text {text}, position {position} (tokens {tokens.shape}, or padding)"
        )
    kept = np.flatnonzero(mask[text])
    at = int(np.searchsorted(kept, position))
    row = tokens[text]
    return (
        [int(t) for t in row[kept[max(0, at - before) : at]]],
        int(row[position]),
        [int(t) for t in row[kept[at + 1 : at + 1 + after]]],
    )
