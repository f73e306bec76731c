"""The one runner: ``python -m pathsgd.train key=value ...`` trains one configuration of the paper.

One run = (dataset, optimizer, init, alpha, dropout, seed, ...), configured by the Hydra tree in
``configs/`` (see ``configs/config.yaml`` for every key and its default). The run directory (Hydra's,
deterministic from the config so that ``resume=true`` finds it) receives:

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

import copy
import logging
import math
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from pathsgd.checkpoint import CHECKPOINT_NAME, atomic_write_json, load_checkpoint, save_checkpoint
from pathsgd.data import DATASET_NAMES, SCALES, DatasetNotFoundError, load_splits
from pathsgd.engine import (
    OPTIMIZERS, all_finite, evaluate, make_optimizer, resolve_device, step_size, tf32_matmuls, train_epoch,
)
from pathsgd.sinks import CSVSink, WandbSink

__all__ = [
    "ConfigError", "INITS", "LOGGERS", "train", "train_batched", "batched_run_dirs", "validate_config", "resolve_alpha",
    "run_name", "main",
]

log = logging.getLogger("pathsgd.train")  # not __main__ under `python -m`

INITS = ("balanced", "unbalanced")
LOGGERS = ("csv", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
CAPTURES = ("none", "graph", "compile")  # speed.capture; none (or null) is eager
CHECKPOINT_FORMAT = 1

# Config keys that may change between a run and its resume; any other difference is refused.
# ``sweep``: a run trained in a batched sweep may be continued alone, and the other way round. ``speed.capture``:
# how the step runs, not what it computes (a change is logged). ``speed.tf32`` and ``speed.eval_tf32`` change the
# numbers' rounding, so a run keeps them: one run's epochs are all float32 or all TF32.
_RESUME_MAY_CHANGE = (
    "resume", "epochs", "device", "phase", "checkpoint_every", "logger", "data.root", "data.download", "sweep",
    "speed.capture",
)
# What a checkpoint made before the speed group existed was trained with.
_SPEED_BEFORE_THE_GROUP = {"speed.capture": None, "speed.tf32": False, "speed.eval_tf32": False}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is accepted."""


# ----------------------------------------------------------------------------------------------------
# Configuration


def _as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain containers (interpolations such as ``${oc.env:...}`` evaluated)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    # Key by key, leaving out the ``hydra`` node (its runtime fields resolve only inside a Hydra job).
    out = {}
    for key in cfg:
        if key == "hydra":
            continue
        value = cfg[key]  # resolved against the whole config
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def resolve_alpha(cfg: Mapping[str, Any]) -> float:
    """``alpha``, or the optimizer's ``default_alpha`` when alpha is null; checked to be a finite real."""
    alpha = cfg.get("alpha")
    key = "alpha"
    if alpha is None:
        alpha, key = cfg["optimizer"].get("default_alpha"), "optimizer.default_alpha"
    if not _is_real(alpha):
        raise ConfigError(f"{key}={alpha!r} is not a real number: alpha must be a finite real (step size 10^-alpha)")
    if not math.isfinite(alpha):
        raise ConfigError(f"{key}={alpha} is not finite: alpha must be a finite real (step size 10^-alpha)")
    if not -300 < alpha < 300:  # 10^-alpha must be a finite, non-zero float
        raise ConfigError(f"{key}={alpha} is out of range: 10^-alpha must be a positive float, so |alpha| < 300")
    return float(alpha)


def _choice(key: str, value: Any, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise ConfigError(f"{key}={value!r} is unknown: choose one of {', '.join(accepted)}")


def _positive_int(key: str, value: Any) -> None:
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key}={value!r} is not a positive integer: {key} must be an integer >= 1")


def validate_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` (a ValueError) naming the key, the value and what is accepted."""
    c = cfg if isinstance(cfg, dict) else _as_dict(cfg)
    _choice("dataset.name", c["dataset"].get("name"), DATASET_NAMES)
    _choice("optimizer.name", c["optimizer"].get("name"), OPTIMIZERS)
    _choice("init.name", c["init"].get("name"), INITS)
    _choice("logger.name", c["logger"].get("name"), LOGGERS)
    if c["logger"]["name"] == "wandb":
        _choice("logger.mode", c["logger"].get("mode"), WANDB_MODES)
    resolve_alpha(c)
    _positive_int("epochs", c.get("epochs"))
    _positive_int("batch_size", c.get("batch_size"))
    _positive_int("checkpoint_every", c.get("checkpoint_every"))
    if not _is_int(c.get("seed")) or c["seed"] < 0:
        raise ConfigError(f"seed={c.get('seed')!r} is not a non-negative integer: seed must be an integer >= 0")
    device = c.get("device")
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device={device!r} is unknown: choose one of auto, cpu, cuda, cuda:N")
    if not isinstance(c.get("resume"), bool):
        raise ConfigError(f"resume={c.get('resume')!r} is not a boolean: choose true or false")
    hidden = c["model"].get("hidden")
    if not isinstance(hidden, list) or not all(_is_int(h) and h >= 1 for h in hidden):
        raise ConfigError(f"model.hidden={hidden!r} is not a list of positive integers, e.g. [4000,4000]")
    dropout = c["model"].get("dropout")
    if not _is_real(dropout) or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"model.dropout={dropout!r} is not a probability in [0, 1): the chance of dropping a hidden unit")
    validation = _validation_size(c)
    if not _is_int(validation) or validation < 0:
        raise ConfigError(
            f"data.validation={validation!r} is not a non-negative integer: the number of held-out training "
            "points (0 = none, null = the dataset's default)"
        )
    _choice("data.scale", c["data"].get("scale"), SCALES)
    speed = c.get("speed") or {}
    if speed.get("capture") is not None:
        _choice("speed.capture", speed["capture"], CAPTURES)
    for key in ("tf32", "eval_tf32"):
        if not isinstance(speed.get(key), bool):
            raise ConfigError(f"speed.{key}={speed.get(key)!r} is not a boolean: choose true or false")


def _resolve_speed(c: dict[str, Any]) -> None:
    """``speed.capture`` as :func:`pathsgd.engine.train_epoch` takes it: None (eager) for none or null."""
    if c["speed"]["capture"] == "none":
        c["speed"]["capture"] = None


def _validation_size(c: Mapping[str, Any]) -> Any:
    """``data.validation``, or the dataset's own default (``dataset.validation``) when it is null."""
    value = c["data"].get("validation")
    return c["dataset"].get("validation", 10000) if value is None else value


def run_name(c: Mapping[str, Any]) -> str:
    """A run's name from its config, e.g. ``mnist-pathsgd-balanced-a1-d0.0-s0`` (W&B run name)."""
    alpha = resolve_alpha(c)
    alpha_text = f"{alpha:g}"
    return f"{c['dataset']['name']}-{c['optimizer']['name']}-{c['init']['name']}-a{alpha_text}-d{c['model']['dropout']}-s{c['seed']}"


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any], run_dir: Path) -> None:
    def keep(key: str) -> bool:
        return not any(key == k or key.startswith(k + ".") for k in _RESUME_MAY_CHANGE)

    a, b = {**_SPEED_BEFORE_THE_GROUP, **_flatten(saved)}, _flatten(now)
    diffs = [f"{k}={a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b)) if keep(k) and a.get(k) != b.get(k)]
    if diffs:
        raise ConfigError(
            f"resume=true, but the checkpoint in {run_dir} was made with a different configuration: "
            + "; ".join(diffs)
            + ". Use the same configuration, another run directory (hydra.run.dir=...), or resume=false."
        )
    if a["speed.capture"] != b.get("speed.capture"):
        log.warning("resuming %s with speed.capture=%r (was %r) from here on", run_dir, b.get("speed.capture"),
                    a["speed.capture"])


# ----------------------------------------------------------------------------------------------------
# Environment and seeding


def _derive_seed(seed: int, purpose: str) -> int:
    """Distinct, stable seeds for the init, the batch order and dropout, all from the one ``seed``."""
    return (seed * 1_000_003 + zlib.crc32(purpose.encode())) % (2**63 - 1)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _default_run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path.cwd()


def _rng_state(device: torch.device, batches: torch.Generator) -> dict[str, Any]:
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "batches": batches.get_state(),
        "device_type": device.type,
    }


def _set_rng_state(state: Mapping[str, Any], device: torch.device, batches: torch.Generator) -> None:
    if state["device_type"] != device.type:
        log.warning(
            "checkpoint was written on %s and resumes on %s: batch order and dropout masks will differ from "
            "an uninterrupted run", state["device_type"], device.type,
        )
        return
    torch.set_rng_state(state["torch"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    batches.set_state(state["batches"])


# ----------------------------------------------------------------------------------------------------
# The run


def _build_model(c: Mapping[str, Any], in_features: int, num_classes: int, seed: int) -> torch.nn.Module:
    from pathsgd import MLP, balanced_init_, unbalanced_init_

    model = MLP(in_features, num_classes, hidden=tuple(c["model"]["hidden"]), dropout=float(c["model"]["dropout"]))
    # Initialized on the CPU with its own generator, so the init is the same on every device.
    gen = torch.Generator().manual_seed(_derive_seed(seed, "init"))
    init = dict(c["init"])
    name = init.pop("name")
    balanced_init_(model, generator=gen)  # biases start at zero (paper silent; zero keeps the init balanced)
    if name == "unbalanced":  # the paper's unbalanced init rescales the balanced weights
        unbalanced_init_(model, generator=gen, **init)
    return model


def _measure(model, data, batch_loss, tf32: bool = False) -> dict[str, float | None]:
    """Every per-epoch metric, computed on the device and brought to the host in one sync."""
    from pathsgd import path_norm

    with tf32_matmuls(tf32, data.train_x.device):  # speed.tf32 or speed.eval_tf32
        train_loss, train_error = evaluate(model, data.train_x, data.train_y)
        test_loss, test_error = evaluate(model, data.test_x, data.test_y)
        val_loss, val_error = (None, None) if data.val_x is None else evaluate(model, data.val_x, data.val_y)
    if val_loss is None:
        val_loss = val_error = torch.full((), math.nan, dtype=torch.float64, device=train_loss.device)
    norm = path_norm(model, p=2.0).to(device=train_loss.device, dtype=torch.float64)
    finite = all_finite(model.parameters()).to(train_loss.device, torch.float64)
    if batch_loss is None:
        batch_loss = torch.full((), math.nan, dtype=torch.float64, device=train_loss.device)
    values = torch.stack(
        [train_loss, train_error, val_loss, val_error, test_loss, test_error, norm, batch_loss.double(), finite]
    ).tolist()
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
    name = c["dataset"]["name"]
    validation = c["data"]["validation"]
    try:
        return load_splits(
            name,
            c["data"]["root"],
            validation=validation,
            seed=c["data"]["split_seed"],
            device=device,
            download=c["data"]["download"],
            scale=c["data"]["scale"],
            synthetic=c["dataset"].get("synthetic") if name == "synthetic" else None,
        )
    except ValueError as err:
        raise ConfigError(f"dataset {name!r} with data.validation={validation}: {err}") from err


def train(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path | None = None) -> dict[str, Any] | list[dict[str, Any]]:
    """Train one configuration; write metrics.csv, summary.json and checkpoint.pt into ``run_dir``.

    ``run_dir`` defaults to Hydra's output directory when Hydra is running, else the current directory.
    Returns the summary dict (also written to ``summary.json``). Raises :class:`ConfigError` on bad input.
    With ``sweep.batched=true``: :func:`train_batched` over ``sweep.alphas``, each alpha in the run directory
    a separate run would get beside ``run_dir`` (or in ``sweep.dir``); returns their summaries.
    """
    c = _as_dict(cfg)
    validate_config(c)
    if (c.get("sweep") or {}).get("batched"):
        alphas = _sweep_alphas(c)
        parent = c["sweep"].get("dir") or (Path(run_dir) if run_dir is not None else _default_run_dir()).parent
        return train_batched(c, alphas, batched_run_dirs(c, alphas, parent))
    _resolve_speed(c)
    with tf32_matmuls(c["speed"]["tf32"], resolve_device(c["device"])):
        return _train_single(c, run_dir)


def _train_single(c: dict[str, Any], run_dir: str | Path | None) -> dict[str, Any]:
    """:func:`train` of one configuration, ``c`` validated."""
    eval_tf32 = c["speed"]["tf32"] or c["speed"]["eval_tf32"]
    c["alpha"] = alpha = resolve_alpha(c)
    lr = step_size(alpha)
    c["data"]["validation"] = _validation_size(c)
    c["data"]["root"] = str(Path(c["data"]["root"]).expanduser())
    run_dir = Path(run_dir) if run_dir is not None else _default_run_dir()
    device = resolve_device(c["device"])
    seed = c["seed"]

    # Data first: a missing dataset or an impossible validation size fails before anything is written.
    data = _load_data(c, device)

    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = run_dir / CHECKPOINT_NAME
    state = None
    if c["resume"]:
        if ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            _check_resumable(state["config"], c, run_dir)
        else:
            log.warning("no checkpoint in %s; starting afresh", run_dir)
    elif ckpt_path.is_file():
        log.warning("%s already holds a run; starting afresh over it (resume=true would continue it)", run_dir)

    torch.manual_seed(_derive_seed(seed, "dropout"))  # the global generators drive dropout
    batches = torch.Generator(device=device).manual_seed(_derive_seed(seed, "batches"))
    # The init's and the optimizer's own checks name the bad option; say which config group holds it.
    try:
        model = _build_model(c, data.in_features, data.num_classes, seed).to(device)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"init={c['init']['name']} (init.*): {err}") from err
    opt_cfg = c["optimizer"]
    try:
        optimizer = make_optimizer(opt_cfg["name"], model, lr, **(opt_cfg.get("kwargs") or {}))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer={opt_cfg['name']} (optimizer.kwargs.*): {err}") from err

    rows: list[dict[str, Any]] = []
    status = "running"
    wandb_id = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        _set_rng_state(state["rng"], device, batches)
        rows = list(state["rows"])
        wandb_id = state.get("wandb_id")
        if state["status"] == "diverged" or state["epoch"] >= c["epochs"]:
            status = state["status"] if state["status"] == "diverged" else "completed"
            log.warning("run in %s already %s at epoch %d; nothing to do", run_dir, status, state["epoch"])
        else:
            log.info("resuming %s from epoch %d", run_dir, state["epoch"])

    env = {
        "commit": _git_commit(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": _device_name(device),
    }
    sink_csv = CSVSink(run_dir / "metrics.csv")
    sink_wandb: WandbSink | None = None
    t_start = time.perf_counter()

    def summary(error: str | None = None) -> dict[str, Any]:
        return _summary_record(c, status, rows, run_dir, env, time.perf_counter() - t_start, sink_wandb, error)

    def checkpoint(epoch: int) -> None:
        save_checkpoint(
            ckpt_path,
            _checkpoint_record(c, epoch, status, rows, model, optimizer, _rng_state(device, batches), sink_wandb),
        )

    try:
        if c["logger"]["name"] == "wandb":
            lg = c["logger"]
            sink_wandb = WandbSink(
                project=lg["project"],
                entity=lg.get("entity"),
                name=run_name(c),
                group=lg.get("group"),
                tags=lg.get("tags") or (),
                job_type=c["phase"],
                config=c,
                dir=run_dir,
                mode=lg["mode"],
                run_id=wandb_id,
            )
        if status != "running":  # a resume of a finished run: report it again
            atomic_write_json(run_dir / "summary.json", summary())
            return summary()

        def publish(row: dict[str, Any]) -> None:
            """metrics.csv (written after the checkpoint), W&B, the log line."""
            sink_csv.write(rows)
            if sink_wandb is not None:
                sink_wandb.log(row)
            _log_row(row)

        if not rows:
            m = _measure(model, data, None, eval_tf32)
            rows.append(_row(0, m, seconds=0.0, batch_loss=None))
            if not (m["finite"] and math.isfinite(m["train_loss"])):
                status = "diverged"  # e.g. an init that overflowed: training it would be meaningless
                log.warning("the initial model has non-finite loss or weights; the run diverged before training")
                checkpoint(0)
            elif lr > torch.finfo(next(model.parameters()).dtype).max:
                status = "diverged"  # the first update is infinite (torch even refuses to apply it)
                log.warning("step 10^-alpha = %g exceeds the weights' floating-point range; the run diverged", lr)
                checkpoint(0)
            publish(rows[-1])
        atomic_write_json(run_dir / "summary.json", summary())

        n = len(data.train_x)
        steps = -(-n // c["batch_size"])
        last_epoch = c["epochs"] if status == "running" else 0
        for epoch in range(rows[-1]["epoch"] + 1, last_epoch + 1):
            bar, on_step = _progress(steps, f"epoch {epoch}/{c['epochs']}")
            _sync(device)
            t0 = time.perf_counter()
            try:
                batch_loss = train_epoch(
                    model, optimizer, data.train_x, data.train_y, c["batch_size"], batches, on_step=on_step,
                    capture=c["speed"]["capture"],
                )
                _sync(device)
            finally:
                bar.close()
            seconds = rows[-1]["seconds"] + (time.perf_counter() - t0)
            m = _measure(model, data, batch_loss, eval_tf32)
            diverged = not (m["finite"] and math.isfinite(m["batch_loss"]) and math.isfinite(m["train_loss"]))
            row = _row(epoch, m, seconds=seconds, batch_loss=m["batch_loss"])
            if diverged:
                status = "diverged"
                log.warning("epoch %d: non-finite loss or weights; the run diverged (alpha=%g)", epoch, alpha)
            elif epoch == c["epochs"]:
                status = "completed"
            rows.append(row)
            if status != "running" or epoch % c["checkpoint_every"] == 0:
                checkpoint(epoch)
            publish(row)
            if status == "diverged":
                break
        out = summary()
        atomic_write_json(run_dir / "summary.json", out)
        if sink_wandb is not None:
            sink_wandb.set_summary({"status": status, **{f"final/{k}": v for k, v in out["final"].items() if v is not None}})
        return out
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        try:
            atomic_write_json(run_dir / "summary.json", summary(error=f"{type(err).__name__}: {err}"))
        except Exception:  # never hide the original error
            log.exception("could not write summary.json")
        raise
    finally:
        if sink_wandb is not None:
            sink_wandb.finish(exit_code=0 if status in ("completed", "diverged") else 1)


def _summary_record(
    c: Mapping[str, Any], status: str, rows: list[dict[str, Any]], run_dir: Path, env: Mapping[str, Any],
    wall_seconds: float, sink_wandb: WandbSink | None, error: str | None = None,
) -> dict[str, Any]:
    """What ``summary.json`` holds (``c`` is the run's resolved config, its ``alpha`` resolved)."""
    out = {
        "status": status,
        "epochs_completed": rows[-1]["epoch"] if rows else 0,
        "epochs": c["epochs"],
        "final": dict(rows[-1]) if rows else {},
        "alpha": c["alpha"],
        "lr": step_size(c["alpha"]),
        "phase": c["phase"],
        "run_name": run_name(c),
        "run_dir": str(run_dir.resolve()),
        **env,
        "wall_seconds": wall_seconds,
        "wandb": None if sink_wandb is None else {"id": sink_wandb.run_id, "dir": str(Path(sink_wandb.run.dir).parent)},
        "config": c,
    }
    if error is not None:
        out["error"] = error
    return out


def _checkpoint_record(
    c: Mapping[str, Any], epoch: int, status: str, rows: list[dict[str, Any]], model: torch.nn.Module,
    optimizer: torch.optim.Optimizer, rng: Mapping[str, Any], sink_wandb: WandbSink | None,
) -> dict[str, Any]:
    """What ``checkpoint.pt`` holds."""
    return {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "status": status,
        "rows": rows,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": rng,
        "config": c,
        "wandb_id": None if sink_wandb is None else sink_wandb.run_id,
    }


def _log_row(row: Mapping[str, Any], prefix: str = "") -> None:
    log.info(
        "%sepoch %d  train_loss %.4g  train_error %.4f  val_error %s  test_error %.4f  path_norm %.4g  (%.1f s)",
        prefix, row["epoch"], row["train_loss"], row["train_error"],
        "-" if row["val_error"] is None else f"{row['val_error']:.4f}",
        row["test_error"], row["path_norm"], row["seconds"],
    )


def _row(epoch: int, m: Mapping[str, Any], *, seconds: float, batch_loss: float | None) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": m["train_loss"],
        "train_error": m["train_error"],
        "val_error": m["val_error"],
        "test_error": m["test_error"],
        "path_norm": m["path_norm"],
        "seconds": seconds,
        "batch_loss": batch_loss,
        "val_loss": m["val_loss"],
        "test_loss": m["test_loss"],
    }


# ----------------------------------------------------------------------------------------------------
# Many runs in one process: sweep.batched=true (pathsgd.batched)


def _alpha_text(alpha: float) -> str:
    """An alpha as run directory names print it: ``3`` for an integer alpha, else the float (``0.5``)."""
    alpha = float(alpha)
    return str(int(alpha)) if alpha.is_integer() else str(alpha)


def batched_run_dirs(c: Mapping[str, Any], alphas: list[float], parent: str | Path) -> list[Path]:
    """``<parent>/<optimizer>-<init>-a<alpha>-d<dropout>-s<seed>`` per alpha: the directory names of separate
    runs (Hydra's ``run.dir`` and the figure pipeline's sweep layout)."""
    return [
        Path(parent) / f"{c['optimizer']['name']}-{c['init']['name']}-a{_alpha_text(a)}-d{float(c['model']['dropout'])}-s{c['seed']}"
        for a in alphas
    ]


def _sweep_alphas(c: Mapping[str, Any], alphas: Any = None) -> list[float]:
    """``alphas`` (default ``sweep.alphas``), checked: a non-empty list of distinct finite reals."""
    key = "sweep.alphas"
    alphas = (c.get("sweep") or {}).get("alphas") if alphas is None else alphas
    if not isinstance(alphas, (list, tuple)) or not alphas:
        raise ConfigError(
            f"{key}={alphas!r} is not a non-empty list: with sweep.batched=true, list the alphas to train, "
            "e.g. sweep.alphas=[0,1,2,3,4,5,6,7,8,9,10]"
        )
    out = []
    for a in alphas:
        try:
            out.append(resolve_alpha({"alpha": a}))
        except ConfigError as err:
            raise ConfigError(f"{key}: {err}") from None
    if len(set(out)) != len(out):
        raise ConfigError(f"{key}={list(alphas)!r} repeats an alpha: each alpha is one run directory")
    return out


def _measure_stacked(stack, data, batch_loss: torch.Tensor | None, tf32: bool = False) -> list[dict[str, Any]]:
    """:func:`_measure` for every member of a :class:`pathsgd.batched.StackedMLP`, in one host sync."""
    from pathsgd import batched as B

    with tf32_matmuls(tf32, data.train_x.device):  # speed.tf32 or speed.eval_tf32
        train_loss, train_error = B.evaluate(stack, data.train_x, data.train_y)
        test_loss, test_error = B.evaluate(stack, data.test_x, data.test_y)
        nan = torch.full_like(train_loss, math.nan)
        val_loss, val_error = (nan, nan) if data.val_x is None else B.evaluate(stack, data.val_x, data.val_y)
    norm = B.stacked_path_norm(stack, p=2.0).to(train_loss.device)
    finite = B.all_finite(stack).to(train_loss.device, torch.float64)
    batch_loss = nan if batch_loss is None else batch_loss.double()
    columns = torch.stack([train_loss, train_error, val_loss, val_error, test_loss, test_error, norm, batch_loss, finite], 1)
    keys = ("train_loss", "train_error", "val_loss", "val_error", "test_loss", "test_error", "path_norm", "batch_loss", "finite")
    out = [dict(zip(keys, values)) for values in columns.tolist()]
    if data.val_x is None:
        for m in out:
            m["val_loss"] = m["val_error"] = None
    return out


def _same_rng(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and torch.equal(x, y))
        for x, y in ((a["torch"], b["torch"]), (a["cuda"], b["cuda"]), (a["batches"], b["batches"]))
    )


class _Member:
    """One alpha of a batched sweep: its config, directory, record, and its single-run model and optimizer
    (what its checkpoint holds; the stacked tensors are copied into them before each checkpoint)."""

    def __init__(self, c: dict[str, Any], run_dir: Path) -> None:
        self.c, self.run_dir = c, run_dir
        self.lr = step_size(c["alpha"])
        self.rows: list[dict[str, Any]] = []
        self.status = "running"
        self.rng: dict[str, Any] | None = None
        self.sink = CSVSink(run_dir / "metrics.csv")
        self.model: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    @property
    def epoch(self) -> int:
        return self.rows[-1]["epoch"]


def train_batched(
    cfg: DictConfig | Mapping[str, Any], alphas: list[float] | None = None, run_dirs: list[str | Path] | None = None
) -> list[dict[str, Any]]:
    """Train one configuration at several alphas in one process, the members' weights stacked.

    ``alphas`` default to ``sweep.alphas``; ``run_dirs`` (one per alpha) to :func:`batched_run_dirs` in
    ``sweep.dir``, else beside Hydra's run directory. Each directory receives what a separate run of that
    alpha writes (metrics.csv, summary.json with that alpha and config, checkpoint.pt that a separate
    ``resume=true`` run accepts), with the same metrics up to float32 rounding: the members share the init,
    the batch order and the dropout masks, as separate runs with one seed do. ``seconds`` is the member's
    share of the batch's training time (an epoch's time over the members trained in it). A member whose loss
    or weights turn non-finite is recorded ``diverged`` and dropped from the stack; the others go on.
    ``resume=true`` continues every member from its checkpoint (members at different epochs are brought level
    first); finished members are reported again. Supports logger=csv, the options of
    :data:`pathsgd.batched.OPTIMIZER_OPTIONS` and ``speed.tf32``; ``speed.capture`` must be none (the stacked
    step is eager). Returns the summaries, in the order of ``alphas``.
    """
    c = _as_dict(cfg)
    validate_config(c)
    _resolve_speed(c)
    with tf32_matmuls(c["speed"]["tf32"], resolve_device(c["device"])):
        return _train_batched(c, alphas, run_dirs)


def _train_batched(c: dict[str, Any], alphas: list[float] | None, run_dirs: list[str | Path] | None) -> list[dict[str, Any]]:
    """:func:`train_batched`, ``c`` validated."""
    from pathsgd import batched as B

    eval_tf32 = c["speed"]["tf32"] or c["speed"]["eval_tf32"]
    alphas = _sweep_alphas(c, alphas)
    if run_dirs is None:
        parent = (c.get("sweep") or {}).get("dir") or _default_run_dir().parent
        run_dirs = batched_run_dirs(c, alphas, parent)
    run_dirs = [Path(d) for d in run_dirs]
    if len(run_dirs) != len(alphas) or len({d.resolve() for d in run_dirs}) != len(run_dirs):
        raise ValueError(f"train_batched needs one distinct run directory per alpha: {len(alphas)} alphas, {run_dirs}")
    if c["logger"]["name"] != "csv":
        raise ConfigError(
            f"logger={c['logger']['name']} with sweep.batched=true: a batched sweep writes CSV records only; "
            "use logger=csv, or separate runs (sweep.batched=false) for W&B"
        )
    # The stacked step (pathsgd/batched.py) is autograd on [K, out, in] weights, not the fast step that
    # pathsgd/fast.py captures; capturing it would be new, unmeasured code, so a batched sweep stays eager.
    if c["speed"]["capture"] is not None:
        raise ConfigError(
            f"speed.capture={c['speed']['capture']} with sweep.batched=true: a batched sweep's step is eager; "
            "use speed.capture=none, or separate runs (sweep.batched=false) to capture the step"
        )
    opt_cfg = c["optimizer"]
    kwargs = dict(opt_cfg.get("kwargs") or {})
    unsupported = sorted(set(kwargs) - set(B.OPTIMIZER_OPTIONS[opt_cfg["name"]]))
    if unsupported:
        raise ConfigError(
            f"optimizer={opt_cfg['name']} (optimizer.kwargs.*): {unsupported} not supported with sweep.batched=true; "
            f"supported: {sorted(B.OPTIMIZER_OPTIONS[opt_cfg['name']])}"
        )
    c["data"]["validation"] = _validation_size(c)
    c["data"]["root"] = str(Path(c["data"]["root"]).expanduser())
    device = resolve_device(c["device"])
    seed = c["seed"]
    data = _load_data(c, device)

    members = []
    for alpha, run_dir in zip(alphas, run_dirs):
        mc = copy.deepcopy(c)
        mc["alpha"] = alpha
        members.append(_Member(mc, run_dir))

    # The global generator (dropout) and the batch order as a separate run seeds them; building the model
    # consumes the global generator as there (nn.Linear's own init), so the dropout masks line up.
    torch.manual_seed(_derive_seed(seed, "dropout"))
    batches = torch.Generator(device=device).manual_seed(_derive_seed(seed, "batches"))
    try:
        model0 = _build_model(c, data.in_features, data.num_classes, seed).to(device)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"init={c['init']['name']} (init.*): {err}") from err
    fresh_rng = _rng_state(device, batches)

    for m in members:
        state = None
        ckpt_path = m.run_dir / CHECKPOINT_NAME
        if c["resume"] and ckpt_path.is_file():
            state = load_checkpoint(ckpt_path)
            _check_resumable(state["config"], m.c, m.run_dir)
        elif c["resume"]:
            log.warning("no checkpoint in %s; starting afresh", m.run_dir)
        elif ckpt_path.is_file():
            log.warning("%s already holds a run; starting afresh over it (resume=true would continue it)", m.run_dir)
        m.model = copy.deepcopy(model0)
        try:
            m.optimizer = make_optimizer(opt_cfg["name"], m.model, m.lr, **kwargs)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"optimizer={opt_cfg['name']} (optimizer.kwargs.*): {err}") from err
        m.rng = fresh_rng
        if state is not None:
            m.model.load_state_dict(state["model"])
            m.optimizer.load_state_dict(state["optimizer"])
            m.rng, m.rows = state["rng"], list(state["rows"])
            if state["status"] == "diverged" or state["epoch"] >= c["epochs"]:
                m.status = state["status"] if state["status"] == "diverged" else "completed"
                log.warning("run in %s already %s at epoch %d; nothing to do", m.run_dir, m.status, state["epoch"])
            else:
                log.info("resuming %s from epoch %d", m.run_dir, state["epoch"])
        m.run_dir.mkdir(parents=True, exist_ok=True)

    env = {"commit": _git_commit(), "torch": torch.__version__, "cuda": torch.version.cuda, "device": _device_name(device)}
    t_start = time.perf_counter()

    def summary(m: _Member, error: str | None = None) -> dict[str, Any]:
        out = _summary_record(m.c, m.status, m.rows, m.run_dir, env, time.perf_counter() - t_start, None, error)
        out["batched"] = {"alphas": alphas}
        return out

    def checkpoint(m: _Member, rng: Mapping[str, Any]) -> None:
        save_checkpoint(
            m.run_dir / CHECKPOINT_NAME, _checkpoint_record(m.c, m.epoch, m.status, m.rows, m.model, m.optimizer, rng, None)
        )

    def publish(m: _Member) -> None:
        m.sink.write(m.rows)
        _log_row(m.rows[-1], prefix=f"alpha={_alpha_text(m.c['alpha'])}: ")

    try:
        # Row 0 of the fresh members: one measurement, since they share the init.
        fresh = [m for m in members if m.status == "running" and not m.rows]
        if fresh:
            m0 = _measure(model0, data, None, eval_tf32)
            for m in fresh:
                m.rows.append(_row(0, m0, seconds=0.0, batch_loss=None))
                if not (m0["finite"] and math.isfinite(m0["train_loss"])):
                    m.status = "diverged"
                    log.warning("the initial model has non-finite loss or weights; the run diverged before training")
                    checkpoint(m, fresh_rng)
                elif m.lr > torch.finfo(next(model0.parameters()).dtype).max:
                    m.status = "diverged"
                    log.warning("step 10^-alpha = %g exceeds the weights' floating-point range; the run diverged", m.lr)
                    checkpoint(m, fresh_rng)
                publish(m)
        for m in members:
            atomic_write_json(m.run_dir / "summary.json", summary(m))

        # Members resumed at different epochs: the earliest are trained alone until the next ones join them.
        pending = [(m.epoch, m) for m in members if m.status == "running"]
        levels = sorted({e for e, _ in pending})
        active: list[_Member] = []
        n = len(data.train_x)
        steps = -(-n // c["batch_size"])
        for i, level in enumerate(levels):
            joining = [m for e, m in pending if e == level]
            if not active:
                _set_rng_state(joining[0].rng, device, batches)
            elif not _same_rng(_rng_state(device, batches), joining[0].rng):
                log.warning("the runs resumed at epoch %d were saved with other generator states than the batch reaches", level)
            active += joining
            stack = B.StackedMLP.from_models([m.model for m in active])
            optimizer = B.StackedOptimizer.from_optimizers(opt_cfg["name"], stack, [m.optimizer for m in active], **kwargs)
            until = levels[i + 1] if i + 1 < len(levels) else c["epochs"]
            for epoch in range(level + 1, until + 1):
                bar, on_step = _progress(steps, f"epoch {epoch}/{c['epochs']} ({len(active)} runs)")
                _sync(device)
                t0 = time.perf_counter()
                try:
                    batch_loss = B.train_epoch(
                        stack, optimizer, data.train_x, data.train_y, c["batch_size"], batches,
                        on_step=None if on_step is None else lambda s, total: on_step(s, total.nanmean()),
                    )
                    _sync(device)
                finally:
                    bar.close()
                share = (time.perf_counter() - t0) / len(active)
                rng = _rng_state(device, batches)
                for k, (m, meas) in enumerate(zip(active, _measure_stacked(stack, data, batch_loss, eval_tf32))):
                    diverged = not (meas["finite"] and math.isfinite(meas["batch_loss"]) and math.isfinite(meas["train_loss"]))
                    m.rows.append(_row(epoch, meas, seconds=m.rows[-1]["seconds"] + share, batch_loss=meas["batch_loss"]))
                    if diverged:
                        m.status = "diverged"
                        log.warning("epoch %d: non-finite loss or weights; the run diverged (alpha=%g)", epoch, m.c["alpha"])
                    elif epoch == c["epochs"]:
                        m.status = "completed"
                    if m.status != "running" or epoch % c["checkpoint_every"] == 0:
                        stack.member(k, into=m.model)
                        optimizer.export_to(k, m.optimizer)
                        checkpoint(m, rng)
                    publish(m)
                    if m.status != "running":
                        atomic_write_json(m.run_dir / "summary.json", summary(m))
                keep = [k for k, m in enumerate(active) if m.status == "running"]
                if len(keep) < len(active):  # diverged members stop costing anything
                    active = [active[k] for k in keep]
                    if not active:
                        break
                    stack.select_(keep)
                    optimizer.select_(keep)
            for k, m in enumerate(active):  # back into the single-run objects, for the members joining next
                stack.member(k, into=m.model)
                optimizer.export_to(k, m.optimizer)
        out = [summary(m) for m in members]
        for m, s in zip(members, out):
            atomic_write_json(m.run_dir / "summary.json", s)
        return out
    except BaseException as err:
        for m in members:
            if m.status == "running":
                m.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
                try:
                    atomic_write_json(m.run_dir / "summary.json", summary(m, error=f"{type(err).__name__}: {err}"))
                except Exception:  # never hide the original error
                    log.exception("could not write %s", m.run_dir / "summary.json")
        raise


# ----------------------------------------------------------------------------------------------------
# Command line


# An absolute path: Hydra resolves a relative one against the *module* (pkg://) when the entry point is the
# console script or an import, and ``configs/`` is not a package. The checkout's tree, so an editable
# install (``pip install -e .``) is assumed; ``--config-dir`` adds another.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@hydra.main(version_base=None, config_path=str(CONFIG_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except (ConfigError, DatasetNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Console entry point: ``pathsgd-train key=value ...`` (same as ``python -m pathsgd.train``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
