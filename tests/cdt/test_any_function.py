"""`cd` decomposes ordinary JAX code that marks no composite: jax.numpy functions, Flax modules, equinox layers."""

import equinox as eqx
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxinterp as ji
from tests.helpers import relative_error


def assert_complete(f, x, mask, tol=1e-5):
    """`rel + irr` equals `f(x)` for `Input(0, mask)`, and the relevant part is not trivially zero."""
    rel, irr = ji.cd(f, ji.Input(0, mask))(x)
    out = f(x)
    assert relative_error(rel + irr, out) <= tol
    assert float(jnp.max(jnp.abs(rel))) > 0.0
    return rel, irr


def softmax_by_hand(x):
    e = jnp.exp(x - jnp.max(x, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def layer_norm_by_hand(h, eps=1e-5):
    return (h - h.mean(-1, keepdims=True)) / jnp.sqrt(h.var(-1, keepdims=True) + eps)


def attention_by_hand(x, wq, wk, wv):
    q, k, v = x @ wq, x @ wk, x @ wv
    scores = q @ k.T / jnp.sqrt(q.shape[-1])
    causal = jnp.tril(jnp.ones((x.shape[0], x.shape[0]), bool))
    return jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1) @ v


def gru_cell(params, h, x):
    wz, wr, wh, uz, ur, uh, bz, br, bh = params
    z = jax.nn.sigmoid(x @ wz + h @ uz + bz)
    r = jax.nn.sigmoid(x @ wr + h @ ur + br)
    candidate = jnp.tanh(x @ wh + (r * h) @ uh + bh)
    return (1 - z) * h + z * candidate


@pytest.fixture
def x(getkey):
    return jax.random.normal(getkey(), (5, 8))


@pytest.fixture
def mask():
    return jnp.zeros((5, 1)).at[jnp.array([1, 3])].set(1.0)


def test_jax_numpy_functions(getkey, x, mask):
    assert_complete(jax.nn.softmax, x, mask)
    assert_complete(softmax_by_hand, x, mask)
    assert_complete(layer_norm_by_hand, x, mask)
    assert_complete(lambda v: jax.nn.log_softmax(v) * jnp.tanh(v), x, mask)
    weights = [jax.random.normal(getkey(), (8, 8)) / 3 for _ in range(3)]
    assert_complete(lambda v: attention_by_hand(v, *weights), x, mask)
    params = [jax.random.normal(getkey(), (8, 8)) / 3 for _ in range(6)] + [jax.random.normal(getkey(), (8,))] * 3

    def gru(xs):
        return lax.scan(lambda h, xt: (gru_cell(params, h, xt), None), jnp.zeros(8), xs)[0]

    assert_complete(gru, x, mask)
    assert_complete(lambda v: jnp.max(v, axis=0) + jnp.sort(v, axis=-1)[:, -2:].sum(), x, mask)
    assert_complete(lambda v: jnp.prod(jnp.clip(v, -1.0, 2.0) + 3.0, axis=0) / jnp.maximum(v, v.T[:1].T), x, mask)


def test_softmax_decomposition_is_independent_of_the_stabilising_shift(x, mask):
    """jax.nn.softmax subtracts stop_gradient(max): the shift is a constant, so rel = (e^t - e^i) / sum e^t."""
    rel, irr = ji.cd(jax.nn.softmax, ji.Input(0, mask))(x)
    parts_irr = (1 - mask) * x
    expected_irr = jnp.exp(parts_irr) / jnp.exp(x).sum(-1, keepdims=True)
    np.testing.assert_allclose(irr, expected_irr, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(rel, jax.nn.softmax(x) - expected_irr, rtol=1e-5, atol=1e-7)


def test_division_takes_the_denominator_from_its_total(x, mask):
    """A hand-written layer norm decomposes as CD-T's whole-op rule: each part centred by its own mean and scaled
    by the total's standard deviation."""
    rel, irr = ji.cd(layer_norm_by_hand, ji.Input(0, mask))(x)
    std = jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
    r, i = mask * x, (1 - mask) * x
    np.testing.assert_allclose(rel, (r - r.mean(-1, keepdims=True)) / std, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(irr, (i - i.mean(-1, keepdims=True)) / std, rtol=1e-5, atol=1e-6)


def test_max_selects_the_parts_of_the_winning_element(x, mask):
    rel, irr = ji.cd(lambda v: jnp.max(v, axis=0), ji.Input(0, mask))(x)
    winner = jnp.argmax(x, axis=0)
    np.testing.assert_array_equal(rel, (mask * x)[winner, jnp.arange(8)])
    np.testing.assert_array_equal(irr, ((1 - mask) * x)[winner, jnp.arange(8)])


def test_linear_function_decomposes_exactly_as_masked_inputs(getkey, x, mask):
    w = jax.random.normal(getkey(), (8, 3))

    def f(v):
        return jnp.concatenate([v @ w, jnp.cumsum(v, axis=0)[:, :3], jnp.pad(v[::-1, :3], ((0, 0), (0, 0)))], 0)

    rel, irr = ji.cd(f, ji.Input(0, mask))(x)
    np.testing.assert_allclose(rel, f(mask * x), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(irr, f((1 - mask) * x), rtol=1e-6, atol=1e-6)


class FlaxBlock(nn.Module):
    @nn.compact
    def __call__(self, image):
        h = nn.Conv(4, (3, 3))(image)
        h = nn.LayerNorm()(h)
        tokens = h.reshape(-1, 4)
        q, k, v = nn.Dense(4)(tokens), nn.Dense(4)(tokens), nn.Dense(4)(tokens)
        attended = nn.softmax(q @ k.T / 2.0, axis=-1) @ v
        return nn.Dense(3)(nn.gelu(attended).mean(0))


def test_flax_module(getkey):
    image = jax.random.normal(getkey(), (6, 6, 2))
    block = FlaxBlock()
    params = block.init(getkey(), image)
    mask = jnp.zeros((6, 6, 1)).at[1:3, 2:5].set(1.0)
    assert_complete(lambda v: block.apply(params, v), image, mask)


class EquinoxBlock(eqx.Module):
    conv: eqx.nn.Conv2d
    group_norm: eqx.nn.GroupNorm
    layer_norm: eqx.nn.LayerNorm
    attention: eqx.nn.MultiheadAttention
    pool: eqx.nn.MaxPool2d

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        self.conv = eqx.nn.Conv2d(2, 4, 3, padding=1, key=k1)
        self.group_norm = eqx.nn.GroupNorm(2, 4)
        self.layer_norm = eqx.nn.LayerNorm(4)
        self.attention = eqx.nn.MultiheadAttention(2, 4, key=k2)
        self.pool = eqx.nn.MaxPool2d(2, 2)

    def __call__(self, image):
        h = self.pool(jax.nn.relu(self.group_norm(self.conv(image))))
        tokens = jax.vmap(self.layer_norm)(h.reshape(4, -1).T)
        return self.attention(tokens, tokens, tokens).sum(0)


def test_equinox_model(getkey):
    image = jax.random.normal(getkey(), (2, 6, 6))
    model = EquinoxBlock(getkey())
    mask = jnp.zeros((1, 6, 6)).at[:, :3, :].set(1.0)
    assert_complete(model, image, mask)


class FlaxSequenceModel(nn.Module):
    """Embeddings, an RMS norm, batch norm in inference mode, average pooling and a GRU and an LSTM cell."""

    @nn.compact
    def __call__(self, ids, features):
        h = nn.Embed(20, 6)(ids) + nn.Dense(6)(features)
        h = nn.RMSNorm()(h)
        h = nn.BatchNorm(use_running_average=True)(h)
        h = nn.avg_pool(h[None], (2,), strides=(1,))[0]
        gru, lstm = nn.GRUCell(6), nn.LSTMCell(6)
        carry_gru = gru.initialize_carry(jax.random.key(0), h[0].shape)
        carry_lstm = lstm.initialize_carry(jax.random.key(0), h[0].shape)
        for t in range(h.shape[0]):
            carry_gru, out_gru = gru(carry_gru, h[t])
            carry_lstm, out_lstm = lstm(carry_lstm, out_gru)
        return nn.Dense(2)(out_lstm)


def test_flax_embeddings_norms_pooling_and_recurrent_cells(getkey):
    ids, features = jnp.array([3, 1, 4, 1, 5]), jax.random.normal(getkey(), (5, 4))
    net = FlaxSequenceModel()
    variables = net.init(getkey(), ids, features)
    variables = jax.tree_util.tree_map(lambda v: v + 0.1 * jax.random.normal(getkey(), v.shape), variables)
    mask = jnp.zeros((5, 1)).at[1:3].set(1.0)
    assert_complete(lambda x: net.apply(variables, ids, x), features, mask)


class EquinoxSequenceModel(eqx.Module):
    embedding: eqx.nn.Embedding
    rms_norm: eqx.nn.RMSNorm
    pool: eqx.nn.AvgPool1d
    gru: eqx.nn.GRUCell
    lstm: eqx.nn.LSTMCell

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.embedding = eqx.nn.Embedding(20, 6, key=k1)
        self.rms_norm = eqx.nn.RMSNorm(6)
        self.pool = eqx.nn.AvgPool1d(2, 1)
        self.gru = eqx.nn.GRUCell(6, 6, key=k2)
        self.lstm = eqx.nn.LSTMCell(6, 6, key=k3)

    def __call__(self, ids, features):
        h = jax.vmap(self.rms_norm)(jax.vmap(self.embedding)(ids) + features)
        h = self.pool(h.T).T

        def step(carry, x):
            g, (c_h, c_c) = carry
            g = self.gru(x, g)
            return (g, self.lstm(g, (c_h, c_c))), None

        zeros = jnp.zeros(6)
        (_, (out, _)), _ = lax.scan(step, (zeros, (zeros, zeros)), h)
        return out


def test_equinox_embeddings_norms_pooling_and_recurrent_cells(getkey):
    ids, features = jnp.array([3, 1, 4, 1, 5]), jax.random.normal(getkey(), (5, 6))
    mask = jnp.zeros((5, 1)).at[1:3].set(1.0)
    model = EquinoxSequenceModel(getkey())
    assert_complete(lambda x: model(ids, x), features, mask)
