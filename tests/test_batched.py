"""Many runs in one process (issue 5): each member of a batched sweep equals its separate run.

The library (``pathsgd.batched``) against the runner's own step (``pathsgd.engine.train_epoch`` with
``make_optimizer``, i.e. torch.optim.SGD / Adagrad and pathsgd.PathSGD) over 10 steps; then the runner's
``sweep.batched=true`` against separate ``train`` runs; then the figure pipeline with a batched sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from pathsgd import MLP, balanced_init_, path_norm, unbalanced_init_
from pathsgd import batched as B
from pathsgd.checkpoint import load_checkpoint
from pathsgd.engine import evaluate, make_optimizer, train_epoch
from pathsgd.geometry import mlp_scale_factors
from pathsgd.sinks import read_metrics_csv
from pathsgd.train import ConfigError, train, train_batched

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-5  # float32 rounding: a batched product sums in another order than a plain one

# Step sizes per optimizer: three alphas that all learn without diverging in 10 steps. SGD on the unbalanced
# init blows up at the balanced init's step sizes (weights of 1e8 get gradients of 1e8), and a blow-up
# amplifies rounding without bound; it gets steps that keep it finite.
ALPHAS = {"sgd": [0.5, 1.0, 2.0], "adagrad": [1.5, 2.0, 3.0], "pathsgd": [0.5, 1.0, 2.0], ("sgd", "unbalanced"): [6, 7, 8]}
KWARGS = {
    "sgd": {"momentum": 0.0, "weight_decay": 0.0},
    "adagrad": {"eps": 1e-10, "initial_accumulator_value": 0.0, "lr_decay": 0.0, "weight_decay": 0.0},
    "pathsgd": {"p": 2.0},
}


def make_model(init: str, dropout: float, seed: int = 0) -> MLP:
    torch.manual_seed(seed)
    model = MLP(12, 5, hidden=(16, 16), dropout=dropout)
    gen = torch.Generator().manual_seed(seed)
    balanced_init_(model, generator=gen)
    if init == "unbalanced":
        unbalanced_init_(model, generator=gen, max_exponent=8.0)  # weights spanning ~1e-8..1e8
    return model


def data(n: int = 50):
    gen = torch.Generator().manual_seed(1)
    return torch.rand(n, 12, generator=gen), torch.randint(0, 5, (n,), generator=gen)


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    torch.testing.assert_close(a, b, rtol=RTOL, atol=RTOL * b.abs().max().item(), msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("dropout", [0.0, 0.5])
@pytest.mark.parametrize("init", ["balanced", "unbalanced"])
@pytest.mark.parametrize("name", ["sgd", "adagrad", "pathsgd"])
def test_members_equal_their_separate_runs_over_10_steps(name, init, dropout):
    """10 steps (2 epochs of 5 batches, the last one smaller) of 3 alphas at once vs 3 separate runs."""
    x, y = data(46)
    lrs = [10.0**-a for a in ALPHAS.get((name, init), ALPHAS[name])]
    separate = []
    for lr in lrs:
        model = make_model(init, dropout)  # consumes the global generator as the runner's model build does
        opt = make_optimizer(name, model, lr, **KWARGS[name])
        batches = torch.Generator().manual_seed(7)
        losses = [train_epoch(model, opt, x, y, 10, batches) for _ in range(2)]
        separate.append((model, opt, torch.stack(losses)))

    model0 = make_model(init, dropout)
    stack = B.StackedMLP.from_models([model0] * 3)
    opt = B.StackedOptimizer(name, stack, lrs, **KWARGS[name])
    batches = torch.Generator().manual_seed(7)
    losses = torch.stack([B.train_epoch(stack, opt, x, y, 10, batches) for _ in range(2)], dim=1)

    assert float(opt.steps[0]) == 10
    assert not torch.equal(stack.weights[0][0], model0.layers[0].weight)  # the step does something
    for k, (model, ref_opt, ref_losses) in enumerate(separate):
        assert_close(losses[k], ref_losses, f"member {k} batch losses")
        member = stack.member(k)
        for (pname, p), q in zip(model.named_parameters(), member.parameters()):
            assert_close(q, p, f"member {k} {pname}")
        # the member's state converts to its separate optimizer's state_dict
        twin = B.StackedOptimizer.from_optimizers(name, stack, [r[1] for r in separate], **KWARGS[name])
        exported = twin.export_to(k, make_optimizer(name, member, lrs[k], **KWARGS[name])).state_dict()
        ref_sd = ref_opt.state_dict()
        assert exported["param_groups"] == ref_sd["param_groups"]
        for i, s in ref_sd["state"].items():
            for key, value in s.items():
                assert_close(exported["state"][i][key].double(), value.double(), f"member {k} state {i}.{key}")
        # evaluation and path-norm per member
        loss, err = B.evaluate(stack, x, y, chunk=40)
        ref_loss, ref_err = evaluate(model, x, y)
        assert_close(loss[k], ref_loss, "eval loss")
        assert err[k] == ref_err
        assert_close(B.stacked_path_norm(stack)[k], path_norm(model), "path norm")


def test_scale_factors_equal_algorithm_1_per_member():
    models = [make_model("unbalanced", 0.0, seed=s) for s in range(3)]
    stack = B.StackedMLP.from_models(models)
    for k, model in enumerate(models):
        for (o, i), (ro, ri) in zip([(o[k], i[k]) for o, i in B.stacked_scale_factors(stack)], mlp_scale_factors(list(model.layers))):
            torch.testing.assert_close(o, ro, rtol=1e-12, atol=0)
            torch.testing.assert_close(i, ri, rtol=1e-12, atol=0)


def test_a_diverging_member_leaves_the_others_alone_and_can_be_dropped():
    x, y = data()
    model0 = make_model("balanced", 0.5)
    stack = B.StackedMLP.from_models([model0] * 3)
    opt = B.StackedOptimizer("sgd", stack, [1e30, 1e-1, 1e-2])
    batches = torch.Generator().manual_seed(7)
    B.train_epoch(stack, opt, x, y, 10, batches)
    finite = B.all_finite(stack)
    assert finite.tolist() == [False, True, True]
    ref = make_model("balanced", 0.5)
    ref_opt = make_optimizer("sgd", ref, 1e-1)
    train_epoch(ref, ref_opt, x, y, 10, torch.Generator().manual_seed(7))
    for q, p in zip(stack.member(1).parameters(), ref.parameters()):
        assert_close(q, p, "member beside a diverged one")
    stack.select_([1, 2])
    opt.select_([1, 2])
    assert stack.num_members == 2 and opt.lrs.tolist() == [1e-1, 1e-2]
    B.train_epoch(stack, opt, x, y, 10, batches)
    assert B.all_finite(stack).all()


def test_unsupported_options_are_refused():
    stack = B.StackedMLP.from_models([make_model("balanced", 0.0)])
    with pytest.raises(ValueError, match="foreach"):
        B.StackedOptimizer("sgd", stack, [0.1], foreach=True)
    with pytest.raises(ValueError, match="unknown"):
        B.StackedOptimizer("adam", stack, [0.1])
    with pytest.raises(ValueError, match="lr="):
        B.StackedOptimizer("sgd", stack, [float("inf")])


# --------------------------------------------------------------------------------------------------
# The runner: sweep.batched=true against separate runs
# --------------------------------------------------------------------------------------------------

CONFIG_DIR = REPO / "configs"
TINY = (
    "dataset=synthetic",
    "dataset.synthetic.n_train=300",
    "dataset.synthetic.n_test=100",
    "dataset.synthetic.in_features=12",
    "data.validation=100",
    "batch_size=30",  # 200 training points: 7 steps an epoch, the last one smaller
    "model.hidden=[16,16]",
    "epochs=2",
    "device=cpu",
)
COLUMNS_COMPARED = ("train_loss", "train_error", "val_error", "test_error", "path_norm", "batch_loss", "val_loss", "test_loss")


def make_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=[*TINY, *overrides])


def alphas_text(alphas) -> str:
    return "sweep.alphas=[" + ",".join(str(a) for a in alphas) + "]"


def assert_same_metrics(batched_dir: Path, separate_dir: Path) -> None:
    rows, ref = read_metrics_csv(batched_dir / "metrics.csv"), read_metrics_csv(separate_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref]
    for row, r in zip(rows, ref):
        for key in COLUMNS_COMPARED:
            if r[key] is None or r[key] != r[key]:  # empty, or NaN after a divergence
                assert (row[key] is None) == (r[key] is None) and (row[key] is None or row[key] != row[key]), key
            else:
                assert row[key] == pytest.approx(r[key], rel=RTOL, abs=1e-12), (row["epoch"], key)


@pytest.mark.parametrize(
    "optimizer, init, dropout, alphas",
    [("sgd", "balanced", 0.0, [-30, 0, 1]), ("pathsgd", "unbalanced", 0.5, [0, 1, 2]), ("adagrad", "balanced", 0.5, [1, 2])],
)
def test_batched_runner_writes_each_separate_runs_record(tmp_path, optimizer, init, dropout, alphas):
    common = (f"optimizer={optimizer}", f"init={init}", f"model.dropout={dropout}")
    if init == "unbalanced":
        common += ("init.max_exponent=8",)
    summaries = train(make_cfg(*common, "sweep.batched=true", alphas_text(alphas)), run_dir=tmp_path / "batched" / "x")
    assert [s["alpha"] for s in summaries] == [float(a) for a in alphas]
    for a, s in zip(alphas, summaries):
        leaf = f"{optimizer}-{init}-a{a}-d{dropout}-s0"
        bdir, sdir = tmp_path / "batched" / leaf, tmp_path / "separate" / leaf
        assert Path(s["run_dir"]) == bdir.resolve()
        ref = train(make_cfg(*common, f"alpha={a}"), run_dir=sdir)
        assert_same_metrics(bdir, sdir)
        on_disk = json.loads((bdir / "summary.json").read_text())
        assert on_disk["status"] == ref["status"] and on_disk["alpha"] == ref["alpha"] == float(a)
        assert on_disk["run_name"] == ref["run_name"] and on_disk["epochs_completed"] == ref["epochs_completed"]
        assert on_disk["config"]["alpha"] == float(a) and on_disk["config"]["sweep"]["batched"] is True
        ckpt, ref_ckpt = load_checkpoint(bdir / "checkpoint.pt"), load_checkpoint(sdir / "checkpoint.pt")
        assert ckpt["epoch"] == ref_ckpt["epoch"] and ckpt["status"] == ref_ckpt["status"]
        assert ckpt["model"].keys() == ref_ckpt["model"].keys()
        assert ckpt["optimizer"]["param_groups"] == ref_ckpt["optimizer"]["param_groups"]
        if ref["status"] == "completed":
            for key, value in ref_ckpt["model"].items():
                assert_close(ckpt["model"][key], value, key)
            for i, st in ref_ckpt["optimizer"]["state"].items():
                for key, value in st.items():
                    assert_close(ckpt["optimizer"]["state"][i][key].double(), value.double(), f"state {i}.{key}")
        assert all(torch.equal(ckpt["rng"][k], ref_ckpt["rng"][k]) for k in ("torch", "batches"))
    statuses = [s["status"] for s in summaries]
    if optimizer == "sgd":
        assert statuses == ["diverged", "completed", "completed"]  # alpha=-30: a step of 1e30
    else:
        assert set(statuses) == {"completed"}


def test_batched_resume_brings_members_level_and_equals_an_uninterrupted_sweep(tmp_path):
    """Whole-epoch resume: one alpha was run alone for 1 epoch, the batch for 1 epoch with another set;
    resume=true with epochs=3 trains the lagging members level with the others, then all together."""
    common = ("optimizer=pathsgd", "model.dropout=0.5", "epochs=3")
    alphas = [0, 0.5, 1]
    train(make_cfg(*common, "sweep.batched=true", alphas_text(alphas)), run_dir=tmp_path / "full" / "x")
    parts = tmp_path / "parts"
    train(make_cfg(*common, "alpha=0.5", "epochs=1"), run_dir=parts / "pathsgd-balanced-a0.5-d0.5-s0")  # alone
    train(make_cfg(*common, "epochs=2", "sweep.batched=true", "sweep.alphas=[1]"), run_dir=parts / "x")
    out = train(make_cfg(*common, "resume=true", "sweep.batched=true", alphas_text(alphas)), run_dir=parts / "x")
    assert [s["status"] for s in out] == ["completed"] * 3
    for a in alphas:
        leaf = f"pathsgd-balanced-a{a}-d0.5-s0"
        assert_same_metrics(parts / leaf, tmp_path / "full" / leaf)
    # a batched run's checkpoint continues as a separate run, and the other way round
    train(make_cfg(*common, "alpha=1", "epochs=4", "resume=true"), run_dir=parts / "pathsgd-balanced-a1-d0.5-s0")
    assert len(read_metrics_csv(parts / "pathsgd-balanced-a1-d0.5-s0" / "metrics.csv")) == 5


def test_batched_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="sweep.alphas"):
        train(make_cfg("sweep.batched=true"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="repeats"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1,1.0]"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"sweep.alphas: alpha=nan"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1,nan]"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="logger=wandb"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1]", "logger=wandb"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="not supported with sweep.batched"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1]", "optimizer=sgd", "+optimizer.kwargs.foreach=false"), run_dir=tmp_path / "x")
    summaries = train_batched(make_cfg("epochs=1"), [2, 3], [tmp_path / "a", tmp_path / "b"])  # the Python API
    assert [s["status"] for s in summaries] == ["completed"] * 2 and (tmp_path / "b" / "checkpoint.pt").exists()


# --------------------------------------------------------------------------------------------------
# The figure pipeline with a batched sweep
# --------------------------------------------------------------------------------------------------


def pipeline_exp(tmp_path, batched: bool = True) -> dict:
    from pathsgd import reproduce as rp

    spec = {
        "name": "tiny",
        "results": str(tmp_path / "results"),
        "raw": str(tmp_path / "raw"),
        "datasets": {"mnist": ["dataset=synthetic", "dataset.synthetic.label=mnist"]},
        "optimizers": ["sgd", "pathsgd"],
        "dropouts": [0.0, 0.5],
        "overrides": ["dataset.synthetic.n_train=300", "dataset.synthetic.n_test=100", "dataset.synthetic.in_features=8",
                      "model.hidden=[8,8]", "device=cpu"],
        "env": {"OMP_NUM_THREADS": 1},
        "sweep": {"alphas": [-30, 0, 1], "epochs": 2, "overrides": ["data.validation=100"], "batched": batched},
    }
    path = tmp_path / "tiny.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return rp.load_experiment(path)


def test_batched_sweep_command(tmp_path):
    exp = pipeline_exp(tmp_path)
    from pathsgd import reproduce as rp

    cmd = rp.plan_sweep(exp)[0].command(exp, "python", None, [])
    for item in ("--multirun", "sweep.batched=true", "sweep.alphas=[-30,0,1]", "optimizer=sgd,pathsgd",
                 "model.dropout=0.0,0.5", f"sweep.dir={tmp_path / 'raw' / 'tiny' / 'sweep' / 'mnist'}"):
        assert item in cmd, item
    assert not any(c.startswith("alpha=") for c in cmd)
    assert any(c.startswith("hydra.sweep.subdir=.batched/") for c in cmd)
    plain = pipeline_exp(tmp_path, batched=False)
    assert "alpha=-30,0,1" in rp.plan_sweep(plain)[0].command(plain, "python", None, [])


@pytest.mark.slow
def test_reproduce_with_a_batched_sweep_selects_and_aggregates(tmp_path, capfd):
    """The sweep as one batched job per (optimizer, dropout): the same run directories, selection and tidy
    table as the multirun of separate runs (metrics to float32 rounding, timing aside)."""
    from pathsgd import reproduce as rp

    tables = {}
    for batched in (True, False):
        exp = pipeline_exp(tmp_path / str(batched), batched=batched)
        paths = rp.reproduce(exp, steps=("sweep", "select", "aggregate"))
        assert paths["selection"].exists() and paths["runs"].exists()
        tables[batched] = (pd.read_csv(paths["runs"]), pd.read_csv(paths["selection"]))
    capfd.readouterr()
    rp.reproduce(pipeline_exp(tmp_path / "True"), steps=("sweep",))  # finished: nothing relaunched
    assert "runs done, skipped" in capfd.readouterr().out
    (runs, sel), (ref_runs, ref_sel) = tables[True], tables[False]
    assert len(runs) == len(ref_runs) == 2 * 2 * (3 * 3 - 1)  # 4 cells x 3 alphas x 3 rows; -30 stops after 2
    assert set(runs[runs.alpha == -30].status) == {"diverged"} and set(runs[runs.alpha != -30].status) == {"completed"}
    assert runs.drop(columns="seconds").columns.equals(ref_runs.drop(columns="seconds").columns)
    pd.testing.assert_frame_equal(runs.drop(columns=["seconds", *rp.METRIC_COLUMNS]), ref_runs.drop(columns=["seconds", *rp.METRIC_COLUMNS]))
    metrics = [c for c in rp.METRIC_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(runs[metrics], ref_runs[metrics], rtol=RTOL)
    pd.testing.assert_frame_equal(sel, ref_sel)
    assert (tmp_path / "True" / "raw" / "tiny" / "sweep" / "mnist" / "sgd-balanced-a0-d0.5-s0" / "checkpoint.pt").exists()


@pytest.mark.parametrize("transpose", [False, True])
def test_both_matvec_paths_agree(transpose):
    """The CPU path (member by member) and the accelerator path (batched row-vector products) of the chains."""
    w = torch.randn(3, 7, 5, dtype=torch.float32) * 1e10  # squares beyond float32
    vec = torch.rand(3, 7 if transpose else 5, dtype=torch.float64)
    a = B._pow_bmv(w, 2.0, vec, transpose=transpose, batched=False)
    b = B._pow_bmv(w, 2.0, vec, transpose=transpose, batched=True)
    assert a.shape == (3, 5 if transpose else 7) and torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
