"""Path-SGD as a ``torch.optim.Optimizer``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim import Optimizer

from .geometry import (
    check_p,
    generic_path_sums,
    infer_input_shape,
    layered_linears,
    CHAIN_BLOCK_ELEMENTS,
    SCALE_DTYPE,
    mlp_scale_factors,
    trace_for_paths,
)


def _check_lr(lr) -> float:
    if isinstance(lr, torch.Tensor):
        lr = lr.item()
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr!r} is invalid: the step size must be finite and > 0")
    return lr


def _root_reciprocal(scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """sqrt(1/gamma) in ``dtype``, and 0 where gamma = 0: an edge with no weighted path through it
    cannot change the output, so its gradient is 0 too and the update 0/0 is taken as no update."""
    return scale.where(scale > 0, math.inf).rsqrt().to(dtype)  # rsqrt(inf) = 0


def path_sgd(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    lrs: list[float],
    row_roots: list[torch.Tensor],
    col_roots: list[torch.Tensor | None],
    *,
    scratch: torch.Tensor | None = None,
) -> None:
    """The Path-SGD update w <- w - lr * grad / gamma, in place, tensor by tensor, given s = sqrt(1/gamma).

    For each parameter, ``row_roots[i]`` is s itself (the parameter's shape) when ``col_roots[i]`` is None;
    otherwise s = row_root[:, None] * col_root[None, :] (an MLP weight, whose gamma is the outer product of
    Algorithm 1's two chains; never materialized) or s = row_root (an MLP bias, ``col_root`` None and
    ``row_root`` of the bias's shape). The step is grad * s * s, multiplied in that order so that it fits
    in the parameter's dtype even under the paper's unbalanced init: 1/gamma alone spans 1e-60..1e60
    there, beyond float32, while grad * s is as well scaled as a balanced network's gradient and
    grad * s * s as the weight itself (rescaling a unit by c scales grad by 1/c and s by c).
    ``scratch``: a buffer of the parameters' dtype with at least as many elements as the largest
    parameter, reused for the product (fresh memory each step costs page faults on the CPU).
    """
    for w, g, lr, row, col in zip(params, grads, lrs, row_roots, col_roots):
        if scratch is not None and scratch.numel() >= g.numel() and scratch.dtype == g.dtype:
            step = scratch[: g.numel()].view(g.shape)
        else:
            step = torch.empty_like(g)
        if col is None:
            torch.mul(g, row, out=step)
            w.addcmul_(step, row, value=-lr)
            continue
        r = row[:, None]
        torch.mul(g, r, out=step)
        step.mul_(col).mul_(r)
        w.addcmul_(step, col, value=-lr)


def mlp_roots(linears: Sequence[nn.Linear], p: float, dtype: torch.dtype, work: torch.Tensor | None = None):
    """Per layer ``(r, c)`` = (out^(-1/2), in^(-1/2)) of Algorithm 1's factors, in ``dtype``; 0 where gamma is 0.

    All the factors go through one concatenated vector: a handful of kernels instead of a handful per
    vector (on a GPU each costs a launch)."""
    factors = [v for pair in mlp_scale_factors(linears, p, work=work) for v in pair]
    roots = _root_reciprocal(torch.cat(factors), dtype).split([len(v) for v in factors])
    return list(zip(roots[0::2], roots[1::2]))


class PathSGD(Optimizer):
    r"""Path-normalized SGD (Neyshabur, Salakhutdinov & Srebro, 2015, eq. 8 and Algorithm 1).

    .. math::
        w_e \leftarrow w_e - \frac{\eta}{\gamma_p(w, e)} \frac{\partial L}{\partial w_e},
        \qquad
        \gamma_p(w, e) = \Big(\sum_{\text{paths} \ni e} \prod_{e' \ne e} |w_{e'}|^p\Big)^{2/p}

    Invariant to every rescaling of hidden units (Theorem 4.1). ``model`` is needed because gamma
    depends on the whole network; every parameter of it is updated unless ``param_groups`` (a list
    of dicts as for any torch optimizer, a subset of the model's parameters, optionally with their
    own ``lr``) says otherwise. ``p`` is one value for the whole network.

    Layered ReLU MLPs (:class:`pathsgd.MLP`, or ``nn.Sequential`` Linear/ReLU stacks) use the closed
    form of Algorithm 1 (two matrix-vector chains); any other supported network uses the |w|^p twin,
    for which convolutional nets need ``input_shape`` (one example, without the batch dimension).
    Gamma is computed on the whole network: dropout is ignored and the model's train/eval mode is
    untouched.

    Departures from the paper: none in the update. gamma is computed in float64 whatever the model's
    dtype (the paper's unbalanced init overflows float32 otherwise) and applied as
    grad * sqrt(1/gamma) * sqrt(1/gamma), which stays in float32's range; where gamma = 0 (an edge on
    no weighted path) the update is 0. The paper mentions momentum and AdaGrad variants; this class
    implements the plain rule the paper evaluates.
    """

    def __init__(
        self,
        model: nn.Module,
        lr: float,
        p: float = 2.0,
        input_shape: Sequence[int] | None = None,
        *,
        param_groups: list[dict] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"PathSGD needs the model itself, got {type(model).__name__}: gamma depends on every path of "
                "the network; call PathSGD(model, lr) and pass param_groups=[...] to choose parameters"
            )
        defaults = dict(lr=_check_lr(lr), p=check_p(p))
        super().__init__(list(model.parameters()) if param_groups is None else param_groups, defaults)
        self.model = model
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self._linears = layered_linears(model)
        # Tracing validates the network (unsupported modules raise here, not at the first step).
        self._graph = None if self._linears is not None else trace_for_paths(model)
        if self._graph is not None and self.input_shape is None:
            infer_input_shape(model)  # a conv net without input_shape fails now, with the reason
        self._chain_work: torch.Tensor | None = None  # float64 scratch of the chains (CPU), made at the first step
        self._scratch: torch.Tensor | None = None  # the update's product, as large as the largest parameter
        names = {id(w): n for n, w in model.named_parameters()}
        for group in self.param_groups:
            for w in group["params"]:
                if id(w) not in names:
                    raise ValueError("PathSGD got a parameter that is not in the model; gamma is defined by the model")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["lr"] = _check_lr(group["lr"])
        group["p"] = check_p(group["p"])
        if group["p"] != self.param_groups[0]["p"]:
            raise ValueError(
                f"p={group['p']} differs between parameter groups ({self.param_groups[0]['p']} first): "
                "gamma is a property of the whole network, so p must be one value"
            )

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # the loaded groups bypassed add_param_group's checks
            _check_lr(group["lr"])
            if check_p(group["p"]) != self.param_groups[0]["p"]:
                raise ValueError(f"the loaded state has p={group['p']} and p={self.param_groups[0]['p']}: p must be one value")

    def _lr_of(self) -> dict[int, float]:
        return {id(w): group["lr"] for group in self.param_groups for w in group["params"]}

    def _buffers(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The reusable scratch buffers (rebuilt if the model moved to another device or dtype)."""
        if self._scratch is None or self._scratch.device != like.device or self._scratch.dtype != like.dtype:
            size = max(w.numel() for w in self.model.parameters())
            self._scratch = torch.empty(size, dtype=like.dtype, device=like.device)
            self._chain_work = None
            if like.device.type == "cpu":  # the chains' blockwise float64 |W|^p (pathsgd.geometry.pow_matvecs)
                self._chain_work = torch.empty(CHAIN_BLOCK_ELEMENTS, dtype=SCALE_DTYPE)
        return self._chain_work, self._scratch

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        p = self.param_groups[0]["p"]
        lr_of = self._lr_of()
        params, grads, lrs, rows, cols = [], [], [], [], []

        def gather(w: torch.Tensor | None, row: torch.Tensor, col: torch.Tensor | None) -> None:
            if w is not None and w.grad is not None and id(w) in lr_of:
                params.append(w), grads.append(w.grad), lrs.append(lr_of[id(w)]), rows.append(row), cols.append(col)

        if not lr_of:
            return loss
        work, scratch = self._buffers(next(iter(self.model.parameters())))
        if self._linears is not None:
            for lin, (r, c) in zip(self._linears, mlp_roots(self._linears, p, self._linears[0].weight.dtype, work)):
                gather(lin.weight, r, c)
                gather(lin.bias, r, None)
        else:
            _, sums = generic_path_sums(self.model, p, self.input_shape, graph=self._graph)
            e = 2.0 / p
            for name, w in self.model.named_parameters():
                if w.grad is not None and id(w) in lr_of:
                    gather(w, _root_reciprocal(sums[name] if e == 1.0 else sums[name].pow(e), w.dtype), None)
        path_sgd(params, grads, lrs, rows, cols, scratch=scratch)
        return loss
