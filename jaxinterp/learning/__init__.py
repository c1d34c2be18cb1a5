"""Learning rules as composable training procedures: each is an optax gradient transformation or a training step
with a documented signature, written for pure models so it applies to any model of the zoo.
"""

from .counter_current import counter_current_activations as counter_current_activations
from .counter_current import counter_current_loss as counter_current_loss
from .counter_current import counter_current_losses as counter_current_losses
from .counter_current import mean_squared_pair_loss as mean_squared_pair_loss
from .counter_current import prototype_alignment_loss as prototype_alignment_loss
from .fast_slow import anchor_penalty as anchor_penalty
from .fast_slow import consolidate as consolidate
from .fast_slow import diagonal_fisher as diagonal_fisher
from .fast_slow import fast_adapt as fast_adapt
from .fast_slow import fast_weight_loss as fast_weight_loss
from .fast_slow import learn_task as learn_task
from .fast_slow import zero_importance as zero_importance
from .feedback_alignment import FeedbackAlignmentLinear as FeedbackAlignmentLinear
from .feedback_alignment import feedback_alignment as feedback_alignment
from .feedback_alignment import feedback_alignment_dense as feedback_alignment_dense
from .perforated import add_dendrites as add_dendrites
from .perforated import dendrite_correlation as dendrite_correlation
from .perforated import dendrite_objective as dendrite_objective
from .perforated import is_perforated_layer as is_perforated_layer
from .perforated import neuron_errors as neuron_errors
from .perforated import perforated_layers as perforated_layers
from .perforated import perforated_training as perforated_training
from .perforated import phase_labels as phase_labels
from .perforated import phase_optimiser as phase_optimiser
from .synthetic_gradients import boundary_gradients as boundary_gradients
from .synthetic_gradients import bptt_loss as bptt_loss
from .synthetic_gradients import run_sequence as run_sequence
from .synthetic_gradients import synthetic_gradient_loss as synthetic_gradient_loss
from .synthetic_gradients import synthetic_gradient_quality as synthetic_gradient_quality
from .synthetic_gradients import truncated_bptt_loss as truncated_bptt_loss
