"""Many runs in one process: each member of a batched sweep (``sweep.batched=true``) writes its separate
run's records, through the same loop and the same public optimizers; and the figure pipeline with it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from pathsgd.collect import METRIC_COLUMNS
from pathsgd.checkpoint import load_checkpoint
from pathsgd.sinks import read_metrics_csv
from pathsgd.train import ConfigError, run_name, train

REPO = Path(__file__).resolve().parents[1]

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


def leaf(*overrides: str) -> str:
    return run_name(make_cfg(*overrides))


def assert_same_metrics(batched_dir: Path, separate_dir: Path) -> None:
    """The same numbers, bit for bit: the members run the separate runs' code on the same batches."""
    rows, ref = read_metrics_csv(batched_dir / "metrics.csv"), read_metrics_csv(separate_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in ref]
    for row, r in zip(rows, ref):
        for key in COLUMNS_COMPARED:
            if r[key] is None or r[key] != r[key]:  # empty, or NaN after a divergence
                assert (row[key] is None) == (r[key] is None) and (row[key] is None or row[key] != row[key]), key
            else:
                assert row[key] == r[key], (row["epoch"], key)


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
        name = leaf(*common, f"alpha={a}")
        bdir, sdir = tmp_path / "batched" / name, tmp_path / "separate" / name
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
                assert torch.equal(ckpt["model"][key], value), key
            for i, st in ref_ckpt["optimizer"]["state"].items():
                for key, value in st.items():
                    assert torch.equal(ckpt["optimizer"]["state"][i][key], value), f"state {i}.{key}"
        assert all(torch.equal(ckpt["rng"][k], ref_ckpt["rng"][k]) for k in ("torch", "batches"))
    statuses = [s["status"] for s in summaries]
    if optimizer == "sgd":
        assert statuses == ["diverged", "completed", "completed"]  # alpha=-30: a step of 1e30
    else:
        assert set(statuses) == {"completed"}


def test_batched_resume_of_members_at_different_epochs_equals_an_uninterrupted_sweep(tmp_path):
    """Whole-epoch resume: one alpha was run alone for 1 epoch, another in a batch for 2 epochs, a third never;
    resume=true with epochs=3 continues each from its own checkpoint and generators."""
    common = ("optimizer=pathsgd", "model.dropout=0.5", "epochs=3")
    alphas = [0, 0.5, 1]
    train(make_cfg(*common, "sweep.batched=true", alphas_text(alphas)), run_dir=tmp_path / "full" / "x")
    parts = tmp_path / "parts"
    train(make_cfg(*common, "alpha=0.5", "epochs=1"), run_dir=parts / leaf(*common, "alpha=0.5"))  # alone
    train(make_cfg(*common, "epochs=2", "sweep.batched=true", "sweep.alphas=[1]"), run_dir=parts / "x")
    out = train(make_cfg(*common, "resume=true", "sweep.batched=true", alphas_text(alphas)), run_dir=parts / "x")
    assert [s["status"] for s in out] == ["completed"] * 3
    for a in alphas:
        assert_same_metrics(parts / leaf(*common, f"alpha={a}"), tmp_path / "full" / leaf(*common, f"alpha={a}"))
    # a batched run's checkpoint continues as a separate run
    one = parts / leaf(*common, "alpha=1")
    train(make_cfg(*common, "alpha=1", "epochs=4", "resume=true"), run_dir=one)
    assert len(read_metrics_csv(one / "metrics.csv")) == 5


def test_batched_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="sweep.alphas"):
        train(make_cfg("sweep.batched=true"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="repeats"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1,1.0]"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match=r"sweep.alphas: alpha=nan"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1,nan]"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="logger=wandb"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1]", "logger=wandb"), run_dir=tmp_path / "x")
    with pytest.raises(ConfigError, match="speed.capture=graph with sweep.batched"):
        train(make_cfg("sweep.batched=true", "sweep.alphas=[1]", "speed.capture=graph"), run_dir=tmp_path / "x")
    # every optimizer option works in a batched sweep: the members use the public optimizers
    summaries = train(make_cfg("epochs=1", "sweep.batched=true", "sweep.alphas=[1,2]", "optimizer=sgd",
                               "optimizer.kwargs.momentum=0.9", "sweep.dir=" + str(tmp_path / "d")))
    assert [s["status"] for s in summaries] == ["completed"] * 2
    assert all((Path(s["run_dir"]) / "checkpoint.pt").exists() and Path(s["run_dir"]).parent == tmp_path / "d"
               for s in summaries)


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
    pd.testing.assert_frame_equal(runs.drop(columns=["seconds", *METRIC_COLUMNS]), ref_runs.drop(columns=["seconds", *METRIC_COLUMNS]))
    metrics = [c for c in METRIC_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(runs[metrics], ref_runs[metrics], rtol=0, atol=0)
    pd.testing.assert_frame_equal(sel, ref_sel)
