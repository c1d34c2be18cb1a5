import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from jaxinterp import features
from tests.helpers import tiny_transformer_configs

SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def llama():
    return models.Transformer(tiny_transformer_configs()["llama"], key=jax.random.key(3))


PROMPTS = np.array([[5, 7, 9, 0], [4, 8, 15, 16]], np.int32)  # the first is three tokens long, right-padded
LENGTHS = np.array([3, 4])


def _is_greedy(f, prompt, new):
    """Whether each new token is the most likely one after everything before it: one forward of the whole
    sequence (causal, so position `i` sees only the tokens up to `i`)."""
    tokens = jnp.concatenate([jnp.asarray(prompt), jnp.asarray(new)])
    logits = eqx.filter_jit(lambda m, t: m(t))(f, tokens)
    return np.asarray(jnp.argmax(logits[len(prompt) - 1 : -1], -1)).tolist() == list(new)


def test_greedy_generation_in_a_padded_batch_equals_growing_each_prompt_alone(llama):
    new = np.asarray(models.generate(llama, PROMPTS, LENGTHS, 5, key=jax.random.key(0), temperature=0))
    for row, length in enumerate(LENGTHS):
        assert _is_greedy(llama, PROMPTS[row, :length], new[row])
    assert models.greedy_generate(llama, PROMPTS[0, :3], 5)[3:].tolist() == new[0].tolist()


def test_steered_generation_with_per_prompt_directions_equals_steering_each_prompt(llama):
    directions = jax.random.normal(jax.random.key(1), (2, 32))
    new = np.asarray(
        models.generate(
            llama, PROMPTS, LENGTHS, 4, key=jax.random.key(0), temperature=0, directions={SITE: directions}, alpha=3.0
        )
    )
    for row, length in enumerate(LENGTHS):
        steered = features.steer(llama, {SITE: directions[row]}, 3.0)
        assert _is_greedy(steered, PROMPTS[row, :length], new[row])
    zero = models.generate(
        llama, PROMPTS, LENGTHS, 4, key=jax.random.key(0), temperature=0, directions={SITE: jnp.zeros(32)}
    )
    plain = models.generate(llama, PROMPTS, LENGTHS, 4, key=jax.random.key(0), temperature=0)
    np.testing.assert_array_equal(zero, plain)
    logits = models.next_token_logits(llama, PROMPTS, LENGTHS, directions={SITE: directions}, alpha=3.0)
    np.testing.assert_allclose(logits[1], features.steer(llama, {SITE: directions[1]}, 3.0)(PROMPTS[1])[-1], rtol=1e-5)


def test_sampling_is_reproducible_and_perplexity_is_the_mean_token_likelihood(llama):
    first = models.generate(llama, PROMPTS, LENGTHS, 6, key=jax.random.key(7))
    np.testing.assert_array_equal(first, models.generate(llama, PROMPTS, LENGTHS, 6, key=jax.random.key(7)))
    perplexity = models.continuation_perplexity(llama, PROMPTS, LENGTHS, first)
    for row, length in enumerate(LENGTHS):
        tokens = np.concatenate([PROMPTS[row, :length], np.asarray(first[row])])
        log_probs = jax.nn.log_softmax(eqx.filter_jit(lambda m, t: m(t))(llama, jnp.asarray(tokens)), -1)
        nll = -np.mean([log_probs[length - 1 + i, tokens[length + i]] for i in range(6)])
        assert perplexity[row] == pytest.approx(np.exp(nll), rel=1e-4)
    with pytest.raises(ValueError, match="prompt length"):
        models.generate(llama, PROMPTS, [0, 4], 2, key=jax.random.key(0))
