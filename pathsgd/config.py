"""The runner's configuration: its validation, its defaults resolved once, and the name of the run it makes.

:func:`resolve` turns a composed config (Hydra's DictConfig, or a plain dict) into the plain, validated dict that
a run records: ``alpha`` resolved (null -> the optimizer's ``default_alpha``), ``data.validation`` resolved (null
-> the dataset's own), ``data.root`` expanded. :func:`run_name` names the run directory from it; Hydra calls it
as the ``${pathsgd_run:}`` resolver, so that a run and its resume find the same directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pathsgd.data import DATASET_NAMES, SCALES
from pathsgd.engine import OPTIMIZERS, resolve_device

__all__ = ["ConfigError", "INITS", "LOGGERS", "RESUME_MAY_CHANGE", "resolve", "validate_config", "resolve_alpha",
           "run_name", "as_dict", "flatten", "in_groups"]

INITS = ("balanced", "unbalanced")
ARCHS = ("mlp", "convnet")
LOGGERS = ("csv", "wandb")
WANDB_MODES = ("offline", "online", "disabled")
CAPTURES = ("none", "graph", "compile")  # speed.capture; none (or null) is eager

# Config keys that may change between a run and its resume; any other difference is refused.
# ``sweep``: a key of checkpoints written when the runner could train several step sizes in one process; it never
# changed what a run computes. ``data.verify``: whether the files were checked, not what they hold.
# ``speed.capture``: how the step runs, not what it computes (a change is logged). ``speed.tf32`` and
# ``speed.eval_tf32`` change the numbers' rounding, so a run keeps them: one run's epochs are all float32 or all TF32.
RESUME_MAY_CHANGE = ("resume", "epochs", "device", "phase", "study", "checkpoint_every", "logger", "data.root",
                      "data.download", "data.verify", "sweep", "speed.capture")
# Config keys that do not change what a run computes: left out of its name (alpha is resolved; epochs may grow).
_NOT_IN_THE_NAME = RESUME_MAY_CHANGE + ("optimizer.default_alpha",)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is accepted."""


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
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
    c = cfg if isinstance(cfg, dict) else as_dict(cfg)
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
                       ("data.verify", data.get("verify")),
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
    c = as_dict(c) if isinstance(c, DictConfig) else c
    flat = flatten({k: v for k, v in c.items() if k != "hydra"})
    flat["alpha"] = resolve_alpha(c)
    flat["data.validation"] = _validation_size(c)
    kept = {k: v for k, v in flat.items() if not in_groups(k, _NOT_IN_THE_NAME)}
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = (f"{c['optimizer']['name']}-{c['init']['name']}-a{_alpha_text(flat['alpha'])}"
                f"-d{float(c['model']['dropout'])}-s{c['seed']}")
    return f"{readable}-{digest}"


def _hydra_run_name(*, _root_: DictConfig) -> str:
    """``${pathsgd_run:}`` in the Hydra config: :func:`run_name` of the job's config (``invalid-config``
    when it cannot be named: the runner then reports the bad value itself)."""
    try:
        return run_name(as_dict(_root_))
    except Exception:  # noqa: BLE001 - validation, with its clear message, comes after Hydra made the directory
        return "invalid-config"


OmegaConf.register_new_resolver("pathsgd_run", _hydra_run_name, replace=True)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one level of dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        out.update(flatten(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def in_groups(key: str, groups: tuple[str, ...]) -> bool:
    """``key`` is one of ``groups`` or lies inside one (``logger.name`` inside ``logger``)."""
    return any(key == g or key.startswith(g + ".") for g in groups)




def resolve(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The validated config as plain containers, every default resolved once (see the module docstring)."""
    c = as_dict(cfg)
    validate_config(c)
    c["alpha"] = resolve_alpha(c)
    c["data"]["validation"] = _validation_size(c)
    c["data"]["root"] = str(Path(c["data"]["root"]).expanduser())
    if c["speed"]["capture"] == "none":  # as pathsgd.engine.train_epoch takes it: None (eager)
        c["speed"]["capture"] = None
    return c
