"""The one training loop, with torch alone (no Hydra, no W&B): step, epoch, evaluation.

A step is what a user writes: ``loss.backward(); optimizer.step()`` with the public optimizers
(``torch.optim.SGD``, ``torch.optim.Adagrad``, :class:`pathsgd.PathSGD`). An epoch trains one model with
its optimizer. Data are whole tensors on the device; an epoch is the slices of one on-device permutation,
and nothing inside an epoch syncs with the host (losses accumulate on the device) unless a
progress bar asks for a running loss. The runner (:mod:`pathsgd.train`) and the benchmark import these.

``capture`` runs the same step faster where it can: ``"graph"`` replays it as a CUDA graph (CUDA only;
eager elsewhere), ``"compile"`` runs the model's forward through ``torch.compile``. Both fall back to the
eager step, with a warning, if they fail. Neither has been measured on a GPU by this project yet.
"""

from __future__ import annotations

import contextlib
import math
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "step_size", "resolve_device", "CAPTURE_MODES", "GraphStep", "train_step",
    "train_epoch", "evaluate", "all_finite", "tf32_matmuls",
]

def step_size(alpha: float) -> float:
    """The step size 10^-alpha: the one place where alpha becomes a learning rate. Any finite real alpha is
    accepted (a negative alpha gives a step above 1)."""
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


CAPTURE_MODES = (None, "graph", "compile")
GRAPH_WARMUP = 3  # eager steps (on a side stream) before a CUDA graph is captured
_compiled_forward: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> torch.compile(model)


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, forward=None) -> Tensor:
    """One mini-batch update; returns the batch's mean cross-entropy (detached, on the device)."""
    loss = F.cross_entropy((model if forward is None else forward)(x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


class GraphStep:
    """:func:`train_step` of one (model, optimizer) replayed as a CUDA graph for full-size batches.

    torch's whole-network capture: after ``GRAPH_WARMUP`` real steps on a side stream, one step (forward,
    backward, ``optimizer.step()``) is recorded with static input buffers; each later batch of the same
    size is copied into them and the graph replayed. Another batch size (an epoch's last, smaller batch)
    runs eagerly. Dropout stays right: ``F.dropout`` draws from the default CUDA generator, which is
    graph-safe. Any capture failure leaves the eager step, with a warning. Unverified on a GPU so far.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.model, self.optimizer = model, optimizer
        self.graph, self.static, self.failed, self.warm = None, None, False, 0

    def __call__(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        if self.failed:
            return train_step(self.model, self.optimizer, x[idx], y[idx])
        if self.graph is not None:
            xs, ys, loss = self.static
            if len(idx) != len(xs):
                return train_step(self.model, self.optimizer, x[idx], y[idx])
            torch.index_select(x, 0, idx, out=xs)
            torch.index_select(y, 0, idx, out=ys)
            self.graph.replay()
            return loss  # the graph's output buffer: valid until the next replay (train_epoch adds it at once)
        side, current = torch.cuda.Stream(x.device), torch.cuda.current_stream(x.device)
        side.wait_stream(current)
        try:
            with torch.cuda.stream(side):
                if self.warm < GRAPH_WARMUP:
                    self.warm += 1
                    loss = train_step(self.model, self.optimizer, x[idx], y[idx])
                else:
                    xs, ys = x[idx].clone(), y[idx].clone()
                    self.optimizer.zero_grad(set_to_none=True)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):  # records, does not run
                        loss = F.cross_entropy(self.model(xs), ys)
                        loss.backward()
                        self.optimizer.step()
                    self.graph, self.static = graph, (xs, ys, loss)
                    graph.replay()
                    loss = loss.clone()
        except Exception as err:  # noqa: BLE001 - a failed capture leaves the eager step, which is always right
            warnings.warn(f"CUDA graph capture of the step failed ({type(err).__name__}: {err}); running eagerly",
                          stacklevel=3)
            self.failed, self.graph = True, None
            torch.cuda.synchronize(x.device)
            return train_step(self.model, self.optimizer, x[idx], y[idx])
        current.wait_stream(side)
        return loss


def _stepper(model: nn.Module, optimizer: torch.optim.Optimizer, capture: str | None):
    """``step(x, y, idx)`` as ``capture`` asks (see the module docstring)."""
    if capture == "graph" and next(model.parameters()).is_cuda:
        cached = getattr(optimizer, "_pathsgd_graph_step", None)  # a graph outlives the epoch
        if cached is None or cached.model is not model:
            cached = GraphStep(model, optimizer)
            optimizer._pathsgd_graph_step = cached
        return cached
    forward = None
    if capture == "compile":
        if model not in _compiled_forward:
            # fallback_random: dropout draws from torch's generator as in eager mode (the same masks)
            _compiled_forward[model] = torch.compile(model, options={"fallback_random": True})
        forward = _compiled_forward[model]
    return lambda x, y, idx: train_step(model, optimizer, x[idx], y[idx], forward=forward)


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, batch_size: int,
                generator: torch.Generator, *, on_step: Callable[[int, Tensor], None] | None = None,
                capture: str | None = None) -> Tensor:
    """One pass over ``(x, y)`` in mini-batches of an on-device permutation drawn once from ``generator``.

    The last batch is smaller when ``batch_size`` does not divide ``len(x)``. Returns the mean batch loss, a
    float64 0-dim tensor on the device (non-finite if any step's loss was; the caller checks once per epoch).
    ``on_step(step, loss_sum)`` (e.g. a progress bar) is called after each step with the running sum of batch
    losses; reading it syncs, so a caller should do so sparingly.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    if capture not in CAPTURE_MODES:
        raise ValueError(f"capture={capture!r} is unknown: choose one of {', '.join(map(repr, CAPTURE_MODES))}")
    step = _stepper(model, optimizer, capture)
    model.train()
    device, n = x.device, len(x)
    perm = torch.randperm(n, generator=generator, device=device)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for count, start in enumerate(range(0, n, batch_size), 1):
        total += step(x, y, perm[start : start + batch_size])
        if on_step is not None:
            on_step(count, total)
    return total / max(-(-n // batch_size), 1)


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
