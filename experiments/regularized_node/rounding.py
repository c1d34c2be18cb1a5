"""How much of the embedded error estimate of one Tsit5 step is float32 rounding, on the experiment's classifier ODE.

The same step (from the downsampled MNIST test images, with the classifier's initial weights) is taken in float64 and
in float32; the difference of the two error estimates is the float32 rounding. Run
`python -m experiments.regularized_node.rounding`.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from experiments.record import markdown_table
from models.neural_ode import BatchedField, NeuralODEClassifier

from .config import Config
from .run import build_classifier, load


def _error_estimate(model: NeuralODEClassifier, x: np.ndarray, step: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """The embedded error estimate of one Tsit5 step from `t = 0` computed in `dtype`, and the controller's scale."""
    model = jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, model)
    y0 = jnp.tanh(jax.vmap(model.downsample)(jnp.asarray(x, dtype)))
    term = diffrax.ODETerm(BatchedField(model.ode.vector_field))
    solver = diffrax.Tsit5()
    t0, t1 = jnp.asarray(0.0, dtype), jnp.asarray(step, dtype)
    state = solver.init(term, t0, t1, y0, None)
    y1, error, _, _, _ = solver.step(term, t0, t1, y0, None, state, False)
    controller = model.ode.controller
    scale = controller.atol + controller.rtol * jnp.maximum(jnp.abs(y0), jnp.abs(y1))
    return np.asarray(error, np.float64), np.asarray(scale, np.float64)


def error_estimate_rounding(
    config: Config | None = None, steps: tuple[float, ...] = (0.01, 0.1, 0.5), num_images: int = 1000, seed: int = 0
) -> list[dict[str, float]]:
    """For each step size, the scaled error estimate `E` (RMS, as the controller computes it) in float64 and in
    float32, and the float32 rounding: the RMS of the difference of the two estimates, absolute and scaled.

    **Arguments:**

    - `config`: the experiment's configuration (data, model size, tolerances); `None`: the full run's.
    - `steps`: the step sizes to try.
    - `num_images`: how many test images form the state.
    - `seed`: the seed of the classifier's initial weights.

    **Returns:** one dict per step size.
    """
    config = Config() if config is None else config
    _, _, x_test, _ = load(config.replace(test_size=num_images))
    rms = lambda a: float(np.sqrt(np.mean(np.square(a))))
    rows = []
    with jax.enable_x64(True):
        model = build_classifier(config, x_test.shape[1], jax.random.key(seed))
        for step in steps:
            error64, scale = _error_estimate(model, x_test, step, jnp.float64)
            error32, _ = _error_estimate(model, x_test, step, jnp.float32)
            rows.append(
                {
                    "step": step,
                    "E float64": rms(error64 / scale),
                    "E float32": rms(error32 / scale),
                    "rounding (absolute)": rms(error32 - error64),
                    "rounding (scaled)": rms((error32 - error64) / scale),
                }
            )
    return rows


if __name__ == "__main__":
    print(markdown_table(error_estimate_rounding()))
