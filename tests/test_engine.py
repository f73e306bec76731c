"""One engine: the runner trains through the public optimizers, exactly as a user's own loop does.

Each test trains a run through the runner (``pathsgd.train.train``) and through a plain loop written as a
user would (``opt = PathSGD(model, lr)``, ``torch.optim.SGD``, ``torch.optim.Adagrad``; ``zero_grad``,
``backward``, ``step``) on the same batches, and compares the weights. The user's Path-SGD loop also checks
every step against the paper's update computed independently (gamma from the |w|^2 twin, in float64), so a
change to the Path-SGD update (say, no division by gamma) fails here even though runner and loop share it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import pathsgd.train as train_mod
from pathsgd import MLP, PathAdaGrad, PathAdam, PathSGD, path_scales
from pathsgd.atomic import load_checkpoint
from pathsgd.data import load_splits
from pathsgd.engine import step_size, train_epoch
from pathsgd.train import run_name, train

REPO = Path(__file__).resolve().parents[1]
TINY = (
    "dataset=synthetic",
    "dataset.synthetic.n_train=260",
    "dataset.synthetic.n_test=50",
    "dataset.synthetic.in_features=12",
    "data.validation=60",
    "batch_size=30",  # 200 training points: 7 steps an epoch, the last one smaller
    "model.hidden=[16,16]",
    "epochs=2",
    "device=cpu",
)
# Step sizes that learn without diverging in 14 steps; SGD on the unbalanced init needs small ones.
ALPHA = {"pathsgd": 1, "sgd": 1, "adagrad": 2, ("sgd", "unbalanced"): 7, "pathsgd_momentum": 2, "sgd_momentum": 2,
         "path_adagrad": 3, "adam": 3, "path_adam": 4}


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def user_loop(c: dict, optimizer: str, epochs: int) -> MLP:
    """What a user writes: build the model (seeded as the runner seeds it), an optimizer, and the loop."""
    data = load_splits("synthetic", "unused", validation=60, seed=c["seed"], synthetic=c["dataset"]["synthetic"])
    torch.manual_seed(train_mod._derive_seed(c["seed"], "dropout"))  # dropout's generator, as the runner seeds it
    order = torch.Generator().manual_seed(train_mod._derive_seed(c["seed"], "batches"))
    model = train_mod._build_model(c, data.in_features, data.num_classes, c["seed"])
    lr = step_size(c["alpha"])
    opt = {
        "pathsgd": lambda: PathSGD(model, lr),
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=lr),
        "adagrad": lambda: torch.optim.Adagrad(model.parameters(), lr=lr),
        "pathsgd_momentum": lambda: PathSGD(model, lr, momentum=0.9),
        "sgd_momentum": lambda: torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9),
        "path_adagrad": lambda: PathAdaGrad(model, lr),
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=lr),
        "path_adam": lambda: PathAdam(model, lr),
    }[optimizer]()
    x, y = data.train_x, data.train_y
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=order)
        for start in range(0, len(x), c["batch_size"]):
            idx = perm[start : start + c["batch_size"]]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            expected = paper_update(model, lr) if optimizer == "pathsgd" else None
            opt.step()
            if expected is not None:
                for name, w in model.named_parameters():
                    scale = expected[name].abs().max().item()
                    torch.testing.assert_close(w.double(), expected[name], rtol=1e-5, atol=1e-6 * scale,
                                               msg=lambda m, name=name: f"Path-SGD's step on {name}: {m}")
    return model


def paper_update(model: torch.nn.Module, lr: float) -> dict[str, torch.Tensor]:
    """w - lr * grad / gamma_2(w, e) (eq. 8), gamma from the |w|^2 twin (not Algorithm 1's chains), float64."""
    gamma = path_scales(model, 2.0, method="generic")
    return {name: w.detach().double() - lr * w.grad.double() / gamma[name] for name, w in model.named_parameters()}


@pytest.mark.parametrize("init", ["balanced", "unbalanced"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("optimizer", ["pathsgd", "sgd", "adagrad"])
def test_the_runner_trains_as_a_users_loop_with_the_public_optimizer(tmp_path, optimizer, dropout, init):
    alpha = ALPHA.get((optimizer, init), ALPHA[optimizer])
    overrides = [f"optimizer={optimizer}", f"model.dropout={dropout}", f"init={init}", f"alpha={alpha}"]
    if init == "unbalanced":
        overrides.append("init.max_exponent=8")  # weights spanning ~1e-8..1e8
    cfg = make_cfg(*overrides)
    summary = train(cfg, run_dir=tmp_path)
    assert summary["status"] == "completed"
    runner = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    model = user_loop(summary["config"], optimizer, epochs=2)
    initial = train_mod._build_model(summary["config"], 12, 10, 0).state_dict()
    for name, w in model.state_dict().items():
        torch.testing.assert_close(runner[name], w, rtol=1e-6, atol=0, msg=lambda m, name=name: f"{name}: {m}")
        assert not torch.equal(w, initial[name]), f"{name} did not move"


@pytest.mark.parametrize("optimizer", ["pathsgd_momentum", "sgd_momentum", "path_adagrad", "adam", "path_adam"])
def test_the_runner_trains_the_family_as_a_users_loop(tmp_path, optimizer):
    summary = train(make_cfg(f"optimizer={optimizer}", f"alpha={ALPHA[optimizer]}", "model.dropout=0.5"), run_dir=tmp_path)
    assert summary["status"] == "completed"
    runner = load_checkpoint(tmp_path / "checkpoint.pt")["model"]
    for name, w in user_loop(summary["config"], optimizer, epochs=2).state_dict().items():
        torch.testing.assert_close(runner[name], w, rtol=1e-6, atol=0, msg=lambda m, name=name: f"{name}: {m}")


def test_the_paper_update_check_catches_an_update_without_gamma(monkeypatch, tmp_path):
    """The check above is not vacuous: Path-SGD with the division by gamma dropped (plain SGD) fails it."""
    from pathsgd import optim

    def sgd_instead(params, grads, momentum_buffers, rows, cols, *, lr, scratch=None, **momentum):
        for w, g in zip(params, grads):
            w.add_(g, alpha=-lr)

    monkeypatch.setattr(optim, "path_sgd", sgd_instead)
    summary = train(make_cfg("optimizer=pathsgd", "alpha=1", "epochs=1"), run_dir=tmp_path)
    with pytest.raises(AssertionError, match="Path-SGD's step"):
        user_loop(summary["config"], "pathsgd", epochs=1)


# Every key that changes what a run computes, with another value: each must give another run directory.
CHANGES_RESULT = [
    "model.hidden=[16,8]", "batch_size=20", "data.scale=standardize", "data.validation=50", "data.split_seed=3",
    "init=unbalanced", "optimizer.kwargs.p=1.0", "optimizer=sgd", "optimizer=adagrad", "dataset.name=mnist",
    "dataset.synthetic.n_train=300", "seed=1", "model.dropout=0.5", "alpha=2", "speed.tf32=true",
]
# Keys that do not: the same directory, so that resume=true finds the run (epochs: a run may be extended).
KEEPS_RESULT = ["epochs=5", "resume=true", "device=auto", "phase=final", "study=fig2", "checkpoint_every=2", "logger=wandb",
                "data.root=/elsewhere", "data.download=false", "speed.capture=graph"]


def test_one_name_per_result():
    base = run_name(make_cfg("alpha=1"))
    assert base.startswith("pathsgd-balanced-a1-d0.0-s0-") and len(base.rsplit("-", 1)[1]) == 8
    names = {o: run_name(make_cfg("alpha=1", o)) for o in CHANGES_RESULT}
    for override, name in names.items():
        assert name != base, f"{override} kept the directory {base}"
    assert len(set(names.values())) == len(names)
    for override in KEEPS_RESULT:
        assert run_name(make_cfg("alpha=1", override)) == base, override
    assert run_name(make_cfg("alpha=0.5")).startswith("pathsgd-balanced-a0.5-d0.0-s0-")
    assert run_name(make_cfg("alpha=1.0")) == base  # one way to print an alpha


def test_the_cli_run_directory_is_the_run_name(tmp_path):
    """Hydra's run directory comes from the same function (the ``pathsgd_run`` resolver)."""
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        cfg = compose(config_name="config", overrides=[*TINY, "alpha=1"], return_hydra_config=True)
    assert cfg.hydra.run.dir == f"outputs/runs/synthetic/{run_name(make_cfg('alpha=1'))}"
