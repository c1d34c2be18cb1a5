import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import jaxinterp
from jaxinterp.sites import site_names
from models.cnn import CNN
from models.mlp import MLP
from models.rnn import GRUClassifier, LSTMClassifier

ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": lambda x: 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0))),
    "gelu_new": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
}
sigmoid, tanh = ACTIVATIONS["sigmoid"], ACTIVATIONS["tanh"]


def as_numpy(x):
    return np.asarray(x, dtype=np.float64)


def assert_close(actual, expected):
    np.testing.assert_allclose(as_numpy(actual), expected, rtol=1e-5, atol=1e-5)


def affine(linear, x):
    return as_numpy(linear.weight) @ x + as_numpy(linear.bias)


def gate_preactivation(gate, x, h):
    return (
        as_numpy(gate.input_weight) @ x
        + as_numpy(gate.input_bias)
        + as_numpy(gate.hidden_weight) @ h
        + as_numpy(gate.hidden_bias)
    )


def reference_mlp(model, x, activation):
    x = as_numpy(x)
    for layer in model.layers:
        x = ACTIVATIONS[activation](affine(layer, x))
    return affine(model.head, x)


def reference_conv3x3_same(weight, bias, image):
    out_channels = weight.shape[0]
    _, height, width = image.shape
    padded = np.pad(image, ((0, 0), (1, 1), (1, 1)))
    out = np.empty((out_channels, height, width))
    for o in range(out_channels):
        for i in range(height):
            for j in range(width):
                out[o, i, j] = np.sum(weight[o] * padded[:, i : i + 3, j : j + 3]) + bias[o]
    return out


def reference_average_pool(image):
    channels, height, width = image.shape
    out = np.empty((channels, height // 2, width // 2))
    for i in range(height // 2):
        for j in range(width // 2):
            out[:, i, j] = image[:, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(axis=(1, 2))
    return out


def reference_cnn_features(model, image, activation):
    x = as_numpy(image)
    for conv in model.convs:
        x = reference_conv3x3_same(as_numpy(conv.weight), as_numpy(conv.bias).reshape(-1), x)
        x = reference_average_pool(ACTIVATIONS[activation](x))
    return x.reshape(-1)


def reference_inputs(model, inputs):
    if model.embedding is None:
        return as_numpy(inputs)
    return as_numpy(model.embedding.weight)[np.asarray(inputs)]


def reference_gru(model, inputs):
    h = np.zeros(model.hidden_size)
    for x in reference_inputs(model, inputs):
        r = sigmoid(gate_preactivation(model.reset, x, h))
        z = sigmoid(gate_preactivation(model.update, x, h))
        candidate = model.candidate
        n = tanh(
            as_numpy(candidate.input_weight) @ x
            + as_numpy(candidate.input_bias)
            + r * (as_numpy(candidate.hidden_weight) @ h + as_numpy(candidate.hidden_bias))
        )
        h = (1 - z) * n + z * h
    return affine(model.head, h)


def reference_lstm(model, inputs):
    h = np.zeros(model.hidden_size)
    c = np.zeros(model.hidden_size)
    for x in reference_inputs(model, inputs):
        i = sigmoid(gate_preactivation(model.input, x, h))
        f = sigmoid(gate_preactivation(model.forget, x, h))
        g = tanh(gate_preactivation(model.cell, x, h))
        o = sigmoid(gate_preactivation(model.output, x, h))
        c = f * c + i * g
        h = o * tanh(c)
    return affine(model.head, h)


@eqx.filter_jit
def forward(model, x):
    return model(x)


@eqx.filter_jit
def batched_forward(model, xs):
    return jax.vmap(model)(xs)


VOCAB, TIME, FEATURES = 11, 7, 5


def make_mlp(key):
    return MLP(6, [8, 5], 3, key=key)


def make_cnn(key):
    return CNN(2, 9, [4, 3], 5, key=key)


def make_gru(key):
    return GRUClassifier(VOCAB, 6, 3, key=key, embedding_size=4)


def make_lstm(key):
    return LSTMClassifier(VOCAB, 6, 3, key=key, embedding_size=4)


def make_gru_on_features(key):
    return GRUClassifier(FEATURES, 6, 3, key=key, embed=False)


def make_lstm_on_features(key):
    return LSTMClassifier(FEATURES, 6, 3, key=key, embed=False)


def vector_inputs(key, batch):
    return jax.random.normal(key, (batch, 6))


def image_inputs(key, batch):
    return jax.random.normal(key, (batch, 2, 9, 9))


def token_inputs(key, batch):
    return jax.random.randint(key, (batch, TIME), 0, VOCAB)


def feature_sequence_inputs(key, batch):
    return jax.random.normal(key, (batch, TIME, FEATURES))


MODELS = {
    "mlp": (make_mlp, vector_inputs, 3),
    "cnn": (make_cnn, image_inputs, 5),
    "gru": (make_gru, token_inputs, 3),
    "lstm": (make_lstm, token_inputs, 3),
}


@pytest.mark.parametrize("name", MODELS)
def test_vmap_over_batch_equals_loop(name, getkey):
    make, inputs, num_classes = MODELS[name]
    model = make(getkey())
    batch = inputs(getkey(), 4)
    batched = batched_forward(model, batch)
    assert batched.shape == (4, num_classes)
    for example, logits in zip(batch, batched):
        np.testing.assert_allclose(logits, forward(model, example), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", MODELS)
def test_parameter_gradients_are_finite_and_nonzero(name, getkey):
    make, inputs, _ = MODELS[name]
    model = make(getkey())
    batch = inputs(getkey(), 3)

    @eqx.filter_jit
    @eqx.filter_grad
    def grads(model, batch):
        return jnp.sum(jax.vmap(model)(batch) ** 2)

    leaves = jax.tree.leaves(eqx.filter(grads(model, batch), eqx.is_inexact_array))
    assert leaves
    for leaf in leaves:
        assert jnp.all(jnp.isfinite(leaf))
    assert any(jnp.any(leaf != 0) for leaf in leaves)


@pytest.mark.parametrize("name", MODELS)
def test_fixed_key_gives_the_same_model(name):
    make, _, _ = MODELS[name]
    first, again, other = make(jax.random.key(3)), make(jax.random.key(3)), make(jax.random.key(4))
    for a, b, c in zip(jax.tree.leaves(first), jax.tree.leaves(again), jax.tree.leaves(other)):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_matches_reference(activation, getkey):
    model = MLP(6, [8, 5], 3, activation, key=getkey())
    x = jax.random.normal(getkey(), (6,))
    assert_close(forward(model, x), reference_mlp(model, x, activation))


def test_mlp_sites():
    model = make_mlp(jax.random.key(0))
    assert site_names(model, jnp.zeros(6)) == [
        "layers.0.pre",
        "layers.0.post",
        "layers.1.pre",
        "layers.1.post",
        "logits",
    ]


def test_mlp_without_hidden_layers_is_affine(getkey):
    model = MLP(6, [], 3, key=getkey())
    x = jax.random.normal(getkey(), (6,))
    assert_close(forward(model, x), affine(model.head, as_numpy(x)))


@pytest.mark.parametrize("activation", ["relu", "gelu_new"])
def test_cnn_matches_reference(activation, getkey):
    model = CNN(2, 9, [4, 3], 5, activation, key=getkey())
    image = jax.random.normal(getkey(), (2, 9, 9))
    features = reference_cnn_features(model, image, activation)
    assert features.shape == (3 * 2 * 2,)
    assert_close(eqx.filter_jit(CNN.features)(model, image), features)
    assert_close(forward(model, image), affine(model.head, features))


def test_cnn_features_feed_the_head(getkey):
    model = CNN(1, 8, [4], 10, key=getkey())
    image = jax.random.normal(getkey(), (1, 8, 8))
    features = eqx.filter_jit(CNN.features)(model, image)
    assert features.shape == (model.feature_size,) == (4 * 4 * 4,)
    np.testing.assert_allclose(model.head(features), forward(model, image), rtol=1e-5, atol=1e-6)


def test_cnn_sites():
    model = make_cnn(jax.random.key(0))
    assert site_names(model, jnp.zeros((2, 9, 9))) == [
        "convs.0.pre",
        "convs.0.post",
        "convs.0.pooled",
        "convs.1.pre",
        "convs.1.post",
        "convs.1.pooled",
        "features",
        "logits",
    ]


def test_cnn_rejects_too_many_pooling_stages(getkey):
    with pytest.raises(ValueError, match="4x4"):
        CNN(1, 4, [2, 2, 2], 3, key=getkey())


@pytest.mark.parametrize(
    ("make", "inputs", "reference"),
    [
        (make_gru, token_inputs, reference_gru),
        (make_gru_on_features, feature_sequence_inputs, reference_gru),
        (make_lstm, token_inputs, reference_lstm),
        (make_lstm_on_features, feature_sequence_inputs, reference_lstm),
    ],
)
def test_rnn_matches_python_loop_over_time(make, inputs, reference, getkey):
    model = make(getkey())
    sequence = inputs(getkey(), 1)[0]
    assert_close(forward(model, sequence), reference(model, sequence))


def test_gru_follows_the_pytorch_convention_of_equinox_gru_cell(getkey):
    model = make_gru_on_features(getkey())
    gates = (model.reset, model.update, model.candidate)
    cell = eqx.nn.GRUCell(FEATURES, model.hidden_size, key=getkey())
    cell = eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n),
        cell,
        (
            jnp.concatenate([g.input_weight for g in gates]),
            jnp.concatenate([g.hidden_weight for g in gates]),
            jnp.concatenate([g.input_bias + g.hidden_bias for g in gates[:2]] + [model.candidate.input_bias]),
            model.candidate.hidden_bias,
        ),
    )
    hidden = jax.random.normal(getkey(), (model.hidden_size,))
    x = jax.random.normal(getkey(), (FEATURES,))
    ours = eqx.filter_jit(GRUClassifier.step)(model, hidden, x)
    np.testing.assert_allclose(ours, eqx.filter_jit(cell)(x, hidden), rtol=1e-5, atol=1e-6)


def test_lstm_follows_the_pytorch_convention_of_equinox_lstm_cell(getkey):
    model = make_lstm_on_features(getkey())
    gates = (model.input, model.forget, model.cell, model.output)
    cell = eqx.nn.LSTMCell(FEATURES, model.hidden_size, key=getkey())
    cell = eqx.tree_at(
        lambda c: (c.weight_ih, c.weight_hh, c.bias),
        cell,
        (
            jnp.concatenate([g.input_weight for g in gates]),
            jnp.concatenate([g.hidden_weight for g in gates]),
            jnp.concatenate([g.input_bias + g.hidden_bias for g in gates]),
        ),
    )
    state = (jax.random.normal(getkey(), (model.hidden_size,)), jax.random.normal(getkey(), (model.hidden_size,)))
    x = jax.random.normal(getkey(), (FEATURES,))
    ours = eqx.filter_jit(LSTMClassifier.step)(model, state, x)
    for a, b in zip(ours, eqx.filter_jit(cell)(x, state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_gru_sites():
    model = make_gru(jax.random.key(0))
    assert site_names(model, jnp.zeros(TIME, jnp.int32)) == [
        "embed",
        "rnn.gates.reset",
        "rnn.gates.update",
        "rnn.gates.candidate",
        "rnn.hidden",
        "final_hidden",
        "logits",
    ]


def test_lstm_sites():
    model = make_lstm_on_features(jax.random.key(0))
    assert site_names(model, jnp.zeros((TIME, FEATURES))) == [
        "rnn.gates.input",
        "rnn.gates.forget",
        "rnn.gates.cell",
        "rnn.gates.output",
        "rnn.cell_state",
        "rnn.hidden",
        "final_hidden",
        "logits",
    ]


def test_gru_sites_inside_the_scan_are_read_per_step_and_rewritable(getkey):
    model = make_gru(getkey())
    tokens = token_inputs(getkey(), 1)[0]
    logits, cache = jaxinterp.capture(model, "rnn.hidden", "final_hidden")(tokens)
    assert cache["rnn.hidden"].shape == (TIME, model.hidden_size)
    np.testing.assert_allclose(cache["rnn.hidden"][-1], cache["final_hidden"])
    np.testing.assert_allclose(logits, forward(model, tokens), rtol=1e-5, atol=1e-6)
    frozen = jaxinterp.intervene(model, {"rnn.gates.update": lambda update: jnp.ones_like(update)})(tokens)
    np.testing.assert_allclose(frozen, model.head(jnp.zeros(model.hidden_size)), rtol=1e-6)


def test_mlp_learns_sklearn_digits():
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    model = MLP(64, [64], 10, key=jax.random.key(0))
    optimiser = optax.adam(1e-2)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))

    def loss(model, x, y):
        logits = jax.vmap(model)(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @eqx.filter_jit
    def train_step(model, opt_state, x, y):
        grads = eqx.filter_grad(loss)(model, x, y)
        updates, opt_state = optimiser.update(grads, opt_state, model)
        return eqx.apply_updates(model, updates), opt_state

    for _ in range(300):
        model, opt_state = train_step(model, opt_state, x_train, y_train)
    predictions = jnp.argmax(batched_forward(model, x_test), axis=-1)
    accuracy = float(jnp.mean(predictions == y_test))
    assert accuracy > 0.9, accuracy


def test_unknown_activation_is_rejected_at_construction(getkey):
    with pytest.raises(ValueError, match="swish"):
        MLP(4, [3], 2, "swish", key=getkey())
    with pytest.raises(ValueError, match="swish"):
        CNN(1, 4, [2], 2, "swish", key=getkey())
