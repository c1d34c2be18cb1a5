"""Writing an experiment's results: one JSON file, a Markdown table and figures under `results/<slug>/`."""

import dataclasses
import importlib.metadata
import json
import os
import pathlib
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

RESULTS_ROOT_ENV = "JAXINTERP_RESULTS"


def results_dir(slug: str) -> pathlib.Path:
    """The folder `results/<slug>/` (under `$JAXINTERP_RESULTS` when set, else the working directory), created."""
    root = pathlib.Path(os.environ.get(RESULTS_ROOT_ENV, "results"))
    path = root / slug
    path.mkdir(parents=True, exist_ok=True)
    return path


def _versions() -> dict[str, str]:
    names = ["jax", "jaxlib", "equinox", "diffrax", "optax", "numpy"]
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """Render a list of dicts as a Markdown table (floats to 4 significant digits): the columns are every key of
    any row, in the order first seen; a row without a key leaves its cell empty."""
    if not rows:
        return ""
    keys = list(dict.fromkeys(key for row in rows for key in row))

    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(row.get(k, "")) for k in keys) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_results(
    slug: str,
    config: Any,
    metrics: Mapping[str, Any],
    *,
    started: float,
    table: Sequence[Mapping[str, Any]] = (),
    paper: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Write `results/<slug>/results.json` (and `results.md` when `table` is given).

    **Arguments:**

    - `slug`: the experiment's folder name.
    - `config`: the frozen dataclass the run used.
    - `metrics`: JSON-serialisable numbers the run produced.
    - `started`: `time.time()` at the start of the run; the wall time is measured from it.
    - `table`: rows for the Markdown table (ours beside the paper's).
    - `paper`: the paper's reported numbers, for the collector's replication table.

    **Returns:** the path of `results.json`.
    """
    out = results_dir(slug)
    record = {
        "slug": slug,
        "config": dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config),
        "metrics": dict(metrics),
        "paper": dict(paper or {}),
        "wall_time_s": time.time() - started,
        "versions": _versions(),
    }
    path = out / "results.json"
    path.write_text(json.dumps(record, indent=2, default=float))
    if table:
        (out / "results.md").write_text(markdown_table(table))
    return path


def write_benchmark(
    name: str, record: dict[str, Any], rows: Sequence[Mapping[str, Any]], *, started: float | None = None
) -> str:
    """Finish a benchmark's `record` and write it to `results/benchmarks/<name>.json`, with its summary `rows` as a
    Markdown table in `<name>.md`; print the table.

    The record gets the machine's one-minute load average at the end (in `record["machine"]`, when present) and,
    with `started` (`time.time()` at the start), `wall_time_s`. **Returns:** the table.
    """
    if isinstance(record.get("machine"), dict) and hasattr(os, "getloadavg"):
        record["machine"]["load_average_1min_end"] = os.getloadavg()[0]
    if started is not None:
        record["wall_time_s"] = time.time() - started
    out = results_dir("benchmarks")
    (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=float))
    table = markdown_table(rows)
    (out / f"{name}.md").write_text(table)
    print(table)
    return table
