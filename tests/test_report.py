"""scripts/report.py: each rule on a small synthetic study whose verdict is known by construction.

A run's curves are geometric: cross-entropy 2.3 (1 - rate)^epoch, test error floor + 0.8 (1 - rate)^epoch, so a
larger rate reaches every target in fewer epochs and the floor is the final test error.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS, SEEDS = 12, range(5)


def load_report():
    spec = importlib.util.spec_from_file_location("report", REPO / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


report = load_report()


def run(opt, init, seed, rate, floor, alpha=1.0, phase="final", diverge_at=None, epochs=EPOCHS, loss_scale=1.0):
    """One run's rows; with ``diverge_at`` the run stops there with a nan loss and a broken network's 0.9."""
    rows = []
    for epoch in range(epochs + 1):
        shrink = (1 - rate) ** epoch if epoch else 1.0
        loss = (2.3 * shrink * (loss_scale if epoch else 1.0)) + 1e-4 * seed
        test = floor + 0.8 * shrink + 1e-4 * seed
        status = "completed" if diverge_at is None else "diverged"
        if diverge_at is not None and epoch == diverge_at:
            loss, test = math.nan, 0.9
        rows.append(dict(dataset="mnist", optimizer=opt, init=init, dropout=0.0, alpha=alpha, phase=phase, seed=seed,
                         width=8, epoch=epoch, train_loss=loss, train_error=min(loss / 3, 0.9), val_error=math.nan,
                         test_error=test, path_norm=1.0, seconds=2.0 * epoch, status=status))
        if diverge_at is not None and epoch == diverge_at:
            break
    return rows


def write(root: Path, name: str, rows: list[dict], alphas: dict[str, float]) -> None:
    (root / name).mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / name / "runs.csv", index=False)
    pd.DataFrame([dict(dataset="mnist", optimizer=o, dropout=0.0, init="all", alpha=a, grid="0 0.5 1 1.5 2",
                       at_edge=False, status="selected") for o, a in alphas.items()]).to_csv(
        root / name / "selection.csv", index=False)


def cells(specs: dict[tuple[str, str], dict], seeds=SEEDS, **common) -> list[dict]:
    """Rows for (optimizer, init) -> run() keywords (a callable of the seed gives a per-seed value)."""
    rows = []
    for (opt, init), spec in specs.items():
        for seed in seeds:
            kw = {k: (v(seed) if callable(v) else v) for k, v in {**common, **spec}.items()}
            rows += run(opt, init, seed, **kw)
    return rows


def verdicts(path: Path) -> dict[str, str]:
    return {line.split("|")[1].split(":")[0].strip(): line.split("**")[1]
            for line in path.read_text().splitlines() if line.startswith(("| C", "| D"))}


def view_of(rows: list[dict], phase="final"):
    return report.make_view(pd.DataFrame(rows), phase, {})


# --------------------------------------------------------------------------------------------------------
# One study through main(): every claim of the Figure 2 protocol, with the answer each rule must give


def test_report_verdicts_and_determinism(tmp_path):
    """Path-SGD: the same curves for both inits, fastest, lowest final error by far. SGD diverges from the
    unbalanced init, AdaGrad ends it with a cross-entropy of 1e23 (a number that must not be printed)."""
    rows = cells({("pathsgd", "balanced"): dict(rate=0.5, floor=0.05), ("pathsgd", "unbalanced"): dict(rate=0.5, floor=0.05),
                  ("sgd", "balanced"): dict(rate=0.3, floor=0.10), ("sgd", "unbalanced"): dict(rate=0.3, floor=0.1, diverge_at=1),
                  ("adagrad", "balanced"): dict(rate=0.2, floor=0.10),
                  ("adagrad", "unbalanced"): dict(rate=0.2, floor=0.5, loss_scale=1e23)})
    write(tmp_path, "fig2_mnist", rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "a.md")])
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "b.md")])
    text = (tmp_path / "a.md").read_text()
    assert text == (tmp_path / "b.md").read_text()  # the same CSVs give the same file
    assert verdicts(tmp_path / "a.md") == {"C1": "holds", "C2": "holds", "C3a": "holds", "C3b": "holds"}
    assert "e+23" not in text and "| SGD | 5/5 | 5/5 | diverged (every pair diverged) | diverged |" in text
    assert "`fig3_mnist`: not run yet." in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nSTALE\n{report.README_END}\nrest\n")
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "c.md"), "--readme", str(readme)])
    new = readme.read_text()
    assert "STALE" not in new and "| C1:" in new and new.startswith("intro") and new.endswith("rest\n")


# --------------------------------------------------------------------------------------------------------
# Each rule: holds, does not hold, inconclusive


def test_c3b_holds_does_not_hold_and_inconclusive():
    base = {("sgd", "balanced"): dict(rate=0.3, floor=0.10), ("adagrad", "balanced"): dict(rate=0.3, floor=0.10)}
    much_lower = view_of(cells({**base, ("pathsgd", "balanced"): dict(rate=0.3, floor=0.08)}))
    assert report.rule_c3b(much_lower)[0] == "holds"
    # Lower, and significantly so, but by 0.05 points: less than "considerably" (10% of 0.1 or 0.2 points).
    slightly = view_of(cells({**base, ("pathsgd", "balanced"): dict(rate=0.3, floor=lambda s: 0.0995 - 1e-5 * s)}))
    assert report.rule_c3b(slightly)[0] == "does not hold"
    noisy = view_of(cells({**base, ("pathsgd", "balanced"): dict(rate=0.3, floor=lambda s: 0.10 + 0.02 * (-1) ** s)}))
    assert report.rule_c3b(noisy)[0] == "inconclusive"


def test_c3b_counts_a_diverged_run_apart():
    """SGD's seed 2 diverged with a broken network's 0.9: it is counted, and the interval holds the four others."""
    rows = cells({("pathsgd", "balanced"): dict(rate=0.3, floor=0.08), ("adagrad", "balanced"): dict(rate=0.3, floor=0.1),
                  ("sgd", "balanced"): dict(rate=0.3, floor=0.10, diverge_at=lambda s: 3 if s == 2 else None)})
    verdict, lines = report.rule_c3b(view_of(rows))
    sgd = next(line for line in lines if line.startswith("| SGD"))
    assert "| 0 / 1 |" in sgd and "4/0/0" in sgd and "-0.02" in sgd  # four pairs, each 2 points lower
    assert verdict == "holds"  # with the 0.9 inside, the interval would have been useless


def test_c3a_holds_does_not_hold_and_inconclusive():
    def view(rates):
        return view_of(cells({(o, "balanced"): dict(rate=r, floor=0.05) for o, r in zip(("pathsgd", "sgd", "adagrad"), rates)}))

    assert report.rule_c3a(view((0.6, 0.3, 0.3)))[0] == "holds"
    assert report.rule_c3a(view((0.2, 0.5, 0.5)))[0] == "does not hold"
    # Faster than SGD, slower than AdaGrad: never faster than both, slower than one only where AdaGrad is ahead.
    assert report.rule_c3a(view((0.4, 0.2, 0.4)))[0] == "inconclusive"


def test_c3a_targets_are_not_set_by_the_judged_methods_best():
    """The targets lie strictly between the initial value and the worst optimizer's best."""
    view = view_of(cells({(o, "balanced"): dict(rate=r, floor=0.05) for o, r in (("pathsgd", 0.2), ("sgd", 0.5), ("adagrad", 0.5))}))
    worst_best = min(r["test_error"] for r in cells({("pathsgd", "balanced"): dict(rate=0.2, floor=0.05)}))
    assert all(worst_best < t < 0.85 for t in report.targets(view, "test_error"))


def test_c3a_targets_exist_when_every_optimizer_reaches_zero_error():
    """Training error reaches 0 for every optimizer: the smallest positive error stands for zero on the log scale."""
    rows = cells({(o, "balanced"): dict(rate=r, floor=0.05) for o, r in (("pathsgd", 0.2), ("sgd", 0.5), ("adagrad", 0.5))})
    for row in rows:
        row["train_error"] = 0.0 if row["epoch"] >= 8 else 0.9 / (1 + row["epoch"]) ** 2
    found = report.targets(view_of(rows), "train_error")
    smallest = min(r["train_error"] for r in rows if r["train_error"] > 0)
    assert all(smallest < t < 0.9 for t in found) and found == sorted(found, reverse=True), found


def test_c1_holds_does_not_hold_and_inconclusive():
    def view(unbalanced):
        return view_of(cells({("sgd", "balanced"): dict(rate=0.3, floor=0.1), ("adagrad", "balanced"): dict(rate=0.3, floor=0.1),
                              ("sgd", "unbalanced"): unbalanced, ("adagrad", "unbalanced"): unbalanced}))

    assert report.rule_c1(view(dict(rate=0.3, floor=0.1, diverge_at=2)))[0] == "holds"
    assert report.rule_c1(view(dict(rate=0.3, floor=0.1)))[0] == "does not hold"
    # Hurt (two points worse) in three seeds of five.
    assert report.rule_c1(view(dict(rate=0.3, floor=lambda s: 0.12 if s < 3 else 0.1)))[0] == "inconclusive"


def test_c2_holds_does_not_hold_and_inconclusive():
    def view(shift):
        return view_of(cells({("pathsgd", "balanced"): dict(rate=0.3, floor=lambda s: 0.1 + 0.002 * s),
                              ("pathsgd", "unbalanced"): dict(rate=0.3, floor=lambda s: 0.1 + 0.002 * s + shift(s))}))

    # The balanced seeds span 0.008 of test error (and 4e-4 of cross-entropy at every epoch).
    assert report.rule_c2(view(lambda s: 0.0))[0] == "holds"
    assert report.rule_c2(view(lambda s: 0.05))[0] == "does not hold"
    assert report.rule_c2(view(lambda s: 0.05 if s == 0 else 0.0))[0] == "inconclusive"


def test_dropout_remark_states_the_observation_and_the_expectation(tmp_path):
    rows = cells({(o, "balanced"): dict(rate=r, floor=0.05) for o, r in (("pathsgd", 0.7), ("sgd", 0.1), ("adagrad", 0.1))})
    for row in rows:
        row["dropout"] = 0.5
    write(tmp_path, "fig3_mnist", rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
    write(tmp_path, "fig3_fashion_mnist", rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    lines = [line for line in (tmp_path / "r.md").read_text().splitlines() if line.startswith("| D:")]
    assert "much faster than SGD and AdaGrad with dropout? yes (the paper expects no) | MNIST, dropout | **does not hold**" in lines[0]
    assert "yes (the paper expects yes) | Fashion-MNIST, dropout | **holds**" in lines[1]


# --------------------------------------------------------------------------------------------------------
# Sensitivity and pooling


def test_a_verdict_that_flips_at_a_neighbouring_alpha_is_fragile(tmp_path):
    """C3b holds at the chosen alpha; at Path-SGD's alpha + 0.5 its sweep runs end two points higher than SGD's."""
    final = {("pathsgd", "balanced"): dict(rate=0.3, floor=0.08), ("sgd", "balanced"): dict(rate=0.3, floor=0.1),
             ("adagrad", "balanced"): dict(rate=0.3, floor=0.1)}
    rows = cells(final)
    sweep = dict(phase="sweep", epochs=6)
    rows += cells({k: {**v, "alpha": 1.0} for k, v in final.items()}, seeds=range(2), **sweep)
    rows += cells({("pathsgd", "balanced"): dict(rate=0.3, floor=0.12, alpha=1.5)}, seeds=range(2), **sweep)
    rows += cells({("pathsgd", "balanced"): dict(rate=0.3, floor=0.08, alpha=0.5)}, seeds=range(2), **sweep)
    write(tmp_path, "fig3_mnist", rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
    study = report.Study(tmp_path, "fig3_mnist", "MNIST", 0.5)
    assert study.verdicts()["C3b"][0] == "holds"
    label, detail = study.sensitivity("C3b", "holds")
    assert label == "fragile (Path-SGD at 1.5)"
    assert "Path-SGD 0.5: holds" in detail and "SGD 0.5: not swept" in detail
    # Without the neighbour that flips, the same verdict is robust.
    study.runs = study.runs[~((study.runs["phase"] == "sweep") & (study.runs["alpha"] == 1.5))]
    assert study.sensitivity("C3b", "holds")[0] == "robust"
    # With no neighbour swept at all, nothing was tested; an inconclusive verdict cannot flip.
    study.runs = study.runs[~((study.runs["phase"] == "sweep") & (study.runs["alpha"] == 0.5))]
    assert study.sensitivity("C3b", "holds")[0] == "untested"
    assert study.sensitivity("C3b", "inconclusive")[0] == "untested"


def test_dropout_remark_without_path_sgd_runs_is_inconclusive():
    rows = cells({(o, "balanced"): dict(rate=0.3, floor=0.05) for o in ("sgd", "adagrad")})
    assert report.rule_d(view_of(rows), "MNIST")[0] == "inconclusive"


def test_pooled_sign_test_over_study_seed_pairs(tmp_path):
    """Path-SGD one point lower than SGD in all 10 (study, seed) pairs: sign test p = 2 / 2^10."""
    rows = cells({("pathsgd", "balanced"): dict(rate=0.3, floor=0.09), ("sgd", "balanced"): dict(rate=0.3, floor=0.1),
                  ("adagrad", "balanced"): dict(rate=0.3, floor=lambda s: 0.09 + 0.01 * (-1) ** s)})
    studies = []
    for name in ("fig3_mnist", "fig3_fashion_mnist"):
        write(tmp_path, name, rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
        studies.append(report.Study(tmp_path, name, "MNIST", 0.5))
    lines = report.pooled(studies)
    sgd = next(line for line in lines if line.startswith("| SGD | final test error"))
    adagrad = next(line for line in lines if line.startswith("| AdaGrad | final test error"))
    assert "| 10 | 10 / 0 / 0 | 0.002 |" in sgd and sgd.endswith("Path-SGD better |")
    assert adagrad.endswith("| none |")
    assert report.sign_test(10, 0) == pytest.approx(2 / 2**10)


def test_family_verdicts_follow_their_rules(tmp_path):
    """Path-SGD: faster than SGD, lower final error, unmoved by the init that wrecks SGD. Path-Adam: slower than Adam,
    higher final error, and moved by the unbalanced init that leaves Adam alone."""
    rows = []
    for opt, rate, moved in (("pathsgd", 0.5, 0.0), ("sgd", 0.3, None), ("path_adam", 0.2, 0.05), ("adam", 0.4, 0.0)):
        for init in ("balanced", "unbalanced"):
            for seed in range(3):
                for epoch in range(6):
                    loss = 2.0 * (1 - rate) ** epoch + 0.01 * seed
                    test = 0.1 + 0.5 * (1 - rate) ** epoch + 0.001 * seed
                    status = "completed"
                    if init == "unbalanced" and moved is None:
                        loss, test, status = loss * 10, 0.9, "diverged"
                    elif init == "unbalanced" and epoch > 0:
                        test += moved
                    rows.append(dict(dataset="mnist", optimizer=opt, init=init, dropout=0.0, alpha=1, phase="final",
                                     seed=seed, width=8, epoch=epoch, train_loss=loss, train_error=loss / 4,
                                     val_error=None, test_error=test, path_norm=1.0, seconds=epoch * 2.0, status=status))
    (tmp_path / "family_mnist").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "family_mnist" / "runs.csv", index=False)
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    text = (tmp_path / "r.md").read_text()
    summary = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:7]]
               for line in text.splitlines() if line.startswith("| Path-") and "| MNIST, MLP |" in line}
    assert summary == {"Path-SGD vs SGD": ["Path-SGD", "lower", "yes", "3/3"],
                       "Path-Adam vs Adam": ["Adam", "higher", "no", "0/3"]}
    assert "`family_fashion_mnist` (Fashion-MNIST, MLP): not run yet." in text


def test_per_init_row_uses_each_inits_own_alpha(tmp_path):
    """At the balanced init's alpha the unbalanced SGD diverges; at its own (from the sweep) it is merely worse."""
    rows = cells({(o, i): dict(rate=0.3, floor=0.1) for o in ("pathsgd", "adagrad") for i in ("balanced", "unbalanced")})
    rows += cells({("sgd", "balanced"): dict(rate=0.3, floor=0.1), ("sgd", "unbalanced"): dict(rate=0.3, floor=0.1, diverge_at=1)})
    sweep = dict(phase="sweep", epochs=4, seeds=range(2))
    rows += cells({("sgd", "balanced"): dict(rate=0.3, floor=0.1, alpha=1.0)}, **sweep)
    rows += cells({("sgd", "unbalanced"): dict(rate=0.1, floor=0.3, alpha=6.0)}, **sweep)
    write(tmp_path, "fig2_mnist", rows, {"pathsgd": 1, "sgd": 1, "adagrad": 1})
    selection = pd.read_csv(tmp_path / "fig2_mnist" / "selection.csv")
    check = dict(dataset="mnist", optimizer="sgd", dropout=0.0, init="unbalanced", alpha=6.0, grid="0 6 10",
                 at_edge=False, status="selected", role="per_init_check")
    pd.concat([selection, pd.DataFrame([check])]).to_csv(tmp_path / "fig2_mnist" / "selection.csv", index=False)
    lines = report.Study(tmp_path, "fig2_mnist", "MNIST", 0.0).per_init_c1()
    sgd = next(line for line in lines if line.startswith("| SGD"))
    assert "balanced 1, unbalanced 6 (sweep runs; holds)" in sgd and "| 2/2 | 0/2 |" in sgd
    assert any(line.startswith("| AdaGrad | not tuned on the unbalanced init") for line in lines)


# --------------------------------------------------------------------------------------------------------
# Figures (scripts/plot_figures.py) on the same synthetic runs


def load_plot():
    spec = importlib.util.spec_from_file_location("plot_figures", REPO / "scripts" / "plot_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_figure_says_what_it_shows(tmp_path):
    plot = load_plot()
    specs = {("pathsgd", "balanced"): dict(rate=0.3, floor=0.1),
             ("sgd", "balanced"): dict(rate=0.3, floor=0.1, diverge_at=lambda s: 3 if s == 2 else None)}
    rows = cells(specs, seeds=range(3), epochs=5)
    rows += cells({k: {**v, "diverge_at": None} for k, v in specs.items()}, seeds=range(1), phase="sweep", epochs=2)
    write(tmp_path, "fig3_mnist", rows, {"pathsgd": 1, "sgd": 1})
    selection = pd.read_csv(tmp_path / "fig3_mnist" / "selection.csv")
    selection.loc[selection["optimizer"] == "sgd", "at_edge"] = True
    selection.to_csv(tmp_path / "fig3_mnist" / "selection.csv", index=False)
    fig = plot.figure_curves(tmp_path / "fig3_mnist", "t")
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "SGD, balanced (2 of 3 seeds)" in labels and "Path-SGD, balanced (3 seeds)" in labels
    crosses = [line for line in fig.axes[0].get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in crosses] == [[3.0]]  # where seed 2 diverged, not where it began
    assert "chosen at the grid's edge: SGD" in fig.axes[3].get_title()
    assert all(float(t).is_integer() for t in fig.axes[2].get_xticks())
    one = tmp_path / "one"
    write(one, "fig3_mnist", cells(specs, seeds=range(1), epochs=5) + rows[-6:], {"pathsgd": 1, "sgd": 1})
    assert "1 seed" in plot.figure_curves(one / "fig3_mnist", "t")._suptitle.get_text()
