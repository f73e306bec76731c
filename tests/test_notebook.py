"""notebooks/learning_curves.ipynb runs top to bottom on tidy CSVs named by PATHSGD_RESULTS (nbmake's engine).

The smoke outputs are covered by the slow test in test_pipeline.py (and by `make smoke`); here a hand-made
study in the same CSV layout, and a collected CSV of one's own runs. Executing the notebook takes seconds: both
are in ``make test-slow``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "learning_curves.ipynb"


@pytest.mark.slow  # executes the notebook
def test_notebook_reads_only_the_tidy_csvs(tmp_path, tidy_study):
    tidy_study(tmp_path, "fig2")
    tidy_study(tmp_path, "fig3", inits=("balanced",))
    env = {**os.environ, "PATHSGD_RESULTS": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", str(NOTEBOOK)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_notebook_has_no_stored_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code")
    assert "PATHSGD_RESULTS" in nb.cells[1].source


@pytest.mark.slow  # executes the notebook
def test_notebook_reads_a_collected_csv_of_own_runs_without_warnings(tmp_path, tidy_study):
    """PATHSGD_RUNS: a tidy CSV from python -m pathsgd.collect (runs of phase `single`); deprecation warnings fail it."""
    import pandas as pd

    tidy_study(tmp_path, "mine")
    table = pd.read_csv(tmp_path / "mine" / "runs.csv")
    table.loc[table.phase == "final", "phase"] = "single"
    table.to_csv(tmp_path / "my_runs.csv", index=False)
    from pandas.errors import Pandas4Warning

    env = {**os.environ, "PATHSGD_RUNS": str(tmp_path / "my_runs.csv"), "PATHSGD_RESULTS": str(tmp_path / "none"),
           # the kernel inherits this: pandas' deprecations become errors in the notebook's cells
           "PYTHONWARNINGS": f"error::{Pandas4Warning.__module__}.{Pandas4Warning.__name__}"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake", str(NOTEBOOK)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
