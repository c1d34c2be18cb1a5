"""Replications of the papers' headline results, one folder per paper.

Each `experiments/<slug>/` has `config.py` (a frozen dataclass with a seed), `run.py` with `main(config)`, and a
README giving the paper's claim beside ours. `python -m experiments.<slug> [--quick]` runs it and writes
`results/<slug>/results.json` through :func:`experiments.record.write_results`.
"""
