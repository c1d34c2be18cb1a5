import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg
import numpy as np
import optax
import pytest

import jaxinterp
from jaxinterp.dynamics.decomposed_solve import decompose_solution
from jaxinterp.dynamics.regularisers import Heuristics
from jaxinterp.dynamics.training import RegularisationWeights, penalty
from models.latent_ode import LatentODE
from models.latent_sde import LatentSDE
from models.neural_cde import NeuralCDE
from models.neural_ode import BatchedField, MLPVectorField, NeuralODE, NeuralODEClassifier
from models.neural_sde import DiagonalNoiseTerm, DiagonalSDESolve, NeuralSDE
from tests.helpers import relative_error


def _linear_ode(matrix, **kwargs) -> NeuralODE:
    """A neural ODE whose vector field is `f(t, y) = matrix @ y`: no hidden layer, zero bias and time weights."""
    size = matrix.shape[0]
    model = NeuralODE(size, 4, 0, key=jax.random.key(0), **kwargs)
    weight = jnp.concatenate([matrix, jnp.zeros((size, 1))], axis=1)
    layer = lambda m: m.vector_field.mlp.layers[0]
    return eqx.tree_at(lambda m: (layer(m).weight, layer(m).bias), model, (weight, jnp.zeros(size)))


@pytest.mark.slow
def test_neural_ode_per_example_and_joint_batch_and_diffrax_reference(getkey):
    y0 = jax.random.normal(getkey(), (5, 3))
    ts = jnp.linspace(0.0, 1.0, 4)
    model = NeuralODE(3, 16, 1, rtol=1e-6, atol=1e-6, key=getkey())
    ys_joint, h_joint = model.solve_batch(y0, ts)
    ys_vmap, h_vmap = jax.vmap(model.solve, in_axes=(0, None))(y0, ts)
    assert ys_joint.shape == ys_vmap.shape == (5, 4, 3)
    np.testing.assert_allclose(ys_joint, ys_vmap, atol=1e-4)
    np.testing.assert_allclose(ys_joint[:, 0], y0, atol=1e-6)
    assert h_joint.nfe.shape == () and h_vmap.nfe.shape == (5,)

    def reference(field, y):
        return diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Tsit5(),
            0.0,
            1.0,
            None,
            y,
            saveat=diffrax.SaveAt(ts=ts),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-6),
        )

    # Per example: diffrax's solve of each example; jointly: diffrax's solve of the `[batch, size]` state.
    per_example = jax.vmap(lambda y: reference(model.vector_field, y))(y0)
    np.testing.assert_allclose(ys_vmap, per_example.ys, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(h_vmap.num_steps, per_example.stats["num_steps"])
    np.testing.assert_array_equal(h_vmap.nfe, 1 + 6 * per_example.stats["num_steps"])
    joint = reference(BatchedField(model.vector_field), y0)
    np.testing.assert_allclose(ys_joint, joint.ys.swapaxes(0, 1), rtol=1e-6, atol=1e-6)
    assert int(h_joint.num_steps) == int(joint.stats["num_steps"])
    # `__call__` is the solution at t1 of one example; a joint batch of one is that example's solve.
    np.testing.assert_allclose(model(y0[0]), ys_vmap[0, -1], rtol=1e-6, atol=1e-6)
    y1, h1 = model.solve_batch(y0[:1])
    np.testing.assert_allclose(y1[0], model(y0[0]), rtol=1e-6, atol=1e-6)
    assert int(h1.num_steps) == int(h_vmap.num_steps[0])


@pytest.mark.slow
def test_classifier_per_example_and_joint_batch(getkey):
    x = jax.random.normal(getkey(), (6, 10))
    model = NeuralODEClassifier(10, 4, 3, 16, 1, rtol=1e-6, atol=1e-6, key=getkey())
    logits, heuristics = model.solve_batch(x)
    mapped, mapped_heuristics = jax.vmap(model.solve)(x)
    assert logits.shape == mapped.shape == (6, 3)
    assert heuristics.nfe.shape == () and mapped_heuristics.nfe.shape == (6,)
    np.testing.assert_allclose(logits, mapped, atol=1e-4)
    y0 = jnp.tanh(model.downsample(x[0]))
    np.testing.assert_allclose(model(x[0]), model.head(model.ode(y0)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(model.solve_batch(x[:1])[0][0], model(x[0]), rtol=1e-6, atol=1e-6)


def test_shapes_that_do_not_fit_are_refused(getkey):
    ts = jnp.linspace(0.0, 1.0, 5)
    ode = NeuralODE(3, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"NeuralODE.solve: `y0` must have shape \(3,\), got \(5, 3\).*vmap"):
        ode(jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"`y0` must have shape \(3,\), got \(4,\)"):
        ode.solve(jnp.ones(4))
    with pytest.raises(ValueError, match=r"NeuralODE.solve_batch: `y0` must have shape \(batch, 3\), got \(3,\)"):
        ode.solve_batch(jnp.ones(3))
    with pytest.raises(ValueError, match=r"MLPVectorField 'vector_field': `y` must have shape \(3,\), got \(2, 3\)"):
        ode.vector_field(jnp.asarray(0.0), jnp.ones((2, 3)))
    classifier = NeuralODEClassifier(6, 3, 2, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"`x` must have shape \(6,\), got \(2, 6\)"):
        classifier(jnp.ones((2, 6)))
    cde = NeuralCDE(3, 4, 2, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"NeuralCDE.solve: `xs` must have shape \(5, 3\), got \(2, 5, 3\)"):
        cde(ts, jnp.ones((2, 5, 3)))
    sde = NeuralSDE(2, 8, 1, key=getkey())
    with pytest.raises(ValueError, match=r"NeuralSDE.solve: `y0` must have shape \(2,\), got \(4, 2\)"):
        sde(jnp.ones((4, 2)), ts, key=getkey())
    sde_solve = DiagonalSDESolve(diffrax.Heun(), diffrax.PIDController(rtol=1e-2, atol=1e-2), 0.0, 1.0, 0.1, 1e-3, 64)
    with pytest.raises(ValueError, match=r"the drift must return an array shaped like the state \(4, 2\), got \(2,\)"):
        sde_solve(lambda t, y, args: y[0], lambda t, y, args: y, jnp.ones((4, 2)), ts, key=getkey())
    latent = LatentODE(2, 3, 4, 8, 1, t0=0.0, t1=1.0, key=getkey())
    with pytest.raises(ValueError, match=r"LatentODE.solve: `xs` must have shape \(5, 2\), got \(3, 5, 2\)"):
        latent(ts, jnp.ones((3, 5, 2)), jnp.ones((3, 5), bool), key=getkey())
    with pytest.raises(ValueError, match=r"LatentODE.solve_batch: `mask` must have shape \(3, 5\), got \(5,\)"):
        latent.solve_batch(ts, jnp.ones((3, 5, 2)), jnp.ones(5, bool), key=getkey())
    latent_sde = LatentSDE(2, 3, 4, 8, 1, t0=0.0, t1=1.0, key=getkey())
    with pytest.raises(ValueError, match=r"LatentSDE.solve: `xs` must have shape \(5, 2\), got \(3, 5, 2\)"):
        latent_sde(ts, jnp.ones((3, 5, 2)), jnp.ones((3, 5), bool), key=getkey())


def test_vector_field_is_a_plain_traceable_module_with_named_sites(getkey):
    field = MLPVectorField(3, 8, 2, key=getkey())
    t, y = jnp.asarray(0.5), jax.random.normal(getkey(), (3,))
    jaxpr = jax.make_jaxpr(field)(t, y, None)
    assert jaxpr.out_avals[0].shape == (3,)
    assert jaxinterp.site_names(field, t, y) == [
        "vector_field.layers.0.pre",
        "vector_field.layers.0.post",
        "vector_field.layers.1.pre",
        "vector_field.layers.1.post",
        "vector_field.out",
    ]
    # The tags are the identity: the field is the MLP it holds, and the sites are that MLP's intermediate values.
    inputs = jnp.concatenate([y, t[None]])
    np.testing.assert_array_equal(field(t, y), field.mlp(inputs))
    out, sites = jaxinterp.capture(field)(t, y)
    pre = field.mlp.layers[0](inputs)
    np.testing.assert_allclose(sites["vector_field.layers.0.pre"], pre, rtol=1e-6)
    np.testing.assert_allclose(sites["vector_field.layers.0.post"], jnp.tanh(pre), rtol=1e-6)
    np.testing.assert_allclose(sites["vector_field.out"], out, rtol=1e-6)
    matrix = MLPVectorField(3, 8, 1, out_shape=(3, 2), squash=True, name="drift", key=getkey())
    assert matrix(jnp.asarray(0.0), jnp.ones(3)).shape == (3, 2)
    assert jaxinterp.site_names(matrix, t, y) == ["drift.layers.0.pre", "drift.layers.0.post", "drift.out"]


def test_site_names_of_the_models(getkey):
    ts = jnp.linspace(0.0, 1.0, 5)
    field = ["layers.0.pre", "layers.0.post", "out"]
    ode = NeuralODE(3, 8, 1, key=getkey())
    assert jaxinterp.site_names(ode, jnp.ones(3)) == [f"vector_field.{s}" for s in field] + ["ode.y1"]
    assert jaxinterp.site_names(ode.solve, jnp.ones(3), ts)[-1] == "ode.ys"
    classifier = NeuralODEClassifier(6, 3, 2, 8, 1, key=getkey())
    assert jaxinterp.site_names(classifier, jnp.ones(6)) == [
        "downsample",
        *(f"vector_field.{s}" for s in field),
        "ode.y1",
        "logits",
    ]
    sde = NeuralSDE(2, 8, 1, key=getkey())
    assert set(jaxinterp.site_names(sde, jnp.ones(2), ts, key=getkey())) == {
        *(f"{part}.{s}" for part in ("drift", "diffusion") for s in field),
        "sde.ys",
    }
    latent_sde = LatentSDE(2, 3, 4, 8, 1, t0=0.0, t1=1.0, key=getkey())
    names = jaxinterp.site_names(latent_sde, ts, jnp.ones((5, 2)), jnp.ones(5, bool), key=getkey())
    assert set(names) == {
        *(f"{part}.{s}" for part in ("posterior_drift", "prior_drift", "diffusion") for s in field),
        "z0",
        "sde.ys",
    }


@pytest.mark.slow
def test_capture_reads_the_vector_field_at_the_last_stage_of_the_solve(getkey):
    """Inside diffrax's while loop `capture` keeps the last evaluation: Tsit5's last stage of the last (accepted)
    step, which is at `(t1, y(t1))` (first same as last)."""
    model = NeuralODE(3, 8, 1, rtol=1e-5, atol=1e-5, key=getkey())
    y0 = jax.random.normal(getkey(), (3,))
    y1, sites = jaxinterp.capture(model, "vector_field.*", "ode.y1")(y0)
    assert set(sites) == {"vector_field.layers.0.pre", "vector_field.layers.0.post", "vector_field.out", "ode.y1"}
    np.testing.assert_allclose(y1, model(y0), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(sites["ode.y1"], y1)
    t1 = jnp.asarray(model.t1)
    np.testing.assert_allclose(sites["vector_field.out"], model.vector_field(t1, y1), rtol=1e-5, atol=1e-6)
    pre = model.vector_field.mlp.layers[0](jnp.concatenate([y1, t1[None]]))
    np.testing.assert_allclose(sites["vector_field.layers.0.pre"], pre, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sites["vector_field.layers.0.post"], jnp.tanh(pre), rtol=1e-5, atol=1e-6)

    # Mapped over a batch, each example has its own solve and its own last stage.
    y0s = jax.random.normal(getkey(), (4, 3))
    y1s, mapped = jax.vmap(jaxinterp.capture(model, "vector_field.out"))(y0s)
    expected = jax.vmap(model.vector_field, in_axes=(None, 0))(t1, y1s)
    np.testing.assert_allclose(mapped["vector_field.out"], expected, rtol=1e-5, atol=1e-6)

    # A CDE: the field's value is the `[hidden, channels]` matrix at the last observation time and `z(t1)`.
    cde = NeuralCDE(3, 4, 2, 8, 1, rtol=1e-5, atol=1e-5, key=getkey())
    ts = jnp.linspace(0.0, 1.0, 6)
    xs = jnp.concatenate([ts[:, None], jax.random.normal(getkey(), (6, 2))], axis=-1)
    out, sites = jaxinterp.capture(cde, "vector_field.out", "cde.z1", "readout")(ts, xs)
    np.testing.assert_allclose(out, cde(ts, xs), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(sites["readout"], cde.readout(sites["cde.z1"]), rtol=1e-6, atol=1e-7)
    matrix = cde.vector_field(ts[-1], sites["cde.z1"])
    assert sites["vector_field.out"].shape == (4, 3)
    np.testing.assert_allclose(sites["vector_field.out"], matrix, rtol=1e-5, atol=1e-6)


def test_cd_through_a_neural_ode_solve(getkey):
    model = NeuralODE(3, 16, 1, rtol=1e-5, atol=1e-5, key=getkey())
    y0, mask = jax.random.normal(getkey(), (3,)), jnp.array([1.0, 0.0, 1.0])
    rel, irr = jaxinterp.cd(model, jaxinterp.Input(0, mask))(y0)
    assert relative_error(rel + irr, model(y0)) < 1e-5
    assert relative_error(rel, model(y0)) > 1e-2 and relative_error(irr, model(y0)) > 1e-2


def test_cd_through_a_linear_neural_ode_is_the_solution_from_the_selected_features():
    matrix = jnp.array([[-0.5, 1.0, 0.0], [-1.0, -0.2, 0.3], [0.2, 0.0, -0.8]])
    model = _linear_ode(matrix, t1=2.0, rtol=1e-7, atol=1e-7)
    y0, mask = jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 0.0, 1.0])
    rel, irr = jaxinterp.cd(model, jaxinterp.Input(0, mask))(y0)
    propagator = jax.scipy.linalg.expm(2.0 * matrix)
    np.testing.assert_allclose(rel, propagator @ (y0 * mask), atol=1e-5)
    np.testing.assert_allclose(irr, propagator @ (y0 * (1 - mask)), atol=1e-5)


@pytest.mark.slow
def test_cd_through_the_adaptive_solve_is_decompose_solution_on_its_steps(float64):
    """In float64 the controller inside `cd` (which sees the totals `rel + irr`) takes the plain solve's steps, so
    `cd` of the model is `decompose_solution` of its vector field. (In float32 the embedded error estimate, a small
    difference of large stage increments, loses most of its digits when summed from two parts, the steps differ and
    so does the decomposition, whose total is still the solution.)"""
    model = float64(NeuralODE(3, 16, 1, rtol=1e-6, atol=1e-6, key=jax.random.key(1)))
    y0, mask = jnp.array([0.3, -0.5, 0.8]), jnp.array([1.0, 0.0, 1.0])
    rel, irr = jaxinterp.cd(model, jaxinterp.Input(0, mask))(y0)
    # The model's solve starts with a step of 0.01 (diffrax's choice with `dt0=None` for a wrapped solver).
    decomposed, _ = decompose_solution(model.vector_field, y0, mask, 0.0, 1.0, rtol=1e-6, atol=1e-6, dt0=0.01)
    np.testing.assert_allclose(rel, decomposed.rel, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(irr, decomposed.irr, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_neural_cde_per_example_and_joint_batch_agree(getkey):
    ts = jnp.linspace(0.0, 1.0, 9)
    values = jax.random.normal(getkey(), (3, 9, 2))
    xs = jnp.concatenate([jnp.broadcast_to(ts[None, :, None], (3, 9, 1)), values], axis=-1)
    xs = xs.at[2].set(1.0)  # a constant path: dX = 0, so z stays at its initial value
    model = NeuralCDE(3, 6, 2, 16, 1, rtol=1e-6, atol=1e-6, key=getkey())
    out_joint, h_joint = model.solve_batch(ts, xs)
    out_vmap, h = jax.vmap(model.solve, in_axes=(None, 0))(ts, xs)
    assert out_joint.shape == out_vmap.shape == (3, 2) and h.nfe.shape == (3,) and h_joint.nfe.shape == ()
    np.testing.assert_allclose(out_joint, out_vmap, atol=1e-4)
    expected = model.readout(model.initial(xs[2, 0]))
    np.testing.assert_allclose(out_joint[2], expected, atol=1e-6)
    np.testing.assert_allclose(out_vmap[2], expected, atol=1e-6)
    np.testing.assert_allclose(model(ts, xs[2]), expected, atol=1e-6)


@pytest.mark.slow
def test_neural_sde_samples(getkey):
    ts = jnp.linspace(0.0, 1.0, 6)
    y0 = jnp.ones((4, 2))
    key = getkey()
    model = NeuralSDE(2, 8, 1, key=getkey())
    ys, heuristics = model.solve(y0[0], ts, key=key)
    assert ys.shape == (6, 2) and heuristics.error.shape == ()
    np.testing.assert_allclose(ys[0], y0[0], atol=1e-6)
    np.testing.assert_array_equal(ys, model(y0[0], ts, key=key))
    assert float(heuristics.error) > 0
    assert not np.allclose(ys, model(y0[0], ts, key=getkey()))
    # One joint state: one Brownian path `[batch, size]`; a joint batch of one is the one-example solve.
    ys_joint, h_joint = model.solve_batch(y0, ts, key=key)
    assert ys_joint.shape == (4, 6, 2) and h_joint.error.shape == ()
    np.testing.assert_allclose(ys_joint[:, 0], y0, atol=1e-6)
    np.testing.assert_allclose(model.solve_batch(y0[:1], ts, key=key)[0][0], ys, rtol=1e-6, atol=1e-7)
    # Per example: a key each.
    keys = jax.random.split(key, 4)
    ys_vmap, h_vmap = jax.vmap(lambda y, k: model.solve(y, ts, key=k))(y0, keys)
    assert ys_vmap.shape == (4, 6, 2) and h_vmap.error.shape == (4,)
    np.testing.assert_allclose(ys_vmap[:, 0], y0, atol=1e-6)
    np.testing.assert_allclose(ys_vmap[1], model(y0[1], ts, key=keys[1]), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_neural_sde_adaptive_solve_converges_to_a_fine_fixed_step_solve():
    """Same Brownian path: the adaptive solve (revisiting rejected steps, as the noise is not commutative) approaches
    a fixed-step Heun solve with 4,000 steps as the tolerance shrinks."""
    ts = jnp.linspace(0.0, 1.0, 5)
    y0 = jnp.full((4, 2), 0.5)
    key, model_key = jax.random.key(7), jax.random.key(1)
    model = NeuralSDE(2, 16, 1, noise_scale=0.5, brownian_tol=1e-5, key=model_key)
    brownian = diffrax.VirtualBrownianTree(0.0, 1.0, tol=1e-5, shape=y0.shape, key=key)
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(BatchedField(model.drift)), DiagonalNoiseTerm(BatchedField(model.diffusion), brownian)
    )
    saveat = diffrax.SaveAt(ts=ts)
    reference = diffrax.diffeqsolve(terms, diffrax.Heun(), 0.0, 1.0, 1 / 4000, y0, saveat=saveat, max_steps=4001)
    reference = reference.ys.swapaxes(0, 1)
    errors = []
    for tol in (1e-2, 1e-3, 1e-4):
        adaptive = NeuralSDE(2, 16, 1, noise_scale=0.5, rtol=tol, atol=tol, brownian_tol=1e-5, key=model_key)
        errors.append(float(jnp.max(jnp.abs(adaptive.solve_batch(y0, ts, key=key)[0] - reference))))
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.02, errors


@pytest.mark.slow
def test_latent_ode_shapes_and_mask(getkey):
    ts = jnp.linspace(0.0, 2.0, 12)
    xs = jax.random.normal(getkey(), (3, 12, 2))
    mask = jnp.zeros((3, 12), bool).at[:, :4].set(True)
    key = getkey()
    model = LatentODE(2, 4, 8, 16, 1, t0=0.0, t1=2.0, key=getkey())
    predictions, mean, logstd, heuristics = model.solve_batch(ts, xs, mask, key=key)
    assert predictions.shape == (3, 12, 2) and mean.shape == (3, 4) and logstd.shape == (3, 4)
    assert heuristics.nfe.shape == ()
    changed = xs.at[:, 6:].set(100.0)  # only unobserved points change
    np.testing.assert_allclose(model.solve_batch(ts, changed, mask, key=key)[0], predictions, atol=1e-5)
    single = model.solve(ts, xs[0], mask[0], key=key)
    assert single[0].shape == (12, 2) and single[1].shape == (4,) and single[3].nfe.shape == ()
    np.testing.assert_allclose(model(ts, changed[0], mask[0], key=key), single[0], atol=1e-5)
    # A joint batch of one is the one-example solve with the same key.
    joint_of_one = model.solve_batch(ts, xs[:1], mask[:1], key=key)
    for a, b in zip(jax.tree_util.tree_leaves(joint_of_one), jax.tree_util.tree_leaves(single), strict=True):
        np.testing.assert_allclose(a[0] if a.shape else a, b, rtol=1e-5, atol=1e-6)
    keys = jax.random.split(key, 3)
    mapped = jax.vmap(lambda x, m, k: model.solve(ts, x, m, key=k))(xs, mask, keys)
    assert mapped[0].shape == (3, 12, 2) and mapped[3].nfe.shape == (3,)
    np.testing.assert_allclose(mapped[1], mean, rtol=1e-5, atol=1e-6)  # the encoding does not depend on the key


def test_regularisation_weights_follow_schedules():
    weights = RegularisationWeights(error=optax.linear_schedule(1.0, 0.0, 10), stiffness=0.5)
    np.testing.assert_allclose(weights.at(0), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(weights.at(5), [0.5, 0.5, 0.0])
    heuristics = Heuristics(
        error=jnp.array([1.0, 3.0]),
        stiffness=jnp.array([4.0, 4.0]),
        stiffness_integral=jnp.array([1.0, 1.0]),
        num_steps=jnp.array([1, 1]),
        num_accepted_steps=jnp.array([1, 1]),
        num_rejected_steps=jnp.array([0, 0]),
        nfe=jnp.array([7, 7]),
    )
    np.testing.assert_allclose(penalty(heuristics, weights.at(5)), 0.5 * 2.0 + 0.5 * 4.0)
