"""The figure pipeline: sweep -> select -> final -> aggregate -> plot, for one experiment file.

    python -m pathsgd.reproduce experiments/fig2.yaml            # everything, resuming what is done
    python -m pathsgd.reproduce experiments/fig2.yaml --steps aggregate plot
    python -m pathsgd.reproduce experiments/fig2.yaml --launcher slurm \
        --override hydra.launcher.partition=gpu

1. **sweep**: for every dataset, one ``python -m pathsgd.train --multirun`` process sweeps optimizer x
   dropout x alpha x init x seed on the validation split (the basic launcher runs the jobs one after another
   in that process, so start-up is paid once per dataset; the joblib launcher runs several at a time).
2. **select**: :func:`pathsgd.selection.select_alphas` on the sweep's tidy rows -> ``selection.csv``.
3. **final**: every (dataset, optimizer, init, dropout) cell with its chosen alpha on the whole training set;
   one multirun per (dataset, dropout, alpha). A cell whose alphas all diverged gets no final run.
4. **aggregate**: every planned run -> ``<results>/<name>/runs.csv`` (one row per run and epoch).
5. **plot**: ``scripts/plot_figures.py`` draws ``<results>/figures/<name>.png/.pdf`` from the CSVs alone.

Run directories live under ``<raw>/<name>/<phase>/<dataset>/`` (git-ignored), each named by the runner
(:func:`pathsgd.config.run_name`). The pipeline learns which directory holds which planned run from the runs
themselves: the overrides each job recorded (Hydra's ``.hydra/overrides.yaml``), less the keys a resume may change
(epochs, ...). A study whose overrides change (width, batch size, ...) trains new runs instead of reusing the old
ones. Re-running skips multiruns whose runs all finished (completed or diverged) with the asked number of epochs and
passes ``resume=true`` to the others, so an interrupted pipeline continues.

The experiment file (YAML, with ``base:`` files merged under it: :func:`load_experiment`) is documented in
``experiments/README.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pathsgd.collect import number, read_run, read_summary, tidy
from pathsgd.config import RESUME_MAY_CHANGE, WANDB_MODES, in_groups
from pathsgd.rundir import source_commit
from pathsgd.selection import DEFAULT_TOLERANCE, chosen_alpha, select_alphas

REPO = Path(__file__).resolve().parents[1]
STEPS = ("sweep", "select", "final", "aggregate", "plot")
FINISHED = ("completed", "diverged")
CLUSTER_LAUNCHERS = ("slurm",)  # configs/hydra/launcher/: their jobs run on other machines

DEFAULTS: dict[str, Any] = {
    "plot": "curves", "results": "results", "raw": "outputs", "datasets": {},
    "optimizers": ["pathsgd", "sgd", "adagrad"], "inits": ["balanced", "unbalanced"], "dropouts": [0.0], "seeds": [0],
    "overrides": [], "launcher": None, "launcher_overrides": [], "toy": False,
    "env": {},  # environment variables for the runner processes (e.g. OMP_NUM_THREADS for tiny CPU runs)
    "selection": {"tolerance": DEFAULT_TOLERANCE, "per_init": False},
    "sweep": {"alphas": list(range(11)), "epochs": 20, "inits": None, "seeds": None, "overrides": ["data.validation=10000"],
              "per_init_check": None},
    "final": {"epochs": 100, "overrides": ["data.validation=0"]},
}


# --------------------------------------------------------------------------------------------------------
# The experiment file


MERGED_KEYS = ("selection", "sweep", "final")  # merged key by key with a base; every other key is replaced


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if key in MERGED_KEYS and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _load_raw(path: Path) -> dict:
    spec = yaml.safe_load(path.read_text()) or {}
    bases = spec.pop("base", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        merged = _merge(merged, _load_raw(path.parent / base))
    return _merge(merged, spec)


def load_experiment(path: str | os.PathLike) -> dict:
    """The experiment as a dict: ``base:`` files (one or a list, later ones winning) merged under this one,
    defaults filled, ``stand_ins`` applied (they replace the runner overrides of the datasets with those
    labels, so a smoke study keeps its base's datasets but runs them on generated data); validated."""
    path = Path(path)
    exp = _merge(DEFAULTS, _load_raw(path))
    stand_ins = exp.pop("stand_ins", None) or {}
    exp["datasets"] = {label: list(stand_ins.get(label, ovr)) for label, ovr in exp["datasets"].items()}
    exp["stand_in"] = sorted(set(stand_ins) & set(exp["datasets"]))  # labels whose data are generated stand-ins
    exp["file"] = str(path)
    _validate(exp)
    return exp


def _validate(exp: dict) -> None:
    known = {"": {*DEFAULTS, "name", "title", "stand_in", "file"}, **{k: set(DEFAULTS[k]) for k in MERGED_KEYS}}
    for part, keys in known.items():
        node = exp[part] if part else exp
        unknown = sorted(set(node) - keys) if isinstance(node, dict) else []
        if unknown:  # a misspelt key would otherwise be ignored and its default used
            raise ValueError(f"{exp['file']}: unknown key {'.'.join(filter(None, (part, unknown[0])))!r}; the keys "
                             f"{'of ' + part if part else 'of a study'} are {', '.join(sorted(keys - {'stand_in', 'file'}))}")
    if not exp.get("name"):
        raise ValueError(f"{exp['file']}: the experiment needs a name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(exp["name"])):  # it names folders and a runner override
        raise ValueError(f"{exp['file']}: name={exp['name']!r} must be letters, digits, '_', '.' or '-' (ASCII)")
    if not exp["datasets"]:
        raise ValueError(f"{exp['file']}: no datasets")
    for label, overrides in exp["datasets"].items():
        if not isinstance(overrides, list):
            raise ValueError(f"{exp['file']}: datasets.{label} must be a list of runner overrides")
    if exp["plot"] not in ("curves", "fig1", "family"):
        raise ValueError(f"{exp['file']}: plot={exp['plot']!r}: choose curves, fig1 or family")
    for key in ("optimizers", "inits", "dropouts", "seeds"):
        if not exp[key]:
            raise ValueError(f"{exp['file']}: {key} is empty")
    if not exp["sweep"]["alphas"]:
        raise ValueError(f"{exp['file']}: sweep.alphas is empty")
    if "batched" in exp["sweep"]:
        raise ValueError(f"{exp['file']}: sweep.batched is gone: run several runs at a time with the joblib launcher "
                         "(launcher: joblib, launcher_overrides: [hydra.launcher.n_jobs=2])")


def results_dir(exp: dict) -> Path:
    return Path(exp["results"]) / exp["name"]


def figure_path(exp: dict) -> Path:
    return Path(exp["results"]) / "figures" / exp["name"]


def raw_dir(exp: dict) -> Path:
    return Path(exp["raw"]) / exp["name"]


def sweep_inits(exp: dict) -> list[str]:
    """Sweep the balanced init only (the paper tunes per dataset), unless each init is tuned separately."""
    if exp["sweep"].get("inits"):
        return list(exp["sweep"]["inits"])
    if exp["selection"].get("per_init"):
        return list(exp["inits"])
    return ["balanced"] if "balanced" in exp["inits"] else list(exp["inits"][:1])


# --------------------------------------------------------------------------------------------------------
# Planning runs


@dataclass(frozen=True)
class Run:
    phase: str
    dataset: str
    optimizer: str
    init: str
    dropout: float
    alpha: int | float
    seed: int

    def overrides(self, exp: dict) -> list[str]:
        """The runner overrides of this run, as its multirun passes them (Hydra's own keys aside)."""
        phase = exp[self.phase]
        every = [*exp["datasets"][self.dataset], *exp["overrides"], *phase.get("overrides", []),
                 *exp.get("extra_overrides", [])]
        own = [f"optimizer={self.optimizer}", f"model.dropout={float(self.dropout)}", f"alpha={self.alpha}",
               f"init={self.init}", f"seed={self.seed}", f"phase={self.phase}"]
        return [o for o in every if not o.lstrip("+~").startswith("hydra")] + own

    def identity(self, exp: dict) -> frozenset[str]:
        return _identity(self.overrides(exp))


def _identity(overrides: Iterable[str]) -> frozenset[str]:
    """What tells a run apart: its overrides, less the keys that a resume may change (epochs, phase, ...)."""
    return frozenset(o for o in overrides if not in_groups(o.split("=", 1)[0].lstrip("+~"), RESUME_MAY_CHANGE))


def run_dirs(exp: dict, runs: Iterable[Run]) -> dict[Run, Path | None]:
    """Each planned run's directory (None: never started), learned from the overrides every job recorded in its
    ``.hydra/overrides.yaml``. Of two directories of one run (the runner's naming changed in between), the
    finished one wins, else the newer."""
    recorded: dict[tuple[str, str], dict[frozenset[str], Path]] = {}
    out = {}
    for run in runs:
        if (run.phase, run.dataset) not in recorded:
            found: dict[frozenset[str], Path] = {}
            for file in sorted((raw_dir(exp) / run.phase / run.dataset).glob("*/.hydra/overrides.yaml")):
                key, path = _identity(yaml.safe_load(file.read_text()) or []), file.parent.parent
                if key not in found or _rank(path) > _rank(found[key]):
                    found[key] = path
            recorded[(run.phase, run.dataset)] = found
        out[run] = recorded[(run.phase, run.dataset)].get(run.identity(exp))
    return out


def _rank(path: Path) -> tuple[bool, float]:
    summary = path / "summary.json"
    return read_summary(path).get("status") in FINISHED, summary.stat().st_mtime if summary.exists() else 0.0


@dataclass
class Multirun:
    """One ``--multirun`` process: a Cartesian product of sweeps over one dataset."""

    phase: str
    dataset: str
    optimizers: list[str]
    inits: list[str]
    dropouts: list[float]
    alphas: list[int | float]
    seeds: list[int]
    epochs: int

    def runs(self) -> list[Run]:
        return [Run(self.phase, self.dataset, o, i, float(d), a, int(s)) for o in self.optimizers
                for d in self.dropouts for a in self.alphas for i in self.inits for s in self.seeds]

    def command(self, exp: dict, python: str, launcher: str | None, extra: Sequence[str]) -> list[str]:
        def sweep(key: str, values: Iterable) -> str:
            return f"{key}=" + ",".join(str(v) for v in values)

        phase = exp[self.phase]
        out_dir = (raw_dir(exp) / self.phase / self.dataset).as_posix()
        cmd = [python, "-m", "pathsgd.train", "--multirun", *exp["datasets"][self.dataset], *exp["overrides"],
               *phase.get("overrides", [])]
        cmd += [sweep("optimizer", self.optimizers), sweep("model.dropout", [float(d) for d in self.dropouts]),
                sweep("alpha", self.alphas),
                sweep("init", self.inits), sweep("seed", self.seeds), f"epochs={self.epochs}", f"phase={self.phase}",
                f"study={exp['name']}",  # W&B groups a study's runs (logger=wandb); not part of a run's name
                "resume=true", f"hydra.sweep.dir={out_dir}", "hydra.sweep.subdir=${pathsgd_run:}"]  # the runner names its directory
        launcher = launcher or exp.get("launcher")
        if launcher:
            cmd.append(f"hydra/launcher={launcher}")
            cmd += list(exp.get("launcher_overrides", []))
        return cmd + list(extra)


def plan_sweep(exp: dict) -> list[Multirun]:
    seeds = [int(s) for s in exp["sweep"].get("seeds") or exp["seeds"]]  # the sweep may use fewer seeds
    dropouts, epochs = [float(d) for d in exp["dropouts"]], int(exp["sweep"]["epochs"])
    plan = [Multirun("sweep", dataset, list(exp["optimizers"]), sweep_inits(exp), dropouts,
                     [number(a) for a in exp["sweep"]["alphas"]], seeds, epochs) for dataset in exp["datasets"]]
    check, other_inits = per_init_check(exp)
    if check:  # the other inits of these optimizers, on their own grid: a selection of their own (not used by the finals)
        plan += [Multirun("sweep", dataset, check["optimizers"], other_inits, dropouts,
                          [number(a) for a in check["alphas"]], seeds, epochs) for dataset in exp["datasets"]]
    return plan


def per_init_check(exp: dict) -> tuple[dict | None, list[str]]:
    """``sweep.per_init_check`` ({optimizers, alphas}: these optimizers also swept on the inits that the main
    sweep leaves out, and tuned on each, for the report's per-init row of C1) and those inits; (None, []) if unset."""
    check = exp["sweep"].get("per_init_check")
    other = [i for i in exp["inits"] if i not in sweep_inits(exp)]
    if not check or not other:
        return None, []
    return {"optimizers": [o for o in check["optimizers"] if o in exp["optimizers"]],
            "alphas": list(check.get("alphas") or exp["sweep"]["alphas"])}, other


def plan_final(exp: dict, selection: pd.DataFrame) -> tuple[list[Multirun], list[dict]]:
    """Final multiruns, one per (dataset, dropout, alpha, init set); and the cells left without a run."""
    groups: dict[tuple, list[str]] = {}
    skipped = []
    for dataset in exp["datasets"]:
        for dropout in exp["dropouts"]:
            for optimizer in exp["optimizers"]:
                by_alpha: dict[Any, list[str]] = {}
                for init in exp["inits"]:
                    alpha = chosen_alpha(selection, dataset, optimizer, dropout, init)
                    if alpha is None:
                        skipped.append(dict(dataset=dataset, optimizer=optimizer, init=init, dropout=dropout))
                    else:
                        by_alpha.setdefault(number(alpha), []).append(init)
                for alpha, inits in by_alpha.items():
                    groups.setdefault((dataset, float(dropout), alpha, tuple(inits)), []).append(optimizer)
    multiruns = [Multirun("final", dataset, optimizers, list(inits), [dropout], [alpha], [int(s) for s in exp["seeds"]],
                          int(exp["final"]["epochs"]))
                 for (dataset, dropout, alpha, inits), optimizers in groups.items()]
    return multiruns, skipped


def check_launch(exp: dict, launcher: str | None) -> None:
    """Before the first run: a cluster launcher needs Slurm's tools here, and then each job checks its own node's
    device (the driver may run on a login node without a GPU); any other launcher trains here (:func:`check_device`)."""
    if launcher not in CLUSTER_LAUNCHERS:
        return check_device(exp)
    missing = [tool for tool in ("srun", "sbatch") if shutil.which(tool) is None]
    if missing:
        raise PipelineError(f"{exp['name']}: the {launcher} launcher submits through Slurm, and {' and '.join(missing)} "
                            f"{'is' if len(missing) == 1 else 'are'} not on PATH here: run the driver on the cluster's "
                            "login node (--launcher local tries the jobs on this machine)")


def check_device(exp: dict) -> None:
    """A study that asks for CUDA (``device=cuda`` among its overrides) refuses to start where there is none,
    rather than training the paper's 2 x 4000 network on a CPU for days; ``device=cpu`` (e.g. OVERRIDES) says so."""
    for phase in ("sweep", "final"):
        for dataset in exp["datasets"]:
            devices = [o.split("=", 1)[1] for o in Run(phase, dataset, "sgd", "balanced", 0.0, 0, 0).overrides(exp)
                       if o.startswith("device=")]
            if devices and devices[-1].startswith("cuda"):
                import torch

                if not torch.cuda.is_available():
                    raise PipelineError(
                        f"{exp['name']} asks for device={devices[-1]} and CUDA is not available here: run it on a "
                        "GPU machine, or add the override device=cpu (make ... OVERRIDES=device=cpu) to train on the "
                        "CPU (the paper's 2 x 4000 network: days)")


def run_finished(path: Path | None, epochs: int) -> bool:
    """Finished (completed with ``epochs``, or diverged) and its records whole: ``metrics.csv`` holds every epoch
    that ``summary.json`` reports. Anything else is run again with resume=true, which rebuilds the records from
    the checkpoint. (A run of another configuration has another directory: see pathsgd.config.run_name.)"""
    if path is None:
        return False
    info = read_summary(path)
    done = info.get("epochs_completed")
    if info.get("status") not in FINISHED or done is None:
        return False
    try:
        rows = len((path / "metrics.csv").read_text().splitlines()) - 1  # the header
    except OSError:
        return False
    return rows == int(done) + 1 and (info["status"] == "diverged" or int(done) >= epochs)


POLL_SECONDS = 10.0  # how often the driver looks for newly finished runs while a multirun trains


def say(exp: dict, text: str, error: bool = False) -> None:
    """A line of the pipeline's own, prefixed with the study's name (two studies may share one log)."""
    print(f"[{exp['name']}] {text}", file=sys.stderr if error else sys.stdout, flush=True)


class Progress:
    """A phase's progress, said whenever runs finish: runs done of all, time elapsed, and the time left at the pace
    of the runs finished since this driver started."""

    def __init__(self, exp: dict, multiruns: Sequence[Multirun]) -> None:
        self.exp, self.t0 = exp, time.perf_counter()
        self.runs = {run: mr.epochs for mr in multiruns for run in mr.runs()}
        self.phase = "/".join(sorted({mr.phase for mr in multiruns}))
        self.first = self.last = self.done()

    def done(self) -> int:
        dirs = run_dirs(self.exp, self.runs)
        return sum(run_finished(dirs[run], epochs) for run, epochs in self.runs.items())

    def report(self) -> None:
        done = self.done()
        if done <= self.last:
            return
        self.last, elapsed = done, time.perf_counter() - self.t0
        left = elapsed / (done - self.first) * (len(self.runs) - done)
        say(self.exp, f"{self.phase}: {done}/{len(self.runs)} runs done, {elapsed / 60:.1f} min elapsed, "
                      f"about {left / 60:.0f} min left")


def launch(exp: dict, multiruns: Sequence[Multirun], python: str, launcher: str | None,
           extra: Sequence[str]) -> list[str]:
    """Run the multiruns that have work left, saying the phase's progress; return a line for each multirun that
    exited with an error."""
    failures = []
    progress = Progress(exp, multiruns)
    for mr in multiruns:
        dirs = run_dirs(exp, mr.runs())
        todo = [r for r in mr.runs() if not run_finished(dirs[r], mr.epochs)]
        if not todo:
            say(exp, f"{mr.phase}/{mr.dataset}: all {len(mr.runs())} runs done, skipped")
            continue
        cmd = mr.command(exp, python, launcher, extra)
        say(exp, f"{mr.phase}/{mr.dataset}: {len(todo)}/{len(mr.runs())} runs to do")
        say(exp, "$ " + shlex.join(cmd))
        t0 = time.perf_counter()
        env = {**os.environ, **{str(k): str(v) for k, v in (exp.get("env") or {}).items()}}
        proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env)
        try:
            while proc.poll() is None:
                time.sleep(POLL_SECONDS)
                progress.report()
        except BaseException:  # Ctrl-C or SIGTERM of the driver: its runs end too, recorded as interrupted
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        progress.report()
        say(exp, f"{mr.phase}/{mr.dataset}: exit {proc.returncode} after {time.perf_counter() - t0:.1f} s")
        # A multirun that fails part-way leaves its finished runs; the aggregate marks the rest "failed".
        if proc.returncode != 0:
            failures.append(f"{mr.phase}/{mr.dataset}: exit {proc.returncode}")
            say(exp, f"warning: the multirun exited with {proc.returncode}; continuing", error=True)
    return failures


# --------------------------------------------------------------------------------------------------------
# Aggregation: run directories -> tidy table


def aggregate(exp: dict, runs: Iterable[Run]) -> pd.DataFrame:
    """The planned runs' tidy rows (through pathsgd.collect, with the study's own labels as coordinates), up to
    the epochs the study asks of each phase: a run trained longer before (the study file changed) holds them
    exactly, as an epoch does not depend on how many follow it."""
    runs = list(runs)
    dirs = run_dirs(exp, runs)
    never = raw_dir(exp) / "never-started"  # no records there: the run's row says failed

    def rows(run: Run) -> pd.DataFrame:
        table = read_run(dirs[run] or never, dict(dataset=run.dataset, optimizer=run.optimizer, init=run.init,
                                                  dropout=run.dropout, alpha=run.alpha, phase=run.phase, seed=run.seed))
        later = table["epoch"] > int(exp[run.phase]["epochs"])
        if later.any() and table["status"].isin(FINISHED).all():  # finished beyond them: the asked epochs completed
            table = table[~later].assign(status="completed")
        return table

    return tidy(rows(run) for run in runs)


def check_selection(exp: dict, selection: pd.DataFrame, path: Path) -> None:
    """A selection made on another alpha grid than the study's (the study file changed since) is refused."""
    check, _ = per_init_check(exp)
    for row in selection.itertuples():
        if pd.isna(row.grid):  # a cell without sweep runs
            continue
        role = getattr(row, "role", "main")
        want = {float(a) for a in (check["alphas"] if role == "per_init_check" and check else exp["sweep"]["alphas"])}
        if {float(a) for a in str(row.grid).split()} != want:
            raise PipelineError(f"{path} chose {row.optimizer}'s alpha on the grid {row.grid}, and the study now "
                                f"sweeps {' '.join(map(str, sorted(want)))}: run its select step again "
                                "(--steps sweep select final aggregate plot)")


def read_selection(path: Path) -> pd.DataFrame:
    """``selection.csv`` with its alpha lists (grid, diverged, failed) kept as text."""
    try:
        table = pd.read_csv(path, dtype={"grid": str, "diverged": str, "failed": str, "init": str})
        missing = {"dataset", "optimizer", "dropout", "init", "alpha", "grid"} - set(table.columns)
    except (OSError, ValueError) as err:  # pandas' parser errors are ValueErrors
        raise PipelineError(f"{path} cannot be read ({' '.join(str(err).split())[:120]}): run the select step "
                            "again (--steps select final aggregate plot)") from None
    if missing:
        raise PipelineError(f"{path} is not a selection (no {', '.join(sorted(missing))}): run the select step again "
                            "(--steps select final aggregate plot)")
    return table


# --------------------------------------------------------------------------------------------------------
# The driver


class PipelineError(RuntimeError):
    """A multirun exited with an error; everything else of the pipeline was still done."""


def write_meta(exp: dict, out: Path, argv: Sequence[str], seconds: float, runs: Iterable[Run]) -> None:
    """``meta.json``: this invocation (command, commit, seconds) and the commits the runs were trained at (each
    run's ``summary.json`` records its own)."""
    trained = sorted({str(c) for c in (read_summary(d).get("commit") for d in run_dirs(exp, runs).values() if d) if c})
    meta = {"command": "python -m pathsgd.reproduce " + " ".join(argv),
            "experiment": {k: v for k, v in exp.items() if k != "file"}, "experiment_file": exp["file"],
            "commit": source_commit() or "unknown", "runs_trained_at": trained,
            "finished": datetime.datetime.now().isoformat(timespec="seconds"), "pipeline_seconds": round(seconds, 1)}
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")


def publish_to_wandb(exp: dict, files: Sequence[Path]) -> None:
    """A study whose runs log to W&B gets one more W&B run in their group (the study's name) holding its figure and
    tidy CSVs, so that a synced project shows the figure beside the curves. Offline unless WANDB_MODE=online."""
    from pathsgd.sinks import WandbSink

    sink = WandbSink(project="pathsgd", name=f"{exp['name']}-figure", group=exp["name"], job_type="figure",
                     config={k: v for k, v in exp.items() if k != "file"}, dir=raw_dir(exp),
                     mode=os.environ.get("WANDB_MODE", "offline"))
    sink.save(*files)
    sink.finish()


def reproduce(exp: dict, steps: Sequence[str] = STEPS, python: str = sys.executable, launcher: str | None = None,
              extra: Sequence[str] = (), argv: Sequence[str] = ()) -> dict[str, Path]:
    """Run ``steps`` of the pipeline for ``exp``; return the paths written."""
    t0 = time.perf_counter()
    exp = {**exp, "extra_overrides": list(extra)}  # they enter each run's name, as its config
    wandb_mode = os.environ.get("WANDB_MODE", "offline")
    if "logger=wandb" in [*exp["overrides"], *extra] and wandb_mode not in WANDB_MODES:  # before any run, not after
        raise PipelineError(f"{exp['name']}: WANDB_MODE={wandb_mode!r} is unknown: choose one of {', '.join(WANDB_MODES)}")
    if {"sweep", "final"} & set(steps):
        check_launch(exp, launcher or exp.get("launcher"))
    out = results_dir(exp)
    out.mkdir(parents=True, exist_ok=True)
    sweep = plan_sweep(exp)
    paths = {"runs": out / "runs.csv", "selection": out / "selection.csv"}

    failures: list[str] = []
    if "sweep" in steps:
        failures += launch(exp, sweep, python, launcher, extra)

    sweep_runs = [r for mr in sweep for r in mr.runs()]
    if "select" in steps:
        sweep_table = aggregate(exp, sweep_runs)
        tolerance = float(exp["selection"]["tolerance"])
        main = sweep_table[sweep_table["init"].isin(sweep_inits(exp))]
        selection = select_alphas(main, tolerance=tolerance, per_init=bool(exp["selection"]["per_init"]))
        check, other_inits = per_init_check(exp)
        if check:
            checked = sweep_table[sweep_table["optimizer"].isin(check["optimizers"]) & sweep_table["init"].isin(other_inits)]
            selection = pd.concat([selection, select_alphas(checked, tolerance, per_init=True, role="per_init_check")],
                                  ignore_index=True)
        selection.to_csv(paths["selection"], index=False)
        say(exp, f"wrote {paths['selection']}:\n{selection.to_string(index=False)}")

    final: list[Multirun] = []
    if paths["selection"].exists():
        selection = read_selection(paths["selection"])
        check_selection(exp, selection, paths["selection"])
        final, skipped = plan_final(exp, selection)
        for cell in skipped if "final" in steps else ():
            say(exp, f"no usable alpha, no final run: {cell}")
    if "final" in steps:
        if not paths["selection"].exists():
            raise PipelineError(f"{paths['selection']} is missing: run the select step first (--steps select final)")
        failures += launch(exp, final, python, launcher, extra)

    if "aggregate" in steps:
        # Final runs that were never launched (only some steps asked for) are left out, not marked failed.
        planned = [r for mr in final for r in mr.runs()]
        started = run_dirs(exp, planned)
        final_runs = [r for r in planned if "final" in steps or started[r] is not None]
        table = aggregate(exp, sweep_runs + final_runs)
        table.to_csv(paths["runs"], index=False)
        say(exp, f"wrote {paths['runs']} ({len(table)} rows)")
        if exp.get("toy"):
            from pathsgd.toy import write_toy_csv

            paths["toy"] = write_toy_csv(out / "toy.csv")
        write_meta(exp, out, argv, time.perf_counter() - t0, sweep_runs + final_runs)

    if "plot" in steps:
        fig = figure_path(exp)
        fig.parent.mkdir(parents=True, exist_ok=True)
        cmd = [python, str(REPO / "scripts" / "plot_figures.py"), str(out), "--kind", exp["plot"], "--out", str(fig)]
        if exp.get("title"):
            cmd += ["--title", str(exp["title"])]
        if exp.get("stand_in"):
            cmd += ["--stand-in", *exp["stand_in"]]
        subprocess.run(cmd, check=True)
        paths["png"], paths["pdf"] = fig.with_suffix(".png"), fig.with_suffix(".pdf")
        if "logger=wandb" in [*exp["overrides"], *extra]:
            publish_to_wandb(exp, [paths["png"], paths["pdf"], paths["runs"], paths["selection"]])
    if failures:
        raise PipelineError(f"{exp['name']}: multiruns that failed (their runs are marked in runs.csv): {failures}")
    return paths


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a killed driver stops the multirun it launched
    parser = argparse.ArgumentParser(prog="python -m pathsgd.reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("experiments", nargs="+", help="experiment YAML files (experiments/*.yaml)")
    parser.add_argument("--steps", nargs="+", choices=STEPS, default=list(STEPS), help="pipeline steps to run")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs pathsgd.train")
    parser.add_argument("--launcher", default=None, help="Hydra launcher: joblib (several runs at a time here), local "
                        "(submitit jobs here), slurm (configs/hydra/launcher/); default: the study's, else one at a time")
    parser.add_argument("--override", action="append", default=[], help="extra runner override (repeatable)")
    args = parser.parse_args(argv)
    errors = []
    for file in args.experiments:
        try:
            exp = load_experiment(file)
        except (OSError, ValueError, yaml.YAMLError) as err:  # the study file itself: one line, nothing run
            text = " ".join(str(err).split())
            print(f"error: {text if str(file) in text else f'{file}: {text}'}", file=sys.stderr)
            sys.exit(2)
        try:
            reproduce(exp, args.steps, args.python, args.launcher, args.override, argv)
        except PipelineError as err:
            errors.append(str(err))
        except KeyboardInterrupt as err:  # SIGTERM or Ctrl-C: one line, not a traceback
            say(exp, f"interrupted ({err or 'Ctrl-C'}): its runs in training are recorded as interrupted; the same "
                     "command continues where it stopped", error=True)
            sys.exit(130)
    if errors:
        sys.exit("[reproduce] " + "\n[reproduce] ".join(errors))


if __name__ == "__main__":
    main()
