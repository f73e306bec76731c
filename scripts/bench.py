"""Benchmark: seconds per MNIST epoch of SGD and Path-SGD, against a bare torch loop and the device's floor.

One process measures, on a 784-W-W-10 ReLU net with mini-batches of 100 and synthetic data:

* the authors'-style loop: ``nn.Sequential``, ``torch.optim.SGD``, a DataLoader over host memory,
  ``.to(device)`` and ``loss.item()`` every step; for Path-SGD, gamma by autograd on the |w|^2 twin
  each step and the gradients divided by it before ``optimizer.step()`` (the naive baseline);
* a bare torch loop: ``nn.Sequential``, ``torch.optim.SGD``, the same on-device batches as the runner's,
  no evaluation or bookkeeping: the ``bare_sgd`` key, what the runner's SGD is measured against;
* the runner's loop (``pathsgd.engine.train_epoch``: autograd, then ``optimizer.step()`` of
  ``torch.optim.SGD`` / :class:`pathsgd.PathSGD`; with ``--capture graph|compile`` a CUDA graph of the step
  or ``torch.compile`` of the forward): the ``sgd`` and ``pathsgd`` keys;
* the runner's loop with Path-SGD done naively: the float64 outer-product gamma of every layer
  (``pathsgd.path_scales``) and ``w -= lr * g / gamma``;
* the runner's loop with each variant of the family and its torch counterpart (SGD and Path-SGD with momentum
  0.9, AdaGrad and Path-AdaGrad, Adam and Path-Adam);
* on CUDA, the runner's Path-SGD step once more with gamma's chains in plain torch
  (``PATHSGD_FUSED_CHAINS=0``): what the fused Triton kernel of :mod:`pathsgd.kernels` saves;
* the per-epoch evaluation (60,000 + 10,000 points), in float32 and, on CUDA, with TF32 matmuls;
* the device's ceilings (a large float32 matmul -> FLOP/s, a large copy -> bytes/s) and the floor
  per epoch that they give for this network.

Each time is the median over ``--repeats`` of ``--steps`` steps after a warm-up, with the device
synchronized around it, scaled to ``--epoch-steps`` steps (600 = one MNIST epoch at batch 100). The
loops take turns, one repeat each per round, so that load from other processes hits them alike.
Runs with torch alone::

    python scripts/bench.py                      # cuda if available (width 4000), else cpu (width 1024)
    python scripts/bench.py --device cpu --json results/bench/cpu.json
    python scripts/bench.py --device cuda --capture graph   # the runner's step captured in a CUDA graph
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
try:
    import pathsgd  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

from pathsgd import MLP, balanced_init_, kernels, path_scales  # noqa: E402
from pathsgd.engine import evaluate, resolve_device, tf32_matmuls, train_epoch  # noqa: E402
from pathsgd.optim import PathAdaGrad, PathAdam, PathOptimizer, PathSGD  # noqa: E402

IN_FEATURES, NUM_CLASSES, N_TRAIN = 784, 10, 60000
DEFAULT_WIDTH = {"cuda": 4000, "cpu": 1024}  # the paper's net on a GPU; 784-1024-1024-10 on a CPU
DEFAULT_MATMUL = {"cuda": 4096, "cpu": 2048}  # ceiling matmul n (n x n @ n x n); < 1 s on either
DEFAULT_COPY_MIB = {"cuda": 1024, "cpu": 256}  # ceiling copy size, well beyond any cache
OPTIMIZER_CLASSES = {"sgd": torch.optim.SGD, "adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam,
                     "pathsgd": PathSGD, "path_adagrad": PathAdaGrad, "path_adam": PathAdam}  # as configs/optimizer/
LR = 1e-3  # small enough that neither optimizer diverges within a benchmark on balanced init

MEASUREMENTS = (  # JSON key prefix, label in the table
    ("official_sgd", "authors' loop, SGD"),
    ("official_pathsgd", "authors' loop, Path-SGD (autograd twin)"),
    ("bare_sgd", "bare torch loop, SGD (nn.Sequential, torch.optim.SGD, on-device batches)"),
    ("sgd", "runner, SGD (torch.optim.SGD)"),
    ("pathsgd", "runner, Path-SGD (pathsgd.PathSGD)"),
    ("naive_pathsgd", "runner, naive Path-SGD (float64 outer gamma)"),
    ("sgd_momentum", "runner, SGD with momentum 0.9 (torch.optim.SGD)"),
    ("pathsgd_momentum", "runner, Path-SGD with momentum 0.9 (pathsgd.PathSGD)"),
    ("adagrad", "runner, AdaGrad (torch.optim.Adagrad)"),
    ("path_adagrad", "runner, Path-AdaGrad (pathsgd.PathAdaGrad)"),
    ("adam", "runner, Adam (torch.optim.Adam)"),
    ("path_adam", "runner, Path-Adam (pathsgd.PathAdam)"),
    ("pathsgd_torch_chains", "runner, Path-SGD, gamma's chains in plain torch (no fused kernel; CUDA only)"),
)
RATIOS = (  # name, numerator, denominator
    ("pathsgd/sgd", "pathsgd", "sgd"),
    ("sgd/bare_sgd", "sgd", "bare_sgd"),
    ("official_pathsgd/pathsgd", "official_pathsgd", "pathsgd"),
    ("official_sgd/sgd", "official_sgd", "sgd"),
    ("pathsgd/floor", "pathsgd", "floor"),
    ("sgd/floor", "sgd", "floor"),
    ("naive_pathsgd/sgd", "naive_pathsgd", "sgd"),
    ("pathsgd_momentum/sgd_momentum", "pathsgd_momentum", "sgd_momentum"),  # each path variant against its base
    ("path_adagrad/adagrad", "path_adagrad", "adagrad"),
    ("path_adam/adam", "path_adam", "adam"),
    ("pathsgd_torch_chains/pathsgd", "pathsgd_torch_chains", "pathsgd"),  # what the fused kernel saves
    ("eval/pathsgd", "eval", "pathsgd"),  # the per-epoch evaluation (train + test sets) against a training epoch
    ("eval_tf32/pathsgd", "eval_tf32", "pathsgd"),  # the same evaluation with TF32 matmuls (CUDA only)
)


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls, the device
    synchronized before and after each timed call."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# The authors'-style loop
# --------------------------------------------------------------------------------------------------


def sequential_net(width: int, depth: int) -> nn.Sequential:
    sizes = [IN_FEATURES, *[width] * depth, NUM_CLASSES]
    mods: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1])


def twin_path_scales(net: nn.Sequential) -> list[torch.Tensor]:
    """gamma (p = 2) of every parameter of ``net``, in ``net.parameters()`` order, the naive autograd way:
    a twin of the network with |w|^2 in place of every weight, an all-ones input, the outputs summed and
    differentiated with respect to the squared weights. float64, as the unbalanced init needs."""
    z = [w.detach().double().square().requires_grad_() for w in net.parameters()]
    a = torch.ones(1, IN_FEATURES, dtype=torch.float64, device=z[0].device)
    params = iter(z)
    with torch.enable_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                a = F.linear(a, next(params), next(params))
            else:
                a = m(a)  # ReLU of non-negative values: the identity
        return list(torch.autograd.grad(a.sum(), z))


class OfficialLoop:
    """A typical training script: host DataLoader, ``.to(device)`` and ``loss.item()`` each step."""

    def __init__(self, x_host, y_host, width, depth, batch, device, path_sgd: bool):
        self.device, self.path_sgd = device, path_sgd
        self.net = sequential_net(width, depth)
        balanced_init_(self.net, torch.Generator().manual_seed(0))
        self.net.to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)
        dataset = torch.utils.data.TensorDataset(x_host, y_host)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
        self.batches = iter(self.loader)

    def next_batch(self):
        try:
            return next(self.batches)
        except StopIteration:  # a new epoch
            self.batches = iter(self.loader)
            return next(self.batches)

    def run(self, steps: int) -> float:
        loss_value = 0.0
        for _ in range(steps):
            x, y = self.next_batch()
            x, y = x.to(self.device), y.to(self.device)
            loss = F.cross_entropy(self.net(x), y)
            self.optimizer.zero_grad()
            loss.backward()
            if self.path_sgd:
                gammas = twin_path_scales(self.net)
                with torch.no_grad():
                    for w, gamma in zip(self.net.parameters(), gammas):
                        w.grad.copy_(w.grad.double() / gamma)
            self.optimizer.step()
            loss_value = loss.item()
        return loss_value


# --------------------------------------------------------------------------------------------------
# The runner's step
# --------------------------------------------------------------------------------------------------


class NaivePathSGD(torch.optim.Optimizer):
    """Path-SGD the obvious way: every step, the float64 gamma of every parameter as a full tensor
    (``path_scales``: the outer product per layer), then ``w -= lr * g / gamma``."""

    def __init__(self, model: nn.Module, lr: float) -> None:
        super().__init__(model.parameters(), dict(lr=lr))
        self.model = model

    @torch.no_grad()
    def step(self, closure=None):
        scales = path_scales(self.model)
        lr = self.param_groups[0]["lr"]
        for name, w in self.model.named_parameters():
            if w.grad is not None:
                w.sub_((lr * w.grad.double() / scales[name]).to(w.dtype))


class BareLoop:
    """The least a torch user writes: ``nn.Sequential``, ``torch.optim.SGD``, slices of an on-device permutation."""

    def __init__(self, x_dev, y_dev, width, depth, batch, device):
        self.x, self.y, self.batch = x_dev, y_dev, batch
        self.net = sequential_net(width, depth)
        balanced_init_(self.net, torch.Generator().manual_seed(0))
        self.net.to(device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=LR)
        self.generator = torch.Generator(device=device).manual_seed(0)

    def run(self, steps: int):
        perm = torch.randperm(steps * self.batch, generator=self.generator, device=self.x.device)
        for start in range(0, len(perm), self.batch):
            idx = perm[start : start + self.batch]
            loss = F.cross_entropy(self.net(self.x[idx]), self.y[idx])
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()


class RunnerLoop:
    """``pathsgd.engine.train_epoch`` over the first ``steps * batch`` rows of data on the device (the runner's
    step, captured as ``capture`` says)."""

    def __init__(self, x_dev, y_dev, width, depth, batch, device, optimizer: str, *,
                 capture: str | None = None, fused_chains: bool = True):
        self.x, self.y, self.batch = x_dev, y_dev, batch
        self.capture, self.fused_chains = capture, fused_chains
        self.model = MLP(IN_FEATURES, NUM_CLASSES, hidden=(width,) * depth)
        balanced_init_(self.model, torch.Generator().manual_seed(0))
        self.model.to(device)
        if optimizer == "naive_pathsgd":
            self.optimizer = NaivePathSGD(self.model, lr=LR)
        else:
            momentum = {"momentum": 0.9} if optimizer.endswith("_momentum") else {}
            cls = OPTIMIZER_CLASSES[optimizer.removesuffix("_momentum")]
            params = self.model if issubclass(cls, PathOptimizer) else self.model.parameters()
            self.optimizer = cls(params, lr=LR / 10 if momentum else LR, **momentum)
        self.generator = torch.Generator(device=device).manual_seed(0)

    def run(self, steps: int):
        n = steps * self.batch
        saved = os.environ.get("PATHSGD_FUSED_CHAINS")
        if not self.fused_chains:  # read at each chain (and at capture): the torch path for this loop only
            os.environ["PATHSGD_FUSED_CHAINS"] = "0"
        try:
            return train_epoch(self.model, self.optimizer, self.x[:n], self.y[:n], self.batch, self.generator,
                               capture=self.capture)
        finally:
            if saved is None:
                os.environ.pop("PATHSGD_FUSED_CHAINS", None)
            else:
                os.environ["PATHSGD_FUSED_CHAINS"] = saved


# --------------------------------------------------------------------------------------------------
# Ceilings and floor
# --------------------------------------------------------------------------------------------------


def matmul_flops_per_s(device: torch.device, n: int, repeats: int) -> float:
    """float32 n x n @ n x n: 2 n^3 FLOPs (TF32 when --tf32 allowed it)."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    out = torch.empty(n, n, device=device)
    t = median_time(lambda: torch.mm(a, b, out=out), device, repeats, warmup=2)
    return 2.0 * n**3 / t


def copy_bytes_per_s(device: torch.device, mib: int, repeats: int) -> float:
    """``dst.copy_(src)`` of ``mib`` MiB: it reads and writes that many bytes, 2 x mib MiB of traffic."""
    src = torch.ones(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    t = median_time(lambda: dst.copy_(src), device, repeats, warmup=2)
    return 2.0 * src.numel() * 4 / t


def step_cost(width: int, depth: int, batch: int) -> tuple[float, float, int]:
    """``(FLOPs, update bytes, parameters)`` of one SGD step of the 784-W-..-W-10 net.

    FLOPs: per Linear layer of shape in x out, 2*B*in*out for the forward product, the same for the
    weight gradient, and the same for the input gradient except in the first layer (no gradient is
    needed for the data). Biases, ReLU and the loss are O(B * units) and left out.
    Update bytes: the SGD update w -= lr * g reads w and g and writes w, 3 * 4 bytes per float32
    parameter (weights and biases); activations are assumed to stay in cache and are left out.
    """
    sizes = [IN_FEATURES, *[width] * depth, NUM_CLASSES]
    flops, params = 0.0, 0
    for layer, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        flops += (2 if layer == 0 else 3) * 2.0 * batch * a * b
        params += a * b + b
    return flops, 3 * 4.0 * params, params


# --------------------------------------------------------------------------------------------------
# Provenance
# --------------------------------------------------------------------------------------------------


def git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# --------------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    ap.add_argument("--width", type=int, default=None, help="hidden units per layer (default 4000 on cuda, 1024 on cpu)")
    ap.add_argument("--depth", type=int, default=2, help="hidden layers (default 2)")
    ap.add_argument("--batch", type=int, default=100, help="mini-batch size (default 100)")
    ap.add_argument("--steps", type=int, default=50, help="steps per timed repeat (default 50)")
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats; the median is reported (default 5)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed steps before timing each loop (default 10)")
    ap.add_argument("--epoch-steps", type=int, default=600, help="steps per epoch (default 600: MNIST at batch 100)")
    ap.add_argument("--n-train", type=int, default=N_TRAIN, help="synthetic training points (default 60000)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (off by default)")
    ap.add_argument("--capture", choices=("none", "graph", "compile"), default="none",
                    help="the runner's step: eager (none), a CUDA graph (graph; CUDA only) or a compiled forward")
    ap.add_argument("--matmul-size", type=int, default=None, help="n of the ceiling matmul (default 4096 cuda, 2048 cpu)")
    ap.add_argument("--copy-mib", type=int, default=None, help="MiB of the ceiling copy (default 1024 cuda, 256 cpu)")
    ap.add_argument("--json", type=Path, default=None, help="write the record here")
    ap.add_argument("--md", type=Path, default=None, help="write the command, provenance and the table here")
    args = ap.parse_args(argv)
    for name in ("depth", "batch", "steps", "repeats", "epoch_steps", "n_train"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be a positive integer")
    if args.warmup < 0:
        ap.error(f"--warmup={args.warmup} must be >= 0")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads={args.threads} must be a positive integer")
    if args.width is not None and args.width < 1:
        ap.error(f"--width={args.width} must be a positive integer")
    if args.steps * args.batch > args.n_train:
        ap.error(f"--steps x --batch = {args.steps * args.batch} exceeds --n-train={args.n_train}")
    return args


def ratio(a, b):
    return None if a is None or b is None or b <= 0 else a / b


# The paper's datasets for the Figure 2 projection: (training points, test points, input size).
FIG2_DATASETS = {"mnist": (60000, 10000, 784), "cifar10": (50000, 10000, 3072),
                 "cifar100": (50000, 10000, 3072), "svhn": (73257, 26032, 3072)}
FIG2_PROTOCOL = {"alphas": 11, "sweep_epochs": 20, "final_epochs": 100, "validation": 10000, "inits": 2}


def fig2_protocol() -> dict:
    """experiments/fig2.yaml's grid and epochs when PyYAML is at hand, else the values it holds today."""
    protocol = dict(FIG2_PROTOCOL)
    try:
        import yaml

        exp = yaml.safe_load((REPO / "experiments" / "fig2.yaml").read_text())
        protocol.update(alphas=len(exp["sweep"]["alphas"]), sweep_epochs=exp["sweep"]["epochs"],
                        final_epochs=exp["final"]["epochs"], inits=len(exp["inits"]))
    except Exception:  # the GPU box may lack PyYAML; the defaults mirror the file
        pass
    return protocol


def project_fig2_seconds(epoch: dict, width: int, depth: int, batch: int, epoch_steps: int) -> float | None:
    """Projected seconds of ``make reproduce-fig2`` (sweeps and final runs) from the measured seconds per
    784-input epoch: each dataset's steps scale with its training size and per-step cost with its number of
    weights (CIFAR/SVHN have 3072 inputs); AdaGrad is taken to cost what SGD does; the evaluation of each
    epoch (train, validation and test points) scales from the measured one over 70,000 points."""
    if any(epoch.get(k) is None for k in ("sgd", "pathsgd", "eval")):
        return None
    proto = fig2_protocol()

    def weights(d_in: int) -> int:
        return d_in * width + width * width * (depth - 1) + width * 10

    total = 0.0
    for n_train, n_test, d_in in FIG2_DATASETS.values():
        scale = weights(d_in) / weights(IN_FEATURES)
        step = {k: epoch[k] / epoch_steps * scale for k in ("sgd", "pathsgd")}
        per_opt = [step["pathsgd"], step["sgd"], step["sgd"]]  # Path-SGD, SGD, AdaGrad
        eval_epoch = epoch["eval"] * scale * (n_train + n_test) / 70000
        sweep_steps = (n_train - proto["validation"]) / batch
        final_steps = n_train / batch
        for s in per_opt:
            total += proto["alphas"] * proto["sweep_epochs"] * (sweep_steps * s + eval_epoch)
            total += proto["inits"] * proto["final_epochs"] * (final_steps * s + eval_epoch)
    return total


def format_table(record: dict) -> str:
    per_step = 1e3 / record["epoch_steps"]
    lines = ["| measurement | s/epoch | ms/step |", "|---|---:|---:|"]
    for key, label in (*MEASUREMENTS, ("floor", "floor (matmul FLOP/s + update bytes/s)")):
        s = record[f"{key}_s_per_epoch"]
        lines.append(f"| {label} | {s:.3f} | {s * per_step:.2f} |" if s is not None else f"| {label} | n/a | n/a |")
    lines += ["", "| ratio | value |", "|---|---:|"]
    for name, value in record["ratios"].items():
        lines.append(f"| {name} | {value:.2f} |" if value is not None else f"| {name} | n/a |")
    if record.get("projected_fig2_hours") is not None:
        lines += ["", f"projected `make reproduce-fig2` at width {record['width']} on this device: "
                  f"{record['projected_fig2_hours']:.2f} h of training and evaluation (from the seconds per epoch "
                  "above; see project_fig2_seconds)"]
        if record.get("projected_fig2_hours_eval_tf32") is not None:
            lines.append(f"with speed.eval_tf32=true: {record['projected_fig2_hours_eval_tf32']:.2f} h")
    lines += [
        "",
        f"ceilings: matmul {record['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s (n={record['matmul_size']}), "
        f"copy {record['copy_bytes_per_s'] / 1e9:.1f} GB/s ({record['copy_mib']} MiB); "
        f"per step {record['step_flops'] / 1e9:.3f} GFLOP, {record['step_update_bytes'] / 1e6:.1f} MB update",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    load_at_start = list(os.getloadavg()) if hasattr(os, "getloadavg") else None  # others' work skews CPU times
    device = resolve_device(args.device)
    kind = device.type
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if kind == "cpu" and threads > 1 and load_at_start is not None and load_at_start[0] + threads > (os.cpu_count() or 1) + 0.5:
        # Intra-op threads wait for each other at every kernel: one descheduled thread stalls them all
        # (seen here: 10x slower steps with 2 threads beside one busy process on 2 cores).
        print(
            f"warning: load average {load_at_start[0]:.1f} with {threads} torch threads on "
            f"{os.cpu_count()} cores: CPU timings will be distorted; wait, or pass --threads 1",
            file=sys.stderr,
        )
    width = args.width if args.width is not None else DEFAULT_WIDTH[kind]
    matmul_n = args.matmul_size or DEFAULT_MATMUL[kind]
    copy_mib = args.copy_mib or DEFAULT_COPY_MIB[kind]
    if kind == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(args.tf32)
        torch.backends.cudnn.allow_tf32 = bool(args.tf32)
    if args.capture == "graph" and kind != "cuda":
        print("warning: --capture graph needs CUDA; the step runs eagerly on the CPU", file=sys.stderr)
    capture = None if args.capture == "none" or (args.capture == "graph" and kind != "cuda") else args.capture
    torch.manual_seed(0)

    # Synthetic MNIST-sized data: in host memory for the authors' loop, on the device for the runner.
    x_host = torch.randn(args.n_train, IN_FEATURES)
    y_host = torch.randint(0, NUM_CLASSES, (args.n_train,))
    x_dev, y_dev = x_host.to(device), y_host.to(device)

    loops = {
        "official_sgd": lambda: OfficialLoop(x_host, y_host, width, args.depth, args.batch, device, False),
        "official_pathsgd": lambda: OfficialLoop(x_host, y_host, width, args.depth, args.batch, device, True),
        "bare_sgd": lambda: BareLoop(x_dev, y_dev, width, args.depth, args.batch, device),
        "sgd": lambda: RunnerLoop(x_dev, y_dev, width, args.depth, args.batch, device, "sgd", capture=capture),
        "pathsgd": lambda: RunnerLoop(x_dev, y_dev, width, args.depth, args.batch, device, "pathsgd",
                                      capture=capture),
        "naive_pathsgd": lambda: RunnerLoop(x_dev, y_dev, width, args.depth, args.batch, device, "naive_pathsgd"),
        **{name: (lambda name=name: RunnerLoop(x_dev, y_dev, width, args.depth, args.batch, device, name,
                                              capture=capture))
           for name in ("sgd_momentum", "pathsgd_momentum", "adagrad", "path_adagrad", "adam", "path_adam")},
        "pathsgd_torch_chains": lambda: RunnerLoop(x_dev, y_dev, width, args.depth, args.batch, device, "pathsgd",
                                                   capture=capture, fused_chains=False),
    }
    fused_chains = kernels.fused_available(x_dev[:2, :2], 2.0)  # would the runner's Path-SGD use the kernel?
    if not fused_chains:  # the same loop as "pathsgd" then
        del loops["pathsgd_torch_chains"]
    # All loops are built and warmed up first, then timed in turns (one repeat of each per round), so a
    # change in the load of a shared machine affects every loop alike and the ratios stay meaningful.
    built = {key: build() for key, build in loops.items()}
    for loop in built.values():
        if args.warmup:
            loop.run(args.warmup)
    times: dict[str, list[float]] = {key: [] for key in built}
    for _ in range(args.repeats):
        for key, loop in built.items():
            times[key].append(median_time(lambda loop=loop: loop.run(args.steps), device, 1, warmup=0))
    s_per_step: dict[str, float | None] = {key: statistics.median(t) / args.steps for key, t in times.items()}
    s_per_step.setdefault("pathsgd_torch_chains", None)
    # Recorded as used: not after a failed launch (torch fallback, warned).
    fused_chains = fused_chains and not kernels._failed
    finite: dict[str, bool] = {}
    for key, loop in built.items():
        model = loop.net if isinstance(loop, (OfficialLoop, BareLoop)) else loop.model
        finite[key] = all(bool(torch.isfinite(w).all()) for w in model.parameters())
        if not finite[key]:
            print(f"warning: {key} produced non-finite weights; its time may not be representative", file=sys.stderr)
    del built, loop, model
    if kind == "cuda":
        torch.cuda.empty_cache()

    # The runner's per-epoch evaluation: the whole training set (x_dev) and a 10,000-point test set.
    eval_model = MLP(IN_FEATURES, NUM_CLASSES, hidden=(width,) * args.depth).to(device)
    n_test = min(10000, len(x_dev))
    eval_s = median_time(lambda m=eval_model: (evaluate(m, x_dev, y_dev), evaluate(m, x_dev[:n_test], y_dev[:n_test])),
                         device, args.repeats)
    eval_s *= 70000 / (len(x_dev) + n_test)  # as if 60,000 training + 10,000 test points
    eval_tf32_s = None
    if kind == "cuda":  # evaluation is 39-47% of an epoch's float32 FLOPs: TF32 matmuls are its lever
        with tf32_matmuls(True):
            eval_tf32_s = median_time(lambda m=eval_model: (evaluate(m, x_dev, y_dev),
                                                            evaluate(m, x_dev[:n_test], y_dev[:n_test])),
                                      device, args.repeats)
        eval_tf32_s *= 70000 / (len(x_dev) + n_test)
    del eval_model

    flop_s = matmul_flops_per_s(device, matmul_n, args.repeats)
    bytes_s = copy_bytes_per_s(device, copy_mib, args.repeats)
    flops, update_bytes, n_params = step_cost(width, args.depth, args.batch)
    floor_step = flops / flop_s + update_bytes / bytes_s

    per_epoch = {f"{k}_s_per_epoch": (None if v is None else v * args.epoch_steps) for k, v in s_per_step.items()}
    epoch = {k.removesuffix("_s_per_epoch"): v for k, v in per_epoch.items()}
    epoch["floor"] = floor_step * args.epoch_steps
    epoch["eval"] = eval_s
    epoch["eval_tf32"] = eval_tf32_s
    projected = project_fig2_seconds(epoch, width, args.depth, args.batch, args.epoch_steps)
    projected_eval_tf32 = None  # the same with speed.eval_tf32=true (CUDA)
    if eval_tf32_s is not None:
        projected_eval_tf32 = project_fig2_seconds(epoch | {"eval": eval_tf32_s}, width, args.depth, args.batch,
                                                   args.epoch_steps)
    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain") if commit else None
    record = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if kind == "cuda" else cpu_name(),
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(device) if kind == "cuda" else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda if kind == "cuda" else None,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "loadavg_at_start": load_at_start,
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "command": shlex.join(["python", *(sys.argv if argv is None else ["scripts/bench.py", *argv])]),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "width": width,
        "depth": args.depth,
        "batch": args.batch,
        "steps": args.steps,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "epoch_steps": args.epoch_steps,
        "n_train": args.n_train,
        "tf32": bool(args.tf32) if kind == "cuda" else None,
        "capture": capture,
        "lr": LR,
        "n_params": n_params,
        **per_epoch,
        "floor_s_per_epoch": epoch["floor"],
        "eval_s_per_epoch": eval_s,
        "eval_tf32_s_per_epoch": eval_tf32_s,
        "fused_chains": fused_chains,
        "projected_fig2_hours": None if projected is None else projected / 3600,
        "projected_fig2_hours_eval_tf32": None if projected_eval_tf32 is None else projected_eval_tf32 / 3600,
        "ms_per_step": {k: (None if v is None else v * 1e3) for k, v in s_per_step.items()}
        | {"floor": floor_step * 1e3},
        "finite": finite,
        "matmul_size": matmul_n,
        "matmul_flops_per_s": flop_s,
        "copy_mib": copy_mib,
        "copy_bytes_per_s": bytes_s,
        "step_flops": flops,
        "step_update_bytes": update_bytes,
        "ratios": {name: ratio(epoch[a], epoch[b]) for name, a, b in RATIOS},
    }
    header = (
        f"{record['device_name']} ({record['device']}), torch {record['torch']}, {record['threads']} threads, "
        f"784-{'-'.join([str(width)] * args.depth)}-10, batch {args.batch}, "
        f"{args.epoch_steps} steps/epoch, median of {args.repeats} x {args.steps} steps"
        + (f", tf32={'on' if args.tf32 else 'off'}" if kind == "cuda" else "")
        + f", step {capture or 'eager'}"
        + f", gamma's chains {'fused (Triton)' if fused_chains else 'torch'}"
    )
    print(header)
    print(format_table(record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        load = record["loadavg_at_start"]
        args.md.write_text(
            f"# Benchmark: {record['device_name']}, commit {(record['commit'] or 'unknown')[:7]}\n\n"
            f"command: `{record['command']}`\n"
            f"date: {record['date']} (UTC, start of run)\n"
            f"commit: {record['commit']}{' (working tree dirty)' if record['dirty'] else ''}\n"
            f"load average at start: {None if load is None else round(load[0], 1)}\n\n"
            f"{header}\n\n{format_table(record)}\n"
        )
        print(f"wrote {args.md}")
    return record


if __name__ == "__main__":
    main()
