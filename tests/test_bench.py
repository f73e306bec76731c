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
)
TIMES = tuple(k for k in REQUIRED if k.endswith("_s_per_epoch"))


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
            "--warmup", "1", "--n-train", "1000", "--matmul-size", "64", "--copy-mib", "1", "--json", str(out)]
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
    assert record["command"].endswith(str(out))
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
