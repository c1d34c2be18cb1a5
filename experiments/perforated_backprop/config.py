import dataclasses


@dataclasses.dataclass(frozen=True)
class PerforatedBackpropConfig:
    """Settings of the perforated-backpropagation replication (P29): test accuracy against parameter count for
    one-hidden-layer MLPs of several widths and for narrow MLPs that grow dendrite nodes.

    **Fields:**

    - `seed`: the one seed every initialisation and minibatch order derives from.
    - `datasets`: "mnist" and/or "fashion_mnist" (the full training splits; accuracy on the test splits).
    - `baseline_widths`: hidden widths of the ordinary MLPs.
    - `perforated_widths`: hidden widths of the MLPs that grow dendrites.
    - `rounds`: dendrite rounds after the initial training (each adds one dendrite node to every neuron, the
      output neurons included).
    - `neuron_steps`: optimiser steps of each neuron phase (the initial one and one after each round); the
      baselines train for `neuron_steps * (rounds + 1)` steps, as many task steps as the perforated networks get.
    - `dendrite_steps`: optimiser steps of each dendrite phase.
    - `batch_size`: examples per minibatch, in both kinds of phase.
    - `learning_rate`: Adam's step for the neurons (and the baselines).
    - `dendrite_learning_rate`: Adam's step for the dendrite nodes.
    """

    seed: int = 0
    datasets: tuple[str, ...] = ("mnist", "fashion_mnist")
    baseline_widths: tuple[int, ...] = (4, 8, 12, 16, 24, 32, 64)
    perforated_widths: tuple[int, ...] = (4, 8)
    rounds: int = 3
    neuron_steps: int = 2000
    dendrite_steps: int = 500
    batch_size: int = 128
    learning_rate: float = 3e-3
    dendrite_learning_rate: float = 1e-2

    @classmethod
    def quick(cls) -> "PerforatedBackpropConfig":
        """The `--quick` variant: MNIST only, three baseline widths, one perforated width with one dendrite round,
        short training."""
        return cls(
            datasets=("mnist",), baseline_widths=(4, 8, 16), perforated_widths=(4,), rounds=1, neuron_steps=600,
            dendrite_steps=200,
        )  # fmt: skip
