"""Directed chain SDEs as generators of paths (P31, Min, Hu and Ichiba, "Directed Chain Generative
Adversarial Networks"; official code GitHub `mmin0/DirectedChainSDE`).

A directed chain SDE couples a path to a neighbour path of the same law,

```
dX_t = b(t, X_t, X~_t) dt + sigma(t, X_t, X~_t) dB_t,        Law(X) = Law(X~),   B independent of X~,
```

so that its drift and diffusion can read the neighbour's state, which lets one SDE of small dimension reproduce the
law of an interacting-particle (mean-field) system. Training feeds real paths as the neighbours `X~` and matches the
law of the generated `X` to the data's (P31: the signature loss, `jaxinterp.dynamics.signature_mmd_squared`);
generation runs the chain `X^1 (real) -> X^2 -> X^3 -> ...`, each link generated with the previous one as its
neighbour. `b` and `sigma` are LipSwish MLPs of `[t, x, x~]`, discretised by Euler-Maruyama (Ito) on the data's grid,
as in P31. The formulas are in `docs/generative_sdes.md`.

`DirectedChainSDE.__call__` generates one path from one neighbour (batch with `jax.vmap`); `sample` maps it over a
batch and `chain` runs the chain.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .neural_ode import ONE_EXAMPLE_HINT, check_shape
from .sde_gan import brownian_increments, euler_maruyama, lipswish_mlp


class DirectedChainSDE(eqx.Module):
    """A directed chain SDE generator: `dX = b(t, X, X~) dt + sigma(t, X, X~) dB` on the grid of the neighbour.

    **Fields:**

    - `drift`: `b`, a map of the vector `[t, x, x~]` (`1 + 2 size`) to `[size]` (a LipSwish MLP by default; any
        callable Module, e.g. an `eqx.nn.Linear`, can be put in with `eqx.tree_at`).
    - `diffusion`: `sigma`, a map of `[t, x, x~]` to `[size * noise_size]` (reshaped to `[size, noise_size]`).
    - `size`, `noise_size`: the path's channels and the Brownian motion's dimension.
    """

    drift: Callable
    diffusion: Callable
    size: int = eqx.field(static=True)
    noise_size: int = eqx.field(static=True)

    def __init__(self, size: int, width: int, depth: int, *, noise_size: int | None = None, key: PRNGKeyArray):
        """**Arguments:**

        - `size`: the channels of a path.
        - `width`, `depth`: the MLPs' hidden width and number of hidden layers.
        - `noise_size`: the Brownian motion's dimension (default `size`; P31 uses 3 for its one-dimensional opinions).
        - `key`: a PRNG key for the initial weights.
        """
        k1, k2 = jax.random.split(key)
        self.size = size
        self.noise_size = size if noise_size is None else noise_size
        self.drift = lipswish_mlp(1 + 2 * size, size, width, depth, tanh=False, key=k1)
        self.diffusion = lipswish_mlp(1 + 2 * size, size * self.noise_size, width, depth, tanh=False, key=k2)

    def __call__(
        self,
        ts: Float[Array, " times"],
        neighbour: Float[Array, "times size"],
        x0: Float[Array, " size"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "times size"]:
        """One path from `x0` on the grid `ts`, its drift and diffusion reading `neighbour` (at the left end of each
        step).

        **Arguments:**

        - `ts`: the grid, increasing.
        - `neighbour`: the neighbour path `X~` on `ts`, `[times, size]`.
        - `x0`: the initial state, `[size]`.
        - `key`: the Brownian motion's key.

        **Returns:** `[times, size]`.
        """
        check_shape("DirectedChainSDE", "neighbour", neighbour, (ts.shape[0], self.size), ONE_EXAMPLE_HINT)
        check_shape("DirectedChainSDE", "x0", x0, (self.size,), ONE_EXAMPLE_HINT)

        def inputs(i, x):
            return jnp.concatenate([ts[i, None], x, neighbour[i]])

        def drift(i, x):
            return self.drift(inputs(i, x))

        def diffusion(i, x):
            return self.diffusion(inputs(i, x)).reshape(self.size, self.noise_size)

        return euler_maruyama(drift, diffusion, x0, ts, brownian_increments(ts, self.noise_size, key))

    def sample(
        self,
        ts: Float[Array, " times"],
        neighbours: Float[Array, "batch times size"],
        x0: Float[Array, "batch size"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "batch times size"]:
        """`__call__` over a batch of neighbours and initial states (independent Brownian motions)."""
        check_shape("DirectedChainSDE.sample", "neighbours", neighbours, (None, ts.shape[0], self.size))
        check_shape("DirectedChainSDE.sample", "x0", x0, (neighbours.shape[0], self.size))
        keys = jax.random.split(key, neighbours.shape[0])
        return jax.vmap(lambda n, x, k: self(ts, n, x, key=k))(neighbours, x0, keys)

    def chain(
        self,
        ts: Float[Array, " times"],
        first: Float[Array, "batch times size"],
        initials: Float[Array, "links batch size"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "links batch times size"]:
        """Run the directed chain: link `k + 1` is generated with link `k` as its neighbour, from `first`.

        **Arguments:**

        - `ts`: the grid.
        - `first`: the chain's first link `X^1` (real paths), `[batch, times, size]`.
        - `initials`: the initial states of the generated links `X^2, ..., X^(links + 1)`, `[links, batch, size]`.
        - `key`: the Brownian motions' key.

        **Returns:** the generated links `[links, batch, times, size]` (without `first`).
        """
        check_shape("DirectedChainSDE.chain", "initials", initials, (None, first.shape[0], self.size))

        def link(neighbours, inputs):
            x0, link_key = inputs
            paths = self.sample(ts, neighbours, x0, key=link_key)
            return paths, paths

        _, links = jax.lax.scan(link, first, (initials, jax.random.split(key, initials.shape[0])))
        return links
