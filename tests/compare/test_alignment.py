import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from jaxinterp import capture, compare
from jaxinterp.data import digits
from models.cnn import CNN
from models.mlp import MLP


def _permute_hidden(model: MLP, order: np.ndarray) -> MLP:
    """The same function with the units of hidden layer 0 reordered: new unit `i` is old unit `order[i]`."""
    first, second = model.layers[0], model.layers[1]
    model = eqx.tree_at(
        lambda m: (m.layers[0].weight, m.layers[0].bias), model, (first.weight[order], first.bias[order])
    )
    return eqx.tree_at(lambda m: m.layers[1].weight, model, second.weight[:, order])


def test_matching_recovers_a_permutation_of_a_real_networks_units():
    images, _ = digits()
    inputs = jnp.asarray(images.reshape(len(images), -1))
    model = MLP(64, (24, 16), 10, activation="tanh", key=jr.key(0))
    order = np.asarray(jr.permutation(jr.key(1), 24))
    permuted = _permute_hidden(model, order)
    np.testing.assert_allclose(jax.vmap(permuted)(inputs), jax.vmap(model)(inputs), atol=1e-5)

    found = compare.unit_correlations(model, permuted, inputs, "layers.0.post", batch_size=500)["layers.0.post"]
    assert found.count == len(images)
    for matching in (compare.match_units(found.cross), compare.semi_match(found.cross)):
        np.testing.assert_array_equal(matching.rows, np.arange(24))
        np.testing.assert_array_equal(order[matching.columns], np.arange(24))  # unit i of A is unit i of B's order
        np.testing.assert_allclose(matching.values, 1.0, atol=1e-5)
    partner = np.zeros((24, 24), dtype=bool)
    partner[np.arange(24), np.argsort(order)] = True
    assert np.max(np.abs(found.cross[~partner])) < 0.99  # no other pair is a near-copy


def test_hungarian_matching_is_one_to_one_where_the_semi_matching_is_not():
    similarity = np.array([[0.9, 0.8], [0.85, 0.1]])
    assert compare.semi_match(similarity).columns.tolist() == [0, 0]
    one_to_one = compare.match_units(similarity)
    assert one_to_one.columns.tolist() == [1, 0] and one_to_one.values.sum() == pytest.approx(1.65)


def test_streamed_statistics_equal_the_in_memory_computation():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1000, 5)) @ rng.normal(size=(5, 5)) + 1e4  # a large mean must not cancel the variance
    b = np.concatenate([a[:, :2] + rng.normal(size=(1000, 2)), rng.normal(size=(1000, 3))], axis=1)
    streamed = compare.CorrelationStatistics()
    for start, stop in [(0, 7), (7, 400), (400, 401), (401, 1000)]:
        streamed.update(a[start:stop], b[start:stop])
    result = streamed.correlations()
    direct = np.corrcoef(a, b, rowvar=False)
    np.testing.assert_allclose(result.cross, direct[:5, 5:], atol=1e-9)
    np.testing.assert_allclose(result.within_a, direct[:5, :5], atol=1e-9)
    np.testing.assert_allclose(result.within_b, direct[5:, 5:], atol=1e-9)
    np.testing.assert_allclose(streamed.means()[0], a.mean(axis=0), rtol=1e-12)
    assert result.count == 1000


def test_unit_correlations_of_a_cnn_use_positions_as_samples_and_match_a_direct_computation():
    images, _ = digits()
    inputs = jnp.asarray(images[:300, None])
    model_a = CNN(1, 8, (4,), 10, key=jr.key(0))
    model_b = CNN(1, 8, (3,), 10, key=jr.key(1))
    found = compare.unit_correlations(model_a, model_b, inputs, "convs.0.post", batch_size=64)["convs.0.post"]
    a = jax.vmap(capture(model_a, "convs.0.post"))(inputs)[1]["convs.0.post"]  # [300, 4, 8, 8]
    b = jax.vmap(capture(model_b, "convs.0.post"))(inputs)[1]["convs.0.post"]
    a = np.moveaxis(np.asarray(a), 1, -1).reshape(-1, 4)
    b = np.moveaxis(np.asarray(b), 1, -1).reshape(-1, 3)
    direct = np.corrcoef(a, b, rowvar=False)
    assert found.count == 300 * 64 and found.cross.shape == (4, 3)
    np.testing.assert_allclose(found.cross, direct[:4, 4:], atol=1e-6)


def test_constant_units_have_zero_correlation_and_bad_inputs_are_named():
    a = np.stack([np.arange(10.0), np.ones(10)], axis=1)
    result = compare.correlations(a, a)
    assert result.cross[1].tolist() == [0.0, 0.0] and result.cross[0, 0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same examples, but have 10 and 9 rows"):
        compare.correlations(a, a[:9])
    bad = a.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"b has 1 non-finite values .* at index \(3, 1\)"):
        compare.correlations(a, bad)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        compare.correlations(a[:1], a[:1])
    with pytest.raises(ValueError, match="similarity must be a non-empty matrix"):
        compare.match_units(np.zeros((0, 3)))


def test_mutual_information_is_near_zero_for_independent_and_the_entropy_for_identical_variables():
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=2000), rng.uniform(size=2000)
    plug_in = compare.mutual_information(x, y, bins=16, correction="none")
    corrected = compare.mutual_information(x, y, bins=16)
    assert plug_in > 0.03  # the plug-in estimate's bias, about (bins - 1)^2 / (2 n)
    assert abs(corrected) < 0.25 * plug_in and abs(corrected) < 0.01
    np.testing.assert_allclose(compare.mutual_information(x, x, bins=16), compare.entropy(x, bins=16), rtol=1e-12)
    uniform = rng.uniform(size=100_000)
    assert compare.entropy(uniform, bins=8) == pytest.approx(np.log(8), abs=1e-3)
    matrix = compare.mutual_information_matrix(np.stack([x, y], 1), np.stack([y, x, -x], 1), bins=16)
    assert matrix.shape == (2, 3)
    assert matrix[0, 1] > 1.0 and matrix[0, 2] > 1.0 and abs(matrix[0, 0]) < 0.01


def test_sparse_prediction_recovers_a_sparse_linear_map():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 20))
    weight = np.zeros((20, 6))
    support = [(0, 0), (3, 0), (5, 1), (7, 2), (7, 3), (11, 3), (19, 4), (2, 5), (4, 5)]
    for i, j in support:
        weight[i, j] = rng.choice([-1, 1]) * rng.uniform(0.7, 1.5)
    b = a @ weight + 0.05 * rng.normal(size=(2000, 6)) + 3.0
    prediction, history = compare.sparse_prediction(a, b, l1=0.05, steps=300, key=jr.key(0))
    found = np.abs(np.asarray(prediction.linear.weight)) > 0
    np.testing.assert_array_equal(found, weight != 0)
    assert prediction.inputs_per_target().tolist() == [2, 1, 1, 2, 1, 2]
    predicted = np.asarray(jax.vmap(prediction)(jnp.asarray(a, dtype=jnp.float32)))
    assert np.all(compare.paired_correlations(predicted, b) > 0.99)
    assert history["loss"].shape == (300,) and history["loss"][-1] < history["loss"][0]
    dense, _ = compare.sparse_prediction(a, b, l1=0.0, steps=50, key=jr.key(0))
    assert np.all(np.abs(np.asarray(dense.linear.weight)) > 0)


def test_spectral_clusters_group_units_driven_by_the_same_source_across_networks():
    rng = np.random.default_rng(0)
    sources = rng.normal(size=(3000, 3))
    assign_a, assign_b = np.array([0, 0, 1, 1, 2, 2]), np.array([2, 1, 0, 0, 1])
    a = sources[:, assign_a] + 0.3 * rng.normal(size=(3000, 6))
    b = sources[:, assign_b] * np.array([1, -1, 1, 1, -1]) + 0.3 * rng.normal(size=(3000, 5))
    labels_a, labels_b = compare.spectral_clusters(compare.correlations(a, b), 3, seed=0)
    for source in range(3):
        group = set(labels_a[assign_a == source]) | set(labels_b[assign_b == source])
        assert len(group) == 1
    assert len(set(labels_a)) == 3
    with pytest.raises(ValueError, match="num_clusters must be an integer from 2 to 11"):
        compare.spectral_clusters(compare.correlations(a, b), 12)


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_unit_correlations_stream_over_a_pretrained_transformers_sites(name, request):
    model, _ = request.getfixturevalue(name)
    tokens = jr.randint(jr.key(5), (4, 6), 1000, 2000)
    site_a, site_b = "blocks.0.mlp.out", "blocks.1.mlp.out"
    streamed = compare.unit_correlations(model, model, tokens, {site_a: site_b}, unit_axis=-1, batch_size=3)
    _, values = jax.vmap(capture(model, site_a, site_b))(tokens)
    a, b = (np.asarray(values[site], np.float64).reshape(-1, values[site].shape[-1]) for site in (site_a, site_b))
    width = a.shape[1]
    direct = np.corrcoef(a, b, rowvar=False)
    result = streamed[site_a]
    assert result.count == 4 * 6  # every token position of every sequence is a sample
    np.testing.assert_allclose(result.cross, direct[:width, width:], atol=1e-4)
    np.testing.assert_allclose(result.within_a, direct[:width, :width], atol=1e-4)
