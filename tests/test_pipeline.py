"""The figure pipeline (pathsgd.reproduce, scripts/plot_figures.py, experiments/, hydra launchers).

Fast tests use hand-made run directories and CSVs; one test drives the real runner through a tiny sweep,
selection, final phase, aggregation, plot and resume; the slow ones run the whole smoke study (as
`make smoke` does) and a multirun through the submitit_local launcher.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch
import pytest
import yaml
from hydra import compose, initialize_config_dir

from pathsgd.collect import RUN_COLUMNS
from pathsgd import reproduce as rp
from pathsgd.selection import select_alphas
from pathsgd.rundir import source_commit

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "experiments").glob("**/*.yaml"))
BASES = {"common.yaml", "family.yaml"}  # shared parts of studies, not studies
STUDIES = [p for p in EXPERIMENTS if p.name not in BASES]
OPTIMIZERS = {p.stem for p in (REPO / "configs" / "optimizer").glob("*.yaml")}


# ----------------------------------------------------------------------------------------------------------
# Experiment files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: str(p.relative_to(REPO / "experiments")))
def test_every_experiment_loads_and_names_its_command(path):
    exp = rp.load_experiment(path)
    assert set(exp["optimizers"]) <= OPTIMIZERS
    assert set(exp["inits"]) <= {"balanced", "unbalanced"}
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert any("make " in line or "pathsgd.reproduce" in line for line in header), "header comment lacks the command"


def test_paper_protocol_in_the_figure_files():
    fig2 = rp.load_experiment(REPO / "experiments/fig2.yaml")
    assert list(fig2["datasets"]) == ["mnist", "cifar10", "cifar100", "svhn"]
    assert fig2["sweep"]["alphas"] == list(range(11))
    assert "data.validation=10000" in fig2["sweep"]["overrides"]
    assert "data.validation=0" in fig2["final"]["overrides"]
    assert "model.hidden=[4000,4000]" in fig2["overrides"]
    assert rp.sweep_inits(fig2) == ["balanced"]
    fig3 = rp.load_experiment(REPO / "experiments/fig3.yaml")
    assert fig3["dropouts"] == [0.5] and fig3["inits"] == ["balanced"]
    fig1 = rp.load_experiment(REPO / "experiments/fig1.yaml")
    assert list(fig1["datasets"]) == ["mnist"] and fig1["optimizers"] == ["sgd"] and fig1["toy"]
    fashion = rp.load_experiment(REPO / "experiments/fig2_fashion_mnist.yaml")
    assert fashion["name"] != fig2["name"] and fashion["results"] == "results"


@pytest.mark.parametrize("fig", ["fig1", "fig2", "fig3"])
def test_smoke_studies_are_the_figures_on_stand_in_data(fig):
    real = rp.load_experiment(REPO / f"experiments/{fig}.yaml")
    smoke = rp.load_experiment(REPO / f"experiments/smoke/{fig}.yaml")
    for key in ("name", "plot", "optimizers", "inits", "dropouts", "toy"):
        assert smoke[key] == real[key], key
    assert list(smoke["datasets"]) == list(real["datasets"])
    labels = set()
    for label, overrides in smoke["datasets"].items():
        assert "dataset=synthetic" in overrides
        labels |= {o for o in overrides if o.startswith("dataset.synthetic.label=")}
    assert len(labels) == len(smoke["datasets"])  # one distinct generated dataset per paper dataset
    assert smoke["results"] == "results/smoke"
    assert min(smoke["sweep"]["alphas"]) < 0  # a step size that diverges


def test_base_merging_and_stand_ins(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "name: a\ndatasets: {x: [dataset=mnist], y: [dataset=svhn]}\nsweep: {alphas: [1, 2], epochs: 5}\n"
    )
    (tmp_path / "b.yaml").write_text("results: r\nstand_ins: {x: [dataset=synthetic], z: [dataset=synthetic]}\n")
    (tmp_path / "c.yaml").write_text("base: [a.yaml, b.yaml]\nsweep: {epochs: 1}\n")
    exp = rp.load_experiment(tmp_path / "c.yaml")
    assert exp["datasets"] == {"x": ["dataset=synthetic"], "y": ["dataset=svhn"]}
    assert exp["sweep"]["alphas"] == [1, 2] and exp["sweep"]["epochs"] == 1
    assert exp["results"] == "r" and exp["final"]["epochs"] == 100
    (tmp_path / "bad.yaml").write_text("name: bad\ndatasets: {x: [dataset=mnist]}\nplot: nope\n")
    with pytest.raises(ValueError, match="plot"):
        rp.load_experiment(tmp_path / "bad.yaml")


# ----------------------------------------------------------------------------------------------------------
# Planning and commands
# ----------------------------------------------------------------------------------------------------------


def small_exp(tmp_path, **changes) -> dict:
    spec = {
        "name": "t",
        "results": str(tmp_path / "results"),
        "raw": str(tmp_path / "raw"),
        "datasets": {"d1": ["dataset=synthetic", "dataset.synthetic.label=d1"], "d2": ["dataset=synthetic"]},
        "optimizers": ["sgd", "pathsgd"],
        "inits": ["balanced", "unbalanced"],
        "dropouts": [0.0, 0.5],
        "sweep": {"alphas": [-6, 1, 2], "epochs": 2},
        "final": {"epochs": 3},
    }
    spec.update(changes)
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(spec))
    return rp.load_experiment(path)


def test_one_sweep_multirun_per_dataset(tmp_path):
    exp = small_exp(tmp_path)
    sweep = rp.plan_sweep(exp)
    assert [m.dataset for m in sweep] == ["d1", "d2"]
    cmd = sweep[0].command(exp, "python", None, ["device=cpu"])
    assert cmd[:4] == ["python", "-m", "pathsgd.train", "--multirun"]
    for item in ("optimizer=sgd,pathsgd", "alpha=-6,1,2", "init=balanced", "model.dropout=0.0,0.5",
                 "epochs=2", "phase=sweep", "resume=true", "data.validation=10000", "dataset.synthetic.label=d1"):
        assert item in cmd, item
    assert f"hydra.sweep.dir={tmp_path / 'raw' / 't' / 'sweep' / 'd1'}" in cmd
    assert cmd[-1] == "device=cpu"
    assert len(sweep[0].runs()) == 2 * 2 * 3
    assert "hydra/launcher=local" in sweep[0].command(exp, "python", "local", [])


def test_final_plan_groups_by_alpha_and_skips_all_diverged_cells(tmp_path):
    exp = small_exp(tmp_path, dropouts=[0.0])
    selection = pd.DataFrame(
        [
            dict(dataset="d1", optimizer="sgd", dropout=0.0, init="all", alpha=1.0),
            dict(dataset="d1", optimizer="pathsgd", dropout=0.0, init="all", alpha=1.0),
            dict(dataset="d2", optimizer="sgd", dropout=0.0, init="all", alpha=2.0),
            dict(dataset="d2", optimizer="pathsgd", dropout=0.0, init="all", alpha=math.nan),
        ]
    )
    final, skipped = rp.plan_final(exp, selection)
    assert [(m.dataset, m.alphas, m.optimizers, m.inits) for m in final] == [
        ("d1", [1], ["sgd", "pathsgd"], ["balanced", "unbalanced"]),
        ("d2", [2], ["sgd"], ["balanced", "unbalanced"]),
    ]
    assert {(c["dataset"], c["optimizer"], c["init"]) for c in skipped} == {
        ("d2", "pathsgd", "balanced"), ("d2", "pathsgd", "unbalanced")
    }
    run = final[0].runs()[0]
    assert {"optimizer=sgd", "init=balanced", "alpha=1", "seed=0", "model.dropout=0.0"} <= run.identity(exp)
    assert rp.run_dirs(exp, [run]) == {run: None}  # not started: no directory records it


def test_a_changed_study_does_not_reuse_the_old_runs(tmp_path):
    """Width, batch size or any other result-defining override changes what a run is (no stale reuse); a longer
    phase does not (a finished run is extended with resume=true)."""
    run = rp.plan_sweep(small_exp(tmp_path))[0].runs()[0]
    old = fake_run(small_exp(tmp_path), run, [0.9, 0.3, 0.2])
    for change in ({"overrides": ["model.hidden=[8,8]"]}, {"overrides": ["batch_size=50"]},
                   {"sweep": {"alphas": [-6, 1, 2], "epochs": 2, "overrides": ["data.validation=50"]}}):
        assert rp.run_dirs(small_exp(tmp_path, **change), [run]) == {run: None}, change
    assert rp.run_dirs(small_exp(tmp_path, sweep={"alphas": [-6, 1, 2], "epochs": 9}), [run]) == {run: old}


def test_of_two_directories_of_one_run_the_finished_one_counts(tmp_path):
    """A run started again under another name (the runner's naming changed) leaves two directories."""
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    run = rp.plan_sweep(exp)[0].runs()[0]
    done = fake_run(exp, run, [0.9, 0.3, 0.2], name="a-old-name")
    fake_run(exp, run, [0.9], status="running", name="b-new-name")
    assert rp.run_dirs(exp, [run]) == {run: done}


def fake_run(exp, run, errors, status="completed", hidden=(16, 16), epochs=None, name=None) -> Path:
    """A run directory as the runner leaves it for ``run`` of ``exp``: metrics.csv, summary.json, and the overrides
    that Hydra records (from which the pipeline learns which run it is)."""
    path = rp.raw_dir(exp) / run.phase / run.dataset / (name or f"{run.optimizer}-a{run.alpha}-s{run.seed}")
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*run.overrides(exp), "epochs=9", "resume=true"]))
    rows = ["epoch,train_loss,train_error,val_error,test_error,path_norm,seconds,batch_loss"]
    rows += [f"{e},{1 + v},{v},{v},{v},3.0,{e * 0.1},0.5" for e, v in enumerate(errors)]
    (path / "metrics.csv").write_text("\n".join(rows) + "\n")
    if status is not None:
        n = len(errors) - 1 if epochs is None else epochs
        summary = {"status": status, "epochs_completed": n, "config": {"epochs": n, "model": {"hidden": list(hidden)}}}
        (path / "summary.json").write_text(json.dumps(summary))
    return path


def test_an_edited_study_neither_reuses_stale_rows_nor_a_stale_selection(tmp_path):
    """sweep.epochs 2 -> 1: the runs hold epoch 1 exactly, so the table keeps epochs 0..1 of them; a changed alpha
    grid makes the old selection.csv refuse to pick the final alphas."""
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    runs = rp.plan_sweep(exp)[0].runs()
    fake_run(exp, runs[1], [0.9, 0.5, 0.3])
    fake_run(exp, runs[2], [0.9, 0.4, float("nan")], status="diverged")
    shorter = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"], sweep={"alphas": [-6, 1, 2], "epochs": 1})
    table = rp.aggregate(shorter, runs[1:3])
    assert table.epoch.tolist() == [0, 1, 0, 1] and set(table.status) == {"completed"}
    select_alphas(rp.aggregate(exp, runs)).to_csv(tmp_path / "selection.csv", index=False)
    selection = rp.read_selection(tmp_path / "selection.csv")
    rp.check_selection(exp, selection, tmp_path / "selection.csv")  # the same grid: no error
    regridded = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"], sweep={"alphas": [1, 2, 3], "epochs": 2})
    with pytest.raises(rp.PipelineError, match=r"alpha on the grid -6 1 2, and the study now sweeps 1.0 2.0 3.0: run "
                                                r"its select step again"):
        rp.check_selection(regridded, selection, tmp_path / "selection.csv")


def test_progress_says_runs_done_elapsed_and_time_left_prefixed_with_the_study(tmp_path, capsys):
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    multiruns = rp.plan_sweep(exp)
    runs = multiruns[0].runs()
    fake_run(exp, runs[0], [0.9, 0.5, 0.3])  # finished (2 epochs) before this driver started: not counted in the pace
    progress = rp.Progress(exp, multiruns)
    progress.report()
    assert capsys.readouterr().out == ""  # nothing new
    fake_run(exp, runs[1], [0.9, 0.5, 0.3])
    fake_run(exp, runs[2], [0.9], status="running")  # not finished
    progress.report()
    line = capsys.readouterr().out
    assert line.startswith(f"[{exp['name']}] sweep: 2/{len(progress.runs)} runs done, ") and "min elapsed, about" in line


def test_aggregate_reads_run_directories_into_the_tidy_table(tmp_path):
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    runs = rp.plan_sweep(exp)[0].runs()  # d1: sgd x alphas (-6, 1, 2) x balanced
    paths = [fake_run(exp, runs[0], [0.9, float("nan")], status="diverged"), fake_run(exp, runs[1], [0.9, 0.3, 0.2]),
             fake_run(exp, runs[2], [0.9, 0.5], status=None)]  # the last killed: metrics but no summary
    table = rp.aggregate(exp, runs + [rp.Run("sweep", "d1", "sgd", "balanced", 0.0, 7, 0)])  # 7: never ran
    assert list(table.columns) == RUN_COLUMNS
    status = table.groupby("alpha")["status"].first().to_dict()
    assert status == {-6: "diverged", 1: "completed", 2: "incomplete", 7: "failed"}
    assert set(table[table.alpha == 1].width) == {16}
    assert table[table.alpha == 1].epoch.tolist() == [0, 1, 2]
    assert set(table.phase) == {"sweep"} and set(table.init) == {"balanced"}
    sel = select_alphas(table)
    assert sel.alpha.tolist() == [1.0] and sel.diverged.tolist() == ["-6"] and sel.failed.tolist() == ["2 7"]
    assert rp.run_finished(paths[1], 2) and not rp.run_finished(paths[1], 3)
    assert rp.run_finished(paths[0], 99)  # diverged: never retried
    assert not rp.run_finished(paths[2], 1) and not rp.run_finished(None, 1)


# ----------------------------------------------------------------------------------------------------------
# Figures from CSV alone
# ----------------------------------------------------------------------------------------------------------


def plot(results: Path, kind: str, out: Path):
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "plot_figures.py"), str(results), "--kind", kind, "--out", str(out)],
        capture_output=True, text=True,
    )


@pytest.mark.slow  # three figures drawn as PNG and PDF
def test_plot_curves_fig1_and_family_from_csv_only(tmp_path, tidy_study):
    from pathsgd.toy import write_toy_csv

    curves = tidy_study(tmp_path, "fig2")
    fig1 = tidy_study(tmp_path, "fig1", datasets=("mnist",))
    write_toy_csv(fig1 / "toy.csv")
    family = tidy_study(tmp_path, "family", datasets=("mnist",))  # pairs: Path-SGD vs SGD, AdaGrad alone
    for results, kind in ((curves, "curves"), (fig1, "fig1"), (family, "family")):
        out = tmp_path / "figures" / results.name
        proc = plot(results, kind, out)
        assert proc.returncode == 0, proc.stderr
        assert out.with_suffix(".png").stat().st_size > 10_000
        assert out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


# ----------------------------------------------------------------------------------------------------------
# The real runner: a tiny pipeline, its resume, and the launchers
# ----------------------------------------------------------------------------------------------------------

TINY = [
    "dataset.synthetic.n_train=300",
    "dataset.synthetic.n_test=100",
    "dataset.synthetic.in_features=8",
    "model.hidden=[8,8]",
    "device=cpu",
]


def tiny_exp(tmp_path, **changes) -> dict:
    spec = {
        "name": "tiny",
        "plot": "curves",
        "results": str(tmp_path / "results"),
        "raw": str(tmp_path / "raw"),
        "datasets": {"mnist": ["dataset=synthetic", "dataset.synthetic.label=mnist"]},
        "optimizers": ["sgd", "pathsgd"],
        "overrides": TINY,
        "env": {"OMP_NUM_THREADS": 1},
        "sweep": {"alphas": [-30, 0], "epochs": 2, "overrides": ["data.validation=100"]},
        "final": {"epochs": 2},
    }
    spec.update(changes)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return rp.load_experiment(path)


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
def test_tiny_pipeline_through_the_runner_and_resume(tmp_path, capfd):
    exp = tiny_exp(tmp_path)
    paths = rp.reproduce(exp)
    runs = pd.read_csv(paths["runs"])
    assert list(runs.columns) == RUN_COLUMNS
    sweep, final = runs[runs.phase == "sweep"], runs[runs.phase == "final"]
    assert len(sweep.groupby(["optimizer", "alpha"])) == 4 and set(sweep.init) == {"balanced"}
    assert sweep[(sweep.optimizer == "sgd") & (sweep.alpha == -30)].status.iloc[0] == "diverged"
    assert set(final.init) == {"balanced", "unbalanced"} and set(final.alpha) == {0}
    assert final.groupby(["optimizer", "init"]).epoch.max().tolist() == [2, 2, 2, 2]
    assert set(runs.width) == {8} and runs[runs.phase == "final"].val_error.isna().all()
    sel = pd.read_csv(paths["selection"])
    assert str(sel.set_index("optimizer").loc["sgd", "diverged"]) == "-30"
    assert paths["png"].exists() and paths["pdf"].exists()
    assert json.loads((Path(exp["results"]) / "tiny" / "meta.json").read_text())["experiment"]["name"] == "tiny"
    capfd.readouterr()
    rp.reproduce(exp, steps=("sweep", "select", "final", "aggregate"))  # everything done: no process started
    out = capfd.readouterr().out
    assert "pathsgd.train" not in out and out.count("runs done, skipped") == 2
    assert pd.read_csv(paths["runs"]).equals(runs)


@pytest.mark.slow
def test_submitit_local_launcher_runs_real_subprocess_jobs(tmp_path):
    exp = tiny_exp(tmp_path, optimizers=["sgd"], launcher="local", inits=["balanced"])
    paths = rp.reproduce(exp, steps=("sweep", "select", "aggregate"))
    runs = pd.read_csv(paths["runs"])
    assert set(runs.status) == {"diverged", "completed"}
    submitit = list((tmp_path / "raw" / "tiny" / "sweep" / "mnist" / ".submitit").glob("*/*_result.pkl"))
    assert len(submitit) == 2  # one submitit job per run


@pytest.mark.slow
def test_smoke_pipeline_of_all_figures_and_the_notebook(tmp_path):
    """`make smoke` in a temporary directory: the three smoke studies end to end, then the notebook."""
    files = []
    for fig in ("fig1", "fig2", "fig3"):
        path = tmp_path / f"{fig}.yaml"
        path.write_text(yaml.safe_dump({
            "base": [str(REPO / f"experiments/smoke/{fig}.yaml")],
            "results": str(tmp_path / "results"),
            "raw": str(tmp_path / "outputs"),
        }))
        files.append(str(path))
    proc = subprocess.run([sys.executable, "-m", "pathsgd.reproduce", *files], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for fig in ("fig1", "fig2", "fig3"):
        runs = pd.read_csv(tmp_path / "results" / fig / "runs.csv")
        assert set(runs.phase) == {"sweep", "final"}
        assert (runs.status == "diverged").any()
        assert (tmp_path / "results" / "figures" / f"{fig}.png").exists()
    assert (tmp_path / "results" / "fig1" / "toy.csv").exists()
    env = {**os.environ, "PATHSGD_RESULTS": str(tmp_path / "results")}
    nb = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                         str(REPO / "notebooks" / "learning_curves.ipynb")], cwd=REPO, env=env,
                        capture_output=True, text=True)
    assert nb.returncode == 0, nb.stdout[-3000:]


def test_a_run_with_lost_or_torn_records_is_not_finished(tmp_path):
    """metrics.csv gone or short, or summary.json torn mid-write: run again (resume rebuilds), never reused."""
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    runs = rp.plan_sweep(exp)[0].runs()
    lost = fake_run(exp, runs[1], [0.9, 0.3, 0.2])
    assert rp.run_finished(lost, 2)
    (lost / "metrics.csv").unlink()
    assert not rp.run_finished(lost, 2)
    torn = fake_run(exp, runs[0], [0.9, 0.3, 0.2])
    (torn / "summary.json").write_text('{"status": "compl')
    assert not rp.run_finished(torn, 2)
    table = rp.aggregate(exp, runs[:1])  # a torn summary.json reads as a run without one: incomplete
    assert set(table.status) == {"incomplete"}


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
def test_killing_the_driver_ends_its_runs_as_interrupted(tmp_path):
    """SIGTERM to `python -m pathsgd.reproduce`: the multirun it launched stops too, its run recorded interrupted."""
    import signal
    import time

    tiny_exp(tmp_path, optimizers=["sgd"], sweep={"alphas": [1], "epochs": 100000, "overrides": ["data.validation=100"]})
    proc = subprocess.Popen([sys.executable, "-m", "pathsgd.reproduce", str(tmp_path / "tiny.yaml"), "--steps", "sweep"],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    sweep = tmp_path / "raw" / "tiny" / "sweep" / "mnist"
    deadline = time.time() + 120
    while time.time() < deadline and not any(sweep.glob("*/metrics.csv")):
        time.sleep(0.3)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=90)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert "[tiny] interrupted (signal 15): its runs in training are recorded as interrupted" in err, err
    (run,) = [p for p in sweep.iterdir() if (p / "summary.json").exists()]
    time.sleep(0.5)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted", summary["status"]
    ps = subprocess.run(["pgrep", "-f", str(sweep)], capture_output=True, text=True)
    assert ps.stdout.strip() == "", "a runner of the killed driver is still training"


@pytest.mark.parametrize("text, message", [
    ("name: x\ndatasets: {a: [dataset=synthetic]}\noptimisers: [sgd]\n", "unknown key 'optimisers'; the keys of a study are"),
    ("name: x\ndatasets: {a: [dataset=synthetic]}\nsweep: {alpha: [1]}\n", "unknown key 'sweep.alpha'; the keys of sweep are alphas,"),
    ("name: x\ndatasets: [\n", "while parsing a flow node"),
])
def test_a_bad_study_file_is_one_line_and_nothing_runs(tmp_path, monkeypatch, capsys, text, message):
    study = tmp_path / "study.yaml"
    study.write_text(text)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(rp.signal, "signal", lambda *args: None)  # the driver's SIGTERM handler stays out of pytest
    with pytest.raises(SystemExit) as exc:
        rp.main([str(study)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and message in err and str(study) in err, err
    assert not (tmp_path / "results").exists()


def test_the_slurm_launcher_without_slurm_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    tiny_exp(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "pathsgd.reproduce", str(tmp_path / "tiny.yaml"), "--launcher", "slurm"],
                          cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "[reproduce] tiny: the slurm launcher submits through Slurm, and srun and sbatch are not on PATH here: run the "
        "driver on the cluster's login node (--launcher local tries the jobs on this machine)"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where there is no CUDA")
def test_a_gpu_study_refuses_to_start_without_cuda_unless_told_cpu(tmp_path, monkeypatch):
    exp = rp.load_experiment(REPO / "experiments" / "fig2.yaml")
    with pytest.raises(rp.PipelineError, match="asks for device=cuda and CUDA is not available here"):
        rp.check_device(exp)
    rp.check_device({**exp, "extra_overrides": ["device=cpu"]})  # said: no error
    # With a cluster launcher the driver, on a login node without a GPU, leaves the check to each job.
    calls = []
    monkeypatch.setattr(rp, "launch", lambda *a, **k: calls.append(a[1]) or [])
    monkeypatch.setattr(rp.shutil, "which", lambda tool: f"/usr/bin/{tool}")  # as on a login node
    rp.reproduce({**exp, "results": str(tmp_path)}, steps=["sweep"], launcher="slurm")
    assert calls and all("device=cuda" in mr.command(exp, "python", "slurm", [])
                         and "hydra/launcher=slurm" in mr.command(exp, "python", "slurm", []) for mr in calls[0])
    for name in ("fig2_mnist", "fig2_fashion_mnist", "smoke/fig2"):  # the CPU studies ask for the CPU
        rp.check_device(rp.load_experiment(REPO / "experiments" / f"{name}.yaml"))


def test_collect_gathers_any_run_directories_into_the_tidy_table(tmp_path, capsys):
    """Runs made with `python -m pathsgd.train` (single and --multirun) become the pipeline's tidy table."""
    from pathsgd.collect import main as collect_main
    from pathsgd.train import train

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        for name, optimizer, alpha, width in (("a", "sgd", 1, 8), ("b", "pathsgd", 2, 8), ("c", "pathsgd", 2, 16)):
            cfg = compose(config_name="config", overrides=["dataset=synthetic", *TINY, "data.validation=100", "epochs=2",
                                                          f"optimizer={optimizer}", f"alpha={alpha}",
                                                          f"model.hidden=[{width},{width}]"])
            train(cfg, run_dir=tmp_path / "runs" / "nested" / name)
    collect_main([str(tmp_path / "runs"), "--out", str(tmp_path / "tidy.csv")])
    table = pd.read_csv(tmp_path / "tidy.csv")
    assert list(table.columns) == RUN_COLUMNS
    assert set(zip(table.optimizer, table.alpha, table.width)) == {("sgd", 1, 8), ("pathsgd", 2, 8), ("pathsgd", 2, 16)}
    assert set(table.status) == {"completed"} and set(table.phase) == {"single"}
    assert len(table) == 3 * 3 and table.run.nunique() == 3  # three runs, epochs 0..2; two differ only in width
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'tidy.csv'}: 3 runs, 9 rows")


def test_stand_in_rows_are_labelled_and_the_alpha_axis_spans_the_usable_grid(tmp_path, tidy_study):
    import importlib.util

    results = tidy_study(tmp_path, "smokeish", datasets=("mnist",))
    runs = pd.read_csv(results / "runs.csv")
    far = runs[(runs.phase == "sweep") & (runs.alpha == 1)].copy()
    far["alpha"], far["status"] = -30, "diverged"
    pd.concat([runs, far]).to_csv(results / "runs.csv", index=False)
    spec = importlib.util.spec_from_file_location("plot_figures", REPO / "scripts" / "plot_figures.py")
    plot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plot)
    plot.STAND_INS.add("mnist")
    fig = plot.figure_curves(results, "smoke")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("generated stand-in" in t.get_text() and "MNIST" in t.get_text() for t in fig.texts)  # the row's name
    alpha_ax = fig.axes[3]
    assert alpha_ax.get_xlim()[0] > -1 and any("off axis: alpha = -30" in t for t in texts)


@pytest.mark.parametrize("selection", [None, "garbage \x00\x01 ,,\n\"", "a,b\n1,2\n"])
def test_final_runs_without_a_usable_selection_are_one_line(tmp_path, monkeypatch, selection):
    exp = small_exp(tmp_path)
    if selection is not None:
        (rp.results_dir(exp)).mkdir(parents=True)
        (rp.results_dir(exp) / "selection.csv").write_text(selection)
    monkeypatch.setattr(rp, "launch", lambda *a, **k: pytest.fail("a run was launched"))
    with pytest.raises(rp.PipelineError, match=r"selection.csv (is missing|cannot be read|is not a selection).*run the "
                                                r"select step"):
        rp.reproduce(exp, steps=["final"])


def test_a_study_name_must_be_a_folder_name(tmp_path):
    with pytest.raises(ValueError, match=r"name='étude 1' must be letters, digits"):
        small_exp(tmp_path, name="étude 1")


def test_an_unknown_wandb_mode_stops_a_wandb_study_before_any_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "bogus")
    monkeypatch.setattr(rp, "launch", lambda *a, **k: pytest.fail("a run was launched"))
    with pytest.raises(rp.PipelineError, match="WANDB_MODE='bogus' is unknown: choose one of offline, online, disabled"):
        rp.reproduce(small_exp(tmp_path, overrides=["logger=wandb"]))


def test_a_wandb_study_publishes_its_figure_and_csvs(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(key, str(tmp_path / "wandb-home"))
    exp = small_exp(tmp_path)
    files = [tmp_path / name for name in ("fig.png", "runs.csv")]
    for f in files:
        f.write_text("x")
    rp.publish_to_wandb(exp, files)
    (run,) = (rp.raw_dir(exp) / "wandb").glob("offline-run-*")
    assert {"fig.png", "runs.csv"} <= {p.name for p in (run / "files").iterdir()}


@pytest.mark.parametrize("damage", ["metrics.csv deleted", "metrics.csv cut short"])
def test_a_finished_run_whose_records_disagree_is_inconsistent_not_completed(tmp_path, damage):
    exp = small_exp(tmp_path, dropouts=[0.0], optimizers=["sgd"])
    run = rp.plan_sweep(exp)[0].runs()[1]
    path = fake_run(exp, run, [0.9, 0.5, 0.3])
    if damage == "metrics.csv deleted":
        (path / "metrics.csv").unlink()
    else:
        (path / "metrics.csv").write_text("\n".join((path / "metrics.csv").read_text().splitlines()[:2]) + "\n")
    with pytest.warns(UserWarning, match=f"{path / 'metrics.csv'} does not hold epochs 0..2"):
        table = rp.aggregate(exp, [run])
    assert set(table.status) == {"inconsistent"} and not rp.run_finished(path, 2)


def test_collect_keeps_a_generated_stand_ins_label(tmp_path):
    from pathsgd.collect import read_run

    for label in ("cifar10", "svhn"):
        (tmp_path / label).mkdir()
        (tmp_path / label / "summary.json").write_text(json.dumps({"status": "completed", "epochs_completed": 0, "config": {
            "dataset": {"name": "synthetic", "synthetic": {"label": label}}, "optimizer": {"name": "sgd"},
            "init": {"name": "balanced"}, "model": {"hidden": [8], "dropout": 0.0}, "alpha": 1.0, "seed": 0}}))
        (tmp_path / label / "metrics.csv").write_text("epoch,train_loss\n0,2.3\n")
        assert set(read_run(tmp_path / label)["dataset"]) == {label}


def test_collect_names_a_conv_nets_width_by_its_channels(tmp_path):
    from pathsgd.collect import read_run

    (tmp_path / "summary.json").write_text(json.dumps({"status": "completed", "epochs_completed": 0, "config": {
        "dataset": {"name": "fashion_mnist"}, "optimizer": {"name": "sgd"}, "init": {"name": "balanced"},
        "model": {"arch": "convnet", "channels": 8, "hidden": [4000, 4000], "dropout": 0.0},
        "alpha": 2.0, "phase": "final", "seed": 0}}))
    (tmp_path / "metrics.csv").write_text("epoch,train_loss\n0,2.3\n")
    assert set(read_run(tmp_path)["width"]) == {"8 channels"}


def test_per_init_check_sweeps_the_other_init_of_its_optimizers_only():
    fig2 = rp.load_experiment(REPO / "experiments/fig2_mnist.yaml")
    sweeps = rp.plan_sweep(fig2)
    assert [(m.optimizers, m.inits) for m in sweeps] == [(["pathsgd", "sgd", "adagrad"], ["balanced"]),
                                                         (["sgd", "adagrad"], ["unbalanced"])]
    assert sweeps[1].alphas == list(range(11)) and sweeps[1].seeds == sweeps[0].seeds == [0, 1]
    assert len(rp.plan_sweep(rp.load_experiment(REPO / "experiments/fig3_mnist.yaml"))) == 1  # balanced only: no check


def test_a_studys_own_outputs_do_not_make_its_commit_dirty(tmp_path):
    """Re-running a committed study rewrites its tracked CSVs and figure: the code is still the commit's."""
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (tmp_path / "results").mkdir()
    for name in ("code.py", "results/runs.csv"):
        (tmp_path / name).write_text("1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    (tmp_path / "results" / "runs.csv").write_text("2\n")
    assert not source_commit(tmp_path).endswith("-dirty")
    (tmp_path / "code.py").write_text("2\n")
    assert source_commit(tmp_path).endswith("-dirty")
