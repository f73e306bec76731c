"""The runner's fast training step: forward, backward and update of an MLP in one call (issue 5).

:class:`FastStep` trains a :class:`pathsgd.MLP` with ``torch.optim.SGD`` (no momentum, no weight decay),
``torch.optim.Adagrad`` (no lr decay, no weight decay) or :class:`pathsgd.PathSGD`, giving the same
updates as ``loss.backward(); optimizer.step()`` (to float32 rounding; ``tests/test_fast_step.py``)
with less work:

* The backward pass is written out for the layered ReLU net (softmax minus one-hot, then per layer
  ``dW = d^T h``, ``db = sum d``, ``d <- (d W) * relu'``): no autograd graph, no ``.grad`` tensors.
* SGD and Path-SGD never materialize the weight gradient: the product that would form it updates the
  weight in place, ``W.addmm_(d^T, h, alpha=-lr)``. For Path-SGD, gamma(W[j, i]) = out[j] * in[i]
  (Algorithm 1) is rank one, so with r = out^(-1/2) and c = in^(-1/2) the update
  ``W -= lr * g * r r^T * c c^T`` is ``W.addmm_((d * r * r)^T, h * c * c, alpha=-lr)``: the scaling
  touches two batch-sized matrices, not the weight. Multiplying by r twice (not by r^2) keeps every
  factor within float32's range under the paper's unbalanced init, where 1/gamma spans 1e-60..1e60:
  d * r * r scales like the unit's incoming weights, h * c * c like the inverse of the input's scale.
  gamma's matvec chains stay in float64 (``pathsgd.geometry.mlp_scale_factors``).
* AdaGrad's state update is one ``torch._foreach_*`` call per operation over all parameters.
* No host synchronization, no data-dependent Python control flow: the step has static shapes for a
  given batch size, so it can be captured.

Capture (``capture=``):

* ``None``: eager (the only mode on the CPU).
* ``"graph"`` (CUDA only): after ``GRAPH_WARMUP`` eager steps on a side stream, the whole step is
  captured once in a ``torch.cuda.CUDAGraph`` with static input buffers; each later full-size batch is
  gathered into those buffers and the graph replayed. Dropout stays correct: ``F.dropout`` draws from
  the default CUDA generator, which is graph-safe (each replay advances its Philox offset). A batch of
  another size (the epoch's last, smaller one) runs eagerly. The graph is rebuilt when the parameters,
  optimizer state, learning rates, dropout or batch shape change. If capture fails, a warning is issued
  and the step stays eager. UNVERIFIED ON A GPU so far: written and reviewed on a CPU-only machine.
* ``"compile"``: the step function through ``torch.compile`` (any device); falls back to eager with a
  warning if compilation fails. Also unverified on a GPU.

Departures from the reference step, all within float32 rounding: the weight gradient is summed inside
the update's matrix product (``W + alpha * (A @ B)`` rounds once less than ``W + alpha * fl(A @ B)``),
and the cross-entropy gradient is ``(softmax - onehot) / B``. Parameters' ``.grad`` are left untouched.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .geometry import CHAIN_BLOCK_ELEMENTS, SCALE_DTYPE, mlp_scale_factors
from .models import MLP
from .optim import PathSGD, _root_reciprocal

__all__ = ["CAPTURE_MODES", "FastStep", "fast_step", "unsupported_reason"]

CAPTURE_MODES = (None, "graph", "compile")
GRAPH_WARMUP = 3  # eager full-size steps (on a side stream) before a CUDA graph is captured


def _kind(optimizer: torch.optim.Optimizer) -> str | None:
    if type(optimizer) is torch.optim.SGD:
        return "sgd"
    if type(optimizer) is torch.optim.Adagrad:
        return "adagrad"
    if type(optimizer) is PathSGD:
        return "pathsgd"
    return None


def unsupported_reason(model: nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """Why :class:`FastStep` cannot train ``model`` with ``optimizer``, or None if it can."""
    if type(model) is not MLP:
        return f"the model is a {type(model).__name__}, not a pathsgd.MLP"
    kind = _kind(optimizer)
    if kind is None:
        return f"the optimizer is a {type(optimizer).__name__}, not torch.optim.SGD, torch.optim.Adagrad or pathsgd.PathSGD"
    params = list(model.parameters())
    if not params or any(not p.requires_grad for p in params):
        return "a parameter does not require a gradient"
    if len({(p.device, p.dtype) for p in params}) != 1 or not params[0].is_floating_point():
        return "the parameters do not share one floating-point dtype and device"
    ids = {id(p) for p in params}
    for group in optimizer.param_groups:
        if any(id(p) not in ids for p in group["params"]):
            return "the optimizer holds a parameter that is not in the model"
        if isinstance(group["lr"], Tensor):
            return "a tensor learning rate"
        if group.get("maximize", False) or group.get("differentiable", False):
            return "maximize or differentiable is set"
        if kind == "sgd" and (group["momentum"] != 0 or group["weight_decay"] != 0):
            return "SGD with momentum or weight decay"
        if kind == "adagrad":
            if group["lr_decay"] != 0 or group["weight_decay"] != 0:
                return "AdaGrad with lr_decay or weight_decay"
            if any(not isinstance(optimizer.state.get(p, {}).get("sum"), Tensor) for p in group["params"]):
                return "AdaGrad without its state"
    if kind == "pathsgd" and (optimizer.model is not model or optimizer._linears is None):
        return "PathSGD built for another model"
    return None


class FastStep:
    """One mini-batch of SGD, AdaGrad or Path-SGD on a :class:`pathsgd.MLP`: forward, backward, update.

    ``step(x, y)`` updates the model's parameters (and the optimizer's state) in place and returns the
    batch's mean cross-entropy, detached, on the device. Learning rates, eps and p are read from the
    optimizer when the step is built: build a new one (:func:`fast_step` does) after changing them.
    ``step.run(x, y, idx)`` does the same for the batch ``x[idx], y[idx]`` and is the entry point that
    uses a captured graph; its result may be overwritten by the next call (consume it first).
    Dropout follows ``model.training`` and ``model.dropout``, drawing from the same generator, in the
    same order and the same way as ``model(x)`` does (``F.dropout``), so masks equal the reference's.
    """

    def __init__(self, model: MLP, optimizer: torch.optim.Optimizer, *, capture: str | None = None) -> None:
        reason = unsupported_reason(model, optimizer)
        if reason is not None:
            raise ValueError(f"FastStep cannot train this model with this optimizer: {reason}")
        if capture not in CAPTURE_MODES:
            raise ValueError(f"capture={capture!r} is unknown: choose one of {', '.join(map(repr, CAPTURE_MODES))}")
        self.model, self.optimizer, self.kind = model, optimizer, _kind(optimizer)
        self.layers: list[nn.Linear] = list(model.layers)
        self.device = self.layers[0].weight.device
        self.dtype = self.layers[0].weight.dtype
        lr_of = {id(p): float(g["lr"]) for g in optimizer.param_groups for p in g["params"]}
        # Per layer (weight lr, bias lr); None: the optimizer does not update that parameter.
        self.lrs = [(lr_of.get(id(lin.weight)), lr_of.get(id(lin.bias))) for lin in self.layers]
        self.p = float(optimizer.param_groups[0]["p"]) if self.kind == "pathsgd" else None
        self._work = None  # float64 scratch for |W|^p blocks on the CPU (Path-SGD)
        if self.kind == "pathsgd" and self.device.type == "cpu":
            self._work = torch.empty(CHAIN_BLOCK_ELEMENTS, dtype=SCALE_DTYPE)
        self._adagrad_groups: list[tuple[float, float, list[Tensor], list[Tensor]]] = []
        self._adagrad_steps: list[Tensor] = []
        if self.kind == "adagrad":
            for g in optimizer.param_groups:
                params = [p for p in g["params"]]
                if params:
                    sums = [optimizer.state[p]["sum"] for p in params]
                    self._adagrad_groups.append((float(g["lr"]), float(g["eps"]), params, sums))
                    self._adagrad_steps += [optimizer.state[p]["step"] for p in params]
        self.capture = capture
        if capture == "graph" and self.device.type != "cuda":
            self.capture = None  # CUDA graphs need CUDA; on the CPU the step is eager
        self.signature = _signature(model, optimizer, self.capture)
        self._graph = None
        self._graph_key = None
        self._graph_failed = False
        self._warm = 0
        self._static: tuple[Tensor, Tensor, Tensor] | None = None  # x, y, loss buffers of the graph
        self._compiled: Callable[[Tensor, Tensor], Tensor] | None = None
        if self.capture == "compile":
            # fallback_random: dropout draws from torch's generator as in eager mode (same masks)
            self._compiled = torch.compile(self._step, dynamic=False, options={"fallback_random": True})

    # ---------------------------------------------------------------------------------------------
    # The step itself: pure tensor work, no host sync, capturable
    # ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _step(self, x: Tensor, y: Tensor) -> Tensor:
        layers, model = self.layers, self.model
        drop = model.dropout if (model.training and model.dropout > 0.0) else 0.0
        # Path-SGD's factors come from the weights before this step's update.
        roots = self._path_roots() if self.kind == "pathsgd" else None

        # Forward, exactly as MLP.forward (same ops, same dropout calls in the same order).
        h = x.flatten(1)
        inputs = []
        for lin in layers[:-1]:
            inputs.append(h)
            h = F.relu(F.linear(h, lin.weight, lin.bias))
            if drop:
                h = F.dropout(h, drop, True)
        inputs.append(h)
        logits = F.linear(h, layers[-1].weight, layers[-1].bias)
        loss = F.cross_entropy(logits, y)

        # d = dL/dlogits for the mean cross-entropy: (softmax - onehot) / B.
        d = torch.softmax(logits, dim=1)
        d.scatter_add_(1, y.view(-1, 1), torch.full((len(y), 1), -1.0, dtype=d.dtype, device=d.device))
        d.div_(len(y))

        grads: dict[int, Tensor] = {}
        for layer in range(len(layers) - 1, -1, -1):
            lin, h = layers[layer], inputs[layer]
            w_lr, b_lr = self.lrs[layer]
            # The gradient for the layer below uses this layer's weight before its update.
            d_below = None
            if layer > 0:
                d_below = torch.ops.aten.threshold_backward(d.mm(lin.weight), h, 0.0)  # relu'(a) = [h > 0]
                if drop:
                    d_below.mul_(1.0 / (1.0 - drop))  # dropout's backward: the kept units' 1/(1-p)
            db = d.sum(0)
            if self.kind == "adagrad":
                grads[id(lin.weight)] = d.t().mm(h)
                grads[id(lin.bias)] = db
            elif self.kind == "sgd":
                if w_lr is not None:
                    lin.weight.addmm_(d.t(), h, alpha=-w_lr)
                if b_lr is not None:
                    lin.bias.add_(db, alpha=-b_lr)
            else:  # pathsgd: W -= lr * (d r r)^T (h c c), b -= lr * (sum d) r r
                r, c = roots[layer]
                if w_lr is not None:
                    hs = h if layer == 0 else h * c * c  # layer 0's input path sums are all 1
                    lin.weight.addmm_((d * r * r).t(), hs, alpha=-w_lr)
                if b_lr is not None:
                    lin.bias.addcmul_(db * r, r, value=-b_lr)
            if d_below is not None:
                d = d_below

        if self.kind == "adagrad":
            for lr, eps, params, sums in self._adagrad_groups:
                g = [grads[id(p)] for p in params]
                torch._foreach_addcmul_(sums, g, g, value=1)
                std = torch._foreach_sqrt(sums)
                torch._foreach_add_(std, eps)
                torch._foreach_addcdiv_(params, g, std, value=-lr)
        return loss.detach()

    def _path_roots(self) -> list[tuple[Tensor, Tensor]]:
        """Per layer (r, c) = (out^(-1/2), in^(-1/2)) in the parameters' dtype; 0 where gamma is 0.

        All the factors go through one concatenated vector: a handful of kernels instead of a handful
        per vector (on a GPU each costs a launch, and even inside a CUDA graph a few microseconds).
        """
        factors = [v for pair in mlp_scale_factors(self.layers, self.p, work=self._work) for v in pair]
        roots = _root_reciprocal(torch.cat(factors), self.dtype).split([len(v) for v in factors])
        return list(zip(roots[0::2], roots[1::2]))

    # ---------------------------------------------------------------------------------------------
    # Entry points
    # ---------------------------------------------------------------------------------------------

    def _after(self) -> None:
        """Host-side bookkeeping of a step: AdaGrad's step counters (CPU tensors; never read here)."""
        if self._adagrad_steps:
            torch._foreach_add_(self._adagrad_steps, 1.0)

    def _eager(self, x: Tensor, y: Tensor) -> Tensor:
        if self._compiled is not None:
            try:
                return self._compiled(x, y)
            except Exception as err:  # compilation can fail for many reasons; eager is always right
                warnings.warn(f"torch.compile of the fast step failed ({type(err).__name__}: {err}); running eagerly",
                              stacklevel=3)
                self._compiled = None
        return self._step(x, y)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        loss = self._eager(x, y)
        self._after()
        return loss

    def run(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor:
        """The step on the batch ``x[idx], y[idx]`` (through the CUDA graph when there is one)."""
        if self.capture == "graph" and not self._graph_failed:
            loss = self._run_graph(x, y, idx)
            if loss is not None:
                self._after()
                return loss
        return self(x[idx], y[idx])

    # ---------------------------------------------------------------------------------------------
    # CUDA graph (unverified on a GPU: written on a CPU-only machine; every failure falls back to eager)
    # ---------------------------------------------------------------------------------------------

    def _run_graph(self, x: Tensor, y: Tensor, idx: Tensor) -> Tensor | None:
        key = (len(idx), tuple(x.shape[1:]), x.dtype, y.dtype, bool(self.model.training), self.model.dropout)
        if self._graph is not None and key == self._graph_key:
            xs, ys, loss = self._static
            torch.index_select(x, 0, idx, out=xs)
            torch.index_select(y, 0, idx, out=ys)
            self._graph.replay()
            return loss
        if self._graph_key is not None and key[0] != self._graph_key[0]:
            return None  # another batch size (the epoch's last batch): eager, keep the graph
        if self._warm < GRAPH_WARMUP:  # warm-up: real steps, on a side stream as CUDA graphs require
            self._warm += 1
            side = torch.cuda.Stream(self.device)
            current = torch.cuda.current_stream(self.device)
            side.wait_stream(current)
            with torch.cuda.stream(side):
                loss = self._step(x[idx], y[idx])
            current.wait_stream(side)
            loss.record_stream(current)
            return loss
        try:
            xs = torch.empty((len(idx), *x.shape[1:]), dtype=x.dtype, device=x.device)
            ys = torch.empty(len(idx), dtype=y.dtype, device=y.device)
            torch.index_select(x, 0, idx, out=xs)
            torch.index_select(y, 0, idx, out=ys)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # records, does not run: no parameter changes here
                loss = self._step(xs, ys)
        except Exception as err:  # noqa: BLE001 - any capture failure leaves the eager step correct
            warnings.warn(f"CUDA graph capture of the fast step failed ({type(err).__name__}: {err}); "
                          "running eagerly", stacklevel=3)
            self._graph_failed, self._graph = True, None
            try:
                torch.cuda.synchronize(self.device)
            except Exception:  # noqa: BLE001
                pass
            return None
        self._graph, self._graph_key, self._static = graph, key, (xs, ys, loss)
        graph.replay()  # this batch's step
        return loss


def _signature(model: nn.Module, optimizer: torch.optim.Optimizer, capture: str | None) -> tuple:
    """What a cached :class:`FastStep` depends on: tensor identities (storage), hyperparameters, mode."""
    tensors = [p for p in model.parameters()]
    for group in optimizer.param_groups:
        for p in group["params"]:
            tensors += [v for v in optimizer.state.get(p, {}).values() if isinstance(v, Tensor)]
    groups = tuple(
        (tuple(id(p) for p in g["params"]), *(repr(v) for k, v in sorted(g.items()) if k != "params"))
        for g in optimizer.param_groups
    )
    return (id(model), tuple((id(t), t.data_ptr()) for t in tensors), groups, capture)


# Where an optimizer keeps its FastStep: an attribute, so the step (which holds the optimizer and the
# model) lives and dies with the optimizer instead of in a module-level cache that would keep them alive.
_ATTRIBUTE = "_pathsgd_fast_step"


def fast_step(model: nn.Module, optimizer: torch.optim.Optimizer, *, capture: str | None = None) -> FastStep | None:
    """The :class:`FastStep` for ``(model, optimizer)``, or None when it does not apply.

    Kept on the optimizer (a captured graph outlives the epoch) and rebuilt when a parameter, a state
    tensor, a hyperparameter or the capture mode changed (e.g. after ``optimizer.load_state_dict``).
    """
    if unsupported_reason(model, optimizer) is not None:
        return None
    if capture == "graph" and next(model.parameters()).device.type != "cuda":
        capture = None  # CUDA graphs need CUDA; on the CPU the step is eager
    cached = getattr(optimizer, _ATTRIBUTE, None)
    if cached is not None and cached.model is model and cached.signature == _signature(model, optimizer, capture):
        return cached
    step = FastStep(model, optimizer, capture=capture)
    setattr(optimizer, _ATTRIBUTE, step)
    return step
