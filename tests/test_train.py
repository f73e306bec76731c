"""The runner end to end on tiny CPU configurations: records, resume, divergence, W&B offline, bad input."""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

import pathsgd.rundir as rundir
import pathsgd.train as train_mod
from pathsgd.atomic import load_checkpoint
from pathsgd.engine import tf32_matmuls
from pathsgd.sinks import COLUMNS, read_metrics_csv
from pathsgd.train import ConfigError, train
from tests.fakedata import FAKE_NAMES, write_fake_dataset

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"

# A tiny synthetic problem: 400 points (100 held out), 16-16 hidden units, 2 epochs of 4 steps.
SMALL = ("model.hidden=[16,16]", "epochs=2", "device=cpu")
TINY = (
    "dataset=synthetic",
    "dataset.synthetic.n_train=400",
    "dataset.synthetic.n_test=100",
    "dataset.synthetic.in_features=20",
    "data.validation=100",
    "batch_size=75",  # does not divide 300: the last batch is smaller
    *SMALL,
)


def make_cfg(*overrides: str, base: tuple[str, ...] | None = None):
    """The tiny synthetic run, or (when ``overrides`` pick another dataset) the small run on that dataset; the conv
    net has no ``model.hidden``."""
    if base is None:
        base = SMALL if any(o.startswith("dataset=") for o in overrides) else TINY
    if "model=convnet" in overrides:
        base = tuple(o for o in base if not o.startswith("model.hidden="))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose(config_name="config", overrides=[*base, *overrides])


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def strip_timing(rows):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


def check_record(run_dir: Path, epochs: int, *, validation: bool = True) -> list[dict]:
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:7] == ["epoch", "train_loss", "train_error", "val_error", "test_error", "path_norm", "seconds"]
    assert tuple(header) == COLUMNS
    rows = read_metrics_csv(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == list(range(epochs + 1))
    for r in rows:
        for key in ("train_error", "test_error") + (("val_error",) if validation else ()):
            assert 0.0 <= r[key] <= 1.0
        assert (r["val_error"] is None) == (not validation)
        assert math.isfinite(r["train_loss"]) and r["path_norm"] > 0
    assert rows[0]["seconds"] == 0.0 and rows[0]["batch_loss"] is None
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(rows, rows[1:]))
    summary = read_summary(run_dir)
    assert summary["status"] == "completed" and summary["epochs_completed"] == epochs
    assert summary["final"]["epoch"] == epochs and summary["final"]["test_error"] == rows[-1]["test_error"]
    for key in ("config", "commit", "torch", "cuda", "device", "phase", "alpha", "lr"):
        assert key in summary
    assert summary["torch"] == torch.__version__ and summary["device"] == "cpu"
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["epoch"] == epochs and ckpt["status"] == "completed"
    assert strip_timing(ckpt["rows"]) == strip_timing(rows)
    return rows


@pytest.mark.parametrize("init", ["balanced", "unbalanced"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
def test_synthetic_end_to_end(tmp_path, optimizer, init):
    # SGD diverges from the unbalanced init at step 0.1 (the paper's point); it survives 0.001.
    alpha = 3 if (optimizer, init) == ("sgd", "unbalanced") else 1
    summary = train(make_cfg(f"optimizer={optimizer}", f"init={init}", f"alpha={alpha}"), run_dir=tmp_path)
    rows = check_record(tmp_path, 2)
    assert summary["status"] == "completed" and summary["config"]["alpha"] == alpha
    assert summary["lr"] == pytest.approx(10.0**-alpha)
    if init == "balanced" or optimizer == "pathsgd":
        assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns


@pytest.mark.parametrize("init", ["balanced", "unbalanced"])
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
def test_fixture_mnist_end_to_end(tmp_path, optimizer, init):
    root = tmp_path / "data"
    write_fake_dataset("mnist", root)
    run_dir = tmp_path / "run"
    cfg = make_cfg(
        "dataset=mnist", f"data.root={root}", "data.download=false", "data.verify=false", "data.validation=16", "batch_size=16",
        f"optimizer={optimizer}", f"init={init}",
    )
    train(cfg, run_dir=run_dir)
    check_record(run_dir, 2)


@pytest.mark.parametrize("name", [n for n in FAKE_NAMES if n != "mnist"])
def test_fixture_datasets_load_through_the_runner(tmp_path, name):
    root = tmp_path / "data"
    write_fake_dataset(name, root)
    run_dir = tmp_path / "run"
    cfg = make_cfg(f"dataset={name}", f"data.root={root}", "data.download=false", "data.verify=false", "data.validation=0",
                   "epochs=1")
    summary = train(cfg, run_dir=run_dir)
    check_record(run_dir, 1, validation=False)
    assert summary["config"]["data"]["validation"] == 0


def test_missing_dataset_names_the_directory_and_files(tmp_path):
    cfg = make_cfg("dataset=cifar10", f"data.root={tmp_path}", "data.download=false")
    with pytest.raises(FileNotFoundError, match=r"cifar10.*cifar-10-batches-py.*data_batch_1"):
        train(cfg, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # the data come first: the run directory is never touched


def test_a_refused_run_on_the_command_line_leaves_no_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", "dataset=mnist", f"data.root={tmp_path / 'none'}",
                                      "data.download=false", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code == 2 and "make data-mnist" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_validation_larger_than_the_training_set_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"data.validation=400: validation=400 must be smaller than the training set size 400"):
        train(make_cfg("data.validation=400"), run_dir=tmp_path)


def test_synthetic_has_its_own_validation_default(tmp_path):
    summary = train(make_cfg("dataset=synthetic", "dataset.synthetic.n_train=600", "epochs=1", base=SMALL), run_dir=tmp_path)
    assert summary["config"]["data"]["validation"] == 500


def test_the_removed_batched_sweep_is_refused(tmp_path, monkeypatch, capsys):
    """Several step sizes in one process are gone (the joblib launcher runs runs in parallel): Hydra refuses the key."""
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", *TINY, "sweep.batched=true", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code != 0 and "Could not override 'sweep.batched'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


class Killed(Exception):
    pass


def kill_after(monkeypatch, calls: int):
    """Make the runner's train_epoch raise on call number ``calls + 1``, as a kill after ``calls`` epochs."""
    real = train_mod.train_epoch
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        if count["n"] == calls:
            raise Killed
        count["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", wrapper)


@pytest.mark.parametrize("extra", [("optimizer=pathsgd", "model.dropout=0.5"), ("optimizer=adagrad",)])
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path, monkeypatch, extra):
    overrides = ("epochs=3", "alpha=1", *extra)
    train(make_cfg(*overrides), run_dir=tmp_path / "whole")
    whole = read_metrics_csv(tmp_path / "whole" / "metrics.csv")

    with monkeypatch.context() as m:
        kill_after(m, 1)
        with pytest.raises(Killed):
            train(make_cfg(*overrides), run_dir=tmp_path / "split")
    assert read_summary(tmp_path / "split")["status"] == "failed"
    assert load_checkpoint(tmp_path / "split" / "checkpoint.pt")["epoch"] == 1

    summary = train(make_cfg(*overrides, "resume=true"), run_dir=tmp_path / "split")
    assert summary["status"] == "completed"
    split = read_metrics_csv(tmp_path / "split" / "metrics.csv")
    assert strip_timing(split) == strip_timing(whole)


def test_resume_can_extend_a_completed_run(tmp_path):
    train(make_cfg("epochs=3"), run_dir=tmp_path / "whole")
    train(make_cfg("epochs=2"), run_dir=tmp_path / "split")
    train(make_cfg("epochs=3", "resume=true"), run_dir=tmp_path / "split")
    assert strip_timing(read_metrics_csv(tmp_path / "split" / "metrics.csv")) == strip_timing(
        read_metrics_csv(tmp_path / "whole" / "metrics.csv")
    )


def test_resume_of_a_completed_run_only_reports(tmp_path, monkeypatch, caplog):
    train(make_cfg(), run_dir=tmp_path)
    before = (tmp_path / "metrics.csv").read_text()
    kill_after(monkeypatch, 0)  # any training would raise
    summary = train(make_cfg("resume=true"), run_dir=tmp_path)
    assert summary["status"] == "completed" and summary["epochs_completed"] == 2
    assert (tmp_path / "metrics.csv").read_text() == before
    assert "already completed" in caplog.text


def test_a_repeated_command_keeps_the_finished_run(tmp_path):
    train(make_cfg("epochs=1"), run_dir=tmp_path)
    before = (tmp_path / "metrics.csv").read_text()
    with pytest.raises(ConfigError, match="already holds a run: resume=true continues it .*overwrite=true starts afresh"):
        train(make_cfg("epochs=1"), run_dir=tmp_path)
    assert (tmp_path / "metrics.csv").read_text() == before
    assert train(make_cfg("epochs=1", "overwrite=true"), run_dir=tmp_path)["status"] == "completed"


def test_resume_without_a_checkpoint_starts_afresh(tmp_path, caplog):
    """A fresh start is what a sweep's resume=true expects the first time: said at INFO, not as a warning; the run
    also says where it runs and writes, and each epoch's line how much training is left."""
    caplog.set_level("INFO", logger="pathsgd.train")
    summary = train(make_cfg("resume=true"), run_dir=tmp_path)
    assert f"no checkpoint in {tmp_path} yet: a fresh start" in caplog.text
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert f"on cpu (cpu) -> {tmp_path.resolve()}" in caplog.text and "epoch 1/2" in caplog.text
    assert "s of training left" in caplog.text
    assert summary["status"] == "completed"
    check_record(tmp_path, 2)


def test_resume_refuses_a_different_configuration(tmp_path):
    train(make_cfg("epochs=1"), run_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"model.hidden=\[16, 16\] there, \[8, 8\] now"):
        train(make_cfg("resume=true", "model.hidden=[8,8]"), run_dir=tmp_path)


def spy_capture(monkeypatch) -> list:
    """Record the ``capture`` the runner passes to each train_epoch call."""
    real, seen = train_mod.train_epoch, []

    def wrapper(*args, **kwargs):
        seen.append(kwargs.get("capture"))
        return real(*args, **kwargs)

    monkeypatch.setattr(train_mod, "train_epoch", wrapper)
    return seen


@pytest.mark.parametrize("capture", ["graph", "compile"])
def test_speed_capture_reaches_the_step_and_keeps_the_metrics(tmp_path, monkeypatch, capture):
    """graph is eager on the CPU: the same numbers. compile (5 to 25 s to compile on this CPU): float32 rounding."""
    overrides = ("optimizer=pathsgd", "model.dropout=0.5", "alpha=1")
    train(make_cfg(*overrides), run_dir=tmp_path / "eager")
    seen = spy_capture(monkeypatch)
    summary = train(make_cfg(*overrides, f"speed.capture={capture}"), run_dir=tmp_path / capture)
    assert seen == [capture, capture]
    assert summary["config"]["speed"] == {"capture": capture, "tf32": False, "eval_tf32": False}
    eager = strip_timing(check_record(tmp_path / "eager", 2))
    captured = strip_timing(check_record(tmp_path / capture, 2))
    assert captured[0] == eager[0]  # the init
    if capture == "graph":
        assert captured == eager
    else:
        for a, b in zip(eager[1:], captured[1:]):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-7)


def test_speed_capture_none_and_null_are_eager(tmp_path, monkeypatch):
    seen = spy_capture(monkeypatch)
    assert train(make_cfg("epochs=1"), run_dir=tmp_path / "a")["config"]["speed"]["capture"] is None
    assert train(make_cfg("epochs=1", "speed.capture=null"), run_dir=tmp_path / "b")["config"]["speed"]["capture"] is None
    assert seen == [None, None]


def test_resume_may_change_the_capture_but_not_tf32(tmp_path, caplog):
    train(make_cfg("epochs=3"), run_dir=tmp_path / "whole")
    train(make_cfg("epochs=1"), run_dir=tmp_path / "split")
    for key in ("speed.tf32", "speed.eval_tf32"):  # TF32 changes the rounding: one run is all float32 or all TF32
        with pytest.raises(ConfigError, match=rf"{key}=False there, True now"):
            train(make_cfg("epochs=3", "resume=true", f"{key}=true"), run_dir=tmp_path / "split")
    summary = train(make_cfg("epochs=3", "resume=true", "speed.capture=graph"), run_dir=tmp_path / "split")
    assert summary["status"] == "completed" and summary["config"]["speed"] == {"capture": "graph", "tf32": False, "eval_tf32": False}
    assert "speed.capture='graph' (was None)" in caplog.text
    assert strip_timing(check_record(tmp_path / "split", 3)) == strip_timing(check_record(tmp_path / "whole", 3))


def test_a_checkpoint_from_before_the_model_group_is_refused_naming_the_keys(tmp_path):
    """Checkpoints written when the model was ``model.arch``/``model.channels`` hold another config: refused."""
    train(make_cfg("epochs=1"), run_dir=tmp_path)
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    ckpt["config"]["model"] = {"arch": "mlp", "channels": 16, "hidden": [16, 16], "dropout": 0.0}
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"model._target_=None there, 'pathsgd.MLP' now; model.arch='mlp' there"):
        train(make_cfg("epochs=2", "resume=true"), run_dir=tmp_path)


def tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("enabled", [True, False])
def test_speed_tf32_holds_on_cuda_for_the_run_only(enabled):
    """The flags (settable without a GPU) are set for a CUDA run, untouched on the CPU, restored after an error."""
    before = tf32_flags()
    with pytest.raises(Killed):
        with tf32_matmuls(enabled, torch.device("cuda")):
            assert tf32_flags() == (enabled, enabled)
            raise Killed
    assert tf32_flags() == before
    with tf32_matmuls(not before[0], torch.device("cpu")):
        assert tf32_flags() == before


@pytest.mark.parametrize("tf32, eval_tf32", [(False, True), (True, False), (False, False)])
def test_speed_eval_tf32_covers_the_evaluation_only(tmp_path, monkeypatch, tf32, eval_tf32):
    """TF32 (the flag the runner asks for, recorded here: it does nothing on the CPU) is on around every
    evaluation when either key asks for it, and around training only with speed.tf32."""
    asked, state = [], {"on": False}
    real_evaluate = train_mod.evaluate

    @contextlib.contextmanager
    def recording(enabled, device):
        before, state["on"] = state["on"], bool(enabled)
        try:
            yield
        finally:
            state["on"] = before

    def evaluate(*args, **kwargs):
        asked.append(state["on"])
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train_mod, "tf32_matmuls", recording)
    monkeypatch.setattr(train_mod, "evaluate", evaluate)
    seen = []
    real_epoch = train_mod.train_epoch
    monkeypatch.setattr(train_mod, "train_epoch", lambda *a, **k: seen.append(state["on"]) or real_epoch(*a, **k))
    train(make_cfg(f"speed.tf32={str(tf32).lower()}", f"speed.eval_tf32={str(eval_tf32).lower()}"), run_dir=tmp_path)
    assert seen == [tf32] * 2  # two epochs of training
    assert len(asked) == 3 * 3 and set(asked) == {tf32 or eval_tf32}  # init + 2 epochs, train/val/test each


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("capture", ["none", "graph", "compile"])
def test_speed_options_on_cuda(tmp_path, monkeypatch, capture):
    """On a GPU: each capture mode trains to the eager run's metrics (TF32 on: rounding), flags restored after."""
    before, during = tf32_flags(), []
    real = train_mod.train_epoch

    def wrapper(*args, **kwargs):
        during.append(tf32_flags())
        return real(*args, **kwargs)

    overrides = ("device=cuda", "optimizer=pathsgd", "model.dropout=0.5", "alpha=1")
    train(make_cfg(*overrides), run_dir=tmp_path / "eager")
    monkeypatch.setattr(train_mod, "train_epoch", wrapper)
    train(make_cfg(*overrides, f"speed.capture={capture}", "speed.tf32=true"), run_dir=tmp_path / "fast")
    assert during == [(True, True)] * 2 and tf32_flags() == before
    eager, fast = (strip_timing(read_metrics_csv(tmp_path / d / "metrics.csv")) for d in ("eager", "fast"))
    for a, b in zip(eager[1:], fast[1:]):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-2)


def test_a_diverging_run_stops_and_says_so(tmp_path):
    summary = train(make_cfg("optimizer=sgd", "alpha=-8", "epochs=3"), run_dir=tmp_path)
    assert summary["status"] == "diverged"
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert len(rows) < 4 and summary["epochs_completed"] == rows[-1]["epoch"]
    last = rows[-1]
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["batch_loss"]))
    assert read_summary(tmp_path)["status"] == "diverged"
    assert load_checkpoint(tmp_path / "checkpoint.pt")["status"] == "diverged"
    # resuming a diverged run does nothing more
    assert train(make_cfg("optimizer=sgd", "alpha=-8", "epochs=3", "resume=true"), run_dir=tmp_path)["status"] == "diverged"


def _wandb_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home"))


def test_each_refused_job_of_a_multirun_keeps_its_own_record(tmp_path, monkeypatch, capsys):
    """Refused jobs (alpha=nan, alpha=inf) get a directory each (a config that cannot be named at all gets
    ``invalid-config-<hash of its overrides>``), so no record overwrites another."""
    monkeypatch.setattr(train_mod, "_FAILED_JOBS", [])
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", "--multirun", *TINY, "epochs=1", "alpha=nan,inf,1",
                                      f"hydra.sweep.dir={tmp_path}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code == 2  # two jobs failed
    refused = [d for d in (tmp_path / "synthetic").iterdir() if read_summary(d)["status"] == "failed"]
    errors = sorted(read_summary(d)["error"] for d in refused)
    assert len(refused) == 2 and errors == ["alpha=inf is not finite: alpha must be a finite real (step size 10^-alpha)",
                                            "alpha=nan is not finite: alpha must be a finite real (step size 10^-alpha)"]
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", "--multirun", *TINY, "epochs=1", "model.dropout=abc,xyz",
                                      f"hydra.sweep.dir={tmp_path / 'unnamed'}"])
    with pytest.raises(SystemExit):
        train_mod.main()
    unnamed = sorted((tmp_path / "unnamed" / "synthetic").glob("invalid-config-*"))
    assert len(unnamed) == 2 and {read_summary(d)["error"].split(" is ")[0] for d in unnamed} == {
        "model.dropout='abc'", "model.dropout='xyz'"}


def test_a_job_refused_for_a_busy_directory_leaves_the_running_runs_records(tmp_path, monkeypatch, capsys):
    import fcntl

    monkeypatch.setattr(train_mod, "_FAILED_JOBS", [])
    args = [*TINY, "epochs=1", f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=a"]
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", "--multirun", *args])
    train_mod.main()  # run A
    before = (tmp_path / "a" / "summary.json").read_text()
    with open(tmp_path / "a" / ".lock", "a+") as held:  # A is training now
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit):
            train_mod.main()  # an identical multirun B, refused
    assert "is in use" in capsys.readouterr().err
    assert (tmp_path / "a" / "summary.json").read_text() == before


def test_wandb_logs_the_epoch_as_the_charts_x_axis():
    from pathsgd import sinks

    sink, calls = sinks.WandbSink.__new__(sinks.WandbSink), []
    sink.run = SimpleNamespace(log=lambda values, step: calls.append((values, step)))
    sink.log({"epoch": 3, "train_loss": 0.5, "val_error": None})
    assert calls == [({"epoch": 3, "train_loss": 0.5}, 3)]


def test_wandb_offline_run(tmp_path, monkeypatch):
    _wandb_env(monkeypatch, tmp_path)
    summary = train(make_cfg("logger=wandb", "optimizer=sgd", "alpha=1"), run_dir=tmp_path / "run")
    check_record(tmp_path / "run", 2)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir()
    assert summary["wandb"]["id"] and runs[0].name.endswith(summary["wandb"]["id"])
    assert any(runs[0].glob("*.wandb"))
    saved = {p.name for p in (runs[0] / "files").iterdir()}
    assert {"metrics.csv", "summary.json"} <= saved, saved  # a synced run holds the run's records
    # copies, not W&B's symlinks (each of which printed a "Symlinked 1 file" warning)
    assert not any((runs[0] / "files" / name).is_symlink() for name in ("metrics.csv", "summary.json"))

    # wandb.finish() runs after an error too, and the failure is recorded
    import wandb

    kill_after(monkeypatch, 1)
    with pytest.raises(Killed):
        train(make_cfg("logger=wandb", "optimizer=sgd", "alpha=1"), run_dir=tmp_path / "crash")
    assert wandb.run is None
    assert read_summary(tmp_path / "crash")["status"] == "failed"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    return subprocess.run(
        [sys.executable, "-m", "pathsgd.train", *args], cwd=cwd, env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )


def test_cli_diverging_run_exits_zero(tmp_path, monkeypatch):
    """Through the real @hydra.main entry point (in-process): a divergence is a result, not an error."""
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", *TINY, "optimizer=sgd", "alpha=-8", f"hydra.run.dir={tmp_path / 'run'}"])
    train_mod.main()  # no SystemExit
    assert read_summary(tmp_path / "run")["status"] == "diverged"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").is_file()


def test_a_step_beyond_float32_is_a_divergence_not_a_crash(tmp_path):
    summary = train(make_cfg("optimizer=sgd", "alpha=-40"), run_dir=tmp_path / "run")
    assert summary["status"] == "diverged" and summary["epochs_completed"] == 0


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
def test_cli_default_run_dir_is_deterministic_and_resumable(tmp_path):
    """``python -m pathsgd.train`` in a subprocess: exit 0, the run directory named from the config, resume."""
    proc = run_cli(*TINY, "epochs=1", "alpha=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run_dir,) = (tmp_path / "outputs/runs/synthetic").glob("pathsgd-balanced-a1-d0.0-s0-*")
    assert run_dir.name == train_mod.run_name(make_cfg("alpha=1")) and read_summary(run_dir)["status"] == "completed"
    proc = run_cli(*TINY, "epochs=2", "alpha=1", "resume=true", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in read_metrics_csv(run_dir / "metrics.csv")] == [0, 1, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (("alpha=nan",), "alpha=nan is not finite: alpha must be a finite real"),
        (("epochs=0",), "epochs=0 is out of range: epochs must be an integer >= 1"),
        (("batch_size=0",), "batch_size=0 is out of range"),
        (("alpha=400",), "alpha=400.0 is out of range"),
        (("init=unbalanced", "init.max_exponent=60", "init.n_units=2000"), "init.*): unbalanced_init_ with max_exponent=60"),
        (("optimizer.kwargs.p=0.5",), "optimizer.kwargs.*): p=0.5 is invalid"),
        (("speed.capture=cudagraph",), "speed.capture='cudagraph' is unknown: choose one of none, graph, compile"),
        (("speed.tf32=maybe",), "speed.tf32=maybe: Value 'maybe' is not a valid bool"),
        (("data.split_seed=abc",), "data.split_seed=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (("data.download=maybe",), "data.download=maybe: Value 'maybe' is not a valid bool"),
        (("phase=null",), "phase=null: field 'phase' is not Optional"),
        (("logger=wandb", "logger.project=null"), "logger.project=None is not a name"),
        (("data.root=null",), "data.root=null: field 'data.root' is not Optional"),
        (("model.hidden=[0,5]",), "model=pathsgd.MLP (model.*): hidden=[0, 5] is invalid"),
        (("model.arch=convnet",), "Key 'arch' is not in struct; the model is a config group: model=mlp or model=convnet"),
        (("+lr=0.01",), "Key 'lr' not in 'RunConfig'"),
    ],
)
def test_cli_bad_values_exit_nonzero_with_a_message(tmp_path, monkeypatch, capsys, args, message):
    """Through the real @hydra.main entry point, in-process (a subprocess per case would cost seconds)."""
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", *TINY, *args, f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err  # one line
    assert not (tmp_path / "run" / "metrics.csv").exists()


@pytest.mark.parametrize("group, value", [("dataset", "foo"), ("optimizer", "rmsprop")])
def test_cli_unknown_group_option_exits_nonzero_listing_the_choices(tmp_path, monkeypatch, capsys, group, value):
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", f"{group}={value}", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert f"Could not find '{group}/{value}'" in err
    assert "Available options" in err and ("synthetic" in err if group == "dataset" else "pathsgd" in err)


def test_engine_sinks_and_checkpoint_import_with_torch_alone():
    code = (
        # Triton: not by pathsgd (constructing any torch.optim.Optimizer may import it, torch's doing)
        "import sys, torch; import pathsgd, pathsgd.engine, pathsgd.sinks, pathsgd.atomic; "
        "bad = [m for m in ('hydra', 'omegaconf', 'wandb', 'pandas', 'torchvision', 'triton') if m in sys.modules]; "
        "assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_cli_cuda_without_cuda_exits_2_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", *TINY, "device=cuda", f"hydra.run.dir={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code == 2
    assert "device='cuda' was asked for but CUDA is not available here" in capsys.readouterr().err


def test_sigterm_ends_a_run_as_interrupted_with_consistent_records(tmp_path):
    """kill (SIGTERM) mid-run: summary.json says interrupted at the last epoch that metrics.csv and the checkpoint hold."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pathsgd.train", *TINY, "epochs=100000", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    def epochs_written() -> int:
        metrics = run_dir / "metrics.csv"
        return len(metrics.read_text().splitlines()) - 1 if metrics.exists() else 0

    deadline = time.time() + 90
    while time.time() < deadline and epochs_written() < 3:  # row 0 and two epochs
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    summary = read_summary(run_dir)
    rows = read_metrics_csv(run_dir / "metrics.csv")
    assert summary["status"] == "interrupted" and "signal" in summary["error"]
    assert summary["epochs_completed"] == rows[-1]["epoch"] == load_checkpoint(run_dir / "checkpoint.pt")["epoch"] >= 2


def test_a_signal_while_an_epoch_is_recorded_waits_until_every_record_holds_it():
    """SIGTERM or Ctrl-C between the checkpoint and summary.json of one epoch is raised only after both are written."""
    import signal

    written = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with rundir._sigterm_as_interrupt():
            with pytest.raises(KeyboardInterrupt, match=f"signal {int(signum)}"):
                with rundir.RunDir.writing_whole():
                    written.append("checkpoint")
                    os.kill(os.getpid(), signum)
                    written.append("summary")  # still runs: the interrupt waits
    assert written == ["checkpoint", "summary"] * 2
    with rundir._sigterm_as_interrupt(), pytest.raises(KeyboardInterrupt):  # outside the records: at once
        os.kill(os.getpid(), signal.SIGTERM)
        written.append("never")
    assert written[-1] == "summary"


def test_a_second_signal_while_the_run_stops_still_leaves_it_interrupted(tmp_path, monkeypatch):
    """A scheduler that signals the whole process group, or Ctrl-C twice: the second signal arrives while the
    records of the first are written; they are written all the same."""
    import signal

    real_epoch, real_write = train_mod.train_epoch, rundir.atomic_write_json

    def epoch_then_signal(*args, **kwargs):
        out = real_epoch(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    def write(path, record):
        if record.get("status") == "interrupted":
            os.kill(os.getpid(), signal.SIGTERM)  # the second signal, mid-way through the first one's records
        real_write(path, record)

    monkeypatch.setattr(train_mod, "train_epoch", epoch_then_signal)
    monkeypatch.setattr(rundir, "atomic_write_json", write)
    with pytest.raises(KeyboardInterrupt):
        train(make_cfg("epochs=3"), run_dir=tmp_path)
    assert read_summary(tmp_path)["status"] == "interrupted"


def test_a_failed_checkpoint_write_leaves_the_records_in_agreement(tmp_path, monkeypatch):
    """The checkpoint of epoch 2 cannot be written: summary.json, metrics.csv and the checkpoint all stop at epoch 1."""
    real = rundir.save_checkpoint

    def failing(path, state):
        if state["epoch"] == 2:
            raise OSError(28, "No space left on device")
        real(path, state)

    monkeypatch.setattr(rundir, "save_checkpoint", failing)
    with pytest.raises(OSError, match="No space"):
        train(make_cfg("epochs=3"), run_dir=tmp_path)
    summary = read_summary(tmp_path)
    assert summary["status"] == "failed" and summary["epochs_completed"] == 1
    assert [r["epoch"] for r in read_metrics_csv(tmp_path / "metrics.csv")] == [0, 1]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_summary_moves_each_epoch(tmp_path, monkeypatch):
    seen = []
    real = rundir.atomic_write_json

    def spy(path, obj):
        if Path(path).name == "summary.json":
            seen.append(obj["epochs_completed"])
        real(path, obj)

    monkeypatch.setattr(rundir, "atomic_write_json", spy)
    train(make_cfg("epochs=3"), run_dir=tmp_path)
    assert [0, 1, 2, 3] == sorted(set(seen))


def test_resume_of_a_finished_run_rebuilds_a_lost_metrics_csv(tmp_path):
    train(make_cfg("epochs=2"), run_dir=tmp_path)
    before = (tmp_path / "metrics.csv").read_text()
    (tmp_path / "metrics.csv").unlink()
    assert train(make_cfg("epochs=2", "resume=true"), run_dir=tmp_path)["status"] == "completed"
    assert (tmp_path / "metrics.csv").read_text() == before


def test_a_second_run_in_a_locked_directory_is_refused(tmp_path):
    import fcntl

    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / ".lock", "a+") as held:  # another process training there
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="is in use: another run is training in it now"):
            train(make_cfg("epochs=1"), run_dir=tmp_path)
    assert train(make_cfg("epochs=1"), run_dir=tmp_path)["status"] == "completed"  # free again


def test_one_bad_job_of_a_multirun_is_recorded_and_the_others_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_mod, "_FAILED_JOBS", [])
    monkeypatch.setattr(sys, "argv", ["pathsgd-train", "--multirun", *TINY, "epochs=1", "alpha=nan,1,2",
                                      f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}"])
    with pytest.raises(SystemExit) as exc:
        train_mod.main()
    assert exc.value.code == 1  # one job failed
    assert "1 job(s) of the sweep failed" in capsys.readouterr().err
    bad = read_summary(tmp_path / "0")
    assert bad["status"] == "failed" and "alpha=nan is not finite" in bad["error"]
    assert [read_summary(tmp_path / str(k))["status"] for k in (1, 2)] == ["completed", "completed"]


def test_wandb_online_without_a_network_logs_offline_with_a_warning(tmp_path, monkeypatch):
    from pathsgd import sinks

    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(sinks, "ONLINE_TIMEOUT", 3.0)
    with pytest.warns(UserWarning, match="(?s)W&B online failed .* logging offline instead"):
        sink = sinks.WandbSink(project="p", name="n", group=None, config={}, dir=tmp_path, mode="online")
    assert sink.run.settings.mode == "offline"
    sink.log({"epoch": 1, "train_loss": 0.5})
    sink.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_checkpoint_is_one_clear_line(tmp_path, damage):
    train(make_cfg("epochs=1"), run_dir=tmp_path)
    ckpt = tmp_path / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2] if damage == "truncated" else os.urandom(len(data)))
    with pytest.raises(ConfigError) as exc:
        train(make_cfg("epochs=2", "resume=true"), run_dir=tmp_path)
    message = str(exc.value)
    assert str(ckpt) in message and "cannot be resumed" in message and "overwrite=true" in message
    assert "weights_only=False" not in message and "\n" not in message


def test_a_studys_runs_share_a_wandb_group(tmp_path, monkeypatch):
    seen = {}

    class Recorder:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            self.run_id = "r"
            self.run = SimpleNamespace(dir=str(tmp_path / "wandb" / "files"))

        def log(self, row): ...
        def set_summary(self, values): ...
        def save(self, *paths): seen["saved"] = [p.name for p in paths]
        def finish(self, exit_code=0): ...

    monkeypatch.setattr(train_mod, "WandbSink", Recorder)
    summary = train(make_cfg("logger=wandb", "study=fig2", "epochs=1"), run_dir=tmp_path)
    assert seen["group"] == "fig2" and seen["saved"] == ["metrics.csv", "summary.json"]
    assert summary["wandb"] == {"id": "r", "dir": str(tmp_path / "wandb")}


@pytest.mark.parametrize("optimizer", ["pathsgd", "sgd", "path_adam"])
def test_the_conv_net_trains_through_the_runner(tmp_path, optimizer):
    """model=convnet: conv, average pooling and a residual block on 8 x 8 synthetic images (64 features)."""
    summary = train(make_cfg("model=convnet", "model.channels=4", "dataset.synthetic.in_features=64",
                             f"optimizer={optimizer}", "epochs=2"), run_dir=tmp_path)
    assert summary["status"] == "completed"
    rows = check_record(tmp_path, 2)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    unbalanced = train(make_cfg("model=convnet", "model.channels=4", "dataset.synthetic.in_features=64",
                                f"optimizer={optimizer}", "epochs=1", "init=unbalanced"), run_dir=tmp_path / "u")
    assert unbalanced["status"] in ("completed", "diverged")
    # the unbalanced init rescales channels: the same function, so the same loss before training
    assert check_record(tmp_path / "u", 1)[0]["train_loss"] == pytest.approx(rows[0]["train_loss"], rel=1e-4)
    with pytest.raises(ConfigError, match="dropout=0.5 is invalid: the conv net has no dropout"):
        train(make_cfg("model=convnet", "model.dropout=0.5", "dataset.synthetic.in_features=64"), run_dir=tmp_path / "d")
    with pytest.raises(ConfigError, match="needs images"):
        train(make_cfg("model=convnet"), run_dir=tmp_path / "x")  # 20 features: not a square image
