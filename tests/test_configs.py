"""The Hydra config tree composes for every option, and bad values are refused with clear messages."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pathsgd.data import DATASET_NAMES
from pathsgd.engine import OPTIMIZERS, step_size
from pathsgd.config import INITS, ConfigError, as_dict, resolve_alpha, run_name, validate_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


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
    assert c["model"] == {"arch": "mlp", "channels": 16, "hidden": [4000, 4000], "dropout": 0.0}
    assert c["batch_size"] == 100
    assert c["data"]["scale"] == "unit"
    assert c["device"] == "auto" and c["resume"] is False and c["phase"] == "single"
    assert c["speed"] == {"capture": "none", "tf32": False, "eval_tf32": False}  # eager float32, as the paper
    # alpha defaults to the optimizer's documented default_alpha
    assert c["alpha"] == c["optimizer"]["default_alpha"]
    assert c["data"]["root"] == "~/.cache/pathsgd/data"  # expanded by train()
    validate_config(c)


@pytest.mark.parametrize("dataset", DATASET_NAMES)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_dataset_and_optimizer_composes(dataset, optimizer):
    c = as_dict(make_cfg(f"dataset={dataset}", f"optimizer={optimizer}"))
    validate_config(c)
    assert c["dataset"]["name"] == dataset and c["optimizer"]["name"] == optimizer
    assert math.isfinite(resolve_alpha(c))
    expected_validation = 500 if dataset == "synthetic" else 10000
    assert c["data"]["validation"] is None and c["dataset"]["validation"] == expected_validation


@pytest.mark.parametrize("init", INITS)
def test_inits_compose(init):
    c = as_dict(make_cfg(f"init={init}"))
    validate_config(c)
    if init == "unbalanced":
        assert c["init"] == {"name": "unbalanced", "n_units": None, "base_mode": "power", "max_exponent": 30.0}


def test_alpha_null_means_the_optimizers_default():
    c = as_dict(make_cfg("optimizer=adagrad", "alpha=null"))
    assert resolve_alpha(c) == c["optimizer"]["default_alpha"] == 2
    assert resolve_alpha(as_dict(make_cfg("alpha=-0.5"))) == -0.5


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
        ("alpha=abc", r"alpha='abc' is not a real number"),
        ("epochs=0", r"epochs=0 is not a positive integer: epochs must be an integer >= 1"),
        ("batch_size=0", r"batch_size=0 is not a positive integer: batch_size must be an integer >= 1"),
        ("batch_size=2.5", r"batch_size=2.5 is not a positive integer"),
        ("dataset.name=foo", r"dataset.name='foo' is unknown: choose one of mnist, fashion_mnist, cifar10, cifar100, svhn, synthetic"),
        ("optimizer.name=rmsprop", r"optimizer.name='rmsprop' is unknown: choose one of sgd, adagrad, pathsgd, sgd_momentum, adam, pathsgd_momentum, path_adagrad, path_adam"),
        ("init.name=xavier", r"init.name='xavier' is unknown: choose one of balanced, unbalanced"),
        ("device=tpu", r"device='tpu' is unknown: choose one of auto, cpu, cuda, cuda:N"),
        ("model.dropout=1.0", r"model.dropout=1.0 is not a probability in \[0, 1\)"),
        ("model.hidden=[0,5]", r"model.hidden=\[0, 5\] is not a non-empty list of positive integers"),
        ("data.validation=-1", r"data.validation=-1 is not a non-negative integer"),
        ("data.scale=zscore", r"data.scale='zscore' is unknown: choose one of unit, standardize, none"),
        ("seed=-3", r"seed=-3 is not a non-negative integer"),
        ("speed.capture=cudagraph", r"speed.capture='cudagraph' is unknown: choose one of none, graph, compile"),
        ("speed.tf32=maybe", r"speed.tf32='maybe' is not a boolean: choose true or false"),
        ("speed.eval_tf32=1", r"speed.eval_tf32=1 is not a boolean: choose true or false"),
    ],
)
def test_bad_values_name_the_key_the_value_and_the_choices(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(make_cfg(override))


def test_bad_wandb_mode():
    with pytest.raises(ConfigError, match=r"logger.mode='sometimes' is unknown: choose one of offline, online, disabled"):
        validate_config(make_cfg("logger=wandb", "logger.mode=sometimes"))
