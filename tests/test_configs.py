"""The Hydra config tree composes for every option, and bad values are refused with clear messages."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pathsgd import MLP
from pathsgd.config import ConfigError, as_dict, composition_error, resolve, run_name
from pathsgd.data import DATASET_NAMES
from pathsgd.engine import step_size
from pathsgd.train import _build_optimizer

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
OPTIMIZERS = sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))


def make_cfg(*overrides: str, hydra_node: bool = False):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra_node)


def test_defaults_are_the_papers_setup(monkeypatch):
    monkeypatch.delenv("PATHSGD_DATA", raising=False)
    c = as_dict(make_cfg())
    assert c["dataset"]["name"] == "mnist"
    assert c["optimizer"]["name"] == "pathsgd"
    assert c["init"]["name"] == "balanced"
    assert c["logger"]["name"] == "csv"
    assert c["model"] == {"_target_": "pathsgd.MLP", "hidden": [4000, 4000], "dropout": 0.0}
    assert c["batch_size"] == 100
    assert c["data"]["scale"] == "unit"
    assert c["device"] == "auto" and c["resume"] is False and c["phase"] == "single"
    assert c["speed"] == {"capture": "none", "tf32": False, "eval_tf32": False}  # eager float32, as the paper
    # alpha defaults to the optimizer's documented default_alpha, the held-out points to the dataset's own
    assert c["alpha"] == c["optimizer"]["default_alpha"] and c["data"]["validation"] == 10000
    assert c["data"]["root"] == "~/.cache/pathsgd/data"  # expanded by resolve()
    assert resolve(c)["data"]["root"] == str(Path("~/.cache/pathsgd/data").expanduser())


@pytest.mark.parametrize("dataset", DATASET_NAMES)
def test_every_dataset_composes(dataset):
    c = resolve(make_cfg(f"dataset={dataset}"))
    assert c["dataset"]["name"] == dataset and c["data"]["validation"] == (500 if dataset == "synthetic" else 10000)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_composes_and_builds(optimizer):
    c = resolve(make_cfg(f"optimizer={optimizer}"))
    assert c["optimizer"]["name"] == optimizer
    assert math.isfinite(c["alpha"]) and c["alpha"] == c["optimizer"]["default_alpha"]
    built = _build_optimizer(c, MLP(6, 3, hidden=(4,)), 6)  # the class named by optimizer.kwargs._target_
    assert type(built).__module__.split(".")[0] in ("torch", "pathsgd")
    assert built.param_groups[0]["lr"] == pytest.approx(step_size(c["alpha"]))


@pytest.mark.parametrize("init", ["balanced", "unbalanced"])
def test_inits_compose(init):
    c = resolve(make_cfg(f"init={init}"))
    if init == "unbalanced":
        assert c["init"] == {"name": "unbalanced", "n_units": None, "base_mode": "power", "max_exponent": 30.0}


def test_the_model_group_has_no_dead_keys():
    assert as_dict(make_cfg("model=convnet"))["model"] == {"_target_": "pathsgd.models.ConvNet", "channels": 16,
                                                             "dropout": 0.0}
    assert as_dict(make_cfg("optimizer=adagrad", "alpha=-0.5"))["alpha"] == -0.5


def test_step_size_is_ten_to_minus_alpha():
    assert step_size(2) == pytest.approx(0.01)
    assert step_size(-1) == pytest.approx(10.0)
    assert step_size(0.5) == pytest.approx(10**-0.5)
    with pytest.raises(ValueError, match="alpha=nan is not finite"):
        step_size(float("nan"))


def test_run_dir_is_deterministic_from_the_config():
    cfg = make_cfg("dataset=cifar10", "optimizer=sgd", "init=unbalanced", "alpha=3", "model.dropout=0.5", "seed=7", hydra_node=True)
    run_dir = OmegaConf.to_container(cfg.hydra.run, resolve=True)["dir"]
    name = run_name(as_dict(cfg))
    assert name.startswith("sgd-unbalanced-a3-d0.5-s7-") and run_dir == f"outputs/runs/cifar10/{name}"
    sweep = OmegaConf.to_container(cfg.hydra.sweep, resolve=True)
    assert sweep["subdir"] == f"cifar10/{name}"


def test_data_root_and_wandb_mode_follow_the_environment(monkeypatch):
    monkeypatch.setenv("PATHSGD_DATA", "/somewhere/data")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    c = as_dict(make_cfg("logger=wandb"))
    assert c["data"]["root"] == "/somewhere/data"
    assert c["logger"]["mode"] == "offline" and c["logger"]["project"] == "pathsgd"
    assert c["logger"]["group"] == "mnist-pathsgd-balanced-d0.0-single"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert as_dict(make_cfg("logger=wandb"))["logger"]["mode"] == "online"
    monkeypatch.delenv("WANDB_MODE")
    assert as_dict(make_cfg("logger=wandb", "logger.mode=online"))["logger"]["mode"] == "online"


@pytest.mark.parametrize(
    "override, message",
    [
        ("alpha=nan", r"alpha=nan is not finite: alpha must be a finite real \(step size 10\^-alpha\)"),
        ("alpha=inf", r"alpha=inf is not finite"),
        ("alpha=400", r"alpha=400.0 is out of range"),
        ("epochs=0", r"epochs=0 is out of range: epochs must be an integer >= 1"),
        ("batch_size=0", r"batch_size=0 is out of range: batch_size must be an integer >= 1"),
        ("init.name=xavier", r"init.name='xavier' is unknown: choose one of balanced, unbalanced"),
        ("device=tpu", r"device='tpu' is unknown: choose one of auto, cpu, cuda, cuda:N"),
        ("model.dropout=1.0", r"model.dropout=1.0 is not a probability in \[0, 1\)"),
        ("data.validation=-1", r"data.validation=-1 is out of range: data.validation must be an integer >= 0"),
        ("data.scale=zscore", r"data.scale='zscore' is unknown: choose one of unit, standardize, none"),
        ("seed=-3", r"seed=-3 is out of range"),
        ("seed=99999999999999999999", r"^seed=99999999999999999999 is out of range: seed must be below 2\^63$"),
        ("speed.capture=cudagraph", r"speed.capture='cudagraph' is unknown: choose one of none, graph, compile"),
        ("+lr=0.01", r"Key 'lr' not in 'RunConfig'"),  # Hydra's own hint for a new key: the schema still refuses it
    ],
)
def test_bad_values_name_the_key_the_value_and_the_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        resolve(make_cfg(override))


@pytest.mark.parametrize(
    "override, message",
    [
        ("alpha=abc", r"alpha=abc: Value 'abc' of type 'str' could not be converted to Float"),
        ("batch_size=2.5", r"batch_size=2.5: Value '2.5' of type 'float' could not be converted to Integer"),
        ("speed.tf32=maybe", r"speed.tf32=maybe: Value 'maybe' is not a valid bool"),
        ("data.root=null", r"data.root=null: field 'data.root' is not Optional"),
        ("optimiser=sgd", r"Could not override 'optimiser'.*Key 'optimiser' not in 'RunConfig'"),
        ("model.arch=convnet", r"^Could not override 'model.arch'. Key 'arch' is not in struct; the model is a config "
                               r"group: model=mlp or model=convnet$"),
        ("dataset=foo", r"Could not find 'dataset/foo' Available options in 'dataset': cifar10 cifar100"),
        ("alpha=null", r"field 'alpha' is not Optional; leave alpha out for the optimizer's default_alpha$"),
        ("model.channels=8", r"Key 'channels' is not in struct; a key of model=convnet"),
    ],
)
def test_the_schema_refuses_wrong_types_and_unknown_keys_in_one_line(override, message):
    with pytest.raises(Exception) as err:
        make_cfg(override)
    line = composition_error(err.value)
    assert "\n" not in line and re.search(message, line), line


def test_a_plain_dict_is_typed_by_the_schema_too():
    c = as_dict(make_cfg())
    with pytest.raises(ConfigError, match="epochs"):
        resolve({**c, "epochs": "many"})


def test_bad_wandb_mode():
    with pytest.raises(ConfigError, match=r"logger.mode='sometimes' is unknown: choose one of offline, online, disabled"):
        resolve(make_cfg("logger=wandb", "logger.mode=sometimes"))
