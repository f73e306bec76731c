"""The runner's numbers, to the last bit: short runs on real Fashion-MNIST against committed metrics.

Path-SGD, SGD, AdaGrad and Path-Adam, balanced and unbalanced init, dropout off and on, width 64, 2 epochs: every
column of each run's ``metrics.csv`` but the wall time must equal ``tests/golden/fashion_mnist_w64.csv``, which
was written by the runner before its restructuring. A change to the runner that moves any number fails here.

    python tests/test_golden.py          # rewrite the golden file (only when a change of results is intended)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "golden" / "fashion_mnist_w64.csv"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
RUNS = [(o, i, d) for o in ("pathsgd", "sgd", "adagrad", "path_adam") for i in ("balanced", "unbalanced") for d in (0.0, 0.5)]
ALPHAS = {"pathsgd": 2, "sgd": 1, "adagrad": 2, "path_adam": 3}
KEYS = ["optimizer", "init", "dropout"]


def golden_runs(root: Path) -> pd.DataFrame:
    """Train every run of ``RUNS`` on the Fashion-MNIST files linked under ``root``; their metrics, one table."""
    import torch
    from hydra import compose, initialize_config_dir

    from pathsgd.train import CONFIG_DIR, train

    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        if not (raw / f"{name}.gz").exists():
            (raw / f"{name}.gz").symlink_to(DEBIAN_FASHION / f"{name}.gz")
    tables, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # the sums of a matrix product split over threads round differently with their number
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for optimizer, init, dropout in RUNS:
            cfg = compose(config_name="config", overrides=[
                "dataset=fashion_mnist", f"data.root={root}", "data.download=false", "model.hidden=[64,64]", "epochs=2",
                "device=cpu", f"optimizer={optimizer}", f"alpha={ALPHAS[optimizer]}", f"init={init}",
                f"model.dropout={dropout}"])
            run_dir = root / "runs" / f"{optimizer}-{init}-{dropout}"
            train(cfg, run_dir=run_dir)
            metrics = pd.read_csv(run_dir / "metrics.csv", float_precision="round_trip").drop(columns=["seconds"])
            tables.append(metrics.assign(optimizer=optimizer, init=init, dropout=dropout))
    torch.set_num_threads(threads)
    table = pd.concat(tables, ignore_index=True)
    return table[KEYS + [c for c in table.columns if c not in KEYS]]


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_the_runner_writes_the_golden_numbers(tmp_path):
    now = golden_runs(tmp_path)
    golden = pd.read_csv(GOLDEN, float_precision="round_trip")
    # Read back from CSV alike, so both went through the same float formatting (repr: every bit kept).
    now.to_csv(tmp_path / "now.csv", index=False)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "now.csv", float_precision="round_trip"), golden, check_exact=True)


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        GOLDEN.parent.mkdir(exist_ok=True)
        golden_runs(Path(tmp)).to_csv(GOLDEN, index=False)
    print(f"wrote {GOLDEN}", file=sys.stderr)
