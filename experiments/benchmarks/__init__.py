"""Speed benchmarks: each module times jaxinterp against its anchor side by side in one run.

Run one with `python -m experiments.benchmarks.<name>`; each writes `results/benchmarks/<name>.json`.
"""
