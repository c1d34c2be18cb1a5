"""Neurons and other units of a model: decoded through the final projection (P39, `decoding`), their
top-activating contexts (`contexts`) and SemanticLens component labels in a foundation model's embedding space
(P23, `labels`). See `docs/neurons.md`."""

from .contexts import TopContexts as TopContexts
from .contexts import context_window as context_window
from .contexts import top_contexts as top_contexts
from .decoding import DEFAULT_MEMORY_BYTES as DEFAULT_MEMORY_BYTES
from .decoding import SCORES as SCORES
from .decoding import WEIGHTS as WEIGHTS
from .decoding import ClampEffect as ClampEffect
from .decoding import Decoded as Decoded
from .decoding import NeuronHits as NeuronHits
from .decoding import Readout as Readout
from .decoding import chunk_size_for as chunk_size_for
from .decoding import clamp as clamp
from .decoding import clamp_effect as clamp_effect
from .decoding import decode_directions as decode_directions
from .decoding import decode_neurons as decode_neurons
from .decoding import neuron_directions as neuron_directions
from .decoding import neuron_logits as neuron_logits
from .decoding import readout as readout
from .decoding import search_token as search_token
from .decoding import top_neurons_for_token as top_neurons_for_token
from .labels import ComponentLabels as ComponentLabels
from .labels import clarity as clarity
from .labels import concept_database as concept_database
from .labels import embed_queries as embed_queries
from .labels import label_components as label_components
from .labels import polysemanticity as polysemanticity
from .labels import redundancy as redundancy
from .labels import search_components as search_components
from .labels import similarity as similarity
