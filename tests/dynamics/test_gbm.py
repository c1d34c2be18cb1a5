import diffrax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from jaxinterp.dynamics import additive_diffusion as additive
from jaxinterp.dynamics import gbm

LOC, SCALE = 0.3, 0.2  # log X_0 ~ N(LOC, SCALE^2): the log-normal target of the sampler tests
N_PATHS = 20_000


def _lognormal_central_moments(mean_log, var_log):
    """Variance and fourth central moment of exp(N(mean_log, var_log))."""
    m = np.exp(mean_log + var_log / 2)
    w = np.exp(var_log)
    variance = m**2 * (w - 1)
    fourth = m**4 * (w - 1) ** 2 * (w**4 + 2 * w**3 + 3 * w**2 - 3)
    return variance, fourth


def test_closed_form_marginal_matches_diffrax_simulation():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    t = 0.5
    x0 = jnp.where(jnp.arange(N_PATHS) % 2 == 0, 1.0, 2.0)
    simulated = jax.jit(lambda key: process.simulate(x0, t, key=key, num_steps=200))(jr.key(0))
    closed_form = process.sample(x0, t, key=jr.key(1))
    for start in (1.0, 2.0):
        mask = np.asarray(x0 == start)
        n = mask.sum()
        mean_log, var_log = np.log(start) + process.log_drift * t, process.sigma**2 * t
        variance, fourth = _lognormal_central_moments(mean_log, var_log)
        mean = np.exp(mean_log + var_log / 2)
        assert float(process.mean(start, t)) == pytest.approx(mean, rel=1e-6)
        assert float(process.variance(start, t)) == pytest.approx(variance, rel=1e-5)
        # Four standard errors of the sample mean and the sample variance; Euler's weak bias at 200 steps is
        # O(mu^2 t dt) relative, far below that.
        mean_tol = 4 * np.sqrt(variance / n)
        var_tol = 4 * np.sqrt((fourth - variance**2) / n)
        for draws in (np.asarray(simulated)[mask], np.asarray(closed_form)[mask]):
            assert abs(draws.mean() - mean) < mean_tol
            assert abs(draws.var() - variance) < var_tol


def test_conditional_score_is_gradient_of_log_density():
    process = gbm.GeometricBrownianMotion(sigma=0.7, mu=0.1)
    x0, t = 1.3, 0.4

    def log_density(x):
        mean = jnp.log(x0) + process.log_drift * t
        var = process.sigma**2 * t
        return -jnp.log(x) - (jnp.log(x) - mean) ** 2 / (2 * var)

    for x in (0.6, 1.3, 2.9):
        expected = float(jax.grad(log_density)(x))
        assert float(process.conditional_score(x, x0, t)) == pytest.approx(expected, rel=1e-5)
    z = 0.37
    x = x0 * jnp.exp(process.log_drift * t + process.sigma * jnp.sqrt(t) * z)
    assert float(process.score_from_noise(z, x, t)) == pytest.approx(
        float(process.conditional_score(x, x0, t)), rel=1e-5
    )


def _lognormal_data(key, shape=(N_PATHS, 4)):
    return jnp.exp(LOC + SCALE * jr.normal(key, shape))


def test_multiplicative_loss_is_minimised_by_the_analytic_score():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    x0 = _lognormal_data(jr.key(0))
    exact = gbm.log_normal_marginal_score(process, LOC, SCALE)
    perturbed = {
        "scaled": lambda x, t: 1.1 * exact(x, t),
        "shifted": lambda x, t: exact(x, t) + 0.2 / x,
        "wrong log-normal": gbm.log_normal_marginal_score(process, LOC + 0.1, SCALE * 1.5),
    }

    def loss(score, key):
        return gbm.multiplicative_score_matching_loss(score, process, x0, key=key)

    key = jr.key(1)
    exact_loss = loss(exact, key)
    # An independent draw of (t, X_t) for the expected excess over the exact score.
    tkey, zkey = jr.split(jr.key(2))
    t = jr.uniform(tkey, (N_PATHS, 1), minval=1e-3, maxval=1.0)
    log_ratio = process.log_drift * t + process.sigma * jnp.sqrt(t) * jr.normal(zkey, x0.shape)
    xt = x0 * jnp.exp(log_ratio)
    weight = process.sigma**2 * t * xt
    exact_residual = weight * exact(xt, t) + log_ratio - process.mu * t + 1.5 * process.sigma**2 * t
    for name, score in perturbed.items():
        # With the same key the excess loss is the mean of |w (s - s*)|^2 plus a cross term 2 w (s - s*) r*
        # whose expectation is zero: the exact score minimises the loss and the excess estimates the gap.
        excess = float(loss(score, key) - exact_loss)
        difference = weight * (score(xt, t) - exact(xt, t))
        gap = np.asarray(jnp.sum(difference**2, axis=1))
        cross = np.asarray(jnp.sum(2 * difference * exact_residual, axis=1))
        tolerance = 4 * np.sqrt(((gap + cross).var() + gap.var()) / N_PATHS)
        assert excess > 0, name
        assert abs(excess - gap.mean()) < tolerance, name


def test_log_normal_prior_fit_is_the_marginal_at_time_one():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    x0 = _lognormal_data(jr.key(0))
    prior = gbm.LogNormalPrior.fit(process, x0)
    n = x0.size
    assert float(prior.loc) == pytest.approx(LOC + process.log_drift, abs=4 * SCALE / np.sqrt(n))
    assert float(prior.scale) == pytest.approx(np.sqrt(SCALE**2 + process.sigma**2), rel=4 / np.sqrt(2 * n))
    pushed = jnp.log(process.sample(x0, 1.0, key=jr.key(1)))
    drawn = jnp.log(prior.sample(x0.shape, key=jr.key(2)))
    sd = float(prior.scale)
    assert float(drawn.mean()) == pytest.approx(float(pushed.mean()), abs=6 * sd / np.sqrt(n))
    assert float(drawn.std()) == pytest.approx(float(pushed.std()), rel=6 / np.sqrt(n))


def _prior_at_one(process):
    return gbm.LogNormalPrior(jnp.asarray(LOC + process.log_drift), jnp.sqrt(SCALE**2 + process.sigma**2))


def _check_log_moments(samples, tol_mean, tol_std):
    logs = np.log(np.asarray(samples))
    assert np.isfinite(logs).all()
    assert abs(logs.mean() - LOC) < tol_mean
    assert abs(logs.std() - SCALE) < tol_std


# Standard errors of the mean and the standard deviation of N_PATHS log samples are 0.0014 and 0.001; four of
# them plus an allowance for the Euler-Maruyama bias, which is O(delta) = O(1/500) in the log moments.
MEAN_TOL = 4 * SCALE / np.sqrt(N_PATHS) + 0.005
STD_TOL = 4 * SCALE / np.sqrt(2 * N_PATHS) + 0.005


@pytest.mark.parametrize("sampler", [gbm.dale_langevin_sample, gbm.ambient_multiplicative_sample])
def test_multiplicative_samplers_draw_the_log_normal_target(sampler):
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    score = gbm.log_normal_marginal_score(process, LOC, SCALE)
    x_init = _prior_at_one(process).sample((N_PATHS, 1), key=jr.key(0))
    ts = jnp.linspace(1.0, 1 / 500, 500)
    samples = jax.jit(lambda x, key: sampler(score, process, x, ts, key=key))(x_init, jr.key(1))
    _check_log_moments(samples, MEAN_TOL, STD_TOL)
    assert bool(jnp.all(samples > 0))


def test_annealed_variant_with_several_steps_per_level():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    score = gbm.log_normal_marginal_score(process, LOC, SCALE)
    x_init = _prior_at_one(process).sample((N_PATHS, 1), key=jr.key(0))
    ts = jnp.linspace(1.0, 1 / 250, 250)
    two_steps = gbm.dale_langevin_sample(
        score, process, x_init, ts, key=jr.key(1), step_size=1 / 500, steps_per_level=2
    )
    # Half-size steps taken twice per level traverse the same time as one full step: still the reverse SDE to
    # first order, with the score held for two steps.
    _check_log_moments(two_steps, MEAN_TOL, 2 * STD_TOL)


def _fixed_log_normal_score(loc, var):
    """The score of exp(N(loc, var)), the same at every time: with it the Dale-Langevin update is linear in
    `log x - loc`, an AR(1) recursion whose moments are known in closed form."""
    return lambda x, t: -(1 + (jnp.log(x) - loc) / var) / x


def test_annealed_noise_and_denoising_steps_follow_the_closed_form_recursion():
    # With mu = sigma^2 / 2 and a fixed log-normal score of log-variance v, one Dale step maps y = log x - loc to
    # a y + sqrt(delta) sigma c_k Z with a = 1 - delta sigma^2 / v and c_k = noise_decay^k (zero at the very last
    # update and in the denoising steps). The log moments after every update are therefore known exactly.
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    var, delta, levels, decay, denoise = 0.09, 0.01, 40, 0.9, 15
    y0_mean, y0_var = 0.5, 0.25
    a = 1 - delta * process.sigma**2 / var
    noise_scales = decay ** np.arange(levels)
    noise_scales[-1] = 0.0
    mean, variance = y0_mean, y0_var
    for c in list(noise_scales) + [0.0] * denoise:
        mean, variance = a * mean, a**2 * variance + delta * process.sigma**2 * c**2
    x_init = jnp.exp(LOC + y0_mean + np.sqrt(y0_var) * jr.normal(jr.key(0), (N_PATHS,)))
    samples = gbm.dale_langevin_sample(
        _fixed_log_normal_score(LOC, var),
        process,
        x_init,
        jnp.linspace(1.0, 0.1, levels),
        key=jr.key(1),
        step_size=delta,
        noise_decay=decay,
        denoising_steps=denoise,
    )
    y = np.log(np.asarray(samples)) - LOC
    np.testing.assert_allclose(y.mean(), mean, atol=4 * np.sqrt(variance / N_PATHS))
    np.testing.assert_allclose(y.var(), variance, rtol=4 * np.sqrt(2 / N_PATHS))
    # the same schedule without annealing ends visibly wider: the test tells the two apart
    assert variance < 0.5 * (delta * process.sigma**2 / (1 - a**2))


def test_default_schedule_is_unchanged_by_neutral_annealing_settings():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    score = gbm.log_normal_marginal_score(process, LOC, SCALE)
    x_init = _prior_at_one(process).sample((64, 1), key=jr.key(0))
    ts = jnp.linspace(1.0, 0.05, 20)
    for sampler in (gbm.dale_langevin_sample, gbm.ambient_multiplicative_sample):
        plain = sampler(score, process, x_init, ts, key=jr.key(1))
        neutral = sampler(score, process, x_init, ts, key=jr.key(1), noise_decay=1.0, denoising_steps=0)
        np.testing.assert_array_equal(plain, neutral)
    with pytest.raises(ValueError, match="noise_decay"):
        gbm.dale_langevin_sample(score, process, x_init, ts, key=jr.key(1), noise_decay=1.5)
    with pytest.raises(ValueError, match="denoising_steps"):
        gbm.dale_langevin_sample(score, process, x_init, ts, key=jr.key(1), denoising_steps=-1)


def test_dale_langevin_keeps_signs_where_ambient_sampler_does_not():
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    x = jnp.full((1000,), 1.5)
    strong_score = jnp.full_like(x, -5.0)
    noise = jr.normal(jr.key(0), x.shape)
    delta = 0.5
    dale = gbm.dale_langevin_step(process, x, strong_score, delta, noise)
    ambient = gbm.ambient_multiplicative_step(process, x, strong_score, delta, noise)
    assert bool(jnp.all(dale > 0))
    assert bool(jnp.any(ambient < 0))


@pytest.mark.parametrize(
    "solver, controller, max_steps",
    [
        (diffrax.Euler(), diffrax.ConstantStepSize(), 500),
        (diffrax.ShARK(), diffrax.PIDController(rtol=1e-3, atol=1e-3), 500),
    ],
)
def test_reverse_sde_with_diffrax_draws_the_log_normal_target(solver, controller, max_steps):
    process = gbm.GeometricBrownianMotion(sigma=0.8)
    score = gbm.log_normal_marginal_score(process, LOC, SCALE)
    x_init = _prior_at_one(process).sample((N_PATHS, 1), key=jr.key(0))
    t_min = 1 / 500
    samples, steps = jax.jit(
        lambda x, key: gbm.reverse_sde_sample(
            score,
            process,
            x,
            key=key,
            t_min=t_min,
            solver=solver,
            stepsize_controller=controller,
            dt0=(1 - t_min) / 499,
            max_steps=max_steps,
        )
    )(x_init, jr.key(1))
    _check_log_moments(samples, MEAN_TOL, STD_TOL)
    assert 0 < int(steps) <= max_steps


def _gaussian_check(process, sampler_key):
    loc, scale = 0.5, 0.2

    def score(x, t):
        a = process.mean_coefficient(t)
        return -(x - a * loc) / (a**2 * scale**2 + process.std(t) ** 2)

    ts = jnp.linspace(1.0, 1 / 500, 500)
    a1, s1 = process.mean_coefficient(1.0), process.std(1.0)
    x_init = a1 * loc + jnp.sqrt(a1**2 * scale**2 + s1**2) * jr.normal(jr.key(0), (N_PATHS, 1))
    samples = jax.jit(lambda x, key: additive.euler_maruyama_sample(score, process, x, ts, key=key))(
        x_init, sampler_key
    )
    samples = np.asarray(samples)
    assert abs(samples.mean() - loc) < 4 * scale / np.sqrt(N_PATHS) + 0.005
    assert abs(samples.std() - scale) < 4 * scale / np.sqrt(2 * N_PATHS) + 0.005


@pytest.mark.parametrize(
    "process", [additive.VarianceExploding(sigma_min=0.01, sigma_max=5.0), additive.VariancePreserving()]
)
def test_additive_samplers_draw_the_gaussian_target(process):
    _gaussian_check(process, jr.key(1))


@pytest.mark.parametrize("process", [additive.VarianceExploding(), additive.VariancePreserving()])
def test_denoising_score_matching_is_minimised_by_the_analytic_score(process):
    loc, scale = 0.5, 0.2
    x0 = loc + scale * jr.normal(jr.key(0), (N_PATHS, 4))

    def exact(x, t):
        a = process.mean_coefficient(t)
        return -(x - a * loc) / (a**2 * scale**2 + process.std(t) ** 2)

    key = jr.key(1)
    exact_loss = additive.denoising_score_matching_loss(exact, process, x0, key=key)
    for perturbed in (lambda x, t: 1.1 * exact(x, t), lambda x, t: exact(x, t) + 0.3):
        assert additive.denoising_score_matching_loss(perturbed, process, x0, key=key) > exact_loss


def test_additive_diffusion_coefficients_match_their_marginals():
    process = additive.VariancePreserving()
    for t in (0.1, 0.5, 1.0):
        a, s = process.mean_coefficient(t), process.std(t)
        assert float(a**2 + s**2) == pytest.approx(1.0, abs=1e-6)
    t = 0.3
    dt = 1e-3
    # d s^2/dt for VE and d(a^2)/dt = -beta a^2 for VP.
    ve = additive.VarianceExploding()
    assert float(ve.diffusion(t) ** 2) == pytest.approx(
        float((ve.std(t + dt) ** 2 - ve.std(t - dt) ** 2) / (2 * dt)), rel=1e-3
    )

    def log_a2(t):
        return 2 * jnp.log(process.mean_coefficient(t))

    slope = (log_a2(t + dt) - log_a2(t - dt)) / (2 * dt)
    assert float(-(process.diffusion(t) ** 2)) == pytest.approx(float(slope), rel=1e-3)
