"""The runner's fast step (pathsgd.fast) against the reference (autograd + optimizer.step()), on the CPU.

Oracle: ``pathsgd.engine.train_step`` with ``torch.optim.SGD``, ``torch.optim.Adagrad`` or
``pathsgd.PathSGD``. Tolerances: the parameters after 10 steps agree to 1e-5 relative (of each tensor's
largest entry); the accumulated update w_10 - w_0 to 1e-4 relative (in norm), since any float32
implementation rounds w itself to 6e-8 |w| and the update is about 1e-2 |w| here.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pathsgd import MLP, balanced_init_, unbalanced_init_
from pathsgd.engine import make_optimizer, train_epoch, train_step
from pathsgd.fast import FastStep, fast_step, unsupported_reason
from pathsgd.geometry import mlp_path_sums, mlp_scale_factors

IN, OUT, HIDDEN, BATCH = 20, 10, (64, 48), 32
LR = {"sgd": 0.1, "adagrad": 0.01, "pathsgd": 0.02}


def data(n: int = 10 * BATCH, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=g)
    y = (x @ torch.randn(IN, OUT, generator=g)).argmax(1)
    return x, y


def model_pair(dropout: float, init: str, dtype=torch.float32):
    """The reference model and an identical copy; for ``unbalanced``, the per-layer log10 unit factors."""
    ref = MLP(IN, OUT, hidden=HIDDEN, dropout=dropout).to(dtype)
    balanced_init_(ref, torch.Generator().manual_seed(1))
    exps = None
    if init == "unbalanced":  # the paper's init: weights from about 1e-15 to 1e15 here
        exps = unbalanced_init_(ref, torch.Generator().manual_seed(2), n_units=64, max_exponent=15.0)
        assert max(w.abs().max().item() for w in ref.parameters()) > 1e6
    return ref, copy.deepcopy(ref), exps


def balanced_coordinates(model: MLP, exps) -> list[torch.Tensor]:
    """Parameters with the init's unit rescalings undone (float64), so that errors compare on one scale."""
    params = []
    for layer, lin in enumerate(model.layers):
        w, b = lin.weight.detach().double(), lin.bias.detach().double()
        if exps is not None:
            if layer < len(exps):
                w, b = w / 10.0 ** exps[layer][:, None], b / 10.0 ** exps[layer]
            if layer > 0:
                w = w * 10.0 ** exps[layer - 1][None, :]
        params += [w, b]
    return params


def assert_same_training(ref, fast, w0, exps=None):
    for a, b, a0 in zip(balanced_coordinates(ref, exps), balanced_coordinates(fast, exps), w0):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max(), (a - b).abs().max() / a.abs().max()
        update = a - a0
        assert update.norm() > 1e-3 * a0.norm(), "the test must train: the update is not tiny"
        assert (b - a0 - update).norm() <= 1e-4 * update.norm(), (b - a0 - update).norm() / update.norm()


CASES = [(opt, drop, "balanced") for opt in ("sgd", "adagrad", "pathsgd") for drop in (0.0, 0.5)]
CASES += [("pathsgd", drop, "unbalanced") for drop in (0.0, 0.5)]


@pytest.mark.parametrize("optimizer,dropout,init", CASES)
def test_fast_step_equals_reference_over_10_steps(optimizer, dropout, init):
    x, y = data()
    ref, fast, exps = model_pair(dropout, init)
    w0 = balanced_coordinates(ref, exps)
    opt_ref, opt_fast = make_optimizer(optimizer, ref, LR[optimizer]), make_optimizer(optimizer, fast, LR[optimizer])
    step = FastStep(fast, opt_fast)
    ref.train(), fast.train()
    for i in range(10):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        torch.manual_seed(100 + i)  # the same dropout masks
        loss_ref = train_step(ref, opt_ref, xb, yb)
        torch.manual_seed(100 + i)
        loss_fast = step(xb, yb)
        torch.testing.assert_close(loss_fast, loss_ref, rtol=1e-5, atol=0)
    assert_same_training(ref, fast, w0, exps)
    if optimizer == "adagrad":
        for p_ref, p_fast in zip(ref.parameters(), fast.parameters()):
            s_ref, s_fast = opt_ref.state[p_ref], opt_fast.state[p_fast]
            assert s_fast["step"] == s_ref["step"] == 10
            torch.testing.assert_close(s_fast["sum"], s_ref["sum"], rtol=1e-5, atol=1e-12)


def test_dropout_is_applied_and_follows_the_seed():
    """Guard against a fast step that ignores dropout: with different masks the updates differ."""
    x, y = data()
    _, a, _ = model_pair(0.5, "balanced")
    b = copy.deepcopy(a)
    for model, seed in ((a, 1), (b, 2)):
        step = FastStep(model, make_optimizer("sgd", model, 0.1))
        model.train()
        torch.manual_seed(seed)
        step(x[:BATCH], y[:BATCH])
    assert not torch.equal(a.layers[0].weight, b.layers[0].weight)


def test_path_sgd_fast_step_differs_from_sgd():
    """Guard against a no-op path scaling (the authors' code's bug): the update is not SGD's."""
    x, y = data()
    _, a, _ = model_pair(0.0, "balanced")
    b = copy.deepcopy(a)
    FastStep(a, make_optimizer("pathsgd", a, 0.02))(x[:BATCH], y[:BATCH])
    FastStep(b, make_optimizer("sgd", b, 0.02))(x[:BATCH], y[:BATCH])
    assert (a.layers[1].weight - b.layers[1].weight).abs().max() > 1e-4


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
def test_train_epoch_fast_equals_reference_epoch(optimizer):
    """A whole epoch through train_epoch: same permutation, a smaller last batch, dropout, same mean loss."""
    x, y = data(n=10 * BATCH + 7)
    ref, fast, _ = model_pair(0.5, "balanced")
    w0 = balanced_coordinates(ref, None)
    losses = []
    for model, use_fast in ((ref, False), (fast, True)):
        opt = make_optimizer(optimizer, model, LR[optimizer])
        torch.manual_seed(5)
        losses.append(train_epoch(model, opt, x, y, BATCH, torch.Generator().manual_seed(3), fast=use_fast))
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=0)
    assert_same_training(ref, fast, w0)


class HostSync(AssertionError):
    pass


def forbid_host_sync(monkeypatch):
    """Every Tensor -> Python conversion raises: an epoch that needs the host's view of a value fails."""

    def trap(self, *args, **kwargs):
        raise HostSync("a tensor was read on the host during the epoch")

    for name in ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, trap)


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
def test_fast_epoch_reads_nothing_on_the_host(monkeypatch, optimizer):
    x, y = data(n=4 * BATCH + 5)
    _, model, _ = model_pair(0.5, "balanced")
    opt = make_optimizer(optimizer, model, LR[optimizer])
    gen = torch.Generator().manual_seed(0)
    with monkeypatch.context() as m:
        forbid_host_sync(m)
        loss = train_epoch(model, opt, x, y, BATCH, gen, fast=True)
    assert torch.isfinite(loss)


def test_the_host_sync_trap_catches_the_reference_adagrad(monkeypatch):
    """The trap can fail: torch's AdaGrad reads its step counter with .item() every step."""
    x, y = data(n=2 * BATCH)
    _, model, _ = model_pair(0.0, "balanced")
    opt = make_optimizer("adagrad", model, 0.01)
    with monkeypatch.context() as m:
        forbid_host_sync(m)
        with pytest.raises(HostSync):
            train_epoch(model, opt, x, y, BATCH, torch.Generator().manual_seed(0), fast=False)


@pytest.mark.parametrize(
    "build,reason",
    [
        (lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9), "momentum"),
        (lambda m: torch.optim.SGD(m.parameters(), lr=0.1, weight_decay=1e-4), "weight decay"),
        (lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1, lr_decay=0.1), "lr_decay"),
        (lambda m: torch.optim.Adam(m.parameters(), lr=0.1), "Adam"),
    ],
)
def test_unsupported_optimizers_use_the_reference_step(build, reason):
    x, y = data(n=2 * BATCH)
    _, model, _ = model_pair(0.0, "balanced")
    opt = build(model)
    assert reason in unsupported_reason(model, opt)
    assert fast_step(model, opt) is None
    with pytest.raises(ValueError, match=reason):
        train_epoch(model, opt, x, y, BATCH, torch.Generator().manual_seed(0), fast=True)
    before = model.layers[0].weight.detach().clone()
    train_epoch(model, opt, x, y, BATCH, torch.Generator().manual_seed(0))  # fast=None: the reference step
    assert not torch.equal(before, model.layers[0].weight)


def test_a_sequential_model_uses_the_reference_step():
    net = nn.Sequential(nn.Linear(IN, 8), nn.ReLU(), nn.Linear(8, OUT))
    assert "Sequential" in unsupported_reason(net, torch.optim.SGD(net.parameters(), lr=0.1))


def test_fast_step_is_cached_and_rebuilt_when_the_state_is_replaced():
    _, model, _ = model_pair(0.0, "balanced")
    opt = make_optimizer("adagrad", model, 0.01)
    step = fast_step(model, opt)
    assert fast_step(model, opt) is step
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # new state tensors: the old step would miss them
    rebuilt = fast_step(model, opt)
    assert rebuilt is not step
    assert rebuilt._adagrad_groups[0][3][0] is opt.state[model.layers[0].weight]["sum"]
    opt.param_groups[0]["lr"] = 0.5  # a new learning rate: rebuilt as well
    assert fast_step(model, opt) is not rebuilt


def test_only_the_optimizer_parameters_move():
    """PathSGD with param_groups that leave the first layer out: the fast step leaves it alone too."""
    from pathsgd import PathSGD

    x, y = data()
    ref, fast, _ = model_pair(0.0, "balanced")
    w0 = balanced_coordinates(ref, None)
    opts = [PathSGD(m, lr=0.02, param_groups=[{"params": list(m.layers[1:].parameters())}]) for m in (ref, fast)]
    step = FastStep(fast, opts[1])
    for i in range(10):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        train_step(ref, opts[0], xb, yb)
        step(xb, yb)
    assert torch.equal(fast.layers[0].weight, ref.layers[0].weight)
    for a, b, a0 in zip(balanced_coordinates(ref, None)[2:], balanced_coordinates(fast, None)[2:], w0[2:]):
        assert (a - b).abs().max() <= 1e-5 * a.abs().max()


@pytest.mark.parametrize("hidden", [(7,), (7, 9), (7, 9, 5), (4, 6, 8, 3)])
@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_fused_scale_factors_equal_geometry(hidden, p):
    model = MLP(5, 3, hidden=hidden).double()
    balanced_init_(model, torch.Generator().manual_seed(0))
    # the fused one-pass-per-layer chains against Algorithm 1's two separate chains
    ins, outs, _ = mlp_path_sums(list(model.layers), p)
    separate = [(o ** (2 / p), i ** (2 / p)) for o, i in zip(outs, ins)]
    for (o1, i1), (o2, i2) in zip(separate, mlp_scale_factors(list(model.layers), p), strict=True):
        torch.testing.assert_close(o2, o1, rtol=1e-12, atol=0)
        torch.testing.assert_close(i2, i1, rtol=1e-12, atol=0)


def test_capture_graph_on_the_cpu_runs_eagerly():
    x, y = data(n=3 * BATCH)
    ref, fast, _ = model_pair(0.0, "balanced")
    eager = copy.deepcopy(ref)
    for model, kwargs in ((ref, {"fast": False}), (eager, {}), (fast, {"capture": "graph"})):
        torch.manual_seed(0)
        train_epoch(model, make_optimizer("sgd", model, 0.1), x, y, BATCH, torch.Generator().manual_seed(0), **kwargs)
    for a, b, c in zip(ref.parameters(), eager.parameters(), fast.parameters()):
        assert torch.equal(b, c)  # "graph" on the CPU is the eager fast step, exactly
        torch.testing.assert_close(c, a, rtol=1e-5, atol=1e-6)  # which is the reference step
    initial = model_pair(0.0, "balanced")[0]
    assert not torch.equal(initial.layers[0].weight, fast.layers[0].weight)  # and it trained


def test_fast_step_lives_and_dies_with_its_optimizer():
    import gc
    import weakref

    _, model, _ = model_pair(0.0, "balanced")
    opt = make_optimizer("pathsgd", model, 0.1)
    x, y = data(n=BATCH)
    train_epoch(model, opt, x, y, BATCH, torch.Generator().manual_seed(0))
    assert fast_step(model, opt) is fast_step(model, opt)  # cached
    alive = weakref.ref(opt), weakref.ref(model)
    del opt, model
    gc.collect()
    assert alive[0]() is None and alive[1]() is None


def test_bad_capture_mode_is_an_error():
    _, model, _ = model_pair(0.0, "balanced")
    with pytest.raises(ValueError, match="capture='cuda'"):
        FastStep(model, make_optimizer("sgd", model, 0.1), capture="cuda")


# --------------------------------------------------------------------------------------------------
# CUDA only (skipped on a CPU-only machine): no sync under the sync debug mode, and the graph's steps
# equal the eager ones.
# --------------------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
def test_cuda_fast_epoch_does_not_sync(optimizer):
    x, y = (t.cuda() for t in data(n=8 * BATCH + 5))
    _, model, _ = model_pair(0.5, "balanced")
    model.cuda()
    opt = make_optimizer(optimizer, model, LR[optimizer])
    gen = torch.Generator(device="cuda").manual_seed(0)
    train_epoch(model, opt, x, y, BATCH, gen)  # warm-up (lazy CUDA/cuBLAS initialization may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = train_epoch(model, opt, x, y, BATCH, gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()


@cuda
@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "pathsgd"])
@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_cuda_graph_equals_eager(optimizer, dropout):
    x, y = (t.cuda() for t in data(n=12 * BATCH + 5))
    ref, fast, _ = model_pair(dropout, "balanced")
    ref.cuda(), fast.cuda()
    w0 = balanced_coordinates(ref, None)
    results = []
    for model, capture in ((ref, None), (fast, "graph")):
        opt = make_optimizer(optimizer, model, LR[optimizer])
        torch.cuda.manual_seed(7)
        gen = torch.Generator(device="cuda").manual_seed(3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a capture that fell back to eager warns
            losses = [train_epoch(model, opt, x, y, BATCH, gen, capture=capture) for _ in range(2)]
        results.append(torch.stack(losses))
        if capture == "graph":
            assert fast_step(model, opt, capture="graph")._graph is not None, "the step was not captured"
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=0)
    assert_same_training(ref, fast, [w.cuda() for w in w0])


@cuda
def test_cuda_fast_step_equals_reference():
    x, y = (t.cuda() for t in data())
    ref, fast, _ = model_pair(0.5, "balanced")
    ref.cuda(), fast.cuda()
    w0 = [w.cuda() for w in balanced_coordinates(ref, None)]
    opt_ref, opt_fast = make_optimizer("pathsgd", ref, 0.02), make_optimizer("pathsgd", fast, 0.02)
    step = FastStep(fast, opt_fast)
    for i in range(10):
        xb, yb = x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH]
        torch.cuda.manual_seed(100 + i)
        train_step(ref, opt_ref, xb, yb)
        torch.cuda.manual_seed(100 + i)
        step(xb, yb)
    assert_same_training(ref, fast, w0)


def test_cross_entropy_gradient_is_softmax_minus_onehot():
    """The hand-written backward's first line, against autograd."""
    logits = torch.randn(6, OUT, requires_grad=True)
    y = torch.randint(0, OUT, (6,))
    F.cross_entropy(logits, y).backward()
    d = torch.softmax(logits.detach(), 1)
    d.scatter_add_(1, y.view(-1, 1), torch.full((6, 1), -1.0))
    torch.testing.assert_close(d / 6, logits.grad)


def test_capture_options_are_checked():
    x, y = data(n=2 * BATCH)
    _, model, _ = model_pair(0.0, "balanced")
    opt = make_optimizer("sgd", model, 0.1)
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="fast=False"):
        train_epoch(model, opt, x, y, BATCH, gen, fast=False, capture="graph")
    with pytest.raises(ValueError, match="capture='bogus' is unknown"):
        train_epoch(model, opt, x, y, BATCH, gen, capture="bogus")
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="capture='graph' is ignored"):
        train_epoch(model, adam, x, y, BATCH, gen, capture="graph")
