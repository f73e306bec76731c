"""Rescalings rho_{c,v} (eq. 1) and the paper's balanced and unbalanced initializations (section 5)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .geometry import layered_linears
from .models import ConvNet


def _linears(model: nn.Module) -> list[nn.Linear]:
    linears = layered_linears(model)
    if linears is None:
        raise ValueError(
            f"{type(model).__name__} is not a layered ReLU MLP (pathsgd.MLP, or nn.Sequential of Linear "
            "layers with a ReLU between consecutive ones): hidden units cannot be addressed by (layer, unit)"
        )
    return linears


@torch.no_grad()
def rescale_unit_(model: nn.Module, layer: int, unit: int, c: float) -> nn.Module:
    """Apply rho_{c,v} in place to hidden unit ``unit`` of hidden layer ``layer`` (both 0-based).

    Incoming weights and the bias of the unit are multiplied by ``c``, its outgoing weights divided
    by ``c``. For ``c > 0`` the network computes the same function (ReLU is positively homogeneous).
    """
    linears = _linears(model)
    n_hidden = len(linears) - 1
    if not 0 <= layer < n_hidden:
        raise ValueError(f"layer={layer} is out of range: the model has hidden layers 0..{n_hidden - 1}")
    width = linears[layer].out_features
    if not 0 <= unit < width:
        raise ValueError(f"unit={unit} is out of range: hidden layer {layer} has units 0..{width - 1}")
    c = float(c)
    if not (math.isfinite(c) and c > 0):
        raise ValueError(f"c={c!r} is invalid: a rescaling factor must be finite and > 0")
    incoming, outgoing = linears[layer], linears[layer + 1]
    incoming.weight[unit].mul_(c)
    if incoming.bias is not None:
        incoming.bias[unit].mul_(c)
    outgoing.weight[:, unit].div_(c)
    return model


@torch.no_grad()
def balanced_init_(model: nn.Module, generator: torch.Generator | None = None) -> nn.Module:
    """The paper's balanced initialization: the incoming weights of every unit are i.i.d.
    N(0, 1/fan_in); biases are 0 (the paper is silent on biases; zero keeps the init balanced).

    Applies to every Linear and Conv layer of ``model``. Draws on the CPU from ``generator`` so a
    seed gives the same weights on every device.
    """
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=generator, dtype=torch.float64) / math.sqrt(fan_in)
            m.weight.copy_(w)
            if m.bias is not None:
                m.bias.zero_()
    return model


UNBALANCED_MODES = ("power", "linear")


@torch.no_grad()
def unbalanced_init_(
    model: nn.Module,
    generator: torch.Generator | None = None,
    n_units: int | None = None,
    *,
    base_mode: str = "power",
    mu: float = 0.0,
    sigma: float = 1.0,
    max_exponent: float = 30.0,
) -> list[torch.Tensor]:
    """The paper's unbalanced initialization, applied to the model's current weights.

    "We picked 2000 hidden units randomly with replacement. For each unit, we multiplied its incoming
    edge and divided its outgoing edge by 10c, where c was chosen randomly from log-normal
    distribution." Here: ``n_units`` draws (default: a quarter of all hidden units, the paper's 2000
    at 2 x 4000), uniform with replacement over all hidden units of all layers, each with
    c ~ LogNormal(mu, sigma), applying rho_{factor, unit} with

    * ``base_mode="power"`` (default): factor = 10**c, the reading under which the init is unbalanced
      enough to wreck SGD, as the paper's Figure 1(a) shows;
    * ``base_mode="linear"``: factor = 10*c, the text's literal "10c".

    A unit drawn several times compounds its factors (their log10's add). Read literally, 10**c with
    2000 log-normal draws reaches factors near 1e40 in about one seed in four, beyond float32. So each
    unit's *total* log10 factor is clipped to ``[-max_exponent, max_exponent]``; with the default 30
    and N(0, 1/fan_in) weights every weight, and every ratio of two units' factors, stays well within
    float32. If a weight would still become non-finite or underflow to zero (a too large
    ``max_exponent`` for the dtype, or weights already extreme), nothing is changed and ``ValueError``
    is raised.

    On the runner's ``ConvNet`` a unit is a channel: each inner channel of the residual block, and each channel of
    the stem, whose rescaling by c multiplies the stem's and the block's last conv's output channel by c and
    divides what reads it (the block's first conv, the head) by c; the skip edge keeps its weight 1.

    Returns the applied log10 factors, one float64 tensor per hidden layer (ConvNet: the stem's, then the
    block's inner channels), 0 for untouched units.
    """
    if base_mode not in UNBALANCED_MODES:
        raise ValueError(f"base_mode={base_mode!r} is unknown: choose one of {', '.join(UNBALANCED_MODES)}")
    for name, value in (("mu", mu), ("sigma", sigma), ("max_exponent", max_exponent)):
        if not math.isfinite(value):
            raise ValueError(f"{name}={value!r} is invalid: it must be finite")
    if sigma < 0 or max_exponent < 0:
        raise ValueError(f"sigma={sigma!r} and max_exponent={max_exponent!r} must be >= 0")
    rescale = _conv_net_rescaling if isinstance(model, ConvNet) else _mlp_rescaling
    params, widths, apply = rescale(model)
    total_units = sum(widths)
    if n_units is None:
        n_units = total_units // 4
    if not isinstance(n_units, int) or n_units < 0:
        raise ValueError(f"n_units={n_units!r} is invalid: it must be a non-negative integer")

    picks = torch.randint(total_units, (n_units,), generator=generator)
    c = torch.exp(mu + sigma * torch.randn(n_units, generator=generator, dtype=torch.float64))
    log10_factor = c if base_mode == "power" else torch.log10(10.0 * c)
    exponents = torch.zeros(total_units, dtype=torch.float64).index_add_(0, picks, log10_factor)
    exponents.clamp_(-max_exponent, max_exponent)
    per_layer = list(exponents.split(widths))

    # Compute the new weights aside and commit them only if all are finite and none underflowed.
    new = {name: p.detach().to(torch.float64).clone() for name, p in params.items()}
    apply(new, [torch.pow(10.0, e).to(next(iter(params.values())).device) for e in per_layer])
    for name, old in params.items():
        cast = new[name].to(old.dtype)
        if not torch.isfinite(cast).all() or ((cast == 0) & (old != 0)).any():
            raise ValueError(
                f"unbalanced_init_ with max_exponent={max_exponent} would overflow or underflow "
                f"{old.dtype} weights; lower max_exponent"
            )
    for name, old in params.items():
        old.copy_(new[name])
    return per_layer


def _mlp_rescaling(model: nn.Module):
    """A layered MLP's weights, hidden widths, and how per-unit factors rescale them (``rescale_unit_`` at once)."""
    linears = _linears(model)
    params = {f"{i}.{kind}": p for i, lin in enumerate(linears)
              for kind, p in (("weight", lin.weight), ("bias", lin.bias)) if p is not None}

    def apply(new, factors):
        for layer, factor in enumerate(factors):
            new[f"{layer}.weight"].mul_(factor[:, None])
            if f"{layer}.bias" in new:
                new[f"{layer}.bias"].mul_(factor)
            new[f"{layer + 1}.weight"].div_(factor[None, :])

    return params, [lin.out_features for lin in linears[:-1]], apply


def _conv_net_rescaling(model: ConvNet):
    """ConvNet's weights, its two groups of channel units (stem, block's inner), and how factors rescale them."""
    params = dict(model.named_parameters())
    channels = model.stem.out_channels

    def apply(new, factors):
        stem, inner = factors
        for conv, out, read in (("stem", stem, None), ("block.0", inner, stem), ("block.2", stem, inner)):
            new[f"{conv}.weight"].mul_(out[:, None, None, None])
            new[f"{conv}.bias"].mul_(out)
            if read is not None:
                new[f"{conv}.weight"].div_(read[None, :, None, None])
        per_column = model.head.in_features // channels  # the head reads the pooled map channel by channel
        new["head.weight"].div_(stem.repeat_interleave(per_column)[None, :])

    return params, [channels, channels], apply
