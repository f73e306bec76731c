"""Many runs of one configuration in one process: K members of an MLP stacked, trained with batched products.

A sweep over step sizes trains K networks that differ only in their learning rate. Stacked, member k of a
:class:`StackedMLP` is the :class:`pathsgd.MLP` whose layer ``l`` has weight ``weights[l][k]`` (``[K, out, in]``)
and bias ``biases[l][k]`` (``[K, out]``). The first layer, whose input all members share, is one matrix
product ``x @ [W_0[0]; ...; W_0[K-1]]^T``; every later layer is one batched product (``baddbmm``). The members
share the mini-batch order and the dropout masks, as separate runs with one seed do (they draw the same masks
from the same global generator, in the same order and shapes), so each member reproduces its separate run up
to float32 rounding: a batched product sums in another order than a plain one.

:class:`StackedOptimizer` applies SGD (``torch.optim.SGD``), AdaGrad (``torch.optim.Adagrad``) or Path-SGD
(:class:`pathsgd.PathSGD`) to every member at once with a per-member step size, with the same arithmetic as
those classes' single-tensor code; its state converts to and from theirs (:meth:`StackedOptimizer.export_to`,
:meth:`StackedOptimizer.from_optimizers`), so a member's checkpoint is that of its separate run.
Path-SGD's scales come from Algorithm 1's two matrix-vector chains, batched over members, in float64.

Torch only; the runner's ``sweep.batched=true`` (:func:`pathsgd.train.train_batched`) builds on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .geometry import SCALE_DTYPE, _abs_pow, check_p, pow_matvecs
from .optim import _root_reciprocal
from .models import MLP

__all__ = [
    "StackedMLP",
    "StackedOptimizer",
    "OPTIMIZER_OPTIONS",
    "stacked_scale_factors",
    "stacked_path_norm",
    "train_step",
    "train_epoch",
    "evaluate",
    "all_finite",
]


# The constructor options each optimizer supports here, with torch's defaults (the runner's configs set them).
OPTIMIZER_OPTIONS: dict[str, dict[str, object]] = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False},
    "adagrad": {"lr_decay": 0.0, "weight_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
    "pathsgd": {"p": 2.0},
}


# --------------------------------------------------------------------------------------------------
# The stacked network
# --------------------------------------------------------------------------------------------------


class StackedMLP(nn.Module):
    """K members of one :class:`pathsgd.MLP` architecture; ``forward(x)`` returns logits ``[K, N, classes]``
    (a transposed view: activations are kept as ``[K, width, N]`` inside).

    ``params`` lists the stacked tensors in the order of ``MLP.parameters()`` (weight, bias per layer), so
    index ``i`` of a member's optimizer state is index ``i`` here. Dropout draws one mask per hidden layer
    and step, of shape ``[N, width]``, shared by all members (as K separate runs with one seed draw it).
    """

    def __init__(self, weights: Sequence[Tensor], biases: Sequence[Tensor], dropout: float = 0.0) -> None:
        super().__init__()
        if len(weights) != len(biases) or not weights:
            raise ValueError("StackedMLP needs one weight and one bias per layer")
        k = weights[0].shape[0]
        for w, b in zip(weights, biases):
            if w.dim() != 3 or b.shape != (k, w.shape[1]) or w.shape[0] != k:
                raise ValueError(f"weights must be [K, out, in] and biases [K, out]; got {tuple(w.shape)}, {tuple(b.shape)}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout={dropout!r} is invalid: the drop probability must lie in [0, 1)")
        self.dropout = float(dropout)
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(b) for b in biases)

    @classmethod
    def from_models(cls, models: Sequence[MLP]) -> StackedMLP:
        """Stack copies of the members' weights (the models are not changed or shared)."""
        if not models:
            raise ValueError("StackedMLP.from_models needs at least one model")
        with torch.no_grad():
            ws = [torch.stack([m.layers[i].weight for m in models]) for i in range(len(models[0].layers))]
            bs = [torch.stack([m.layers[i].bias for m in models]) for i in range(len(models[0].layers))]
        return cls(ws, bs, dropout=models[0].dropout)

    @property
    def num_members(self) -> int:
        return self.weights[0].shape[0]

    @property
    def params(self) -> list[nn.Parameter]:
        return [t for w, b in zip(self.weights, self.biases) for t in (w, b)]

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        k, n = self.num_members, x.shape[0]
        w0, b0 = self.weights[0], self.biases[0]
        # Activations are kept transposed, [K, width, N], so that every product reads and writes contiguous
        # memory: the first layer is one product for the shared input, [K * width, in] @ [in, N].
        h = torch.addmm(b0.reshape(-1, 1), w0.reshape(-1, w0.shape[-1]), x.T).view(k, -1, n)
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = F.relu(h)
            if self.dropout > 0.0 and self.training:
                # The mask F.dropout would multiply one member's [N, width] activations by (same draws).
                mask = F.dropout(torch.ones(n, h.shape[1], dtype=h.dtype, device=h.device), self.dropout, True)
                h = h * mask.T
            h = torch.baddbmm(b.unsqueeze(2), w, h)
        return h.transpose(1, 2)

    @torch.no_grad()
    def member(self, k: int, into: MLP | None = None) -> MLP:
        """Member ``k`` as a :class:`pathsgd.MLP` (its weights copied ``into`` an existing one if given)."""
        if into is None:
            sizes = [self.weights[0].shape[2]] + [w.shape[1] for w in self.weights]
            into = MLP(sizes[0], sizes[-1], hidden=tuple(sizes[1:-1]), dropout=self.dropout)
            into.to(device=self.weights[0].device, dtype=self.weights[0].dtype)
        for layer, w, b in zip(into.layers, self.weights, self.biases):
            layer.weight.copy_(w[k])
            layer.bias.copy_(b[k])
        return into

    @torch.no_grad()
    def select_(self, keep: Sequence[int]) -> StackedMLP:
        """Keep only the members ``keep`` (in that order); the others are dropped for good."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.weights[0].device)
        for plist in (self.weights, self.biases):
            for i, p in enumerate(plist):
                plist[i] = nn.Parameter(p.index_select(0, idx))
        return self

    def extra_repr(self) -> str:
        return f"members={self.num_members}, dropout={self.dropout}"


# --------------------------------------------------------------------------------------------------
# Path geometry, per member
# --------------------------------------------------------------------------------------------------


def _block_rows(w: Tensor) -> int:
    """Rows (of all members at once) per block of work on ``w`` ([K, out, in]): about 2^16 elements per
    member on the CPU (cache; as :func:`pathsgd.geometry.row_blocks`), at most 2^26 in all elsewhere (512 MiB
    of float64)."""
    if w.device.type == "cpu":
        return max(1, (1 << 16) // max(w.shape[2], 1))
    return max(1, (1 << 26) // max(w.shape[0] * w.shape[2], 1))


def _pow_bmv(w: Tensor, p: float, vec: Tensor, *, transpose: bool = False, batched: bool | None = None) -> Tensor:
    """Per member ``|W|^p @ vec`` (or ``|W|^p.T @ vec``) in float64; ``w`` [K, out, in], ``vec`` [K, in|out].

    On the CPU, member by member with :mod:`pathsgd.geometry`'s cache-blocked matvec (a batched product
    with one column runs at a fraction of a matvec's speed there); elsewhere as batched row-vector products
    over blocks of rows. ``batched`` forces one way (tests)."""
    if not (w.device.type != "cpu" if batched is None else batched):
        which = 1 if transpose else 0
        return torch.stack([pow_matvecs(w[k], p, **{"bwd" if transpose else "fwd": vec[k]})[which] for k in range(w.shape[0])])
    k, rows, cols = w.shape
    step = _block_rows(w)
    out = torch.zeros(k, 1, cols if transpose else rows, dtype=SCALE_DTYPE, device=w.device)
    for start in range(0, rows, step):
        z = _abs_pow(w[:, start : start + step], p)
        if transpose:
            out.baddbmm_(vec[:, None, start : start + step], z)
        else:
            out[:, :, start : start + step] = torch.bmm(vec[:, None, :], z.transpose(1, 2))
    return out.squeeze(1)


def _forward_sums(model: StackedMLP, p: float, n_layers: int) -> list[Tensor]:
    w0 = model.weights[0]
    sums = [torch.ones(w0.shape[0], w0.shape[2], dtype=SCALE_DTYPE, device=w0.device)]
    for w, b in list(zip(model.weights, model.biases))[:n_layers]:
        sums.append(_pow_bmv(w, p, sums[-1]) + _abs_pow(b, p))
    return sums


@torch.no_grad()
def stacked_scale_factors(model: StackedMLP, p: float = 2.0) -> list[tuple[Tensor, Tensor]]:
    """Per layer ``(out_factor [K, out], in_factor [K, in])``, float64: gamma_p(W_l[k, j, i]) =
    out_factor[k, j] * in_factor[k, i] and gamma_p(b_l[k, j]) = out_factor[k, j] (Algorithm 1 per member,
    as :func:`pathsgd.geometry.mlp_scale_factors`)."""
    ins = _forward_sums(model, p, len(model.weights) - 1)
    last = model.weights[-1]
    outs = [torch.ones(last.shape[0], last.shape[1], dtype=SCALE_DTYPE, device=last.device)]
    for w in reversed(list(model.weights)[1:]):
        outs.insert(0, _pow_bmv(w, p, outs[0], transpose=True))
    e = 2.0 / p
    if e == 1.0:
        return list(zip(outs, ins))
    return [(o.pow(e), i.pow(e)) for o, i in zip(outs, ins)]


@torch.no_grad()
def stacked_path_norm(model: StackedMLP, p: float = 2.0) -> Tensor:
    """phi_p of every member (eq. 5), float64 ``[K]``."""
    total = _forward_sums(model, p, len(model.weights))[-1].sum(1)
    return total.pow(1.0 / p)


# --------------------------------------------------------------------------------------------------
# The optimizers, batched over members
# --------------------------------------------------------------------------------------------------


def _per_member(v: Tensor, like: Tensor) -> Tensor:
    """``v`` [K] shaped to broadcast against ``like`` [K, ...]."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    r"""SGD, AdaGrad or Path-SGD on the members of a :class:`StackedMLP`, member k with step size ``lrs[k]``.

    The update of each member is the single-tensor rule of ``torch.optim.SGD`` / ``torch.optim.Adagrad`` /
    :class:`pathsgd.PathSGD` (for Path-SGD: :math:`w_e \leftarrow w_e - \eta_k \, g_e / \gamma_2(w, e)`,
    gamma per member in float64, applied as ``g * s * s`` with ``s = sqrt(1/gamma)``), in the same order of
    float32 operations wherever a per-member step allows. Options: :data:`OPTIMIZER_OPTIONS`; any other
    raises ``ValueError`` (no option is ignored).
    """

    def __init__(self, name: str, model: StackedMLP, lrs: Sequence[float], **options) -> None:
        if name not in OPTIMIZER_OPTIONS:
            raise ValueError(f"optimizer={name!r} is unknown: choose one of {', '.join(OPTIMIZER_OPTIONS)}")
        unknown = sorted(set(options) - set(OPTIMIZER_OPTIONS[name]))
        if unknown:
            raise ValueError(
                f"option(s) {unknown} of {name} are not supported by the batched optimizer; "
                f"supported: {sorted(OPTIMIZER_OPTIONS[name])}"
            )
        lrs = [float(lr) for lr in lrs]
        if len(lrs) != model.num_members:
            raise ValueError(f"{len(lrs)} step sizes for {model.num_members} members")
        for lr in lrs:
            if not (math.isfinite(lr) and lr > 0):
                raise ValueError(f"lr={lr!r} is invalid: every step size must be finite and > 0")
        self.name = name
        self.model = model
        self.options = {**OPTIMIZER_OPTIONS[name], **options}
        if name == "pathsgd":
            self.options["p"] = check_p(self.options["p"])
        p0 = model.params[0]
        self.lrs = torch.tensor(lrs, dtype=torch.float64, device=p0.device)
        self.steps = torch.zeros(len(lrs), dtype=torch.float64, device=p0.device)  # updates done, per member
        self.state: list[dict[str, Tensor]] = [{} for _ in model.params]
        if name == "adagrad":
            for s, p in zip(self.state, model.params):
                s["sum"] = torch.full_like(p, float(self.options["initial_accumulator_value"]))

    # ---- conversion from and to the single-run optimizers ----

    @classmethod
    def from_optimizers(cls, name: str, model: StackedMLP, optimizers: Sequence[torch.optim.Optimizer], **options):
        """Stack the step sizes and states of per-member optimizers (``make_optimizer(name, member, lr)``)."""
        lrs = [opt.param_groups[0]["lr"] for opt in optimizers]
        for opt in optimizers:
            if len({g["lr"] for g in opt.param_groups}) != 1:
                raise ValueError("the batched optimizer needs one step size per member (one lr in all its groups)")
        self = cls(name, model, lrs, **options)
        members = [[opt.state.get(p, {}) for g in opt.param_groups for p in g["params"]] for opt in optimizers]
        with torch.no_grad():
            for i, s in enumerate(self.state):
                if name == "sgd" and all(m[i].get("momentum_buffer") is not None for m in members):
                    s["momentum_buffer"] = torch.stack([m[i]["momentum_buffer"] for m in members])
                if name == "adagrad":
                    s["sum"] = torch.stack([m[i]["sum"] for m in members]).to(s["sum"])
            if name == "adagrad":
                self.steps = torch.tensor([float(m[0]["step"]) for m in members], dtype=torch.float64, device=self.steps.device)
            elif name == "sgd" and "momentum_buffer" in self.state[0]:
                self.steps.fill_(1.0)
        return self

    @torch.no_grad()
    def export_to(self, k: int, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Write member ``k``'s state into its single-run ``optimizer`` (built on that member's MLP), so that
        ``optimizer.state_dict()`` is what its separate run would save."""
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for p, s in zip(params, self.state):
            if "momentum_buffer" in s:
                optimizer.state[p]["momentum_buffer"] = s["momentum_buffer"][k].clone()
            if "sum" in s:
                optimizer.state[p]["sum"].copy_(s["sum"][k])
                optimizer.state[p]["step"].fill_(float(self.steps[k]))
        return optimizer

    def select_(self, keep: Sequence[int]) -> StackedOptimizer:
        """Keep the members ``keep``, after :meth:`StackedMLP.select_` on the model with the same ``keep``."""
        idx = torch.as_tensor(list(keep), dtype=torch.long, device=self.lrs.device)
        self.lrs, self.steps = self.lrs[idx], self.steps[idx]
        for s in self.state:
            for key in list(s):
                s[key] = s[key].index_select(0, idx.to(s[key].device))
        return self

    # ---- the step ----

    def zero_grad(self) -> None:
        for p in self.model.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        params = self.model.params
        grads = [p.grad for p in params]
        self.steps += 1
        if self.name == "sgd":
            self._sgd(params, grads)
        elif self.name == "adagrad":
            self._adagrad(params, grads)
        else:
            self._pathsgd(params, grads)

    def _sgd(self, params: list[Tensor], grads: list[Tensor]) -> None:
        o = self.options
        momentum, dampening, wd = float(o["momentum"]), float(o["dampening"]), float(o["weight_decay"])
        for p, g, s in zip(params, grads, self.state):
            if wd != 0:
                g = g.add(p, alpha=wd)
            if momentum != 0:
                buf = s.get("momentum_buffer")
                if buf is None:
                    buf = s["momentum_buffer"] = g.detach().clone()
                else:
                    buf.mul_(momentum).add_(g, alpha=1 - dampening)
                g = g.add(buf, alpha=momentum) if o["nesterov"] else buf
            p.addcmul_(g, _per_member(-self.lrs.to(p.dtype), p))

    def _adagrad(self, params: list[Tensor], grads: list[Tensor]) -> None:
        o = self.options
        wd, eps = float(o["weight_decay"]), float(o["eps"])
        clr = self.lrs / (1 + (self.steps - 1) * float(o["lr_decay"]))
        for p, g, s in zip(params, grads, self.state):
            if wd != 0:
                g = g.add(p, alpha=wd)
            s["sum"].addcmul_(g, g, value=1)
            std = s["sum"].sqrt().add_(eps)
            # torch: p.addcdiv_(g, std, value=-clr), i.e. p + (-clr * g) / std
            p.addcdiv_(g * _per_member(-clr.to(p.dtype), p), std)

    def _pathsgd(self, params: list[Tensor], grads: list[Tensor]) -> None:
        neg_lr = -self.lrs
        factors = stacked_scale_factors(self.model, float(self.options["p"]))
        for (w, b), (gw, gb), (out_f, in_f) in zip(zip(params[0::2], params[1::2]), zip(grads[0::2], grads[1::2]), factors):
            dtype = w.dtype
            r_out, r_in = _root_reciprocal(out_f, dtype), _root_reciprocal(in_f, dtype)
            lr = neg_lr.to(dtype)
            # Weights: grad * s_out * s_in * s_out, times -lr, times s_in (pathsgd.optim.path_sgd_update_),
            # a block of rows at a time so that the temporaries stay small.
            rows = _block_rows(w)
            for start in range(0, w.shape[1], rows):
                blk = slice(start, start + rows)
                r = r_out[:, blk, None]
                step = gw[:, blk] * r
                step.mul_(r_in[:, None, :]).mul_(r).mul_(lr[:, None, None])
                w[:, blk].addcmul_(step, r_in[:, None, :])
            step = gb * r_out
            step.mul_(lr[:, None])
            b.addcmul_(step, r_out)


# --------------------------------------------------------------------------------------------------
# Training and evaluation (as pathsgd.engine, with a loss per member)
# --------------------------------------------------------------------------------------------------


def member_losses(logits: Tensor, y: Tensor) -> Tensor:
    """Mean cross-entropy of each member's logits ``[K, N, C]`` against ``y`` ``[N]``: ``[K]``."""
    k, n, _ = logits.shape
    return F.cross_entropy(logits.transpose(1, 2), y.expand(k, n), reduction="none").mean(1)


def train_step(model: StackedMLP, optimizer: StackedOptimizer, x: Tensor, y: Tensor) -> Tensor:
    """One mini-batch update of every member; returns their batch losses ``[K]`` (detached).

    The members' losses are summed before the backward pass: member k's parameters get the gradient of
    its own loss alone (a non-finite member does not touch the others)."""
    losses = member_losses(model(x), y)
    optimizer.zero_grad()
    losses.sum().backward()
    optimizer.step()
    return losses.detach()


def train_epoch(
    model: StackedMLP,
    optimizer: StackedOptimizer,
    x: Tensor,
    y: Tensor,
    batch_size: int,
    generator: torch.Generator,
    *,
    on_step: Callable[[int, Tensor], None] | None = None,
) -> Tensor:
    """One pass over ``(x, y)`` as :func:`pathsgd.engine.train_epoch` (the same permutation draw from
    ``generator``, the same batches); returns each member's mean batch loss, float64 ``[K]``."""
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be a positive integer")
    model.train()
    n = len(x)
    perm = torch.randperm(n, generator=generator, device=x.device)
    total = torch.zeros(model.num_members, dtype=torch.float64, device=x.device)
    steps = 0
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        total += train_step(model, optimizer, x[idx], y[idx])
        steps += 1
        if on_step is not None:
            on_step(steps, total)
    return total / max(steps, 1)


@torch.no_grad()
def evaluate(model: StackedMLP, x: Tensor, y: Tensor, *, chunk: int = 10000) -> tuple[Tensor, Tensor]:
    """Each member's mean cross-entropy and error fraction on ``(x, y)`` in eval mode: float64 ``[K]`` each.

    ``chunk`` bounds the rows of all members together (each chunk holds ``chunk // K`` inputs)."""
    model.eval()
    k = model.num_members
    rows = max(1, chunk // k)
    loss = torch.zeros(k, dtype=torch.float64, device=x.device)
    wrong = torch.zeros(k, dtype=torch.int64, device=x.device)
    for start in range(0, len(x), rows):
        logits = model(x[start : start + rows])
        target = y[start : start + rows]
        loss += F.cross_entropy(logits.double().transpose(1, 2), target.expand(k, -1), reduction="none").sum(1)
        wrong += (logits.argmax(dim=2) != target).sum(1)
    n = max(len(x), 1)
    return loss / n, wrong.double() / n


@torch.no_grad()
def all_finite(model: StackedMLP) -> Tensor:
    """Bool ``[K]``: every weight and bias of member k is finite."""
    return torch.stack([torch.isfinite(p).flatten(1).all(1) for p in model.params]).all(0)
