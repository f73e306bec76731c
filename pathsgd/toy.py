"""Figure 1(b, c): one SGD and one Path-SGD update of two rescaling-equivalent toy ReLU networks.

The paper's setting: thresholds (biases) fixed at zero, step size 1, and the gradient of the loss with
respect to the network's output equal to delta = -1 for every output unit (so the loss is ``-sum(y)``).

* (b) a 1-1-1 chain, input x = 1: weights (1, 1) beside its rescaling (0.1, 10) (the hidden unit's incoming
  weight multiplied, its outgoing weight divided, by c = 0.1). SGD turns (0.1, 10) into (10.1, 10.1): the
  small weight is blown up, output 102 instead of 4; Path-SGD gives (0.2, 20), the rescaling of its balanced
  update (2, 2), so both networks still compute the same function.
* (c) a 2-2-2 network with all weights 1, input x = (1, 1), delta = (-1, -1), beside the same network with
  hidden unit 0 rescaled by c = 0.1 (two outputs, as the paper's delta has two coordinates). After one SGD
  update the two networks compute very different functions; after one Path-SGD update the same one.

The updates are computed by the package's own optimizers: ``torch.optim.SGD`` and :class:`pathsgd.PathSGD`
on :class:`pathsgd.models.MLP` with frozen zero biases. :func:`toy_table` returns the weights and outputs before
and after; :func:`write_toy_csv` writes them to ``toy.csv`` (read by ``scripts/plot_figures.py``).
"""

from __future__ import annotations

import copy
import csv
import os
from pathlib import Path

import torch

TOY_COLUMNS = ["panel", "network", "state", "kind", "layer", "src", "dst", "value"]
RESCALE = 0.1  # the factor c applied to the rescaled hidden unit

# panel -> (input x, [hidden sizes], weights of the balanced net per layer [out x in])
PANELS = {
    "b": ([1.0], [[[1.0]], [[1.0]]]),
    "c": ([1.0, 1.0], [[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]),
}


def _make_net(weights: list[list[list[float]]]) -> torch.nn.Module:
    from pathsgd.models import MLP

    sizes = [len(w[0]) for w in weights] + [len(weights[-1])]
    model = MLP(sizes[0], sizes[-1], hidden=tuple(sizes[1:-1]), dropout=0.0).double()
    with torch.no_grad():
        for layer, w in zip(model.layers, weights):
            layer.weight.copy_(torch.tensor(w, dtype=torch.float64))
            layer.bias.zero_()
            layer.bias.requires_grad_(False)  # thresholds fixed at zero (paper, Figure 1)
    return model


def _rescaled(model: torch.nn.Module, c: float) -> torch.nn.Module:
    """The same network with hidden unit 0 of hidden layer 0 rescaled by c (rho_{c,v}, eq. 1)."""
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.layers[0].weight[0].mul_(c)
        twin.layers[1].weight[:, 0].div_(c)
    return twin


def _optimizer(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    from pathsgd.optim import PathSGD

    return PathSGD(model, lr=1.0, p=2.0)


def one_update(model: torch.nn.Module, optimizer: str, x: list[float]) -> torch.nn.Module:
    """A copy of ``model`` after one step of size 1 with dL/dy = -1 for every output."""
    model = copy.deepcopy(model)
    opt = _optimizer(optimizer, model)
    y = model(torch.tensor([x], dtype=torch.float64))
    loss = -y.sum()  # dL/dy = delta = -1 per output unit
    opt.zero_grad()
    loss.backward()
    opt.step()
    return model


def _rows(panel: str, network: str, state: str, model: torch.nn.Module, x: list[float]) -> list[dict]:
    rows = []
    for layer, lin in enumerate(model.layers, start=1):
        w = lin.weight.detach()
        for dst in range(w.shape[0]):
            for src in range(w.shape[1]):
                rows.append(dict(panel=panel, network=network, state=state, kind="weight", layer=layer,
                                 src=src, dst=dst, value=float(w[dst, src])))
    with torch.no_grad():
        y = model(torch.tensor([x], dtype=torch.float64))[0]
    for k, v in enumerate(y.tolist()):
        rows.append(dict(panel=panel, network=network, state=state, kind="output", layer=len(model.layers),
                         src="", dst=k, value=float(v)))
    return rows


def toy_table() -> list[dict]:
    """Rows of ``toy.csv``: for each panel, network (balanced | rescaled) and state (init | sgd | pathsgd),
    every edge weight (kind ``weight``; layer 1-based, src/dst unit indices) and every output for the
    panel's input (kind ``output``)."""
    rows = []
    for panel, (x, weights) in PANELS.items():
        balanced = _make_net(weights)
        nets = {"balanced": balanced, "rescaled": _rescaled(balanced, RESCALE)}
        for network, net in nets.items():
            rows += _rows(panel, network, "init", net, x)
            for opt in ("sgd", "pathsgd"):
                rows += _rows(panel, network, opt, one_update(net, opt, x), x)
    return rows


def write_toy_csv(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=TOY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in toy_table():
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
    return path


if __name__ == "__main__":
    import sys

    print(write_toy_csv(sys.argv[1] if len(sys.argv) > 1 else "results/fig1/toy.csv"))
