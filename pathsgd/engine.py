"""The training step, epoch and evaluation, with torch alone (no Hydra, no W&B).

Data are whole tensors on the device; an epoch is the slices of one on-device permutation, and nothing
inside an epoch syncs with the host (losses accumulate on the device) unless a progress bar asks for a
running loss. The runner (:mod:`pathsgd.train`), the figure pipeline and the benchmark import these.

:func:`train_epoch` uses the fast step of :mod:`pathsgd.fast` (forward, backward and update written out
for :class:`pathsgd.MLP` with SGD, AdaGrad or Path-SGD; the same updates to float32 rounding) wherever
it applies, and :func:`train_step` (autograd and ``optimizer.step()``, the reference) otherwise.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "OPTIMIZERS",
    "step_size",
    "resolve_device",
    "make_optimizer",
    "train_step",
    "train_epoch",
    "evaluate",
    "all_finite",
    "tf32_matmuls",
]

OPTIMIZERS = ("sgd", "adagrad", "pathsgd")


def step_size(alpha: float) -> float:
    """The step size 10^-alpha: the one place where alpha becomes a learning rate.

    Any finite real alpha is accepted (a negative alpha gives a step above 1).
    """
    alpha = float(alpha)
    if not math.isfinite(alpha):
        raise ValueError(f"alpha={alpha} is not finite: alpha must be a finite real (step size 10^-alpha)")
    return 10.0 ** -alpha


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"`` -> cuda when available, else cpu; ``"cpu"``, ``"cuda"``, ``"cuda:N"`` as given."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={name!r} is unknown: choose one of auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device={name!r} is unknown: choose one of auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available here: use device=cpu or device=auto")
    return device


def make_optimizer(name: str, model: nn.Module, lr: float, **kwargs) -> torch.optim.Optimizer:
    """``sgd`` (torch.optim.SGD), ``adagrad`` (torch.optim.Adagrad) or ``pathsgd`` (pathsgd.PathSGD).

    ``kwargs`` go to the optimizer's constructor unchanged.
    """
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, **kwargs)
    if name == "adagrad":
        return torch.optim.Adagrad(model.parameters(), lr=lr, **kwargs)
    if name == "pathsgd":
        from pathsgd.optim import PathSGD

        # PathSGD needs the network's structure to compute the path scales; it accepts the model itself.
        return PathSGD(model, lr=lr, **kwargs)
    raise ValueError(f"optimizer={name!r} is unknown: choose one of {', '.join(OPTIMIZERS)}")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor) -> Tensor:
    """One mini-batch update; returns the batch's mean cross-entropy (detached, on the device)."""
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    on_step: Callable[[int, Tensor], None] | None = None,
    fast: bool | None = None,
    capture: str | None = None,
) -> Tensor:
    """One pass over ``(x, y)`` in mini-batches of an on-device permutation drawn from ``generator``.

    The last batch is smaller when ``batch_size`` does not divide ``len(x)`` (a separate eager call of
    the same step when the full-size ones are captured). Returns the mean of the batch losses as a 0-dim
    float64 tensor on the device: non-finite if any step's loss was (the caller checks once per epoch).
    ``on_step(step, loss_sum)`` (e.g. a progress bar) is called after each step with the running sum of
    batch losses; reading it syncs, so a caller should do so sparingly.

    ``fast``: None (default) uses :class:`pathsgd.fast.FastStep` where it applies (a ``pathsgd.MLP``
    with SGD without momentum or weight decay, AdaGrad without lr decay or weight decay, or PathSGD) and
    :func:`train_step` otherwise; False always uses :func:`train_step`; True requires the fast step
    (``ValueError`` naming the reason otherwise). ``capture`` (fast step only): None (eager), ``"graph"``
    (a CUDA graph of the step; eager on the CPU) or ``"compile"`` (``torch.compile``); see
    :mod:`pathsgd.fast`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    step = None
    if fast is False and capture is not None:
        raise ValueError(f"capture={capture!r} captures the fast step, but fast=False")
    if fast is None or fast:
        from pathsgd.fast import CAPTURE_MODES, fast_step, unsupported_reason

        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture={capture!r} is unknown: choose one of {', '.join(map(repr, CAPTURE_MODES))}")

        step = fast_step(model, optimizer, capture=capture)
        if step is None and fast:
            raise ValueError(f"fast=True, but the fast step does not apply: {unsupported_reason(model, optimizer)}")
        if step is None and capture is not None:
            warnings.warn(f"capture={capture!r} is ignored: the fast step does not apply "
                          f"({unsupported_reason(model, optimizer)})", stacklevel=2)
    model.train()
    n = len(x)
    perm = torch.randperm(n, generator=generator, device=x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    steps = 0
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        if step is None:
            total += train_step(model, optimizer, x[idx], y[idx])
        else:
            total += step.run(x, y, idx)
        steps += 1
        if on_step is not None:
            on_step(steps, total)
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, *, chunk: int = 10000) -> tuple[Tensor, Tensor]:
    """Mean cross-entropy and error fraction of ``model`` (in eval mode: no dropout) on ``(x, y)``.

    Works through ``x`` in chunks of ``chunk`` rows; both results are 0-dim float64 tensors on the device
    (no host sync). The model is left in eval mode.
    """
    model.eval()
    loss = torch.zeros((), dtype=torch.float64, device=x.device)
    wrong = torch.zeros((), dtype=torch.int64, device=x.device)
    for start in range(0, len(x), chunk):
        logits = model(x[start : start + chunk])
        target = y[start : start + chunk]
        loss += F.cross_entropy(logits.double(), target, reduction="sum")
        wrong += (logits.argmax(dim=1) != target).sum()
    n = max(len(x), 1)
    return loss / n, wrong.double() / n


@torch.no_grad()
def all_finite(parameters: Iterable[Tensor]) -> Tensor:
    """0-dim bool tensor (on the parameters' device): every entry of every tensor is finite."""
    flags = [torch.isfinite(p).all() for p in parameters]
    return torch.stack(flags).all() if flags else torch.tensor(True)


@contextlib.contextmanager
def tf32_matmuls(enabled: bool, device: torch.device | None = None) -> Iterator[None]:
    """TF32 for CUDA float32 matrix products (and cuDNN) inside the block, the previous settings after.

    Off is float32 as in the paper; on trades ten mantissa bits of each product's inputs for several
    times the throughput on recent NVIDIA GPUs. With a ``device`` other than CUDA nothing is changed.
    """
    if device is not None and torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
