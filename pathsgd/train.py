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

import contextlib
import hashlib
import json
import logging
import math
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from pathsgd.checkpoint import CHECKPOINT_NAME, atomic_write_json, load_checkpoint, save_checkpoint
from pathsgd.data import DATASET_NAMES, SCALES, DataFileError, DatasetNotFoundError, load_splits
from pathsgd.engine import (OPTIMIZERS, all_finite, evaluate, make_optimizer, resolve_device, step_size, tf32_matmuls,
                            train_epoch)
from pathsgd.sinks import COLUMNS, CSVSink, WandbSink

__all__ = ["ConfigError", "INITS", "LOGGERS", "train", "validate_config", "resolve_alpha", "run_name", "main"]

log = logging.getLogger("pathsgd.train")  # not __main__ under `python -m`

INITS = ("balanced", "unbalanced")
ARCHS = ("mlp", "convnet")
LOGGERS = ("csv", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
CAPTURES = ("none", "graph", "compile")  # speed.capture; none (or null) is eager

# Config keys that may change between a run and its resume; any other difference is refused.
# ``sweep``: a key of checkpoints written when the runner could train several step sizes in one process; it never
# changed what a run computes. ``speed.capture``: how the step runs, not what it computes (a change is logged). ``speed.tf32`` and ``speed.eval_tf32`` change the
# numbers' rounding, so a run keeps them: one run's epochs are all float32 or all TF32.
_RESUME_MAY_CHANGE = ("resume", "epochs", "device", "phase", "study", "checkpoint_every", "logger", "data.root",
                      "data.download", "sweep", "speed.capture")
# Config keys that do not change what a run computes: left out of its name (alpha is resolved; epochs may grow).
_NOT_IN_THE_NAME = _RESUME_MAY_CHANGE + ("optimizer.default_alpha",)
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
    # Key by key, each resolved against the whole config, leaving out the ``hydra`` node (its runtime fields
    # resolve only inside a Hydra job).
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key != "hydra"}


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


def _require(ok: Any, key: str, value: Any, problem: str) -> None:
    """Raise ``ConfigError("<key>=<value!r> <problem>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} {problem}")


def _choice(key: str, value: Any, accepted: tuple[str, ...]) -> None:
    _require(value in accepted, key, value, f"is unknown: choose one of {', '.join(accepted)}")


def _positive_int(key: str, value: Any) -> None:
    _require(_is_int(value) and value >= 1, key, value, f"is not a positive integer: {key} must be an integer >= 1")


def validate_config(cfg: DictConfig | Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` (a ValueError) naming the key, the value and what is accepted."""
    c = cfg if isinstance(cfg, dict) else _as_dict(cfg)
    _choice("dataset.name", c["dataset"].get("name"), DATASET_NAMES)
    _choice("optimizer.name", c["optimizer"].get("name"), OPTIMIZERS)
    _choice("init.name", c["init"].get("name"), INITS)
    logger, speed = c["logger"], c.get("speed") or {}
    _choice("logger.name", logger.get("name"), LOGGERS)
    wandb = logger["name"] == "wandb"
    if wandb:
        _choice("logger.mode", logger.get("mode"), WANDB_MODES)
    resolve_alpha(c)
    for key in ("epochs", "batch_size", "checkpoint_every"):
        _positive_int(key, c.get(key))
    seed = c.get("seed")
    _require(_is_int(seed) and seed >= 0, "seed", seed, "is not a non-negative integer: seed must be an integer >= 0")
    device = c.get("device")
    _require(isinstance(device, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", device), "device", device,
             "is unknown: choose one of auto, cpu, cuda, cuda:N")
    try:
        resolve_device(device)  # cuda asked for where there is none
    except ValueError as err:
        raise ConfigError(str(err)) from None
    study = c.get("study")
    _require(study is None or isinstance(study, str), "study", study,
             "is not a name: a label for the runs of one study (or null)")
    data = c["data"]
    for key, value in (("resume", c.get("resume")), ("data.download", data.get("download")),
                       ("speed.tf32", speed.get("tf32")), ("speed.eval_tf32", speed.get("eval_tf32"))):
        _require(isinstance(value, bool), key, value, "is not a boolean: choose true or false")
    for key, value in (("phase", c.get("phase")), *((("logger.project", logger.get("project")),) if wandb else ())):
        _require(isinstance(value, str) and value, key, value, "is not a name: a non-empty label")
    model = c["model"]
    hidden = model.get("hidden")
    _require(isinstance(hidden, list) and hidden and all(_is_int(h) and h >= 1 for h in hidden), "model.hidden",
             hidden, "is not a non-empty list of positive integers (the hidden layers' widths), e.g. [4000,4000]")
    _choice("model.arch", model.get("arch"), ARCHS)
    if model["arch"] == "convnet":
        _positive_int("model.channels", model.get("channels"))
        if model.get("dropout"):
            raise ConfigError(f"model.arch=convnet with model.dropout={model.get('dropout')}: the conv net has "
                              "no dropout; use model.dropout=0.0")
    dropout = model.get("dropout")
    _require(_is_real(dropout) and 0.0 <= dropout < 1.0, "model.dropout", dropout,
             "is not a probability in [0, 1): the chance of dropping a hidden unit")
    validation = _validation_size(c)
    _require(_is_int(validation) and validation >= 0, "data.validation", validation, "is not a non-negative "
             "integer: the number of held-out training points (0 = none, null = the dataset's default)")
    _choice("data.scale", data.get("scale"), SCALES)
    split_seed, root = data.get("split_seed"), data.get("root")
    _require(_is_int(split_seed) and split_seed >= 0, "data.split_seed", split_seed,
             "is not a non-negative integer: the seed that picks the held-out points (default: seed)")
    _require(isinstance(root, str) and root, "data.root", root,
             "is not a directory path: where the datasets are (torchvision layout), e.g. data.root=~/data")
    if speed.get("capture") is not None:
        _choice("speed.capture", speed["capture"], CAPTURES)


def _validation_size(c: Mapping[str, Any]) -> Any:
    """``data.validation``, or the dataset's own default (``dataset.validation``) when it is null."""
    value = c["data"].get("validation")
    return c["dataset"].get("validation", 10000) if value is None else value


def _alpha_text(alpha: float) -> str:
    """An alpha as run names print it: ``3`` for an integer alpha, else the float (``0.5``)."""
    alpha = float(alpha)
    return str(int(alpha)) if alpha.is_integer() else repr(alpha)


def run_name(c: DictConfig | Mapping[str, Any]) -> str:
    """A run's name, and its directory's, from its config: ``<optimizer>-<init>-a<alpha>-d<dropout>-s<seed>-<hash>``.

    The readable part names the coordinates of the paper's figures; the hash (8 hex digits) covers every
    other key that changes the result (:data:`_NOT_IN_THE_NAME` lists those that do not), so two configs that
    could train differently never share a directory. ``epochs`` is left out: a finished run may be extended.
    The one function that names runs: the runner, sweeps in one process and the figure pipeline use it.
    """
    c = _as_dict(c) if isinstance(c, DictConfig) else c
    flat = _flatten({k: v for k, v in c.items() if k != "hydra"})
    flat["alpha"] = resolve_alpha(c)
    flat["data.validation"] = _validation_size(c)
    kept = {k: v for k, v in flat.items() if not _in_groups(k, _NOT_IN_THE_NAME)}
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = (f"{c['optimizer']['name']}-{c['init']['name']}-a{_alpha_text(flat['alpha'])}"
                f"-d{float(c['model']['dropout'])}-s{c['seed']}")
    return f"{readable}-{digest}"


def _hydra_run_name(*, _root_: DictConfig) -> str:
    """``${pathsgd_run:}`` in the Hydra config: :func:`run_name` of the job's config (``invalid-config``
    when it cannot be named: the runner then reports the bad value itself)."""
    try:
        return run_name(_as_dict(_root_))
    except Exception:  # noqa: BLE001 - validation, with its clear message, comes after Hydra made the directory
        return "invalid-config"


OmegaConf.register_new_resolver("pathsgd_run", _hydra_run_name, replace=True)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def _in_groups(key: str, groups: tuple[str, ...]) -> bool:
    """``key`` is one of ``groups`` or lies inside one (``logger.name`` inside ``logger``)."""
    return any(key == g or key.startswith(g + ".") for g in groups)


def _check_resumable(saved: Mapping[str, Any], now: Mapping[str, Any], run_dir: Path) -> None:
    a, b = {**_SPEED_BEFORE_THE_GROUP, **_flatten(saved)}, _flatten(now)
    diffs = [f"{k}={a.get(k)!r} there, {b.get(k)!r} now" for k in sorted(set(a) | set(b))
             if not _in_groups(k, _RESUME_MAY_CHANGE) and a.get(k) != b.get(k)]
    if diffs:
        raise ConfigError(f"resume=true, but the checkpoint in {run_dir} was made with a different configuration: "
                          f"{'; '.join(diffs)}. Use the same configuration, another run directory "
                          "(hydra.run.dir=...), or resume=false.")
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
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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


# ----------------------------------------------------------------------------------------------------
# The run


# model.arch=convnet: the image shape each dataset's flattened inputs come from (synthetic: a square of its features).
IMAGE_SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32),
                "svhn": (3, 32, 32)}


def _image_shape(c: Mapping[str, Any], in_features: int) -> tuple[int, int, int]:
    side = math.isqrt(in_features)
    shape = IMAGE_SHAPES.get(c["dataset"]["name"]) or (1, side, side)
    if math.prod(shape) != in_features:
        raise ConfigError(f"model.arch=convnet needs images: dataset {c['dataset']['name']!r} has {in_features} "
                          "features, not an image (synthetic data: a square number of features, e.g. 64)")
    return shape


def _build_model(c: Mapping[str, Any], in_features: int, num_classes: int, seed: int) -> torch.nn.Module:
    from pathsgd import MLP, balanced_init_, unbalanced_init_
    from pathsgd.models import ConvNet

    if c["model"]["arch"] == "convnet":
        model = ConvNet(_image_shape(c, in_features), num_classes, channels=c["model"]["channels"])
    else:
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
                           download=data["download"], scale=data["scale"],
                           synthetic=c["dataset"].get("synthetic") if name == "synthetic" else None)
    except ValueError as err:
        raise ConfigError(f"dataset {name!r} with data.validation={validation}: {err}") from err


def train(cfg: DictConfig | Mapping[str, Any], run_dir: str | Path | None = None) -> dict[str, Any]:
    """Train one configuration; write metrics.csv, summary.json and checkpoint.pt into ``run_dir``.

    ``run_dir`` defaults to Hydra's output directory when Hydra is running, else the current directory.
    Returns the summary dict (also written to ``summary.json``). Raises :class:`ConfigError` on bad input.
    """
    c = _as_dict(cfg)
    validate_config(c)
    c["alpha"] = resolve_alpha(c)
    c["data"]["validation"] = _validation_size(c)
    c["data"]["root"] = str(Path(c["data"]["root"]).expanduser())
    if c["speed"]["capture"] == "none":  # as pathsgd.engine.train_epoch takes it: None (eager)
        c["speed"]["capture"] = None
    run_dir = Path(run_dir) if run_dir is not None else _default_run_dir()
    with tf32_matmuls(c["speed"]["tf32"], resolve_device(c["device"])), _sigterm_as_interrupt(), _lock(run_dir):
        return _train(c, run_dir)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a cluster's time limit) ends a run as Ctrl-C does: status ``interrupted``, its last
    finished epoch kept in every record. Either signal that arrives while an epoch's records are being written
    waits until they are all written (see ``_records_written_whole``)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return

    def interrupt(signum, frame):
        if _PENDING_SIGNAL["writing"]:
            _PENDING_SIGNAL["signum"] = signum
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_PENDING_SIGNAL: dict[str, Any] = {"writing": False, "signum": None}


@contextlib.contextmanager
def _records_written_whole() -> Iterator[None]:
    """Hold back an interrupt until one epoch is in the checkpoint, ``metrics.csv`` and ``summary.json`` alike:
    an interrupt between two of those writes would leave them naming different epochs."""
    _PENDING_SIGNAL["writing"] = True
    try:
        yield
    finally:
        _PENDING_SIGNAL["writing"] = False
    if _PENDING_SIGNAL["signum"] is not None:
        signum, _PENDING_SIGNAL["signum"] = _PENDING_SIGNAL["signum"], None
        raise KeyboardInterrupt(f"signal {signum}")


class _Run:
    """What a run carries from epoch to epoch: its config, directory, model, optimizer and records."""

    def __init__(self, c: dict[str, Any], run_dir: Path, model: torch.nn.Module, optimizer, rng: dict[str, Any]) -> None:
        self.c, self.run_dir, self.model, self.optimizer, self.rng = c, run_dir, model, optimizer, rng
        self.lr = step_size(c["alpha"])
        self.rows: list[dict[str, Any]] = []
        self.status = "running"
        self.sink = CSVSink(run_dir / "metrics.csv")
        self.wandb: WandbSink | None = None
        self.wandb_id: str | None = None

    @property
    def epoch(self) -> int:
        return self.rows[-1]["epoch"] if self.rows else -1


def _train(c: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The training loop of :func:`train`, on a validated config."""
    eval_tf32 = c["speed"]["tf32"] or c["speed"]["eval_tf32"]
    device = resolve_device(c["device"])
    seed = c["seed"]
    # Data first: a missing dataset or an impossible validation size fails before any record is written.
    data = _load_data(c, device)

    torch.manual_seed(_derive_seed(seed, "dropout"))  # the global generators drive dropout
    batches = torch.Generator(device=device).manual_seed(_derive_seed(seed, "batches"))
    # The init's and the optimizer's own checks name the bad option; say which config group holds it.
    try:
        model = _build_model(c, data.in_features, data.num_classes, seed).to(device)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"init={c['init']['name']} (init.*): {err}") from err
    fresh_rng = _rng_state(device, batches)
    opt_cfg = c["optimizer"]
    try:
        kwargs = dict(opt_cfg.get("kwargs") or {})
        if c["model"]["arch"] == "convnet" and opt_cfg["name"].startswith("path"):
            kwargs["input_shape"] = (data.in_features,)  # gamma of a conv net depends on its input's size
        optimizer = make_optimizer(opt_cfg["name"], model, step_size(c["alpha"]), **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"optimizer={opt_cfg['name']} (optimizer.kwargs.*): {err}") from err
    run = _Run(c, run_dir, model, optimizer, fresh_rng)
    _resume(run)
    if run.rows:  # the checkpoint's rows are the record: a lost or stale metrics.csv is rebuilt from them
        run.sink.write(run.rows)

    env = {"commit": _git_commit(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    # Say where it runs and where it writes: device=auto falls back to the CPU silently otherwise.
    log.info("%s on %s (%s) -> %s", run_name(c), device, env["device"], run_dir.resolve())
    t_start = time.perf_counter()

    def summary(error: str | None = None) -> dict[str, Any]:
        return _summary_record(c, run.status, run.rows, run_dir, env, time.perf_counter() - t_start, run.wandb, error)

    def checkpoint(rng: Mapping[str, Any]) -> None:
        """What ``checkpoint.pt`` holds: everything a resume needs."""
        save_checkpoint(run_dir / CHECKPOINT_NAME, {
            "epoch": run.epoch, "status": run.status, "rows": run.rows, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng": rng, "config": c,
            "wandb_id": None if run.wandb is None else run.wandb.run_id})

    def publish() -> None:
        """metrics.csv (written after the checkpoint), W&B, the log line."""
        run.sink.write(run.rows)
        if run.wandb is not None:
            run.wandb.log(run.rows[-1])
        _log_row(run.rows[-1], c["epochs"])

    try:
        if c["logger"]["name"] == "wandb":
            lg = c["logger"]
            run.wandb = WandbSink(
                project=lg["project"], entity=lg.get("entity"), name=f"{c['dataset']['name']}-{run_name(c)}",
                group=c.get("study") or lg.get("group"), tags=lg.get("tags") or (), job_type=c["phase"], config=c,
                dir=run_dir, mode=lg["mode"], run_id=run.wandb_id)
        if run.status == "running" and not run.rows:  # row 0: the initial network
            m0 = _measure(model, data, None, eval_tf32)
            run.rows.append(_row(0, m0, seconds=0.0, batch_loss=None))
            if not (m0["finite"] and math.isfinite(m0["train_loss"])):
                run.status = "diverged"  # e.g. an init that overflowed: training it would be meaningless
                log.warning("the initial model has non-finite loss or weights; the run diverged before training")
                checkpoint(fresh_rng)
            elif run.lr > torch.finfo(next(model.parameters()).dtype).max:
                run.status = "diverged"  # the first update is infinite (torch even refuses to apply it)
                log.warning("step 10^-alpha = %g exceeds the weights' floating-point range; the run diverged", run.lr)
                checkpoint(fresh_rng)
            publish()
        atomic_write_json(run_dir / "summary.json", summary())
        if run.status == "running":
            _train_epochs(run, data, device, batches, eval_tf32, checkpoint, publish,
                          lambda: atomic_write_json(run_dir / "summary.json", summary()))
        record = summary()
        atomic_write_json(run_dir / "summary.json", record)
        if run.wandb is not None:
            run.wandb.set_summary({"status": run.status,
                                   **{f"final/{k}": v for k, v in record["final"].items() if v is not None}})
        return record
    except BaseException as err:
        if run.status == "running":
            run.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
            try:
                atomic_write_json(run_dir / "summary.json", summary(error=f"{type(err).__name__}: {err}"))
            except Exception:  # never hide the original error
                log.exception("could not write %s", run_dir / "summary.json")
        raise
    finally:
        if run.wandb is not None:
            run.wandb.save(run_dir / "metrics.csv", run_dir / "summary.json")
            run.wandb.finish(exit_code=0 if run.status in ("completed", "diverged") else 1)


def _lock(run_dir: Path):
    """An exclusive lock on ``run_dir`` while a run trains in it: a second process gets a clear error, not a race
    in which the last writer wins. The operating system releases it when the process ends, however it ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / ".lock", "a+")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): no lock
        pass
    except OSError:
        handle.close()
        raise ConfigError(f"{run_dir} is in use: another run is training in it now. Wait for it, or give this run "
                          "another directory (hydra.run.dir=...)") from None
    return handle


def _resume(m: _Run) -> None:
    """Load ``m``'s checkpoint when ``resume=true`` asks for it; say what happens either way."""
    ckpt_path = m.run_dir / CHECKPOINT_NAME
    if not m.c["resume"]:
        if ckpt_path.is_file():
            log.warning("%s already holds a run; starting afresh over it (resume=true would continue it)", m.run_dir)
        return
    if not ckpt_path.is_file():
        log.info("no checkpoint in %s yet: a fresh start", m.run_dir)  # what resume=true in a sweep expects
        return
    try:
        state = load_checkpoint(ckpt_path)
        _ = state["config"], state["model"], state["optimizer"], state["rows"], state["rng"], state["epoch"]
    except Exception as err:  # noqa: BLE001 - truncated, garbage, or not ours: one line, never weights_only=False
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{ckpt_path} cannot be resumed: it is truncated, corrupt or not a checkpoint of this runner "
                          f"({reason[:120]}). Move it away and run again with resume=false to start afresh, or restore "
                          "the file from a copy.") from None
    _check_resumable(state["config"], m.c, m.run_dir)
    m.model.load_state_dict(state["model"])
    m.optimizer.load_state_dict(state["optimizer"])
    m.rng, m.rows, m.wandb_id = state["rng"], list(state["rows"]), state.get("wandb_id")
    if state["status"] == "diverged" or state["epoch"] >= m.c["epochs"]:
        m.status = state["status"] if state["status"] == "diverged" else "completed"
        log.warning("run in %s already %s at epoch %d; nothing to do", m.run_dir, m.status, state["epoch"])
    else:
        log.info("resuming %s from epoch %d", m.run_dir, state["epoch"])


def _train_epochs(run: _Run, data, device, batches, eval_tf32, checkpoint, publish, record) -> None:
    """Train from the run's last epoch until it completes or diverges, recording every epoch."""
    c = run.c
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
        meas = _measure(run.model, data, batch_loss, eval_tf32)
        with _records_written_whole():
            before = run.rows, run.status
            run.rows = run.rows + [_row(epoch, meas, seconds=run.rows[-1]["seconds"] + elapsed, batch_loss=meas["batch_loss"])]
            if not (meas["finite"] and math.isfinite(meas["batch_loss"]) and math.isfinite(meas["train_loss"])):
                run.status = "diverged"
                log.warning("epoch %d: non-finite loss or weights; the run diverged (alpha=%g)", epoch, c["alpha"])
            elif epoch == c["epochs"]:
                run.status = "completed"
            try:  # checkpoint, then metrics.csv: if either write fails, the summary keeps the last epoch both hold
                if run.status != "running" or epoch % c["checkpoint_every"] == 0:
                    checkpoint(rng)
                publish()
            except BaseException:
                run.rows, run.status = before
                raise
            record()  # summary.json, each epoch
        if run.status != "running":
            return


def _summary_record(
    c: Mapping[str, Any], status: str, rows: list[dict[str, Any]], run_dir: Path, env: Mapping[str, Any],
    wall_seconds: float, sink_wandb: WandbSink | None, error: str | None = None,
) -> dict[str, Any]:
    """What ``summary.json`` holds (``c`` is the run's resolved config, its ``alpha`` resolved)."""
    out = {
        "status": status, "epochs_completed": rows[-1]["epoch"] if rows else 0, "epochs": c["epochs"],
        "final": dict(rows[-1]) if rows else {}, "alpha": c["alpha"], "lr": step_size(c["alpha"]), "phase": c["phase"],
        "run_name": run_name(c), "run_dir": str(run_dir.resolve()), **env, "wall_seconds": wall_seconds,
        "wandb": None if sink_wandb is None else {"id": sink_wandb.run_id, "dir": str(Path(sink_wandb.run.dir).parent)},
        "config": c,
    }
    return out if error is None else {**out, "error": error}


def _log_row(row: Mapping[str, Any], epochs: int) -> None:
    """One line per epoch (the progress bar shows only on a terminal; these lines go to the log everywhere)."""
    left = (epochs - row["epoch"]) * row["seconds"] / row["epoch"] if row["epoch"] else None
    log.info(
        "epoch %d/%d  train_loss %.4g  train_error %.4f  val_error %s  test_error %.4f  path_norm %.4g  (%.1f s%s)",
        row["epoch"], epochs, row["train_loss"], row["train_error"],
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
            sys.exit(2)
        # In a sweep, one bad job is recorded and the others run; the exit status counts the failures.
        run_dir = _default_run_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "summary.json", {"status": "failed", "error": str(err), "epochs_completed": 0,
                                                     "overrides": list(HydraConfig.get().overrides.task)})
        _FAILED_JOBS.append(f"{run_dir}: {err}")
    except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: the records say interrupted, at their last epoch
        print(f"interrupted ({err or 'SIGINT'}); resume=true continues the run", file=sys.stderr)
        sys.exit(130)


def main() -> None:
    """Console entry point: ``pathsgd-train key=value ...`` (same as ``python -m pathsgd.train``).

    Exit status: 0; 2 for a bad value or data file; in a ``--multirun``, the number of jobs that failed so
    (each recorded in its directory's summary.json, the other jobs run)."""
    _hydra_main()
    if _FAILED_JOBS:
        print(f"{len(_FAILED_JOBS)} job(s) of the sweep failed:\n  " + "\n  ".join(_FAILED_JOBS), file=sys.stderr)
        sys.exit(min(len(_FAILED_JOBS), 125))


if __name__ == "__main__":
    main()
