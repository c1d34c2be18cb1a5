"""Simulated interacting-particle SDEs of mean-field type: the two simulated data sets of P31.

P31 (Directed Chain Generative Adversarial Networks) trains its generators on samples of two McKean-Vlasov type
systems, each simulated as a system of `N` particles whose drift (and diffusion) depend on the empirical law of all
particles:

- `opinion_dynamics`: stochastic opinion dynamics with a bump-shaped interaction kernel; from opinions uniform on
    `[-2, 2]` the particles gather into two groups, so the marginal law is bimodal on the way to consensus;
- `fitzhugh_nagumo`: a mean-field network of FitzHugh-Nagumo neurons with chemical synapses (membrane potential
    `V`, recovery variable `w`, synaptic gating `y`).

The equations and parameters are those of P31's official simulators (GitHub `mmin0/DirectedChainSDE`,
`data/StochasticOpinion.py` and `data/FitzHughNagumo.py`), written out in `docs/signatures.md#simulated-data-sets`.
Both are simulated with Euler-Maruyama in one jitted `lax.scan`, seeded by a JAX key, every particle with its own
Brownian motions; the paths are saved on the uniform grid `ts` of `num_times` points on `[0, t1]`, with `substeps`
Euler-Maruyama steps between saved times (P31: 101 points on `[0, 1]`, one step of 0.01 each, 8,192 particles).
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


def _check_grid(num_times: int, substeps: int, t1: float, where: str) -> None:
    if num_times < 2:
        raise ValueError(f"{where}: num_times must be at least 2, got {num_times}")
    if substeps < 1:
        raise ValueError(f"{where}: substeps must be at least 1, got {substeps}")
    if not t1 > 0:
        raise ValueError(f"{where}: t1 must be positive, got {t1}")


def _euler_maruyama(
    step: Callable[[Array, Array, float], Array],
    y0: Array,
    noise_channels: int,
    t1: float,
    num_times: int,
    substeps: int,
    key: PRNGKeyArray,
) -> tuple[Array, Array]:
    """Run `y <- step(y, dW, dt)` on the grid, `dW ~ N(0, dt)` of shape `[particles, noise_channels]`."""
    dt = t1 / ((num_times - 1) * substeps)
    keys = jax.random.split(key, (num_times - 1, substeps))

    def one_step(y, step_key):
        dw = jnp.sqrt(dt) * jax.random.normal(step_key, (y.shape[0], noise_channels), dtype=y.dtype)
        return step(y, dw, dt), None

    def save_interval(y, interval_keys):
        y, _ = jax.lax.scan(one_step, y, interval_keys)
        return y, y

    _, saved = jax.lax.scan(save_interval, y0, keys)
    paths = jnp.concatenate([y0[None], saved], axis=0)
    return jnp.linspace(0.0, t1, num_times, dtype=y0.dtype), jnp.moveaxis(paths, 0, 1)


def _rowwise(fn: Callable[[Array], Array], rows: Array, chunk_size: int | None) -> Array:
    """`fn` mapped over `rows`, `chunk_size` rows at a time (all at once for `None`)."""
    if chunk_size is None or rows.shape[0] <= chunk_size:
        return jax.vmap(fn)(rows)
    return jax.lax.map(fn, rows, batch_size=chunk_size)


# ----------------------------------------------------------------------------------------------------------------
# stochastic opinion dynamics


def opinion_interaction(
    distance: Float[ArrayLike, "*shape"], theta1: float = 6.0, theta2: float = 0.2
) -> Float[Array, "*shape"]:
    """The interaction kernel of the opinion dynamics: `phi(r) = theta1 exp(-0.01 / (1 - (r - theta2)^2))` for
    `|r - theta2| < 1`, and 0 elsewhere: a smooth bump, nearly flat at `theta1` (above `0.97 theta1` up to
    `r = theta2 + 0.8`) that falls to 0 within the last few hundredths before `r = theta2 + 1`.

    **Arguments:**

    - `distance`: `r >= 0`, the distances between opinions.
    - `theta1`, `theta2`: the height and centre of the bump.

    **Returns:** `phi(r)`, shaped like `distance`.
    """
    distance = jnp.asarray(distance)
    inside = jnp.abs(distance - theta2) < 1
    # the double `where` keeps the exponential (and its gradient) finite outside the support
    gap = jnp.where(inside, 1 - (distance - theta2) ** 2, 1.0)
    return jnp.where(inside, theta1 * jnp.exp(-0.01 / gap), 0.0)


def opinion_dynamics(
    key: PRNGKeyArray,
    num_particles: int = 8192,
    *,
    theta1: float = 6.0,
    theta2: float = 0.2,
    sigma: float = 0.1,
    t1: float = 1.0,
    num_times: int = 101,
    substeps: int = 1,
    initial: Float[ArrayLike, "particles channels"] | None = None,
    chunk_size: int | None = 1024,
) -> tuple[Float[Array, " times"], Float[Array, "particles times channels"]]:
    """Simulated stochastic opinion dynamics (P31's first data set): `N` interacting opinions,

    ```
    dX^i = -(1/N) sum_j phi(|X^i - X^j|) (X^i - X^j) dt + sigma dW^i,     X^i_0 ~ Uniform[-2, 2]   (Ito)
    ```

    with `phi = opinion_interaction` (`theta1 = 6`, `theta2 = 0.2`, `sigma = 0.1`, as P31): each opinion moves
    towards those within distance `theta2 + 1 = 1.2`. The data are simulated, as in P31, with its parameters; with
    them the marginal law is bimodal at intermediate times (two groups near -0.8 and +0.8 at t = 0.5); the groups
    keep drawing together, and by t = 1 some runs have merged into one near 0.

    **Arguments:**

    - `key`: the JAX key of the initial opinions and the Brownian motions.
    - `num_particles`: `N` (P31: 8,192 for each of its train and test sets). The interaction costs `O(N^2)` a step.
    - `theta1`, `theta2`, `sigma`: the kernel's height and centre and the noise level.
    - `t1`, `num_times`, `substeps`: the saving grid `linspace(0, t1, num_times)` and the Euler-Maruyama steps
        between saved times (P31: `1.0`, `101`, `1`).
    - `initial`: the initial opinions `[N, channels]`; `None` draws `[N, 1]` uniform on `[-2, 2]`.
    - `chunk_size`: how many particles' interactions are computed at once (memory `chunk_size * N`).

    **Returns:** `(ts, paths)`: the times `[num_times]` and the opinions `[N, num_times, channels]` (float32).
    """
    _check_grid(num_times, substeps, t1, "opinion_dynamics")
    init_key, noise_key = jax.random.split(key)
    if initial is None:
        y0 = jax.random.uniform(init_key, (num_particles, 1), minval=-2.0, maxval=2.0)
    else:
        y0 = jnp.asarray(initial, dtype=jnp.float32)
        if y0.ndim != 2:
            raise ValueError(f"opinion_dynamics: initial must be [particles, channels], got shape {y0.shape}")

    return _simulate_opinions(
        y0,
        noise_key,
        theta1=theta1,
        theta2=theta2,
        sigma=sigma,
        t1=t1,
        num_times=num_times,
        substeps=substeps,
        chunk_size=chunk_size,
    )


@functools.partial(jax.jit, static_argnames=("theta1", "theta2", "sigma", "t1", "num_times", "substeps", "chunk_size"))
def _simulate_opinions(y0, key, *, theta1, theta2, sigma, t1, num_times, substeps, chunk_size):
    def drift(x):
        def one(xi):
            differences = xi - x
            weights = opinion_interaction(jnp.linalg.norm(differences, axis=-1), theta1, theta2)
            return -jnp.mean(weights[:, None] * differences, axis=0)

        return _rowwise(one, x, chunk_size)

    def step(y, dw, dt):
        return y + drift(y) * dt + sigma * dw

    return _euler_maruyama(step, y0, y0.shape[1], t1, num_times, substeps, key)


# ----------------------------------------------------------------------------------------------------------------
# mean-field FitzHugh-Nagumo


@dataclasses.dataclass(frozen=True)
class FitzHughNagumoParameters:
    """The parameters of the mean-field FitzHugh-Nagumo network; the defaults are those of P31's simulator.

    **Fields:**

    - `a`, `b`, `c`: the FitzHugh-Nagumo recovery dynamics `dw = c (V + a - b w) dt` (0.7, 0.8, 0.08).
    - `current`: the input current `I` (0.5).
    - `a_r`, `a_d`: the synapse's rise and decay rates (1, 1).
    - `t_max`, `lam`, `v_t`: the transmitter concentration `S(V) = t_max / (1 + exp(-lam (V - v_t)))` (1, 0.2, 2).
    - `v_rev`: the synaptic reversal potential (1).
    - `coupling`, `sigma_coupling`: the mean and the noise of the synaptic weight, `J` and `sigma_J` (1, 0.2).
    - `gamma`, `big_lambda`: the gating noise's cut-off `chi(y) = gamma exp(-big_lambda / (1 - (2y - 1)^2))` on
        `(0, 1)` (0.1, 0.5).
    - `sigma_ext`: the noise of the external input on `V` (0.5).
    - `initial_mean`, `initial_variance`: the Gaussian law of `(V, w, y)` at time 0 (`(0, 0.5, 0.3)`,
        `(0.4, 0.4, 0.05)`, independent coordinates).
    """

    a: float = 0.7
    b: float = 0.8
    c: float = 0.08
    current: float = 0.5
    a_r: float = 1.0
    a_d: float = 1.0
    t_max: float = 1.0
    lam: float = 0.2
    v_t: float = 2.0
    v_rev: float = 1.0
    coupling: float = 1.0
    sigma_coupling: float = 0.2
    gamma: float = 0.1
    big_lambda: float = 0.5
    sigma_ext: float = 0.5
    initial_mean: tuple[float, float, float] = (0.0, 0.5, 0.3)
    initial_variance: tuple[float, float, float] = (0.4, 0.4, 0.05)

    def transmitter(self, v: Array) -> Array:
        """`S(V) = t_max / (1 + exp(-lam (V - v_t)))`."""
        return self.t_max / (1 + jnp.exp(-self.lam * (v - self.v_t)))

    def gating_noise(self, v: Array, y: Array) -> Array:
        """`Sigma(V, y) = sqrt(a_r S(V) (1 - y) + a_d y) chi(y)`, 0 outside `0 < y < 1`."""
        inside = (y > 0) & (y < 1)
        gap = jnp.where(inside, 1 - (2 * y - 1) ** 2, 1.0)
        chi = jnp.where(inside, self.gamma * jnp.exp(-self.big_lambda / gap), 0.0)
        rate = jnp.where(inside, self.a_r * self.transmitter(v) * (1 - y) + self.a_d * y, 0.0)
        return jnp.sqrt(jnp.maximum(rate, 0.0)) * chi

    def drift(self, x: Float[Array, "neurons 3"]) -> Float[Array, "neurons 3"]:
        """The drift of every neuron, the mean-field synaptic term included.

        **Arguments:**

        - `x`: `[N, 3]`, the states `(V, w, y)` of all neurons.

        **Returns:** `[N, 3]`: `(V - V^3/3 - w + I + J (V - v_rev) mean(y), c (V + a - b w), a_r S(V) (1 - y) - a_d y)`.
        """
        v, w, y = x[:, 0], x[:, 1], x[:, 2]
        mean_y = jnp.mean(y)
        dv = v - v**3 / 3 - w + self.current + self.coupling * (v - self.v_rev) * mean_y
        dw = self.c * (v + self.a - self.b * w)
        dy = self.a_r * self.transmitter(v) * (1 - y) - self.a_d * y
        return jnp.stack([dv, dw, dy], axis=1)


def fitzhugh_nagumo(
    key: PRNGKeyArray,
    num_neurons: int = 8192,
    *,
    parameters: FitzHughNagumoParameters = FitzHughNagumoParameters(),
    t1: float = 1.0,
    num_times: int = 101,
    substeps: int = 1,
    initial: Float[ArrayLike, "neurons 3"] | None = None,
) -> tuple[Float[Array, " times"], Float[Array, "neurons times 3"]]:
    """A simulated mean-field network of FitzHugh-Nagumo neurons (P31's second data set), one population,

    ```
    dV^i = (V^i - (V^i)^3 / 3 - w^i + I) dt + J (V^i - v_rev) ybar dt + sigma_ext dW^i - sigma_J (V^i - v_rev) ybar dB^i
    dw^i = c (V^i + a - b w^i) dt
    dy^i = (a_r S(V^i) (1 - y^i) - a_d y^i) dt + Sigma(V^i, y^i) dZ^i,          ybar = (1/N) sum_j y^j
    ```

    (Ito; `W`, `B`, `Z` independent for every neuron; `S`, `Sigma` as `FitzHughNagumoParameters`). The data are
    simulated, as in P31, with the parameters of its simulator (the defaults of `FitzHughNagumoParameters`), the
    coupling signs included. P31's loader then standardises every channel by the mean and standard deviation of the
    states at time 0; that is left to the caller.

    **Arguments:**

    - `key`: the JAX key of the initial states and the Brownian motions.
    - `num_neurons`: `N` (P31: 8,192 for each of its train and test sets).
    - `parameters`: the model's parameters.
    - `t1`, `num_times`, `substeps`: the saving grid `linspace(0, t1, num_times)` and the Euler-Maruyama steps
        between saved times (P31: `1.0`, `101`, `1`).
    - `initial`: the initial states `[N, 3]`; `None` draws them from `parameters.initial_mean` and
        `initial_variance`.

    **Returns:** `(ts, paths)`: the times `[num_times]` and the states `(V, w, y)` `[N, num_times, 3]` (float32).
    """
    _check_grid(num_times, substeps, t1, "fitzhugh_nagumo")
    p = parameters
    init_key, noise_key = jax.random.split(key)
    if initial is None:
        mean = jnp.asarray(p.initial_mean, dtype=jnp.float32)
        std = jnp.sqrt(jnp.asarray(p.initial_variance, dtype=jnp.float32))
        y0 = mean + std * jax.random.normal(init_key, (num_neurons, 3))
    else:
        y0 = jnp.asarray(initial, dtype=jnp.float32)

        if y0.ndim != 2 or y0.shape[1] != 3:
            raise ValueError(f"fitzhugh_nagumo: initial must be [neurons, 3] (V, w, y), got shape {y0.shape}")
    return _simulate_neurons(y0, noise_key, parameters=p, t1=t1, num_times=num_times, substeps=substeps)


@functools.partial(jax.jit, static_argnames=("parameters", "t1", "num_times", "substeps"))
def _simulate_neurons(y0, key, *, parameters, t1, num_times, substeps):
    p = parameters

    def step(x, dw, dt):
        v, y = x[:, 0], x[:, 2]
        synaptic = -p.sigma_coupling * (v - p.v_rev) * jnp.mean(y)
        noise_v = p.sigma_ext * dw[:, 0] + synaptic * dw[:, 1]
        noise_y = p.gating_noise(v, y) * dw[:, 2]
        noise = jnp.stack([noise_v, jnp.zeros_like(noise_v), noise_y], axis=1)
        return x + p.drift(x) * dt + noise

    return _euler_maruyama(step, y0, 3, t1, num_times, substeps, key)
