"""Benchmark: per-run throughput of K alphas trained at once (``sweep.batched=true``) against K separate runs.

One process measures, on a 784-W-W-10 ReLU net with mini-batches of 100 and synthetic data on the device,
for each optimizer:

* separate: the runner's training step (:func:`pathsgd.engine.train_epoch` with ``make_optimizer``) of one
  run; K separate runs cost K times that (they are identical in cost, so one is timed);
* batched: :func:`pathsgd.batched.train_epoch` of a :class:`pathsgd.batched.StackedMLP` of K members with
  K step sizes (what one ``sweep.batched=true`` process does per step), its time divided by K.

Each time is the median over ``--repeats`` of ``--steps`` steps after a warm-up, with the device synchronized
around it, scaled to ``--epoch-steps`` steps (600 = one MNIST epoch at batch 100). The step sizes are small
(10^-3 .. 10^-6) so that no member diverges during timing. Runs with torch alone::

    python scripts/bench_batched.py --device cpu --width 256 --members 11 --threads 1 \\
        --json results/bench/batched-cpu-<commit>.json --md results/bench/batched-cpu-<commit>.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import pathsgd  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from bench import cpu_name, git, median_time  # noqa: E402  (scripts/bench.py: timing and provenance)

from pathsgd import MLP, balanced_init_  # noqa: E402
from pathsgd import batched as B  # noqa: E402
from pathsgd.engine import make_optimizer, resolve_device, train_epoch  # noqa: E402

IN_FEATURES, NUM_CLASSES = 784, 10
OPTIMIZERS = ("sgd", "adagrad", "pathsgd")


def build(width: int, depth: int, dropout: float, device: torch.device) -> MLP:
    model = MLP(IN_FEATURES, NUM_CLASSES, hidden=(width,) * depth, dropout=dropout)
    balanced_init_(model, generator=torch.Generator().manual_seed(0))
    return model.to(device)


def measure(args: argparse.Namespace, device: torch.device, name: str) -> dict:
    n = args.steps * args.batch
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, IN_FEATURES, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (n,), generator=gen).to(device)
    k = args.members
    lrs = [10.0 ** -(3 + 3 * i / max(k - 1, 1)) for i in range(k)]
    batches = torch.Generator(device=device).manual_seed(2)

    model = build(args.width, args.depth, args.dropout, device)
    opt = make_optimizer(name, model, lrs[0])
    train_epoch(model, opt, x[: args.warmup * args.batch], y[: args.warmup * args.batch], args.batch, batches)
    separate = median_time(lambda: train_epoch(model, opt, x, y, args.batch, batches), device, args.repeats)

    stack = B.StackedMLP.from_models([build(args.width, args.depth, args.dropout, device)] * k)
    sopt = B.StackedOptimizer(name, stack, lrs)
    B.train_epoch(stack, sopt, x[: args.warmup * args.batch], y[: args.warmup * args.batch], args.batch, batches)
    batched = median_time(lambda: B.train_epoch(stack, sopt, x, y, args.batch, batches), device, args.repeats)
    if not bool(B.all_finite(stack).all()):
        raise RuntimeError(f"{name}: a member diverged during the benchmark; timings would be meaningless")

    scale = args.epoch_steps / args.steps
    return {
        "separate_s_per_run_epoch": separate * scale,
        "batched_s_per_run_epoch": batched * scale / k,
        "batched_s_per_epoch": batched * scale,
        "speedup": separate * k / batched,
    }


def format_table(record: dict) -> str:
    head = (
        f"{record['device']} ({record['device_type']}), torch {record['torch']}, {record['threads']} threads, "
        f"784-{'-'.join([str(record['width'])] * record['depth'])}-10, batch {record['batch']}, dropout {record['dropout']}, "
        f"K = {record['members']} alphas, {record['epoch_steps']} steps/epoch, median of {record['repeats']} x {record['steps']} steps"
    )
    lines = [
        head,
        "| optimizer | separate: s/epoch per run | batched: s/epoch per run | batched: s/epoch, all K | per-run speedup |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in record["optimizers"].items():
        lines.append(
            f"| {name} | {r['separate_s_per_run_epoch']:.3f} | {r['batched_s_per_run_epoch']:.3f} | "
            f"{r['batched_s_per_epoch']:.3f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    ap.add_argument("--width", type=int, default=None, help="hidden units per layer (default 4000 on cuda, 256 on cpu)")
    ap.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    ap.add_argument("--members", type=int, default=11, help="K, the alphas trained at once (default 11: alpha 0..10)")
    ap.add_argument("--batch", type=int, default=100, help="mini-batch size (default 100)")
    ap.add_argument("--dropout", type=float, default=0.0, help="drop probability of hidden units (default 0)")
    ap.add_argument("--steps", type=int, default=30, help="steps per timed repeat (default 30)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported (default 3)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps before timing each loop (default 5)")
    ap.add_argument("--epoch-steps", type=int, default=600, help="steps per epoch (default 600: MNIST at batch 100)")
    ap.add_argument("--optimizers", nargs="+", choices=OPTIMIZERS, default=list(OPTIMIZERS), help="optimizers to time")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--json", type=Path, default=None, help="write the record here")
    ap.add_argument("--md", type=Path, default=None, help="write the command, provenance and the table here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.width is None:
        args.width = 4000 if device.type == "cuda" else 256
    torch.backends.cuda.matmul.allow_tf32 = False
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    record = {
        "command": "python scripts/bench_batched.py " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)),
        "date": started,
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain")),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "device_type": device.type,
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "width": args.width,
        "depth": args.depth,
        "batch": args.batch,
        "dropout": args.dropout,
        "members": args.members,
        "steps": args.steps,
        "repeats": args.repeats,
        "epoch_steps": args.epoch_steps,
        "optimizers": {name: measure(args, device, name) for name in args.optimizers},
    }
    table = format_table(record)
    print(table)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(
            f"command: `{record['command']}`\n"
            f"date: {record['date']} (UTC, start of run)\n"
            f"commit: {record['commit']}{' (working tree dirty: batched mode not yet committed)' if record['dirty'] else ''}\n"
            f"device: {record['device']}, {record['cpu_count']} cores, torch {record['torch']}, {record['threads']} torch "
            f"thread(s); load average at start {load if load is None else round(load, 1)}\n\n{table}\n"
        )
    return record


if __name__ == "__main__":
    main()
