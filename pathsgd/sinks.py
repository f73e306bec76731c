"""Where per-epoch metrics go: ``metrics.csv`` always, W&B when ``logger=wandb``.

A sink takes whole rows (dicts keyed by :data:`COLUMNS`), one per epoch, row 0 being before training.
W&B is imported only by :class:`WandbSink`.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pathsgd.atomic import atomic_write

__all__ = ["COLUMNS", "CSVSink", "WandbSink", "read_metrics_csv"]

# The first seven are the runner's contract with the figure pipeline; the rest are extras after them.
# seconds: cumulative training time (evaluation excluded), 0 at row 0; the only timing column.
# batch_loss: mean mini-batch loss during the epoch (with dropout, before each step); empty at row 0.
COLUMNS = (
    "epoch", "train_loss", "train_error", "val_error", "test_error", "path_norm", "seconds",
    "batch_loss", "val_loss", "test_loss",
)


class CSVSink:
    """``metrics.csv``: rewritten whole and atomically after each epoch, so it always matches the checkpoint.
    A float is written as ``str`` gives it (its shortest exact form, ``nan``/``inf`` as such), None as empty."""

    def __init__(self, path: str | os.PathLike, columns: Sequence[str] = COLUMNS):
        self.path = Path(path)
        self.columns = tuple(columns)

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                out = csv.writer(f, lineterminator="\n")
                out.writerow(self.columns)
                out.writerows([row.get(c) for c in self.columns] for row in rows)
        atomic_write(self.path, write)


def read_metrics_csv(path: str | os.PathLike) -> list[dict[str, float | int | None]]:
    """Rows of a ``metrics.csv`` as dicts (empty cells -> None; ``epoch`` as int), without pandas."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{key: None if cell == "" else (int(cell) if key == "epoch" else float(cell)) for key, cell in row.items()}
                for row in csv.DictReader(f)]


ONLINE_TIMEOUT = 20.0  # seconds W&B may take to reach its server before the run logs offline instead


class WandbSink:
    """One W&B run: the resolved config, then ``log(row)`` per epoch with ``step=epoch``.

    ``mode`` is ``offline`` (default; ``wandb sync`` later), ``online`` or ``disabled``. ``dir`` is where
    W&B writes (``<dir>/wandb/...``). ``run_id`` resumes the same W&B run after ``resume=true``.
    Always call :meth:`finish` (the runner does so in a ``finally``).
    """

    def __init__(self, *, project: str, name: str, group: str | None, config: Mapping[str, Any],
                 dir: str | os.PathLike, mode: str = "offline", entity: str | None = None, tags: Sequence[str] = (),
                 job_type: str | None = None, run_id: str | None = None):
        import wandb

        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode={mode!r} is unknown: choose one of offline, online, disabled")
        Path(dir).mkdir(parents=True, exist_ok=True)
        self._wandb = wandb
        kwargs = dict(project=project, entity=entity, name=name, group=group, job_type=job_type, tags=list(tags),
                      config=dict(config), dir=str(dir), id=run_id, resume="allow" if run_id else None)
        try:
            settings = wandb.Settings(init_timeout=ONLINE_TIMEOUT) if mode == "online" else None
            self.run = wandb.init(mode=mode, settings=settings, **kwargs)
        except Exception as err:  # noqa: BLE001 - no network, no login: the run itself must not fail for it
            if mode != "online":
                raise
            warnings.warn(f"W&B online failed ({type(err).__name__}: {err}); logging offline instead "
                          f"(`wandb sync {dir}/wandb/offline-run-*` later)", stacklevel=2)
            self.run = wandb.init(mode="offline", **kwargs)
        self.run_id = self.run.id
        self.run.define_metric("*", step_metric="epoch")  # the charts' x-axis is the epoch, not W&B's _step

    def log(self, row: Mapping[str, Any]) -> None:
        values = {k: v for k, v in row.items() if v is not None}
        # W&B drops NaN/inf badly in some versions' charts; keep them, they mark a divergence.
        self.run.log(values, step=int(row["epoch"]))

    def set_summary(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)
            self.run.summary[key] = value

    def save(self, *paths: str | os.PathLike) -> None:
        """Copy files (the run's metrics.csv, summary.json, a study's figures) into the W&B run, so that a synced
        run is complete without the run directory."""
        for path in map(Path, paths):
            if path.is_file():  # copied into the run's files/ first: W&B's save would symlink, with a warning each
                copy = shutil.copy2(path, Path(self.run.dir) / path.name)
                self.run.save(str(copy), base_path=self.run.dir, policy="now")

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
