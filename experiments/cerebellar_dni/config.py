import dataclasses


@dataclasses.dataclass(frozen=True)
class CerebellarDNIConfig:
    """Settings of the cortico-cerebellar replication (P2): a cortical LSTM trained by full BPTT, by truncated BPTT,
    and by truncated BPTT with cerebellar synthetic gradients (ccRNN), on line drawing, digit drawing and
    sequential MNIST.

    **Fields:**

    - `seed`: the first seed; run `i` of a task uses `seed + i` for its weights and batches.
    - `seeds`: runs per task and method.
    - `tasks`: any of "line_drawing", "digit_drawing", "sequential_mnist".
    - `methods`: any of "bptt" (full), "truncated" (truncated BPTT), "ccrnn" (truncated BPTT with the cerebellum).
    - `hidden_size`: LSTM units of the cortical network.
    - `cerebellum_hidden`: widths of the cerebellum's hidden layers.
    - `batch_size`, `learning_rate`, `clip_norm`: Adam on minibatches for the cortex, its gradient clipped to this
      global norm (the same for every method).
    - `cerebellum_learning_rate`: Adam's learning rate for the cerebellum (its gradient clipped separately, to the
      same norm), so that the cortex's optimiser is the same for all three methods.
    - `line_steps`, `digit_steps`, `mnist_steps`: optimiser steps per task.
    - `line_window`, `digit_window`, `mnist_window`: the truncation window in steps.
    - `scale`, `discount`: the synthetic gradient's factor at the cortex and in the cerebellum's bootstrapped target.
    - `line_directions`, `line_length`, `line_radius`: the line-drawing task: one cue per direction, steps per
      line, the end point's distance from the origin.
    - `template_examples`: training images of each digit averaged into the image its pen path is traced from.
    - `train_size`, `eval_size`: MNIST training images used, and held-out images scored at the end.
    - `eval_split`: where the held-out images come from: "test", or "valid" for choosing settings.
    - `diagnostic_every`, `diagnostic_size`: every this many steps of ccRNN (and after the last), the cerebellum's
      predictions at the window boundaries are compared with the exact future gradient (full BPTT) on this many
      fixed training sequences.
    - `curve_smoothing`: steps of the moving average in the learning-curve figure.
    """

    seed: int = 0
    seeds: int = 2
    tasks: tuple[str, ...] = ("line_drawing", "digit_drawing", "sequential_mnist")
    methods: tuple[str, ...] = ("bptt", "truncated", "ccrnn")
    hidden_size: int = 50
    cerebellum_hidden: tuple[int, ...] = (256,)
    batch_size: int = 50
    learning_rate: float = 3e-3
    cerebellum_learning_rate: float = 3e-3
    clip_norm: float = 1.0
    line_steps: int = 400
    digit_steps: int = 300
    mnist_steps: int = 800
    line_window: int = 2
    digit_window: int = 4
    mnist_window: int = 4
    scale: float = 0.1
    discount: float = 0.1
    line_directions: int = 6
    line_length: int = 10
    line_radius: float = 1.0
    template_examples: int = 200
    train_size: int = 20_000
    eval_size: int = 2_000
    eval_split: str = "test"
    diagnostic_every: int = 100
    diagnostic_size: int = 200
    curve_smoothing: int = 25

    @classmethod
    def quick(cls) -> "CerebellarDNIConfig":
        """The `--quick` variant: one seed, shorter training, about a minute."""
        return cls(seeds=1, line_steps=200, digit_steps=150, mnist_steps=150, train_size=5_000, eval_size=500)
