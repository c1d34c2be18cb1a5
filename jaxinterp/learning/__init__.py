"""Learning rules as composable training procedures: each is an optax gradient transformation or a training step
with a documented signature, written for pure models so it applies to any model of the zoo.
"""

from .synthetic_gradients import bptt_loss as bptt_loss
from .synthetic_gradients import run_sequence as run_sequence
from .synthetic_gradients import synthetic_gradient_loss as synthetic_gradient_loss
from .synthetic_gradients import truncated_bptt_loss as truncated_bptt_loss
