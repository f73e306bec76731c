"""scripts/bench.py end to end at tiny sizes on the CPU: the record has every key, each a positive number or null."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

REQUIRED = (
    "device",
    "torch",
    "commit",
    "width",
    "batch",
    "sgd_s_per_epoch",
    "pathsgd_s_per_epoch",
    "official_sgd_s_per_epoch",
    "official_pathsgd_s_per_epoch",
    "naive_pathsgd_s_per_epoch",
    "floor_s_per_epoch",
    "bare_sgd_s_per_epoch",
    "eval_s_per_epoch",
    "projected_fig2_hours",
)
TIMES = tuple(k for k in REQUIRED if k.endswith(("_s_per_epoch", "_hours")))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "scripts" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def positive_or_null(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and math.isfinite(value) and value > 0)


def test_bench_tiny_writes_record(tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "bench.json"
    argv = ["--device", "cpu", "--width", "32", "--steps", "3", "--repeats", "2", "--epoch-steps", "10",
            "--warmup", "1", "--n-train", "1000", "--matmul-size", "64", "--copy-mib", "1", "--json", str(out),
            "--md", str(tmp_path / "bench.md")]
    returned = bench.main(argv)
    record = json.loads(out.read_text())
    assert record == json.loads(json.dumps(returned))
    for key in REQUIRED:
        assert key in record, key
    assert record["device"] == "cpu" and record["width"] == 32 and record["batch"] == 100
    assert record["commit"] is None or isinstance(record["commit"], str)
    for key in TIMES:
        assert positive_or_null(record[key]), (key, record[key])
    assert all(positive_or_null(v) for v in record["ratios"].values()), record["ratios"]
    assert all(record["finite"].values()), record["finite"]
    assert record["command"].endswith(str(tmp_path / "bench.md"))
    md = (tmp_path / "bench.md").read_text()
    assert f"command: `{record['command']}`" in md and "| pathsgd/sgd | " in md and "784-32-32-10" in md
    assert record["fused_chains"] is False and record["pathsgd_torch_chains_s_per_epoch"] is None  # the CPU
    table = capsys.readouterr().out
    assert "runner, Path-SGD" in table and "pathsgd/sgd" in table


def test_step_cost_counts_matmuls():
    bench = load_bench()
    flops, update_bytes, params = bench.step_cost(width=5, depth=2, batch=3)
    # layers 784x5, 5x5, 5x10: the first layer has no input gradient.
    assert flops == 2 * 3 * (2 * 784 * 5 + 3 * 5 * 5 + 3 * 5 * 10)
    assert params == 784 * 5 + 5 + 5 * 5 + 5 + 5 * 10 + 10
    assert update_bytes == 12 * params


def test_twin_scales_match_path_scales():
    import torch

    from pathsgd import path_scales

    bench = load_bench()
    torch.manual_seed(0)
    net = bench.sequential_net(width=6, depth=2).double()
    expected = path_scales(net)
    got = bench.twin_path_scales(net)
    for (name, _), gamma in zip(net.named_parameters(), got):
        torch.testing.assert_close(gamma, expected[name])


def test_fig2_projection_scales_with_the_protocol():
    bench = load_bench()
    epoch = {"sgd": 1.0, "pathsgd": 1.5, "eval": 0.1}
    hours = bench.project_fig2_seconds(epoch, width=4000, depth=2, batch=100, epoch_steps=600)
    # MNIST alone, Path-SGD's sweep: 11 alphas x 20 epochs x 500 steps at 1.5/600 s each, plus evaluations
    mnist_pathsgd_sweep = 11 * 20 * (500 * 1.5 / 600 + 0.1)
    assert hours > 12 * mnist_pathsgd_sweep  # four datasets, three optimizers, sweeps and finals
    doubled = bench.project_fig2_seconds({k: 2 * v for k, v in epoch.items()}, 4000, 2, 100, 600)
    assert math.isclose(doubled, 2 * hours, rel_tol=1e-12)
    assert bench.project_fig2_seconds({"sgd": 1.0, "pathsgd": None, "eval": 0.1}, 4000, 2, 100, 600) is None
