"""Sampling continuations from a causal language model, optionally steered, and scoring them by the model's own
likelihood (perplexity).

Every step recomputes the full forward of a fixed-length buffer (no key-value cache): each row is a prompt,
right-padded, followed by the tokens generated so far; causal attention keeps later (unfilled) positions from
affecting earlier ones, so one compiled step serves every step and every prompt length.
"""

from collections.abc import Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from jaxinterp.features import steer


def _steered(model, directions, alpha):
    return model if directions is None else steer(model, directions, alpha)


def _per_row_axes(directions):
    """vmap axes of the steering directions: a `[batch, d]` direction is one per row, a `[d]` one is shared."""
    return None if directions is None else {site: 0 if v.ndim == 2 else None for site, v in directions.items()}


@eqx.filter_jit
def _next_tokens(model, directions, alpha, buffer, positions, key, temperature, greedy):
    def one(tokens, position, row_directions):
        return _steered(model, row_directions, alpha)(tokens, output_positions=position[None])[0]

    logits = jax.vmap(one, in_axes=(0, 0, _per_row_axes(directions)))(buffer, positions - 1, directions)
    if greedy:
        return jnp.argmax(logits, -1).astype(buffer.dtype)
    keys = jax.random.split(key, buffer.shape[0])
    return jax.vmap(jax.random.categorical)(keys, logits / temperature).astype(buffer.dtype)


@eqx.filter_jit
def _last_logits(model, directions, alpha, prompts, lengths):
    def one(tokens, length, row_directions):
        return _steered(model, row_directions, alpha)(tokens, output_positions=(length - 1)[None])[0]

    return jax.vmap(one, in_axes=(0, 0, _per_row_axes(directions)))(prompts, lengths, directions)


def next_token_logits(
    model,
    prompts: Int[ArrayLike, "batch seq"],
    lengths: Int[ArrayLike, " batch"],
    *,
    directions: Mapping[str, Float[ArrayLike, "*batch d"]] | None = None,
    alpha: float = 0.0,
) -> Float[Array, "batch vocab"]:
    """The logits of the token after each prompt, optionally steered (as in `generate`)."""
    prompts, lengths = _check_prompts(prompts, lengths, "next_token_logits")
    directions = _directions(directions, prompts.shape[0], "next_token_logits")
    return _last_logits(model, directions, jnp.asarray(alpha, jnp.float32), jnp.asarray(prompts), jnp.asarray(lengths))


def _directions(directions, batch: int, where: str):
    if directions is None:
        return None
    out = {}
    for site, v in directions.items():
        v = jnp.asarray(v)
        if v.ndim not in (1, 2) or (v.ndim == 2 and v.shape[0] != batch):
            raise ValueError(f"{where}: the direction for {site!r} must be [d] or [batch={batch}, d]; got {v.shape}")
        out[site] = v
    return out


def _check_prompts(prompts, lengths, where: str):
    prompts = np.asarray(prompts)
    lengths = np.asarray(lengths)
    if prompts.ndim != 2 or lengths.shape != prompts.shape[:1]:
        raise ValueError(
            f"{where}: need prompts [batch, seq] and lengths [batch]; got {prompts.shape}, {lengths.shape}"
        )
    if np.any(lengths < 1) or np.any(lengths > prompts.shape[1]):
        raise ValueError(f"{where}: every prompt length must lie in [1, {prompts.shape[1]}]; got {lengths.tolist()}")
    return prompts.astype(np.int32), lengths.astype(np.int32)


def generate(
    model,
    prompts: Int[ArrayLike, "batch seq"],
    lengths: Int[ArrayLike, " batch"],
    steps: int,
    *,
    key: PRNGKeyArray,
    temperature: float = 1.0,
    directions: Mapping[str, Float[ArrayLike, "*batch d"]] | None = None,
    alpha: float = 0.0,
) -> Int[Array, "batch steps"]:
    """Sample `steps` new tokens after each prompt.

    **Arguments:**

    - `model`: a causal language model `model(tokens [seq], output_positions=...) -> logits [positions, vocab]`
      (as `models.Transformer` is).
    - `prompts`, `lengths`: int `[batch, seq]`, right-padded, and each prompt's length.
    - `steps`: how many tokens to add.
    - `key`: the sampling key (same key, same tokens); step `i` uses `fold_in(key, i)`.
    - `temperature`: the softmax temperature; `0` takes the most likely token (greedy).
    - `directions`, `alpha`: steer the model while generating (`jaxinterp.features.steer`: `alpha * direction`
      added at each named site, at every position; a direction `[batch, d]` gives each prompt its own); `None`
      for the plain model. Strengths and directions are traced, so every steered run of one set of sites shares
      one compilation.

    **Returns:** int `[batch, steps]`, the new tokens.
    """
    prompts, lengths = _check_prompts(prompts, lengths, "generate")
    if steps < 1:
        raise ValueError(f"generate: steps must be at least 1; got {steps}")
    if temperature < 0:
        raise ValueError(f"generate: temperature must be non-negative; got {temperature}")
    batch = prompts.shape[0]
    buffer = jnp.zeros((batch, prompts.shape[1] + steps), jnp.int32).at[:, : prompts.shape[1]].set(prompts)
    directions = _directions(directions, batch, "generate")
    greedy = temperature == 0
    rows = jnp.arange(batch)
    for i in range(steps):
        positions = jnp.asarray(lengths + i)
        new = _next_tokens(
            model,
            directions,
            jnp.asarray(alpha, jnp.float32),
            buffer,
            positions,
            jax.random.fold_in(key, i),
            jnp.asarray(max(temperature, 1e-6), jnp.float32),
            greedy,
        )
        buffer = buffer.at[rows, positions].set(new)
    return jax.vmap(lambda row, start: jax.lax.dynamic_slice(row, (start,), (steps,)))(buffer, jnp.asarray(lengths))


@eqx.filter_jit
def _token_log_likelihoods(model, tokens):
    logits = jax.vmap(model)(tokens)
    log_probs = jax.nn.log_softmax(logits[:, :-1], -1)
    return jnp.take_along_axis(log_probs, tokens[:, 1:, None], -1)[..., 0]


def continuation_perplexity(
    model,
    prompts: Int[ArrayLike, "batch seq"],
    lengths: Int[ArrayLike, " batch"],
    continuations: Int[ArrayLike, "batch steps"],
) -> Float[np.ndarray, " batch"]:
    """Each continuation's perplexity under `model` given its prompt: `exp` of the mean negative log-likelihood of
    the continuation's tokens, each given everything before it.

    **Returns:** float `[batch]`.
    """
    prompts, lengths = _check_prompts(prompts, lengths, "continuation_perplexity")
    continuations = np.asarray(continuations, np.int32)
    if continuations.ndim != 2 or continuations.shape[0] != prompts.shape[0]:
        raise ValueError(f"continuation_perplexity: continuations must be [batch, steps]; got {continuations.shape}")
    steps = continuations.shape[1]
    tokens = np.zeros((prompts.shape[0], prompts.shape[1] + steps), np.int32)
    for row, (prompt, length, continuation) in enumerate(zip(prompts, lengths, continuations)):
        tokens[row, :length] = prompt[:length]
        tokens[row, length : length + steps] = continuation
    log_likelihoods = np.asarray(_token_log_likelihoods(model, jnp.asarray(tokens)))
    # the continuation's tokens sit at positions length .. length + steps - 1, predicted from the position before
    index = lengths[:, None] - 1 + np.arange(steps)[None, :]
    return np.exp(-np.take_along_axis(log_likelihoods, index, 1).mean(1))


def greedy_generate(model, tokens: Int[ArrayLike, " seq"], steps: int) -> Int[Array, " total"]:
    """Append `steps` greedily chosen tokens to one prompt `tokens` (`[seq]`). **Returns:** int `[seq + steps]`."""
    tokens = jnp.asarray(tokens, jnp.int32)
    new = generate(model, tokens[None], [tokens.shape[0]], steps, key=jax.random.key(0), temperature=0.0)
    return jnp.concatenate([tokens, new[0]])
