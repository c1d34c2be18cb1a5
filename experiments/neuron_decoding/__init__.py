"""P39 (decoding neurons through the final projection) and P23 (SemanticLens component labels) on SmolLM2-135M and on
a small language model trained here; `python -m experiments.neuron_decoding [--quick]`."""
