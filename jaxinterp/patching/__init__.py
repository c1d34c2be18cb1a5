"""Patching: activation patching sweeps over every site kind, and edge-level patching on the residual-stream graph
(exact edge patching, path patching, EAP, EAP-IG). See `docs/patching.md`."""

from .activation import SITE_KINDS as SITE_KINDS
from .activation import activation_sweep as activation_sweep
from .edges import eap as eap
from .edges import edge_patching as edge_patching
from .edges import evaluate_mask as evaluate_mask
from .edges import masked_metric as masked_metric
from .edges import path_patching as path_patching
from .graph import ABLATIONS as ABLATIONS
from .graph import Graph as Graph
from .graph import ablation_values as ablation_values
from .graph import node_outputs as node_outputs
from .graph import run_graph as run_graph
