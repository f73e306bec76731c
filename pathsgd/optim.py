"""Path-SGD and its family as ``torch.optim.Optimizer``s: Path-SGD (with torch's momentum), Path-AdaGrad, Path-Adam.

Each class gathers the parameters, their gradients and gamma's factors; one function per rule computes the
update (:func:`path_sgd`, :func:`path_adagrad`, :func:`path_adam`), as torch.optim's classes do.

The family rests on two pieces, both computed from gamma_p(w, e) of eq. (9). Write s_e = gamma_e^(-1/2) and
d_e = g_e / gamma_e = g_e s_e^2 (Path-SGD's direction). Rescaling a hidden unit multiplies some weights by a
factor c_e (c for its incoming edges, 1/c for its outgoing ones): then g_e scales as 1/c_e and gamma_e as
1/c_e^2, so s_e scales as c_e, d_e as c_e (like w_e itself), and (g_e s_e)^2 = g_e^2 / gamma_e not at all. Any
rule whose step is d times factors built from invariant quantities therefore follows the rescaled trajectory
exactly (Theorem 4.1 for it): the momentum buffer sums d's (scales like w), AdaGrad's and Adam's second moments
sum (g s)^2 (invariant), Adam's first moment sums d's. Plain SGD, AdaGrad and Adam are not invariant: their
steps scale as 1/c_e, or not at all, while w_e scales as c_e. The tests check all of this (``tests/test_family.py``).
"""

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


def _scaled(g: torch.Tensor, row: torch.Tensor, col: torch.Tensor | None, scratch: torch.Tensor | None) -> torch.Tensor:
    """g * s in a reused buffer: s = row (its own shape) when ``col`` is None, else s = row[:, None] * col[None, :]
    (an MLP weight, whose gamma is the outer product of Algorithm 1's two chains; never materialized)."""
    if scratch is not None and scratch.numel() >= g.numel() and scratch.dtype == g.dtype:
        out = scratch[: g.numel()].view(g.shape)
    else:
        out = torch.empty_like(g)
    if col is None:
        return torch.mul(g, row, out=out)
    return torch.mul(g, row[:, None], out=out).mul_(col)


def _times_s_(t: torch.Tensor, row: torch.Tensor, col: torch.Tensor | None) -> torch.Tensor:
    """t * s, in place (g * s -> g / gamma). Multiplying by s twice, never by 1/gamma, keeps every factor within
    float32 under the paper's unbalanced init: 1/gamma alone spans 1e-60..1e60 there, while g * s is as well
    scaled as a balanced network's gradient and g * s * s as the weight itself."""
    return t.mul_(row) if col is None else t.mul_(row[:, None]).mul_(col)


def path_sgd(params, grads, momentum_buffers, rows, cols, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, nesterov: bool = False, scratch: torch.Tensor | None = None) -> None:
    """Path-SGD, in place: w <- w - lr * d with d = g / gamma, or with torch.optim.SGD's momentum on d
    (``momentum_buffers[i]`` None at the first step, then the buffer; the list is updated)."""
    for i, (w, g, row, col) in enumerate(zip(params, grads, rows, cols)):
        if momentum == 0.0:  # the paper's rule: the last factor of s joins the update's own multiply
            gs = _scaled(g, row, col, scratch)
            w.addcmul_(gs if col is None else gs.mul_(row[:, None]), row if col is None else col, value=-lr)
            continue
        d = _times_s_(_scaled(g, row, col, scratch), row, col)
        buf = momentum_buffers[i]
        if buf is None:
            buf = momentum_buffers[i] = d.clone()
        else:
            buf.mul_(momentum).add_(d, alpha=1.0 - dampening)
        w.add_(d.add_(buf, alpha=momentum) if nesterov else buf, alpha=-lr)


def path_adagrad(params, grads, sums, rows, cols, *, lr: float, eps: float, scratch: torch.Tensor | None = None) -> None:
    """Path-AdaGrad, in place: G += g^2 / gamma; w <- w - lr * d / (sqrt(G) + eps) (torch.optim.Adagrad's form)."""
    for w, g, total, row, col in zip(params, grads, sums, rows, cols):
        gs = _scaled(g, row, col, scratch)
        total.addcmul_(gs, gs, value=1.0)
        w.addcdiv_(_times_s_(gs, row, col), total.sqrt().add_(eps), value=-lr)


def path_adam(params, grads, exp_avgs, exp_avg_sqs, steps, rows, cols, *, lr: float, beta1: float, beta2: float,
              eps: float, weight_decay: float = 0.0, scratch: torch.Tensor | None = None) -> None:
    """Path-Adam, in place: Adam (torch.optim.Adam's bias corrections and eps) with first moment of d = g / gamma
    and second moment of g^2 / gamma; ``weight_decay`` decoupled as in AdamW (w <- w (1 - lr wd)), which keeps the
    invariance: it scales each weight by one factor, and a rescaling commutes with that."""
    for w, g, m, v, step, row, col in zip(params, grads, exp_avgs, exp_avg_sqs, steps, rows, cols):
        step += 1
        t = float(step)
        if weight_decay != 0.0:
            w.mul_(1.0 - lr * weight_decay)
        gs = _scaled(g, row, col, scratch)
        v.mul_(beta2).addcmul_(gs, gs, value=1.0 - beta2)
        m.lerp_(_times_s_(gs, row, col), 1.0 - beta1)
        denom = (v.sqrt() / math.sqrt(1.0 - beta2**t)).add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1.0 - beta1**t))


def mlp_roots(linears: Sequence[nn.Linear], p: float, dtype: torch.dtype, work: torch.Tensor | None = None):
    """Per layer ``(r, c)`` = (out^(-1/2), in^(-1/2)) of Algorithm 1's factors, in ``dtype``; 0 where gamma is 0.

    All the factors go through one concatenated vector: a handful of kernels instead of a handful per
    vector (on a GPU each costs a launch)."""
    factors = [v for pair in mlp_scale_factors(linears, p, work=work) for v in pair]
    roots = _root_reciprocal(torch.cat(factors), dtype).split([len(v) for v in factors])
    return list(zip(roots[0::2], roots[1::2]))


class PathOptimizer(Optimizer):
    """What the family shares: the model (gamma depends on all of it), p, gamma's factors at each step, the
    reused buffers. A subclass's ``_update(group, params, grads, rows, cols, scratch)`` applies its rule."""

    def __init__(self, model: nn.Module, defaults: dict, *, p: float, input_shape, param_groups) -> None:
        name = type(self).__name__
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"{name} needs the model itself, got {type(model).__name__}: gamma depends on every path of "
                f"the network; call {name}(model, lr) and pass param_groups=[...] to choose parameters"
            )
        defaults = dict(lr=_check_lr(defaults.pop("lr")), **defaults, p=check_p(p))
        super().__init__(list(model.parameters()) if param_groups is None else param_groups, defaults)
        self.model = model
        self.input_shape = None if input_shape is None else tuple(input_shape)
        self._linears = layered_linears(model)
        # Tracing validates the network (unsupported modules raise here, not at the first step).
        self._graph = None if self._linears is not None else trace_for_paths(model)
        if self._graph is not None and self.input_shape is None:
            infer_input_shape(model)  # a conv net without input_shape fails now, with the reason
        self._chain_work: torch.Tensor | None = None  # float64 scratch of the chains (CPU), made at the first step
        self._scratch: torch.Tensor | None = None  # the update's products, as large as the largest parameter
        names = {id(w) for w in model.parameters()}
        for group in self.param_groups:
            for w in group["params"]:
                if id(w) not in names:
                    raise ValueError(f"{name} got a parameter that is not in the model; gamma is defined by the model")

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group["lr"] = _check_lr(group["lr"])
        group["p"] = check_p(group["p"])
        self._check_group(group)
        if group["p"] != self.param_groups[0]["p"]:
            raise ValueError(
                f"p={group['p']} differs between parameter groups ({self.param_groups[0]['p']} first): "
                "gamma is a property of the whole network, so p must be one value"
            )

    def _check_group(self, group: dict) -> None:
        """A subclass's checks of its own hyperparameters (ValueError naming the bad one)."""

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # the loaded groups bypassed add_param_group's checks
            _check_lr(group["lr"])
            self._check_group(group)
            if check_p(group["p"]) != self.param_groups[0]["p"]:
                raise ValueError(f"the loaded state has p={group['p']} and p={self.param_groups[0]['p']}: p must be one value")

    def _buffers(self, like: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The reusable scratch buffers (rebuilt if the model moved to another device or dtype)."""
        if self._scratch is None or self._scratch.device != like.device or self._scratch.dtype != like.dtype:
            size = max(w.numel() for w in self.model.parameters())
            self._scratch = torch.empty(size, dtype=like.dtype, device=like.device)
            self._chain_work = None
            if like.device.type == "cpu":  # the chains' blockwise float64 |W|^p (pathsgd.geometry.pow_matvecs)
                self._chain_work = torch.empty(CHAIN_BLOCK_ELEMENTS, dtype=SCALE_DTYPE)
        return self._chain_work, self._scratch

    def _roots(self, work: torch.Tensor | None) -> dict[int, tuple[torch.Tensor, torch.Tensor | None]]:
        """id(parameter) -> (row, col) with s = gamma^(-1/2) as :func:`_scaled` reads it, from the weights as they are."""
        p = self.param_groups[0]["p"]
        if self._linears is not None:
            roots = {}
            for lin, (r, c) in zip(self._linears, mlp_roots(self._linears, p, self._linears[0].weight.dtype, work)):
                roots[id(lin.weight)] = (r, c)
                if lin.bias is not None:
                    roots[id(lin.bias)] = (r, None)
            return roots
        _, sums = generic_path_sums(self.model, p, self.input_shape, graph=self._graph)
        e = 2.0 / p
        return {id(w): (_root_reciprocal(sums[n] if e == 1.0 else sums[n].pow(e), w.dtype), None)
                for n, w in self.model.named_parameters()}

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not any(w.grad is not None for g in self.param_groups for w in g["params"]):
            return loss
        work, scratch = self._buffers(next(iter(self.model.parameters())))
        roots = self._roots(work)  # gamma of the weights before this step's update, for every group
        for group in self.param_groups:
            params = [w for w in group["params"] if w.grad is not None]
            if params:
                self._update(group, params, [w.grad for w in params], [roots[id(w)][0] for w in params],
                             [roots[id(w)][1] for w in params], scratch)
        return loss


class PathSGD(PathOptimizer):
    r"""Path-normalized SGD (Neyshabur, Salakhutdinov & Srebro, 2015, eq. 8 and Algorithm 1).

    .. math::
        w_e \leftarrow w_e - \frac{\eta}{\gamma_p(w, e)} \frac{\partial L}{\partial w_e},
        \qquad
        \gamma_p(w, e) = \Big(\sum_{\text{paths} \ni e} \prod_{e' \ne e} |w_{e'}|^p\Big)^{2/p}

    Invariant to every rescaling of hidden units (Theorem 4.1). ``model`` is needed because gamma
    depends on the whole network; every parameter of it is updated unless ``param_groups`` (a list
    of dicts as for any torch optimizer, a subset of the model's parameters, optionally with their
    own ``lr``) says otherwise. ``p`` is one value for the whole network.

    ``momentum``, ``dampening``, ``nesterov``: torch.optim.SGD's momentum with its conventions, on the Path-SGD
    direction d = g / gamma instead of g (the buffer sums d's, which scale like the weights under a rescaling,
    so the invariance holds; with gamma = 1 it is torch.optim.SGD's trajectory). The paper suggests this
    combination in its conclusion; ``momentum=0`` (the default) is the rule the paper evaluates.

    Layered ReLU MLPs (:class:`pathsgd.MLP`, or ``nn.Sequential`` Linear/ReLU stacks) use the closed
    form of Algorithm 1 (two matrix-vector chains); any other supported network uses the |w|^p twin,
    for which convolutional nets need ``input_shape`` (one example, without the batch dimension).
    Gamma is computed on the whole network: dropout is ignored and the model's train/eval mode is
    untouched.

    Departures from the paper: none in the update. gamma is computed in float64 whatever the model's
    dtype (the paper's unbalanced init overflows float32 otherwise) and applied as
    grad * sqrt(1/gamma) * sqrt(1/gamma), which stays in float32's range; where gamma = 0 (an edge on
    no weighted path) the update is 0.
    """

    def __init__(self, model: nn.Module, lr: float, *, p: float = 2.0, input_shape: Sequence[int] | None = None,
                 momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                 param_groups: list[dict] | None = None) -> None:
        super().__init__(model, dict(lr=lr, momentum=momentum, dampening=dampening, nesterov=nesterov), p=p,
                         input_shape=input_shape, param_groups=param_groups)

    def _check_group(self, group: dict) -> None:
        if not (math.isfinite(group["momentum"]) and group["momentum"] >= 0):
            raise ValueError(f"momentum={group['momentum']!r} is invalid: it must be a finite number >= 0")
        if not math.isfinite(group["dampening"]):
            raise ValueError(f"dampening={group['dampening']!r} is invalid: it must be finite")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening = 0 (as torch.optim.SGD)")

    def _update(self, group, params, grads, rows, cols, scratch) -> None:
        buffers = [self.state[w].get("momentum_buffer") for w in params]
        path_sgd(params, grads, buffers, rows, cols, lr=group["lr"], momentum=group["momentum"],
                 dampening=group["dampening"], nesterov=group["nesterov"], scratch=scratch)
        if group["momentum"] != 0.0:
            for w, buf in zip(params, buffers):
                self.state[w]["momentum_buffer"] = buf


class PathAdaGrad(PathOptimizer):
    r"""Path-AdaGrad: AdaGrad's adaptive step on the Path-SGD direction.

    .. math::
        G_e \leftarrow G_e + \frac{g_e^2}{\gamma_e}, \qquad
        w_e \leftarrow w_e - \eta \, \frac{g_e / \gamma_e}{\sqrt{G_e} + \epsilon}

    G sums g^2 / gamma, which a rescaling leaves unchanged, and g / gamma scales like the weight: the step
    scales like the weight, so the trajectory is rescaling-invariant (Theorem 4.1 for it). With gamma = 1 on
    every edge (a network without hidden units) it is torch.optim.Adagrad (no lr decay, zero initial sum).
    """

    def __init__(self, model: nn.Module, lr: float, *, p: float = 2.0, input_shape: Sequence[int] | None = None,
                 eps: float = 1e-10, param_groups: list[dict] | None = None) -> None:
        super().__init__(model, dict(lr=lr, eps=eps), p=p, input_shape=input_shape, param_groups=param_groups)

    def _check_group(self, group: dict) -> None:
        if not (math.isfinite(group["eps"]) and group["eps"] >= 0):
            raise ValueError(f"eps={group['eps']!r} is invalid: it must be a finite number >= 0")

    def _update(self, group, params, grads, rows, cols, scratch) -> None:
        for w in params:
            if "sum" not in self.state[w]:
                self.state[w]["sum"] = torch.zeros_like(w)
        sums = [self.state[w]["sum"] for w in params]
        path_adagrad(params, grads, sums, rows, cols, lr=group["lr"], eps=group["eps"], scratch=scratch)


class PathAdam(PathOptimizer):
    r"""Path-Adam: Adam with the first moment of d = g / gamma and the second moment of g^2 / gamma.

    .. math::
        m \leftarrow \beta_1 m + (1 - \beta_1) \frac{g}{\gamma}, \quad
        v \leftarrow \beta_2 v + (1 - \beta_2) \frac{g^2}{\gamma}, \quad
        w \leftarrow w (1 - \eta \lambda) - \eta \frac{m / (1 - \beta_1^t)}{\sqrt{v / (1 - \beta_2^t)} + \epsilon}

    m scales like the weights under a rescaling and v not at all, so the trajectory is rescaling-invariant;
    so is the decoupled weight decay lambda (``weight_decay``, AdamW's form: it multiplies every weight by the
    same factor, which commutes with a rescaling), whereas an L2 penalty added to g would break it. With
    gamma = 1 on every edge it is torch.optim.Adam (torch.optim.AdamW with weight decay), bias corrections and
    eps placed as there.
    """

    def __init__(self, model: nn.Module, lr: float, *, p: float = 2.0, input_shape: Sequence[int] | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 param_groups: list[dict] | None = None) -> None:
        super().__init__(model, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay), p=p,
                         input_shape=input_shape, param_groups=param_groups)

    def _check_group(self, group: dict) -> None:
        b1, b2 = group["betas"]
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas={group['betas']!r} is invalid: each must lie in [0, 1)")
        if not (math.isfinite(group["eps"]) and group["eps"] >= 0):
            raise ValueError(f"eps={group['eps']!r} is invalid: it must be a finite number >= 0")
        if not (math.isfinite(group["weight_decay"]) and group["weight_decay"] >= 0):
            raise ValueError(f"weight_decay={group['weight_decay']!r} is invalid: it must be a finite number >= 0")

    def _update(self, group, params, grads, rows, cols, scratch) -> None:
        states = [self.state[w] for w in params]
        for st, w in zip(states, params):
            if "step" not in st:
                st["step"] = torch.tensor(0.0)
                st["exp_avg"] = torch.zeros_like(w)
                st["exp_avg_sq"] = torch.zeros_like(w)
        b1, b2 = group["betas"]
        path_adam(params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states],
                  [st["step"] for st in states], rows, cols, lr=group["lr"], beta1=b1, beta2=b2, eps=group["eps"],
                  weight_decay=group["weight_decay"], scratch=scratch)
