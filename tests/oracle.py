"""Brute-force path enumeration: the test oracle for path_scales and path_norm.

Builds the network's unit-level DAG explicitly (one node per input, hidden and output unit, one
constant-1 node per biased layer), with every edge tagged by the weight entry that carries it
(found by switching parameter entries on one at a time), then walks every source->output path.
Deliberately naive and independent of pathsgd.geometry: exponential cost, tiny networks only.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn

from pathsgd import MLP


class Residual(nn.Module):
    """out = x + inner(x): a skip edge of weight 1 from each unit of x."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return x + self.inner(x)


def _as_chain(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, MLP):
        chain = []
        for layer in model.layers[:-1]:
            chain += [layer, nn.ReLU()]
        return chain + [model.layers[-1]]
    if isinstance(model, nn.Sequential):
        return list(model)
    raise TypeError(f"oracle handles MLP and nn.Sequential, not {type(model).__name__}")


class _Graph:
    def __init__(self):
        self.n = 0
        self.sources = []
        self.into = defaultdict(list)  # node -> [(src node, weight, tag or None)]

    def new(self, k):
        ids = list(range(self.n, self.n + k))
        self.n += k
        return ids


def _affine_pieces(m: nn.Module, shape):
    """Input->output matrix and bias vector of the affine op m on one example of ``shape``."""
    x0 = torch.zeros(1, *shape, dtype=torch.float64)
    n_in = x0.numel()
    with torch.no_grad():
        b = m(x0).flatten()
        eye = torch.eye(n_in, dtype=torch.float64).view(n_in, *shape)
        J = (m(eye).reshape(n_in, -1) - b).T  # [n_out, n_in]; exact for an affine op
        out_shape = m(x0).shape[1:]
    return J, b, out_shape


def _add_affine(g: _Graph, m: nn.Module, names: dict, nodes, shape):
    J, b, out_shape = _affine_pieces(m, shape)
    outs = g.new(J.shape[0])
    params = list(m.named_parameters(recurse=False))
    if not params:  # a fixed-weight op such as average pooling: untagged edges
        for o in range(J.shape[0]):
            for i in range(J.shape[1]):
                if J[o, i] != 0:
                    g.into[outs[o]].append((nodes[i], J[o, i].item(), None))
        return outs, out_shape
    # Which weight entry carries each edge: switch entries on one at a time.
    saved = {n: p.detach().clone() for n, p in params}
    edge_tag, bias_tag = {}, {}
    with torch.no_grad():
        for pname, p in params:
            for k in range(p.numel()):
                for n2, q in params:
                    q.zero_()
                p.view(-1)[k] = 1.0
                Jk, bk, _ = _affine_pieces(m, shape)
                tag = (names[id(p)], k)
                for o, i in torch.nonzero(Jk).tolist():
                    assert (o, i) not in edge_tag, "an edge carried by two weights"
                    edge_tag[o, i] = tag
                for o in torch.nonzero(bk).flatten().tolist():
                    bias_tag[o] = tag
        for n2, q in params:
            q.copy_(saved[n2])
    for (o, i), tag in edge_tag.items():
        g.into[outs[o]].append((nodes[i], J[o, i].item(), tag))
    if bias_tag:
        const = g.new(1)[0]
        g.sources.append(const)
        for o, tag in bias_tag.items():
            g.into[outs[o]].append((const, b[o].item(), tag))
    return outs, out_shape


def _build(g: _Graph, chain, names, nodes, shape):
    for m in chain:
        if isinstance(m, (nn.ReLU, nn.Dropout, nn.Identity)):
            continue
        if isinstance(m, nn.Flatten):
            shape = (int(torch.tensor(shape).prod()),)
        elif isinstance(m, Residual):
            inner_nodes, inner_shape = _build(g, _as_chain(m.inner), names, nodes, shape)
            assert tuple(inner_shape) == tuple(shape)
            outs = g.new(len(nodes))
            for o, (a, b) in enumerate(zip(nodes, inner_nodes)):
                g.into[outs[o]] += [(a, 1.0, None), (b, 1.0, None)]
            nodes = outs
        else:
            nodes, shape = _add_affine(g, m, names, nodes, tuple(shape))
    return nodes, shape


def enumerate_paths(model: nn.Module, p: float, input_shape):
    """Every input->output path of ``model``, explicitly.

    Returns ``(phi_p^p, gamma, n_paths)`` where gamma maps each parameter name to a float64 tensor
    of eq. (9): (sum over paths through the entry's edges of prod_{other edges} |w|^p)^(2/p).
    """
    model = model.double()
    names = {id(p): n for n, p in model.named_parameters()}
    g = _Graph()
    inputs = g.new(int(torch.tensor(input_shape).prod()))
    g.sources += inputs
    outputs, _ = _build(g, _as_chain(model), names, inputs, tuple(input_shape))

    # Walk backwards from every output to every source: each walk is one path (edge list).
    paths = []

    def walk(node, edges):
        if node in g.sources and not g.into[node]:
            paths.append(edges)
        for src, w, tag in g.into[node]:
            walk(src, edges + [(w, tag)])

    for out in outputs:
        walk(out, [])

    total = 0.0
    sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in model.named_parameters()}
    for edges in paths:
        weights = [abs(w) ** p for w, _ in edges]
        prod = 1.0
        for w in weights:
            prod *= w
        total += prod
        for j, (_, tag) in enumerate(edges):
            if tag is not None:
                others = 1.0
                for k, w in enumerate(weights):
                    if k != j:
                        others *= w
                name, flat = tag
                sums[name].view(-1)[flat] += others
    gamma = {n: s ** (2.0 / p) for n, s in sums.items()}
    return total, gamma, len(paths)
