"""The one runner: ``python -m pathsgd.train key=value ...`` trains one configuration of the paper.

One run = (dataset, optimizer, init, alpha, dropout, seed, ...), configured by the Hydra tree in
``configs/`` (see ``configs/config.yaml`` for every key and its default; :mod:`pathsgd.config` validates it and
names the run). The run directory (Hydra's, deterministic from the config so that ``resume=true`` finds it;
:mod:`pathsgd.rundir`) receives:

- ``metrics.csv``: one row per epoch, row 0 before training (columns: :data:`pathsgd.sinks.COLUMNS`);
- ``summary.json``: status (``running`` while training, then ``completed`` | ``diverged``; ``failed`` or
  ``interrupted`` after an exception), final metrics, the resolved config, commit, versions, device;
- ``checkpoint.pt``: model, optimizer and RNG states, epoch and metrics so far, written atomically at
  each epoch end; ``resume=true`` continues from it;
- with ``logger=wandb``: ``wandb/`` (offline by default).

A non-finite loss or weight stops the run with status ``diverged`` and exit code 0 (so a sweep goes on);
bad configuration values exit with code 2 and a message naming the key, the value and what is accepted.

:func:`train` is a plain function of a config (DictConfig or dict) and is what tests and other Python code
call; :func:`main` is the thin ``@hydra.main`` wrapper (also the ``pathsgd-train`` console script).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.errors import HydraException, InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pathsgd.atomic import atomic_write_json
from pathsgd.config import ConfigError, composition_error, resolve, run_name
from pathsgd.data import DataFileError, DatasetNotFoundError, load_splits
from pathsgd.engine import all_finite, evaluate, resolve_device, step_size, tf32_matmuls, train_epoch
from pathsgd.optim import PathOptimizer
from pathsgd.rundir import RunDir, source_commit
from pathsgd.sinks import COLUMNS, WandbSink

__all__ = ["ConfigError", "train", "run_name", "main"]

log = logging.getLogger("pathsgd.train")  # not __main__ under `python -m`


def train(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train one configuration; write metrics.csv, summary.json and checkpoint.pt into ``run_dir``.

    ``run_dir`` defaults to Hydra's output directory when Hydra is running, else the current directory.
    Returns the summary dict (also written to ``summary.json``). Raises :class:`ConfigError` on bad input.
    """
    c = resolve(cfg)
    device, seed = resolve_device(c["device"]), c["seed"]
    folder = RunDir(run_dir if run_dir is not None else _default_run_dir())
    # Data first: a missing dataset or an impossible validation size fails before the run directory is touched.
    data = _load_data(c, device)
    with tf32_matmuls(c["speed"]["tf32"], device), folder.hold():
        torch.manual_seed(_derive_seed(seed, "dropout"))  # the global generators drive dropout
        batches = torch.Generator(device=device).manual_seed(_derive_seed(seed, "batches"))
        model = _build_model(c, data.in_features, data.num_classes, seed).to(device)
        run = _Run(c, folder, model, _build_optimizer(c, model, data.in_features), _rng_state(device, batches), device)
        run.resume(folder.resume_state(c))
        try:
            run.start_logger()
            if run.status == "running" and not run.rows:
                run.record_initial_network(_measure(model, data, None, run.eval_tf32))
            folder.write_summary(run.summary())
            if run.status == "running":
                _train_epochs(run, data, batches)
            return run.finish()
        except BaseException as err:
            run.record_failure(err)
            raise
        finally:
            run.close_logger()


def _train_epochs(run: _Run, data, batches: torch.Generator) -> None:
    """Train from the run's last epoch until it completes or diverges, recording every epoch."""
    c, device = run.c, run.device
    _set_rng_state(run.rng, device, batches)
    steps = -(-len(data.train_x) // c["batch_size"])
    for epoch in range(run.epoch + 1, c["epochs"] + 1):
        bar, on_step = _progress(steps, f"epoch {epoch}/{c['epochs']}")
        _sync(device)
        t0 = time.perf_counter()
        try:
            batch_loss = train_epoch(run.model, run.optimizer, data.train_x, data.train_y, c["batch_size"], batches,
                                     on_step=on_step, capture=c["speed"]["capture"])
            _sync(device)
        finally:
            bar.close()
        elapsed = time.perf_counter() - t0
        rng = _rng_state(device, batches)
        run.record_epoch(epoch, _measure(run.model, data, batch_loss, run.eval_tf32), elapsed, rng)
        if run.status != "running":
            return


class _Run:
    """What a run carries from epoch to epoch, and how each of its records is made and written."""

    def __init__(self, c: dict[str, Any], folder: RunDir, model: torch.nn.Module, optimizer, rng: dict[str, Any],
                 device: torch.device) -> None:
        self.c, self.folder, self.model, self.optimizer, self.rng, self.device = c, folder, model, optimizer, rng, device
        self.fresh_rng = rng
        self.lr = step_size(c["alpha"])
        self.eval_tf32 = c["speed"]["tf32"] or c["speed"]["eval_tf32"]
        self.rows: list[dict[str, Any]] = []
        self.status = "running"
        self.wandb: WandbSink | None = None
        self.wandb_id: str | None = None
        self.env = {"commit": source_commit(), "torch": torch.__version__, "cuda": torch.version.cuda,
                    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
        self.label = "/".join(filter(None, (c["study"], run_name(c))))  # leads each epoch's log line
        # Say where it runs and where it writes: device=auto falls back to the CPU silently otherwise.
        log.info("%s on %s (%s) -> %s", run_name(c), device, self.env["device"], folder.path.resolve())
        self.t_start = time.perf_counter()

    @property
    def epoch(self) -> int:
        return self.rows[-1]["epoch"] if self.rows else -1

    def resume(self, state: Mapping[str, Any] | None) -> None:
        """Continue from a checkpoint's state (None: a fresh start)."""
        if state is None:
            return
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng, self.rows, self.wandb_id = state["rng"], list(state["rows"]), state.get("wandb_id")
        if state["status"] == "diverged" or state["epoch"] >= self.c["epochs"]:
            self.status = state["status"] if state["status"] == "diverged" else "completed"
            log.warning("run in %s already %s at epoch %d; nothing to do", self.folder.path, self.status, state["epoch"])
        else:
            log.info("resuming %s from epoch %d", self.folder.path, state["epoch"])
        self.folder.write_metrics(self.rows)  # the checkpoint's rows are the record: a lost metrics.csv is rebuilt

    def start_logger(self) -> None:
        if self.c["logger"]["name"] != "wandb":
            return
        c, lg = self.c, self.c["logger"]
        self.wandb = WandbSink(
            project=lg["project"], entity=lg.get("entity"), name=f"{c['dataset']['name']}-{run_name(c)}",
            group=c.get("study") or lg.get("group"), tags=lg.get("tags") or (), job_type=c["phase"], config=c,
            dir=self.folder.path, mode=lg["mode"], run_id=self.wandb_id)

    def record_initial_network(self, measured: Mapping[str, Any]) -> None:
        """Row 0; a network that is broken before training, or a first step beyond float range, has diverged."""
        self.rows.append(_row(0, measured, seconds=0.0, batch_loss=None))
        broken = not (measured["finite"] and math.isfinite(measured["train_loss"]))  # e.g. an init that overflowed
        if broken or self.lr > torch.finfo(next(self.model.parameters()).dtype).max:  # torch refuses such a step
            self.status = "diverged"
            log.warning("the initial model has non-finite loss or weights; the run diverged before training" if broken
                        else f"step 10^-alpha = {self.lr:g} exceeds the weights' floating-point range; the run diverged")
            self.checkpoint(self.fresh_rng)
        self.publish()

    def record_epoch(self, epoch: int, measured: Mapping[str, Any], elapsed: float, rng: dict[str, Any]) -> None:
        """One epoch into every record (checkpoint, then metrics.csv, then summary.json), whole or not at all."""
        with self.folder.writing_whole():
            before = self.rows, self.status
            self.rows = self.rows + [_row(epoch, measured, seconds=self.rows[-1]["seconds"] + elapsed,
                                          batch_loss=measured["batch_loss"])]
            if not (measured["finite"] and math.isfinite(measured["batch_loss"]) and math.isfinite(measured["train_loss"])):
                self.status = "diverged"
                log.warning("epoch %d: non-finite loss or weights; the run diverged (alpha=%g)", epoch, self.c["alpha"])
            elif epoch == self.c["epochs"]:
                self.status = "completed"
            try:  # checkpoint, then metrics.csv: if either write fails, the summary keeps the last epoch both hold
                if self.status != "running" or epoch % self.c["checkpoint_every"] == 0:
                    self.checkpoint(rng)
                self.publish()
            except BaseException:
                self.rows, self.status = before
                raise
            self.folder.write_summary(self.summary())  # each epoch

    def checkpoint(self, rng: Mapping[str, Any]) -> None:
        """What ``checkpoint.pt`` holds: everything a resume needs."""
        self.folder.save_checkpoint({
            "epoch": self.epoch, "status": self.status, "rows": self.rows, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng, "config": self.c,
            "wandb_id": None if self.wandb is None else self.wandb.run_id})

    def publish(self) -> None:
        """metrics.csv (written after the checkpoint), W&B, the log line."""
        self.folder.write_metrics(self.rows)
        if self.wandb is not None:
            self.wandb.log(self.rows[-1])
        _log_row(self.rows[-1], self.c["epochs"], self.label)

    def summary(self, error: str | None = None) -> dict[str, Any]:
        """What ``summary.json`` holds."""
        c, rows, wandb = self.c, self.rows, self.wandb
        out = {"status": self.status, "epochs_completed": rows[-1]["epoch"] if rows else 0, "epochs": c["epochs"],
               "final": dict(rows[-1]) if rows else {}, "alpha": c["alpha"], "lr": self.lr, "phase": c["phase"],
               "run_name": run_name(c), "run_dir": str(self.folder.path.resolve()), **self.env,
               "wall_seconds": time.perf_counter() - self.t_start,
               "wandb": None if wandb is None else {"id": wandb.run_id, "dir": str(Path(wandb.run.dir).parent)},
               "config": c}
        return out if error is None else {**out, "error": error}

    def finish(self) -> dict[str, Any]:
        record = self.summary()
        self.folder.write_summary(record)
        if self.wandb is not None:
            self.wandb.set_summary({"status": self.status,
                                    **{f"final/{k}": v for k, v in record["final"].items() if v is not None}})
        return record

    def record_failure(self, err: BaseException) -> None:
        if self.status != "running":
            return
        self.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        try:
            self.folder.write_summary(self.summary(error=f"{type(err).__name__}: {err}"))
        except Exception:  # never hide the original error
            log.exception("could not write %s", self.folder.path / "summary.json")

    def close_logger(self) -> None:
        if self.wandb is not None:
            self.wandb.save(self.folder.path / "metrics.csv", self.folder.path / "summary.json")
            self.wandb.finish(exit_code=0 if self.status in ("completed", "diverged") else 1)


# ----------------------------------------------------------------------------------------------------
# The parts of a run


# model=convnet: the image shape each dataset's flattened inputs come from (synthetic: a square of its features).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "svhn": (3, 32, 32)}


def _image_shape(c: Mapping[str, Any], in_features: int) -> tuple[int, int, int]:
    side = math.isqrt(in_features)
    shape = IMAGE_SHAPES.get(c["dataset"]["name"]) or (1, side, side)
    if math.prod(shape) != in_features:
        raise ConfigError(f"model=convnet needs images: dataset {c['dataset']['name']!r} has {in_features} "
                          "features, not an image (synthetic data: a square number of features, e.g. 64)")
    return shape


def _build_model(c: Mapping[str, Any], in_features: int, num_classes: int, seed: int) -> torch.nn.Module:
    from pathsgd import balanced_init_, unbalanced_init_
    from pathsgd.models import ConvNet

    # The model's and the init's own checks name the bad option; say which config group holds it.
    try:
        conv = issubclass(get_class(c["model"]["_target_"]), ConvNet)  # it reads images, the MLP flat vectors
        model = instantiate(c["model"], _image_shape(c, in_features) if conv else in_features, num_classes,
                            _convert_="all")
    except (TypeError, ValueError, InstantiationException) as err:  # instantiate's error wraps the class's own
        raise ConfigError(f"model={c['model']['_target_']} (model.*): {err.__cause__ or err}") from err
    try:
        # Initialized on the CPU with its own generator, so the init is the same on every device.
        gen = torch.Generator().manual_seed(_derive_seed(seed, "init"))
        init = dict(c["init"])
        name = init.pop("name")
        balanced_init_(model, generator=gen)  # biases start at zero (paper silent; zero keeps the init balanced)
        if name == "unbalanced":  # the paper's unbalanced init rescales the balanced weights
            unbalanced_init_(model, generator=gen, **init)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"init={c['init']['name']} (init.*): {err}") from err
    return model


def _measure(model, data, batch_loss, tf32: bool = False) -> dict[str, float | None]:
    """Every per-epoch metric, computed on the device and brought to the host in one sync."""
    from pathsgd import path_norm

    with tf32_matmuls(tf32, data.train_x.device):  # speed.tf32 or speed.eval_tf32
        train_loss, train_error = evaluate(model, data.train_x, data.train_y)
        test_loss, test_error = evaluate(model, data.test_x, data.test_y)
        val_loss, val_error = (None, None) if data.val_x is None else evaluate(model, data.val_x, data.val_y)
    nan = torch.full((), math.nan, dtype=torch.float64, device=train_loss.device)
    if val_loss is None:
        val_loss = val_error = nan
    norm = path_norm(model, p=2.0, input_shape=(data.in_features,)).to(device=train_loss.device, dtype=torch.float64)
    finite = all_finite(model.parameters()).to(train_loss.device, torch.float64)
    batch_loss = nan if batch_loss is None else batch_loss.double()
    values = torch.stack([train_loss, train_error, val_loss, val_error, test_loss, test_error, norm, batch_loss,
                          finite]).tolist()
    keys = ("train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error", "path_norm", "batch_loss", "finite")
    out: dict[str, Any] = dict(zip(keys, values))
    if data.val_x is None:
        out["val_loss"] = out["val_error"] = None
    return out


def _progress(total_steps: int, desc: str):
    """A tqdm bar over an epoch's steps (silent when stderr is not a terminal) and its on_step callback."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, desc=desc, unit="step", leave=False, disable=None, dynamic_ncols=True)
    if bar.disable:
        return bar, None
    every = max(1, total_steps // 20)  # reading the running loss syncs with the device: ~20 times an epoch

    def on_step(step: int, loss_sum: torch.Tensor) -> None:
        bar.update(1)
        if step % every == 0 or step == total_steps:
            bar.set_postfix(loss=f"{loss_sum.item() / step:.4f}", refresh=False)

    return bar, on_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_data(c: Mapping[str, Any], device: torch.device):
    name, data, validation = c["dataset"]["name"], c["data"], c["data"]["validation"]
    try:
        return load_splits(name, data["root"], validation=validation, seed=data["split_seed"], device=device,
                           download=data["download"], scale=data["scale"], verify=data["verify"],
                           synthetic=c["dataset"].get("synthetic") if name == "synthetic" else None)
    except ValueError as err:
        raise ConfigError(f"dataset {name!r} with data.validation={validation}: {err}") from err


def _build_optimizer(c: Mapping[str, Any], model: torch.nn.Module, in_features: int):
    spec = c["optimizer"]["kwargs"]
    try:
        # The path family takes the model itself (gamma depends on every path) and the shape of one input;
        # torch's optimizers take the parameters.
        if issubclass(get_class(spec["_target_"]), PathOptimizer):
            return instantiate(spec, model, step_size(c["alpha"]), input_shape=(in_features,), _convert_="all")
        return instantiate(spec, model.parameters(), step_size(c["alpha"]), _convert_="all")
    except (TypeError, ValueError, InstantiationException) as err:
        raise ConfigError(f"optimizer={c['optimizer']['name']} (optimizer.kwargs.*): {err.__cause__ or err}") from err


def _derive_seed(seed: int, purpose: str) -> int:
    """Distinct, stable seeds for the init, the batch order and dropout, all from the one ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(purpose.encode())) % (2**63 - 1)


def _default_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir) if HydraConfig.initialized() else Path.cwd()


def _rng_state(device: torch.device, batches: torch.Generator) -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "batches": batches.get_state(), "device_type": device.type}


def _set_rng_state(state: Mapping[str, Any], device: torch.device, batches: torch.Generator) -> None:
    if state["device_type"] != device.type:
        log.warning("checkpoint was written on %s and resumes on %s: batch order and dropout masks will differ from "
                    "an uninterrupted run", state["device_type"], device.type)
        return
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    batches.set_state(state["batches"])


def _log_row(row: Mapping[str, Any], epochs: int, label: str) -> None:
    """One line per epoch (the progress bar shows only on a terminal; these lines go to the log everywhere), led by
    the run's study and name: the runs of a parallel multirun, and two studies, share a log."""
    left = (epochs - row["epoch"]) * row["seconds"] / row["epoch"] if row["epoch"] else None
    log.info(
        "%s epoch %d/%d  train_loss %.4g  train_error %.4f  val_error %s  test_error %.4f  path_norm %.4g  (%.1f s%s)",
        label, row["epoch"], epochs, row["train_loss"], row["train_error"],
        "-" if row["val_error"] is None else f"{row['val_error']:.4f}",
        row["test_error"], row["path_norm"], row["seconds"], "" if left is None else f", about {left:.0f} s of training left",
    )


def _row(epoch: int, m: Mapping[str, Any], *, seconds: float, batch_loss: float | None) -> dict[str, Any]:
    """One row of metrics.csv, its keys in :data:`pathsgd.sinks.COLUMNS`' order, from a :func:`_measure`."""
    return {**{k: m.get(k) for k in COLUMNS}, "epoch": epoch, "seconds": seconds, "batch_loss": batch_loss}


# ----------------------------------------------------------------------------------------------------
# Command line


# An absolute path: Hydra resolves a relative one against the *module* (pkg://) when the entry point is the
# console script or an import, and ``configs/`` is not a package. The checkout's tree, so an editable
# install (``pip install -e .``) is assumed; ``--config-dir`` adds another.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


_FAILED_JOBS: list[str] = []  # jobs of this process's multirun refused for a bad value or data file


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ConfigError, DatasetNotFoundError, DataFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            _discard_if_unused(_default_run_dir())
            sys.exit(2)
        # In a sweep, one bad job is recorded and the others run; the exit status counts the failures.
        run_dir = _default_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (run_dir / "summary.json").exists():  # never over another run's records (one that holds the lock)
            atomic_write_json(run_dir / "summary.json", {"status": "failed", "error": str(err), "epochs_completed": 0,
                                                         "overrides": list(HydraConfig.get().overrides.task)})
        _FAILED_JOBS.append(f"{run_dir}: {err}")
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the records say interrupted, at their last epoch
        print(f"interrupted ({err or 'SIGINT'}); resume=true continues the run", file=sys.stderr)
        sys.exit(130)


def _discard_if_unused(run_dir: Path) -> None:
    """A refused single run leaves no directory behind when it holds only what Hydra wrote at the start."""
    contents = list(run_dir.iterdir()) if run_dir.is_dir() else []
    if contents and all(p.name == ".hydra" or (p.suffix == ".log" and p.stat().st_size == 0) for p in contents):
        shutil.rmtree(run_dir, ignore_errors=True)


def main() -> None:
    """Console entry point: ``pathsgd-train key=value ...`` (same as ``python -m pathsgd.train``).

    Exit status: 0; 2 for a bad value or data file; in a ``--multirun``, the number of jobs that failed so
    (each recorded in its directory's summary.json, the other jobs run)."""
    # Hydra's own refusals (a value of the wrong type, an unknown key or option) come here to be said in one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as err:
        print(f"error: {composition_error(err)}", file=sys.stderr)
        sys.exit(2)
    if _FAILED_JOBS:
        print(f"{len(_FAILED_JOBS)} job(s) of the sweep failed:\n  " + "\n  ".join(_FAILED_JOBS), file=sys.stderr)
        sys.exit(min(len(_FAILED_JOBS), 125))


if __name__ == "__main__":
    main()
