"""scripts/report.py: verdicts computed from a tidy CSV whose answers are known by construction."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def load_report():
    spec = importlib.util.spec_from_file_location("report", REPO / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def study(root: Path) -> None:
    """Path-SGD: the same curve for both inits, fastest, but with the highest final test error; SGD and AdaGrad:
    much worse (SGD diverged) from the unbalanced init."""
    rows = []
    for opt, rate in (("pathsgd", 0.5), ("sgd", 0.3), ("adagrad", 0.2)):
        for init in ("balanced", "unbalanced"):
            for seed in range(3):
                for epoch in range(6):
                    loss = 2.0 * (1 - rate) ** epoch + 0.01 * seed
                    test = 0.1 + 0.5 * (1 - rate) ** epoch + 0.001 * seed
                    if opt == "pathsgd" and epoch == 5:
                        test += 0.2  # worse at the end: not better generalization
                    status = "completed"
                    if init == "unbalanced" and opt != "pathsgd":
                        loss, test = loss * 10, min(test + 0.3, 0.9)
                        status = "diverged" if opt == "sgd" else status
                    rows.append(dict(dataset="mnist", optimizer=opt, init=init, dropout=0.0, alpha=1, phase="final",
                                     seed=seed, width=8, epoch=epoch, train_loss=loss, train_error=loss / 4,
                                     val_error=None, test_error=test, path_norm=1.0, seconds=epoch * 2.0, status=status))
    (root / "fig2_mnist").mkdir(parents=True)
    pd.DataFrame(rows).to_csv(root / "fig2_mnist" / "runs.csv", index=False)


def test_report_verdicts_and_determinism(tmp_path):
    report = load_report()
    study(tmp_path)
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "a.md")])
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "b.md")])
    text = (tmp_path / "a.md").read_text()
    assert text == (tmp_path / "b.md").read_text()  # the same CSVs give the same file
    verdicts = {line.split("|")[1].split(":")[0].strip(): line.split("**")[1]
                for line in text.splitlines() if line.startswith("| C")}
    assert verdicts == {"C1": "holds", "C2": "holds", "C3a": "holds", "C3b": "does not hold"}
    assert "`fig3_mnist`: not run yet." in text and "3/3 (3 diverged)" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.README_START}\nSTALE\n{report.README_END}\nrest\n")
    report.main(["--results", str(tmp_path), "--out", str(tmp_path / "c.md"), "--readme", str(readme)])
    new = readme.read_text()
    assert "STALE" not in new and "| C1:" in new and new.startswith("intro") and new.endswith("rest\n")


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
    load_report().main(["--results", str(tmp_path), "--out", str(tmp_path / "r.md")])
    text = (tmp_path / "r.md").read_text()
    summary = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[3:7]]
               for line in text.splitlines() if line.startswith("| Path-") and "| MNIST, MLP |" in line}
    assert summary == {"Path-SGD vs SGD": ["Path-SGD", "lower", "yes", "3/3"],
                       "Path-Adam vs Adam": ["Adam", "higher", "no", "0/3"]}
    assert "`family_fashion_mnist` (Fashion-MNIST, MLP): not run yet." in text
