"""Circuits: the `Circuit` value, discovery (CD-T, ACDC, ranked edge scores) and the field's circuit metrics
(ROC AUC against a known circuit, MIB's faithfulness, CPR and CMD). See `docs/circuits.md`."""

from .circuit import Circuit as Circuit
from .circuit import edge_key as edge_key
from .circuit import parse_edge_key as parse_edge_key
from .discovery import Node as Node
from .discovery import ablated_nodes_metric as ablated_nodes_metric
from .discovery import acdc as acdc
from .discovery import cdt_circuit as cdt_circuit
from .discovery import edge_circuit as edge_circuit
from .discovery import kl_to_model as kl_to_model
from .discovery import node_ablation as node_ablation
from .discovery import path_patching_circuit as path_patching_circuit
from .discovery import site_means as site_means
from .discovery import transformer_nodes as transformer_nodes
from .metrics import MIB_EDGE_FRACTIONS as MIB_EDGE_FRACTIONS
from .metrics import cmd as cmd
from .metrics import cpr as cpr
from .metrics import faithfulness as faithfulness
from .metrics import faithfulness_curve as faithfulness_curve
from .metrics import random_baseline as random_baseline
from .metrics import rank_correlation as rank_correlation
from .metrics import roc_auc as roc_auc
from .render import render as render
