import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.latent_ode.config import Config
from experiments.latent_ode.run import load
from models.latent_sde import LatentSDE

DATA, LATENT, HIDDEN, WIDTH, DEPTH = 2, 3, 8, 16, 1
TS = jnp.linspace(0.0, 2.0, 9)
PARTS = (
    "encoder",
    "to_latent",
    "posterior_drift",
    "prior_drift",
    "diffusion",
    "decoder",
)


def _model(key, **kwargs) -> LatentSDE:
    return LatentSDE(DATA, LATENT, HIDDEN, WIDTH, DEPTH, t0=0.0, t1=2.0, key=key, **kwargs)


def _data(key, batch: int = 3):
    xs = jax.random.normal(key, (batch, len(TS), DATA))
    mask = jnp.zeros((batch, len(TS)), bool).at[:, :5].set(True)
    return xs, mask


def _constant(field, bias: float):
    """`field` with every weight and bias zero but its last bias, which is `bias` everywhere: a constant field."""
    zeroed = jax.tree_util.tree_map(lambda x: jnp.zeros_like(x) if eqx.is_array(x) else x, field)
    return eqx.tree_at(
        lambda f: f.mlp.layers[-1].bias,
        zeroed,
        jnp.full_like(field.mlp.layers[-1].bias, bias),
    )


def _parameters(mlp: eqx.nn.MLP) -> list:
    return [getattr(layer, name) for layer in mlp.layers for name in ("weight", "bias")]


def _per_example(model: LatentSDE, ts, xs, mask, key):
    """`model.solve` mapped over the batch, with a key per series."""
    keys = jax.random.split(key, xs.shape[0])
    return jax.vmap(lambda x, m, k: model.solve(ts, x, m, key=k))(xs, mask, keys)


def _elbo_terms(model: LatentSDE, ts, xs, mask, key):
    """`(MSE, KL(q(z0) || N(0, I)), path KL)`, each a mean over the batch (solved as one joint state)."""
    predictions, mean, logstd, path_kl, _ = model.solve_batch(ts, xs, mask, key=key)
    mse = jnp.mean((predictions - xs) ** 2)
    kl_z0 = jnp.mean(jnp.sum(0.5 * (mean**2 + jnp.exp(2 * logstd) - 1) - logstd, axis=-1))
    return mse, kl_z0, jnp.mean(path_kl)


@pytest.mark.parametrize("batching", ["joint", "per_example"])
def test_path_kl_known_answer(getkey, batching):
    model = _model(getkey(), noise_scale=0.5, min_noise=0.01)

    def solve(model, xs, mask, key):
        return (
            model.solve_batch(TS, xs, mask, key=key) if batching == "joint" else _per_example(model, TS, xs, mask, key)
        )

    drift, delta, logit = 0.4, 0.3, 0.7
    constant = eqx.tree_at(
        lambda m: (m.posterior_drift, m.prior_drift, m.diffusion),
        model,
        (
            _constant(model.posterior_drift, drift + delta),
            _constant(model.prior_drift, drift),
            _constant(model.diffusion, logit),
        ),
    )
    xs, mask = _data(getkey())
    _, _, _, path_kl, _ = solve(constant, xs, mask, getkey())
    sigma = 0.01 + 0.5 / (1 + np.exp(-logit))
    expected = 0.5 * (delta / sigma) ** 2 * (2.0 - 0.0) * LATENT
    np.testing.assert_allclose(path_kl, np.full(3, expected), rtol=1e-5)

    # The posterior drift is the prior drift with the context's inputs switched off: no KL along any path.
    prior = model.prior_drift.mlp
    first = prior.layers[0].weight
    widened = jnp.concatenate(
        [first[:, :LATENT], jnp.zeros((first.shape[0], HIDDEN)), first[:, LATENT:]],
        axis=1,
    )
    same = eqx.tree_at(
        lambda m: _parameters(m.posterior_drift.mlp),
        model,
        [widened, *_parameters(prior)[1:]],
    )
    key = getkey()
    _, _, _, path_kl_same, _ = solve(same, xs, mask, key)
    _, _, _, path_kl_model, _ = solve(model, xs, mask, key)
    np.testing.assert_allclose(path_kl_same, 0.0, atol=1e-9)
    assert np.all(np.asarray(path_kl_model) > 1e-2)


@pytest.mark.slow
def test_shapes_batching_and_heuristics(getkey):
    model, key = _model(getkey()), getkey()
    xs, mask = _data(getkey())

    predictions, mean, logstd, path_kl, heuristics = model.solve_batch(TS, xs, mask, key=key)
    assert predictions.shape == (3, len(TS), DATA) and mean.shape == logstd.shape == (3, LATENT)
    assert path_kl.shape == (3,) and heuristics.nfe.shape == ()
    assert int(heuristics.nfe) == 2 * int(heuristics.num_steps) > 0  # Heun: two evaluations a step
    assert np.isfinite(float(heuristics.error)) and float(heuristics.error) > 0

    outputs = _per_example(model, TS, xs, mask, key)
    assert outputs[0].shape == predictions.shape and outputs[1].shape == outputs[2].shape == (3, LATENT)
    assert outputs[3].shape == (3,) and outputs[4].nfe.shape == (3,)
    assert np.all(outputs[4].nfe > 0) and np.all(np.isfinite(outputs[4].error))
    np.testing.assert_allclose(outputs[1], mean, rtol=1e-5, atol=1e-6)  # the encoding does not depend on the key

    # A joint batch of one is the one-example solve with the same key (the same `z0` and Brownian path).
    single = model.solve(TS, xs[0], mask[0], key=key)
    assert single[0].shape == (len(TS), DATA) and single[3].shape == () and single[4].nfe.shape == ()
    joint_of_one = model.solve_batch(TS, xs[:1], mask[:1], key=key)
    for a, b in zip(jax.tree_util.tree_leaves(joint_of_one), jax.tree_util.tree_leaves(single), strict=True):
        np.testing.assert_allclose(a[0] if a.shape else a, b, rtol=1e-5, atol=1e-6)

    changed = xs.at[:, 5:].set(100.0)  # only unobserved points change
    np.testing.assert_allclose(model.solve_batch(TS, changed, mask, key=key)[0], predictions, atol=1e-6)
    np.testing.assert_allclose(model(TS, changed[0], mask[0], key=key), single[0], atol=1e-6)

    # Generation per series: each starts from its own key's `z0`. (Adaptive SDE steps are sensitive to rounding, so
    # a mapped and a looped solve of one series agree only before the first step.)
    keys = jax.random.split(key, 4)
    mapped = jax.vmap(lambda k: model.sample_prior(TS, key=k))(keys)
    separately = jnp.stack([model.sample_prior(TS, key=k) for k in keys])
    assert mapped.shape == separately.shape == (4, len(TS), DATA)
    np.testing.assert_allclose(mapped[:, 0], separately[:, 0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(mapped[0, 0], mapped[1, 0], atol=1e-3)


def test_keys_determine_samples(getkey):
    model = _model(getkey())
    xs, mask = _data(getkey())
    key, other = getkey(), getkey()
    first, again, different = (model.solve_batch(TS, xs, mask, key=k) for k in (key, key, other))
    for a, b in zip(jax.tree_util.tree_leaves(first), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    assert not np.allclose(first[0], different[0], atol=1e-3)
    assert not np.allclose(first[3], different[3], rtol=1e-3)

    def generate(k):
        return jax.vmap(lambda k: model.sample_prior(TS, key=k))(jax.random.split(k, 4))

    generated = generate(key)
    np.testing.assert_array_equal(generated, generate(key))
    assert not np.allclose(generated, generate(other), atol=1e-3)
    assert not np.allclose(generated[0], generated[1], atol=1e-3)


@pytest.fixture(scope="module")
def electricity_training():
    """100 Adam steps on the ELBO loss over 32 daily windows of hourly electricity demand and temperature, half the
    hours observed: the first step's gradients and the `[loss, MSE, KL(z0), path KL]` of every step."""
    train, _, ts_np = load(Config(window_hours=24, stride_hours=24, max_windows=32))
    xs, ts = jnp.asarray(train), jnp.asarray(ts_np)
    mask_key, model_key, train_key = jax.random.split(jax.random.key(0), 3)
    mask = jax.random.bernoulli(mask_key, 0.5, xs.shape[:2]).at[:, 0].set(True)
    model = LatentSDE(2, 4, 16, 32, 1, t0=float(ts_np[0]), t1=float(ts_np[-1]), key=model_key)
    optimiser = optax.adam(1e-2)

    def loss(model, key):
        terms = _elbo_terms(model, ts, xs, mask, key)
        return sum(terms), terms

    @eqx.filter_jit
    def step(model, opt_state, key):
        (value, terms), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, key)
        updates, opt_state = optimiser.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        return (
            eqx.apply_updates(model, updates),
            opt_state,
            grads,
            jnp.stack([value, *terms]),
        )

    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))
    keys = jax.random.split(train_key, 100)
    model, opt_state, first_grads, values = step(model, opt_state, keys[0])
    history = [values]
    for key in keys[1:]:
        model, opt_state, _, values = step(model, opt_state, key)
        history.append(values)
    assert len(train) == 32
    return first_grads, np.asarray(history)


@pytest.mark.slow
def test_gradients_reach_every_part(electricity_training):
    grads, _ = electricity_training
    for part in PARTS:
        leaves = jax.tree_util.tree_leaves(eqx.filter(getattr(grads, part), eqx.is_array))
        assert leaves, part
        for leaf in leaves:
            assert np.all(np.isfinite(leaf)), part
            assert np.any(leaf != 0), part
    context_weights = grads.posterior_drift.mlp.layers[0].weight[:, 4:-1]  # inputs `[z (4), context, t]`
    assert context_weights.shape[1] == 16 and np.all(np.any(context_weights != 0, axis=0))


def test_training_on_electricity_demand_lowers_the_elbo_loss(electricity_training):
    _, history = electricity_training
    assert np.all(np.isfinite(history))
    initial, final = history[:5].mean(axis=0), history[-5:].mean(axis=0)
    assert final[0] < 0.7 * initial[0], (initial, final)
    # The reconstruction improves, not only the KL terms.
    assert final[1] < 0.8 * initial[1], (initial, final)
