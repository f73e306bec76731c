"""Run directories -> one tidy CSV: ``python -m pathsgd.collect DIR... --out FILE``.

Any run directories (single runs of ``python -m pathsgd.train``, a ``--multirun``'s, a figure study's): each
directory below DIR holding ``summary.json`` or ``metrics.csv`` is a run, and its ``metrics.csv`` becomes rows of
the table, with the run's coordinates from its saved config beside every epoch. The figure pipeline's
aggregation reads runs through :func:`read_run` too, so the notebook reads either table the same way.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from pathsgd.sinks import COLUMNS as METRICS_CSV_COLUMNS

# The runner's per-epoch columns (metrics.csv's first seven, the runner's contract with this table).
METRIC_COLUMNS = list(METRICS_CSV_COLUMNS[:7])
# ``run``: the run's name (its directory's), which tells apart runs equal in the other coordinates (width, ...).
RUN_COLUMNS = ["dataset", "optimizer", "init", "dropout", "alpha", "phase", "seed", "width", *METRIC_COLUMNS, "status",
               "run"]
ORDER = ["phase", "dataset", "optimizer", "init", "dropout", "alpha", "seed", "epoch"]


def read_summary(path: Path) -> dict:
    """``summary.json`` of a run directory; {} when it is missing or unreadable (a run killed mid-write)."""
    try:
        return json.loads((Path(path) / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _width(model: Mapping[str, Any]) -> int | str:
    if "channels" in model:  # the conv net (model=convnet; model.arch=convnet in records made before the group)
        return f"{model.get('channels')} channels"
    hidden = model.get("hidden")
    if isinstance(hidden, (list, tuple)) and hidden:
        return int(hidden[0]) if len(set(hidden)) == 1 else "x".join(str(h) for h in hidden)
    return hidden if hidden is not None else ""


def number(x: Any) -> Any:
    """3 for 3.0 (alphas and dropouts as the runner names them: ``alpha=3``), anything else as it is."""
    try:
        real = float(x)
    except (TypeError, ValueError):
        return x
    return int(real) if real.is_integer() else real


def read_run(path: Path, coords: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """One run's tidy rows: its metrics.csv with the run's coordinates and status beside every epoch.

    ``coords`` (dataset, optimizer, init, dropout, alpha, phase, seed) default to the run's saved config. A run
    without ``metrics.csv`` gives one row with no epoch and status ``failed``; a run with metrics but no
    readable ``summary.json`` (killed mid-way) is ``incomplete``; a finished run whose ``metrics.csv`` does not
    hold every epoch that ``summary.json`` reports is ``inconsistent``, with a warning naming the file.
    """
    path = Path(path)
    info = read_summary(path)
    config = info.get("config", {}) or {}
    status = info.get("status") or ("incomplete" if (path / "metrics.csv").exists() else "failed")
    metrics = pd.read_csv(path / "metrics.csv") if (path / "metrics.csv").exists() else pd.DataFrame({"epoch": [math.nan]})
    metrics = metrics.reindex(columns=METRIC_COLUMNS)  # a missing column is all NaN
    done = info.get("epochs_completed")
    if status in ("completed", "diverged") and (not isinstance(done, int) or metrics["epoch"].tolist() != [*range(done + 1)]):
        warnings.warn(f"{path / 'metrics.csv'} does not hold epochs 0..{info.get('epochs_completed')} that "
                      f"{path / 'summary.json'} reports as {status}: the run counts as inconsistent (resume=true "
                      "rebuilds metrics.csv from the checkpoint)", stacklevel=2)
        status = "inconsistent"
    if coords is None:
        data = config.get("dataset", {})  # a generated stand-in keeps its label (dataset.synthetic.label)
        coords = {**{k: config.get(k, {}).get("name") for k in ("optimizer", "init")},
                  "dataset": (data.get("synthetic") or {}).get("label") or data.get("name"),
                  "dropout": config.get("model", {}).get("dropout"), "alpha": number(config.get("alpha")),
                  "phase": config.get("phase"), "seed": config.get("seed")}
    row = dict(coords, dropout=float(coords["dropout"]) if coords.get("dropout") is not None else math.nan,
               width=_width(config.get("model", {})), status=status,
               run=info.get("run_name") or (path.name if path.is_dir() else ""))
    return metrics.assign(**row)[RUN_COLUMNS]


def tidy(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = list(frames)
    if not frames:
        return pd.DataFrame(columns=RUN_COLUMNS)
    return pd.concat(frames, ignore_index=True).sort_values(ORDER, kind="stable", ignore_index=True)


def run_directories(roots: Iterable[str | Path]) -> list[Path]:
    """Every directory at or below ``roots`` that holds a run's summary.json or metrics.csv."""
    found = set()
    for root in roots:
        for name in ("summary.json", "metrics.csv"):
            found.update(p.parent for p in Path(root).rglob(name) if ".submitit" not in p.parts)
    return sorted(found)


def collect(roots: Iterable[str | Path]) -> pd.DataFrame:
    return tidy(read_run(path) for path in run_directories(roots))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pathsgd.collect", description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path, help="directories searched recursively for runs")
    ap.add_argument("--out", type=Path, required=True, help="the tidy CSV to write")
    args = ap.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.is_dir()]
    if missing:
        ap.error(f"not a directory: {', '.join(missing)}")
    table = collect(args.dirs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False)
    runs = table.groupby(["dataset", "run"], dropna=False).ngroups
    print(f"wrote {args.out}: {runs} runs, {len(table)} rows")


if __name__ == "__main__":
    main()
