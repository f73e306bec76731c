"""Path geometry of ReLU networks: the path-norm phi_p (eq. 5) and the Path-SGD scales gamma_p (eq. 9).

A ReLU network is a DAG of units; a bias is an edge from a constant-1 unit, so bias units start paths
too. For an edge e,

    gamma_p(w, e) = ( sum over input->output paths through e of prod_{e' != e} |w_e'|^p )^(2/p)

and phi_p(w)^p is the sum over all paths of prod |w_e|^p.

Two implementations, each checked against brute-force path enumeration in the tests:

* ``generic``: the |w|^p *twin* of the network. Put z = |w|^p in place of every weight, feed an
  all-ones input and sum the outputs. That sum is phi_p^p, and since it is multilinear in z its
  gradient with respect to z_e is the sum over paths through e of the product of the other z's.
  One forward and one backward pass at batch size 1 (the paper's "(B+1)T" cost). All twin values
  are non-negative, so every ReLU in the twin is the identity; dropout is off. Works for any DAG
  of Linear / Conv / AvgPool / Flatten / ReLU / Dropout / residual add that ``torch.fx`` can trace.
* ``mlp``: Algorithm 1's closed form for layered networks, two matrix-vector chains. With
  ``ins[l]`` the path sums from every source into the inputs of layer ``l`` and ``outs[l]`` the
  path sums from the outputs of layer ``l`` to the network outputs,
  gamma(W_l[j, i]) = (outs[l][j] * ins[l][i])^(2/p) and gamma(b_l[j]) = outs[l][j]^(2/p).

Everything is computed in float64, whatever the model's dtype: the paper's unbalanced init puts
weights near 1e30, whose squares overflow float32.
"""

from __future__ import annotations

import math
import operator
import sys
from collections.abc import Sequence

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from .models import MLP

SUPPORTED = (
    "Linear, Conv1d/Conv2d (zero padding), AvgPool1d/AvgPool2d, Flatten, ReLU, Dropout (treated as off), "
    "Identity, and residual additions"
)

# Scales are float64 because |w|^p overflows float32 under the paper's unbalanced initialization.
SCALE_DTYPE = torch.float64


def check_p(p: float) -> float:
    p = float(p)
    if not math.isfinite(p) or p < 1.0:
        raise ValueError(f"p={p!r} is invalid: the path-norm needs a finite p >= 1")
    return p


def _abs_pow(t: torch.Tensor, p: float) -> torch.Tensor:
    z = t.detach().to(SCALE_DTYPE, copy=True)  # copy: never alias (and then modify) a float64 parameter
    return z.square_() if p == 2.0 else z.abs_().pow_(p)


# --------------------------------------------------------------------------------------------------
# Layered networks: Algorithm 1


def layered_linears(model: nn.Module) -> list[nn.Linear] | None:
    """The Linear layers of a layered ReLU MLP, in order, or None if ``model`` is not one.

    Layered means an :class:`MLP`, or an ``nn.Sequential`` of Linear layers with exactly one ReLU
    between consecutive ones (Dropout and Identity anywhere, an optional leading Flatten).
    """
    if isinstance(model, MLP):
        return list(model.layers)
    if not isinstance(model, nn.Sequential):
        return None
    mods = [m for m in model if not isinstance(m, (nn.Dropout, nn.Identity))]
    if mods and isinstance(mods[0], nn.Flatten) and mods[0].start_dim == 1:
        mods = mods[1:]
    if not mods or len(mods) % 2 == 0:
        return None
    linears = mods[0::2]
    layered = all(isinstance(m, nn.Linear) for m in linears) and all(isinstance(m, nn.ReLU) for m in mods[1::2])
    return linears if layered else None


# On the CPU, |W|^p is built in float64 a block of rows at a time, reusing one scratch buffer, so the
# chains read each float32 weight once instead of writing and re-reading a full float64 copy. 2 MiB
# blocks measured fastest per step (smaller ones cost more in per-block dispatch than they save in
# cache misses). On a GPU the fused Triton kernel of :mod:`pathsgd.kernels` reads each weight once
# (and without it one full-size pass is cheaper than many small ones).
CHAIN_BLOCK_ELEMENTS = 1 << 18


def row_blocks(t: torch.Tensor, elements: int = CHAIN_BLOCK_ELEMENTS) -> int:
    """Rows per block for blockwise work on ``t`` (all rows off the CPU)."""
    if t.device.type != "cpu" or t.dim() < 2:
        return max(t.shape[0], 1)
    return max(1, elements // max(1, t[0].numel()))


def pow_matvecs(weight: torch.Tensor, p: float, fwd: torch.Tensor | None = None, bwd: torch.Tensor | None = None,
                bias: torch.Tensor | None = None,
                work: torch.Tensor | None = None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(|W|^p @ fwd + |b|^p, |W|^p.T @ bwd)`` in float64 from one pass over ``weight`` (either result
    None when its vector is). ``work``: a float64 scratch buffer of ``CHAIN_BLOCK_ELEMENTS``, reused
    across calls (fresh memory costs page faults)."""
    weight = weight.detach()
    kernels = sys.modules.get("pathsgd.kernels")
    if weight.is_cuda and kernels is None:  # imported here: Triton is loaded only where its kernel can run
        from . import kernels
    if kernels is not None and kernels.fused_available(weight, p):
        try:
            return kernels.fused_pow_matvecs(weight, p, fwd, bwd, bias)
        except Exception as err:  # noqa: BLE001 - e.g. a Triton compile error: the torch path is always right
            if weight.is_cuda and torch.cuda.is_current_stream_capturing():
                raise  # the capture is spoilt: the step's caller falls back to eager, kernel and all
            kernels.disable_after(err)
    rows, cols = weight.shape
    step = row_blocks(weight, CHAIN_BLOCK_ELEMENTS)
    out = None if fwd is None else torch.empty(rows, dtype=SCALE_DTYPE, device=weight.device)
    out_t = None if bwd is None else torch.zeros(cols, dtype=SCALE_DTYPE, device=weight.device)
    for start in range(0, rows, step):
        block = weight[start : start + step]
        if work is None or work.numel() < block.numel():
            z = _abs_pow(block, p)
        else:
            z = work[: block.numel()].view(block.shape).copy_(block)
            z.square_() if p == 2.0 else z.abs_().pow_(p)
        if out is not None:
            torch.mv(z, fwd, out=out[start : start + step])
        if out_t is not None:
            out_t.addmv_(z.T, bwd[start : start + step])
    if out is not None and bias is not None:
        out += _abs_pow(bias, p)
    return out, out_t


def _forward_sums(linears: Sequence[nn.Linear], p: float, n_layers: int) -> list[torch.Tensor]:
    """[ones, a_1, ..., a_n]: a_{l+1} = |W_l|^p a_l + |b_l|^p, the path sums into layer l+1's inputs."""
    sums = [torch.ones(linears[0].in_features, dtype=SCALE_DTYPE, device=linears[0].weight.device)]
    for lin in linears[:n_layers]:
        sums.append(pow_matvecs(lin.weight, p, fwd=sums[-1], bias=lin.bias)[0])
    return sums


def mlp_path_sums(linears: Sequence[nn.Linear], p: float = 2.0, *, need_total: bool = True):
    """Algorithm 1 without the final 2/p power.

    Returns ``(ins, outs, total)``: float64 vectors ``ins[l]`` (size ``fan_in`` of layer l, ones for
    the network input: the path sums from every source into layer l's inputs) and ``outs[l]`` (size
    ``fan_out`` of layer l, ones for the network output: the path sums from layer l's outputs to the
    outputs), and ``total = phi_p^p`` (None unless ``need_total``: it costs one more layer).
    """
    p = check_p(p)
    ins = _forward_sums(linears, p, len(linears) if need_total else len(linears) - 1)
    total = ins.pop().sum() if need_total else None
    outs = [torch.ones(linears[-1].out_features, dtype=SCALE_DTYPE, device=linears[0].weight.device)]
    for lin in reversed(linears[1:]):  # layer 0's input-side sums are never needed
        outs.insert(0, pow_matvecs(lin.weight, p, bwd=outs[0])[1])
    return ins, outs, total


def mlp_scale_factors(
    linears: Sequence[nn.Linear], p: float = 2.0, *, work: torch.Tensor | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per layer ``(out_factor, in_factor)`` with gamma(W[j, i]) = out_factor[j] * in_factor[i] and
    gamma(b[j]) = out_factor[j]: the rank-one form of the scales that the optimizer uses without
    materializing the outer product.

    The same numbers as :func:`mlp_path_sums`, reading the widest middle layer once instead of twice: the
    forward chain runs up to it, the backward chain down to it, and one pass over it serves both (for the
    paper's 2-hidden-layer net every weight is then read once). ``work``: see :func:`pow_matvecs`.
    """
    p = check_p(p)
    n = len(linears)
    if n < 3:
        ins, outs, _ = mlp_path_sums(linears, p, need_total=False)
    else:
        meet = max(range(1, n - 1), key=lambda layer: linears[layer].weight.numel())
        ins = [torch.ones(linears[0].in_features, dtype=SCALE_DTYPE, device=linears[0].weight.device)]
        for lin in linears[:meet]:
            ins.append(pow_matvecs(lin.weight, p, fwd=ins[-1], bias=lin.bias, work=work)[0])
        outs = [torch.ones(linears[-1].out_features, dtype=SCALE_DTYPE, device=linears[0].weight.device)]
        for lin in reversed(linears[meet + 1 :]):
            outs.insert(0, pow_matvecs(lin.weight, p, bwd=outs[0], work=work)[1])
        lin = linears[meet]
        forward, backward = pow_matvecs(lin.weight, p, fwd=ins[-1], bwd=outs[0], bias=lin.bias, work=work)
        ins.append(forward)
        outs.insert(0, backward)
        for lin in linears[meet + 1 : n - 1]:
            ins.append(pow_matvecs(lin.weight, p, fwd=ins[-1], bias=lin.bias, work=work)[0])
        for lin in reversed(linears[1:meet]):
            outs.insert(0, pow_matvecs(lin.weight, p, bwd=outs[0], work=work)[1])
    e = 2.0 / p
    if e == 1.0:
        return list(zip(outs, ins))
    return [(o.pow(e), i.pow(e)) for o, i in zip(outs, ins)]


# --------------------------------------------------------------------------------------------------
# Any supported DAG: the |w|^p twin

_RELU_FUNCTIONS = {F.relu, torch.relu}
_DROPOUT_FUNCTIONS = {F.dropout}
_SHAPE_FUNCTIONS = {torch.flatten}
_ADD_FUNCTIONS = {operator.add, torch.add}
_SHAPE_METHODS = {"flatten", "view", "reshape", "contiguous"}
_RELU_METHODS = {"relu"}
_WEIGHTED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d)
_PASS_MODULES = (nn.ReLU, nn.Dropout, nn.Identity)  # identity in the twin (inputs there are >= 0)


def _check_avg_pool(name: str, m: nn.Module) -> None:
    padding = m.padding if isinstance(m.padding, tuple) else (m.padding,)
    if m.ceil_mode or (any(padding) and not m.count_include_pad):
        raise ValueError(f"{type(m).__name__} at '{name}' uses ceil_mode or count_include_pad=False with padding, "
                         "whose divisor varies by position; path_scales supports a fixed divisor only")


def trace_for_paths(model: nn.Module) -> torch.fx.GraphModule:
    """Trace ``model`` with torch.fx and check that every operation is one whose paths we know.

    Raises ``ValueError`` naming the first unsupported module or function.
    """
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as err:  # fx raises many types; the user needs to know why paths are unknown
        raise ValueError(f"cannot trace {type(model).__name__} to find its paths ({err}); path_scales supports "
                         f"{SUPPORTED}") from err
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        if node.op == "call_module":
            m = modules[node.target]
            if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
                _check_avg_pool(node.target, m)
            elif isinstance(m, (nn.Conv1d, nn.Conv2d)) and m.padding_mode != "zeros":
                raise ValueError(f"Conv at '{node.target}' has padding_mode={m.padding_mode!r}; only 'zeros' is supported")
            elif not isinstance(m, _WEIGHTED_MODULES + _PASS_MODULES + (nn.Flatten, nn.AvgPool1d, nn.AvgPool2d)):
                raise ValueError(f"{type(m).__name__} at '{node.target}' is not supported by path_scales: "
                                 f"supported are {SUPPORTED}")
        elif node.op == "call_function":
            known = _RELU_FUNCTIONS | _DROPOUT_FUNCTIONS | _SHAPE_FUNCTIONS | _ADD_FUNCTIONS
            if node.target not in known:
                name = getattr(node.target, "__name__", repr(node.target))
                raise ValueError(f"function {name} in {type(model).__name__}.forward is not supported by "
                                 f"path_scales: supported are {SUPPORTED}")
            if node.target in _ADD_FUNCTIONS and (node.kwargs or not all(isinstance(a, torch.fx.Node) for a in node.args)):
                raise ValueError("an addition with a constant or a scale (torch.add(..., alpha=...)) is not supported "
                                 "by path_scales: only residual sums x + f(x)")
        elif node.op == "call_method":
            if node.target not in _SHAPE_METHODS | _RELU_METHODS:
                raise ValueError(f"method .{node.target}() in {type(model).__name__}.forward is not supported by "
                                 f"path_scales: supported are {SUPPORTED}")
        elif node.op == "get_attr":
            raise ValueError(f"'{node.target}' is used directly in {type(model).__name__}.forward; path_scales "
                             "supports parameters only inside Linear/Conv modules")
    return gm


def _pool_divisor(m: nn.Module) -> int:
    if getattr(m, "divisor_override", None):
        return m.divisor_override
    k = m.kernel_size
    return math.prod(k if isinstance(k, tuple) else (k,) * (1 if isinstance(m, nn.AvgPool1d) else 2))


class _AbsPowTwin(torch.fx.Interpreter):
    """Runs a traced network with every weight w replaced by z = |w|^p (fixed weights too)."""

    def __init__(self, gm: torch.fx.GraphModule, z: dict[str, torch.Tensor], p: float):
        super().__init__(gm)
        self.z, self.p = z, p

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        x = args[0]
        if isinstance(m, _WEIGHTED_MODULES):
            w, b = self.z[f"{target}.weight"], self.z.get(f"{target}.bias")
            if isinstance(m, nn.Linear):
                return F.linear(x, w, b)
            conv = F.conv1d if isinstance(m, nn.Conv1d) else F.conv2d
            return conv(x, w, b, m.stride, m.padding, m.dilation, m.groups)
        if isinstance(m, (nn.AvgPool1d, nn.AvgPool2d)):
            # Average pooling is an edge of fixed weight 1/d from each input of its window; in the
            # twin that weight enters as (1/d)^p like any other. m(x) is the window sum over d.
            return m(x) * _pool_divisor(m) ** (1.0 - self.p)
        if isinstance(m, nn.Flatten):
            return m(x)
        return x  # ReLU, Dropout, Identity

    def call_function(self, target, args, kwargs):
        if target in _RELU_FUNCTIONS or target in _DROPOUT_FUNCTIONS:
            return args[0]
        return super().call_function(target, args, kwargs)

    def call_method(self, target, args, kwargs):
        if target in _RELU_METHODS:
            return args[0]
        return super().call_method(target, args, kwargs)


def infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    first = next((m for m in model.modules() if isinstance(m, _WEIGHTED_MODULES)), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError(f"input_shape is needed for {type(model).__name__}: the paths of a convolutional network depend "
                     "on the input size; pass the shape of one example without the batch dimension, e.g. (3, 32, 32)")


def generic_path_sums(model: nn.Module, p: float = 2.0, input_shape: Sequence[int] | None = None,
                      graph: torch.fx.GraphModule | None = None,
                      with_grads: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``(phi_p^p, {name: sum over paths through each weight of the product of the others})``."""
    p = check_p(p)
    gm = trace_for_paths(model) if graph is None else graph
    shape = tuple(input_shape) if input_shape is not None else infer_input_shape(model)
    params = dict(model.named_parameters())
    z = {name: _abs_pow(w, p).requires_grad_(with_grads) for name, w in params.items()}
    device = next(iter(params.values())).device if params else torch.device("cpu")
    ones = torch.ones((1, *shape), dtype=SCALE_DTYPE, device=device)
    with torch.enable_grad():
        total = _AbsPowTwin(gm, z, p).run(ones).sum()
        if not with_grads:
            return total.detach(), {}
        grads = torch.autograd.grad(total, list(z.values()), allow_unused=True)
    # A weight on no path has no paths through it.
    sums = {name: torch.zeros_like(z[name]) if g is None else g for name, g in zip(z, grads)}
    return total.detach(), sums


# --------------------------------------------------------------------------------------------------
# Public API

METHODS = ("auto", "mlp", "generic")


def _choose(model: nn.Module, method: str) -> list[nn.Linear] | None:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown: choose one of {', '.join(METHODS)}")
    linears = layered_linears(model) if method in ("auto", "mlp") else None
    if method == "mlp" and linears is None:
        raise ValueError(f"method='mlp' needs a layered ReLU MLP, got {type(model).__name__}; use method='generic'")
    return linears


def path_scales(
    model: nn.Module, p: float = 2.0, input_shape: Sequence[int] | None = None, *, method: str = "auto"
) -> dict[str, torch.Tensor]:
    """gamma_p(w, e) of eq. (9) for every weight: ``{parameter name: float64 tensor of its shape}``.

    With tied weights (a convolution), gamma sums over every position of the weight. ``method`` picks
    the implementation: ``"mlp"`` (Algorithm 1, layered nets only), ``"generic"`` (the |w|^p twin),
    or ``"auto"`` (the closed form where it applies). Dropout is ignored: gamma is a property of the
    whole network. ``input_shape`` (one example, no batch dimension) is needed for convolutions.
    """
    p = check_p(p)
    linears = _choose(model, method)
    if linears is not None:
        names = {id(w): n for n, w in model.named_parameters()}
        scales = {}
        for lin, (out_f, in_f) in zip(linears, mlp_scale_factors(linears, p)):
            scales[names[id(lin.weight)]] = torch.outer(out_f, in_f)
            if lin.bias is not None:
                scales[names[id(lin.bias)]] = out_f.clone()
        return scales
    _, sums = generic_path_sums(model, p, input_shape)
    e = 2.0 / p
    return {name: s if e == 1.0 else s.pow(e) for name, s in sums.items()}


def path_norm(
    model: nn.Module, p: float = 2.0, input_shape: Sequence[int] | None = None, *, method: str = "auto"
) -> torch.Tensor:
    """The l_p path-regularizer phi_p(w) of eq. (5), a 0-dim float64 tensor; invariant to rescaling."""
    p = check_p(p)
    linears = _choose(model, method)
    with torch.no_grad():
        if linears is not None:
            total = _forward_sums(linears, p, len(linears))[-1].sum()
        else:
            total, _ = generic_path_sums(model, p, input_shape, with_grads=False)
    return total.pow(1.0 / p)
