"""The runner's configuration: its schema, the checks a type cannot make, and the name of the run it makes.

:class:`RunConfig` is the schema (Hydra's ConfigStore holds it as ``run_schema``, the base of
``configs/config.yaml``): it carries every top-level key's type and default, so Hydra refuses a value of the wrong
type while composing. The groups (``dataset``, ``optimizer``, ``init``, ``model``, ``logger``) are the YAML files in
``configs/``; ``optimizer.kwargs`` and ``model`` hold a ``_target_`` that :mod:`pathsgd.train` instantiates.
:func:`resolve` turns a composed config into the plain, checked dict that a run records; :func:`run_name` names
the run directory from it (Hydra calls it as the ``${pathsgd_run:}`` resolver, so a run and its resume meet).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING, DictConfig, OmegaConf

from pathsgd.data import SCALES
from pathsgd.engine import resolve_device

__all__ = ["ConfigError", "RunConfig", "RESUME_MAY_CHANGE", "resolve", "validate_config", "run_name", "as_dict",
           "flatten", "in_groups", "composition_error"]

WANDB_MODES = ("offline", "online", "disabled")
CAPTURES = ("none", "graph", "compile")  # speed.capture; none (or null) is eager
# Keys and values of earlier releases: the error for one names its new form.
RENAMED = {"'model.arch'": "the model is a config group: model=mlp or model=convnet",
           "'model.channels'": "a key of model=convnet (model=convnet model.channels=N)",
           "override alpha=null": "leave alpha out for the optimizer's default_alpha",
           "override data.validation=null": "leave data.validation out for the dataset's own number"}

# Config keys that may change between a run and its resume; any other difference is refused.
# ``data.verify``: whether the files were checked, not what they hold.
# ``speed.capture``: how the step runs, not what it computes (a change is logged). ``speed.tf32`` and
# ``speed.eval_tf32`` change the numbers' rounding, so a run keeps them: one run's epochs are all float32 or all TF32.
RESUME_MAY_CHANGE = ("resume", "overwrite", "epochs", "device", "phase", "study", "checkpoint_every", "logger",
                      "data.root", "data.download", "data.verify", "speed.capture")
# Config keys that do not change what a run computes: left out of its name (alpha is resolved; epochs may grow).
_NOT_IN_THE_NAME = RESUME_MAY_CHANGE + ("optimizer.default_alpha",)


@dataclass
class SpeedConfig:
    """How the training step runs (pathsgd.engine), not what it computes; off by default, for fidelity."""

    capture: Optional[str] = "none"  # none: eager | graph: one CUDA graph per step | compile: torch.compile's forward
    tf32: bool = False  # TF32 matmuls on CUDA, training and evaluation
    eval_tf32: bool = False  # TF32 for the per-epoch evaluation only


@dataclass
class DataConfig:
    root: str = "${oc.env:PATHSGD_DATA,'~/.cache/pathsgd/data'}"  # torchvision layout; `~` is expanded
    validation: int = II("dataset.validation")  # training points held out; 0: train on the whole training set
    split_seed: int = II("seed")  # which points are held out
    scale: str = "unit"  # unit: pixels/255 in [0, 1] (paper silent) | standardize | none
    download: bool = True  # let torchvision download missing files
    verify: bool = True  # check the files against the originals; false: test fixtures only


@dataclass
class RunConfig:
    """Every key of one run (``configs/config.yaml`` picks the groups and documents each key)."""

    dataset: Any = MISSING
    optimizer: Any = MISSING
    init: Any = MISSING
    model: Any = MISSING
    logger: Any = MISSING
    alpha: float = II("optimizer.default_alpha")  # step size 10^-alpha
    epochs: int = 100
    seed: int = 0
    batch_size: int = 100
    device: str = "auto"
    resume: bool = False
    overwrite: bool = False  # true: a run directory that holds a run is started afresh (resume=false only)
    checkpoint_every: int = 1
    phase: str = "single"
    study: Optional[str] = None
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    data: DataConfig = field(default_factory=DataConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key, the value and what is accepted."""


def composition_error(err: BaseException) -> str:
    """One line for Hydra's refusal to compose (a value of the wrong type, an unknown key or group option)."""
    cause = err.__cause__ or err
    text = " ".join(str(err).split()).split(" Config search path")[0]
    text += "" if cause is err else ": " + str(cause).splitlines()[0]
    hint = next((f"; {new}" for old, new in RENAMED.items() if old in text), "")
    return re.sub(r" To append to your config use \S+", "", text) + hint if hint else text


def as_dict(cfg: DictConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config as plain containers (interpolations such as ``${oc.env:...}`` evaluated)."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(dict(cfg))
    # Key by key, each resolved against the whole config, leaving out the ``hydra`` node (its runtime fields
    # resolve only inside a Hydra job).
    return {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
            for key in cfg if key != "hydra"}


def _require(ok: Any, key: str, value: Any, problem: str) -> None:
    """Raise ``ConfigError("<key>=<value!r> <problem>")`` unless ``ok``."""
    if not ok:
        raise ConfigError(f"{key}={value!r} {problem}")


def _choice(key: str, value: Any, accepted: tuple[str, ...]) -> None:
    _require(value in accepted, key, value, f"is unknown: choose one of {', '.join(accepted)}")


def validate_config(c: Mapping[str, Any]) -> None:
    """What a type cannot say about a typed config (:func:`resolve`'s): ranges, names, the device. Raises
    :class:`ConfigError` (a ValueError) naming the key, the value and what is accepted."""
    alpha = c["alpha"]
    _require(math.isfinite(alpha), "alpha", alpha, "is not finite: alpha must be a finite real (step size 10^-alpha)")
    # 10^-alpha must be a finite, non-zero float
    _require(-300 < alpha < 300, "alpha", alpha, "is out of range: 10^-alpha must be a positive float, so |alpha| < 300")
    data, logger, model = c["data"], c["logger"], c["model"]
    for key, value, least in (("epochs", c["epochs"], 1), ("batch_size", c["batch_size"], 1),
                              ("checkpoint_every", c["checkpoint_every"], 1), ("seed", c["seed"], 0),
                              ("data.split_seed", data["split_seed"], 0), ("data.validation", data["validation"], 0)):
        _require(value >= least, key, value, f"is out of range: {key} must be an integer >= {least}")
    for key, value in (("seed", c["seed"]), ("data.split_seed", data["split_seed"])):  # torch's generators take 64 bits
        _require(value < 2**63, key, value, f"is out of range: {key} must be below 2^63")
    _choice("init.name", c["init"].get("name"), ("balanced", "unbalanced"))
    _choice("logger.name", logger.get("name"), ("csv", "wandb"))
    if logger["name"] == "wandb":
        _choice("logger.mode", logger.get("mode"), WANDB_MODES)
        _require(isinstance(logger.get("project"), str) and logger["project"], "logger.project", logger.get("project"),
                 "is not a name: a non-empty label")
    try:
        resolve_device(c["device"])  # an unknown name, or cuda asked for where there is none
    except ValueError as err:
        raise ConfigError(str(err)) from None
    _require(c["phase"], "phase", c["phase"], "is not a name: a non-empty label")
    _require(data["root"], "data.root", data["root"], "is not a directory path: where the datasets are, e.g. data.root=~/data")
    _choice("data.scale", data["scale"], SCALES)
    _choice("speed.capture", c["speed"]["capture"] or "none", CAPTURES)
    dropout = model.get("dropout")  # the other model keys are the model class's to check
    _require(isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0, "model.dropout", dropout,
             "is not a probability in [0, 1): the chance of dropping a hidden unit")


def _alpha_text(alpha: float) -> str:
    """An alpha as run names print it: ``3`` for an integer alpha, else the float (``0.5``)."""
    alpha = float(alpha)
    return str(int(alpha)) if alpha.is_integer() else repr(alpha)


def run_name(c: DictConfig | Mapping[str, Any]) -> str:
    """A run's name, and its directory's, from its config: ``<optimizer>-<init>-a<alpha>-d<dropout>-s<seed>-<hash>``.

    The readable part names the coordinates of the paper's figures; the hash (8 hex digits) covers every
    other key that changes the result (:data:`_NOT_IN_THE_NAME` lists those that do not, and a ``_target_``
    follows from its group's choice), so two configs that could train differently never share a directory.
    ``epochs`` is left out: a finished run may be extended. The one function that names runs.
    """
    c = as_dict(c) if isinstance(c, DictConfig) else c
    flat = flatten({k: v for k, v in c.items() if k != "hydra"})
    kept = {k: v for k, v in flat.items() if not in_groups(k, _NOT_IN_THE_NAME) and not k.endswith("_target_")}
    kept["alpha"] = float(kept["alpha"])
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
    readable = (f"{c['optimizer']['name']}-{c['init']['name']}-a{_alpha_text(c['alpha'])}"
                f"-d{float(c['model']['dropout'])}-s{c['seed']}")
    return f"{readable}-{digest}"


def _hydra_run_name(*, _root_: DictConfig) -> str:
    """``${pathsgd_run:}`` in the Hydra config: :func:`run_name` of the job's config (``invalid-config-<hash of
    the job's overrides>`` when it cannot be named: the runner then reports the bad value itself)."""
    try:
        return run_name(resolve(_root_, check=False))
    except Exception:  # noqa: BLE001 - validation, with its clear message, comes after Hydra made the directory
        from hydra.core.hydra_config import HydraConfig

        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
        return "invalid-config-" + hashlib.sha1(" ".join(overrides).encode()).hexdigest()[:8]


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


def resolve(cfg: DictConfig | Mapping[str, Any], check: bool = True) -> dict[str, Any]:
    """The config typed by :class:`RunConfig` (a plain dict too), checked and as plain containers, ``data.root``
    expanded and ``speed.capture`` as :func:`pathsgd.engine.train_epoch` takes it (None: eager)."""
    try:
        typed = OmegaConf.merge(OmegaConf.structured(RunConfig), as_dict(cfg))
        c = as_dict(typed)
    except Exception as err:  # omegaconf's errors name the key and the expected type
        raise ConfigError(composition_error(err)) from None
    if check:
        validate_config(c)
    c["alpha"] = float(c["alpha"])
    c["data"]["root"] = str(Path(c["data"]["root"]).expanduser())
    if c["speed"]["capture"] == "none":
        c["speed"]["capture"] = None
    return c
