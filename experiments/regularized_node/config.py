"""Configuration of the regularised neural ODE experiment (P32, MNIST)."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: every variant (unregularised, error, stiffness, both) trained with seeds `seed .. seed+num_seeds-1`.

    **Fields:**

    - `seed`, `num_seeds`: the first seed and how many seeds per variant.
    - `dataset`: `"mnist"` (50k/10k/10k) or `"digits"` (sklearn 8x8, split 1,297 / 500).
    - `train_size`, `test_size`: how many training / test images to use (the first ones of each split).
    - `hidden`, `width`, `depth`: the ODE state size and the vector field MLP's width and hidden layers.
    - `rtol`, `atol`: the Tsit5 solve's PID tolerances, in training and at prediction.
    - `float64`: train and predict in float64. At `rtol = atol = 1e-6` the float32 rounding of the embedded error
        estimate is about as large as what the error regulariser would remove, so in float32 it cannot lower the
        error (and with it the step count) past that noise.
    - `batch_size`, `num_steps`, `learning_rate`: Adam training.
    - `error_weight`, `stiffness_weight`: the weights of `R_E` and `R_S` when a variant uses them.
    - `weight_decay_steps`: the regularisation weights decay linearly to a tenth of their value over these steps.
    - `eval_batch_size`: the test batch that one prediction solve takes as one state.
    """

    seed: int = 0
    num_seeds: int = 3
    dataset: str = "mnist"
    train_size: int = 20000
    test_size: int = 10000
    hidden: int = 100
    width: int = 100
    depth: int = 1
    rtol: float = 1e-6
    atol: float = 1e-6
    float64: bool = True
    batch_size: int = 256
    num_steps: int = 800
    learning_rate: float = 1e-3
    error_weight: float = 0.3
    stiffness_weight: float = 0.3
    weight_decay_steps: int = 800
    eval_batch_size: int = 1000

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def quick() -> Config:
    """sklearn digits, small and short: what the tests smoke-run."""
    return Config(
        num_seeds=2,
        dataset="digits",
        train_size=1297,
        test_size=500,
        hidden=32,
        width=32,
        rtol=1e-5,
        atol=1e-5,
        batch_size=128,
        num_steps=100,
        learning_rate=3e-3,
        weight_decay_steps=100,
        eval_batch_size=250,
    )
