"""Path-SGD with momentum, Path-AdaGrad and Path-Adam: Theorem 4.1 for each (and torch's counterparts fail it),
each equal to its torch counterpart where gamma is 1 on every edge, and the paper's unbalanced init in float32."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pathsgd import MLP, PathAdaGrad, PathAdam, PathSGD, balanced_init_, unbalanced_init_


VARIANTS = {
    "momentum": lambda m: PathSGD(m, lr=0.05, momentum=0.9),
    "momentum+dampening": lambda m: PathSGD(m, lr=0.05, momentum=0.9, dampening=0.3),
    "nesterov": lambda m: PathSGD(m, lr=0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda m: PathAdaGrad(m, lr=0.05),
    "adam": lambda m: PathAdam(m, lr=0.01),
    "adam+decoupled weight decay": lambda m: PathAdam(m, lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("make_opt", VARIANTS.values(), ids=VARIANTS.keys())
def test_theorem_4_1_holds_for_each_path_variant(make_opt, check_invariance):
    check_invariance(make_opt, steps=6, rtol=1e-9)


TORCH = {
    "SGD momentum": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9),
    "SGD nesterov": lambda m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, nesterov=True),
    "Adagrad": lambda m: torch.optim.Adagrad(m.parameters(), lr=0.05),
    "Adam": lambda m: torch.optim.Adam(m.parameters(), lr=0.01),
    "AdamW": lambda m: torch.optim.AdamW(m.parameters(), lr=0.01, weight_decay=0.1),
    "Adam with L2 on the path variant's direction": lambda m: torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1),
}


@pytest.mark.parametrize("make_opt", TORCH.values(), ids=TORCH.keys())
def test_torch_counterparts_fail_the_invariance_test(make_opt, check_invariance):
    with pytest.raises(AssertionError, match=r"step \d+, layers\.\d\.(weight|bias)"):  # w~(t) != rho(w(t))
        check_invariance(make_opt, steps=6, rtol=1e-9)


PAIRS = {  # path variant, its torch counterpart: equal where gamma = 1
    "momentum": (lambda m: PathSGD(m, 0.05, momentum=0.9, dampening=0.2),
                 lambda m: torch.optim.SGD(m.parameters(), 0.05, momentum=0.9, dampening=0.2)),
    "nesterov": (lambda m: PathSGD(m, 0.05, momentum=0.8, nesterov=True),
                 lambda m: torch.optim.SGD(m.parameters(), 0.05, momentum=0.8, nesterov=True)),
    "plain": (lambda m: PathSGD(m, 0.05), lambda m: torch.optim.SGD(m.parameters(), 0.05)),
    "adagrad": (lambda m: PathAdaGrad(m, 0.05, eps=1e-6), lambda m: torch.optim.Adagrad(m.parameters(), 0.05, eps=1e-6)),
    "adam": (lambda m: PathAdam(m, 0.01, betas=(0.8, 0.95), eps=1e-6),
             lambda m: torch.optim.Adam(m.parameters(), 0.01, betas=(0.8, 0.95), eps=1e-6)),
    "adamw": (lambda m: PathAdam(m, 0.01, weight_decay=0.3),
              lambda m: torch.optim.AdamW(m.parameters(), 0.01, weight_decay=0.3, foreach=False)),
}


@pytest.mark.parametrize("pair", PAIRS.values(), ids=PAIRS.keys())
def test_with_gamma_one_each_variant_is_its_torch_counterpart(pair, batches):
    """A network without hidden units has gamma = 1 on every edge: the same trajectory as torch's, in float64.
    (The adaptive variants step about lr / sqrt(gamma) per weight, so on a hidden layer their lr is smaller.)"""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 3)).double()
    twin, start = copy.deepcopy(net), copy.deepcopy(net)
    ours, theirs = pair[0](net), pair[1](twin)
    for x, y in batches(8):
        for model, opt in ((net, ours), (twin, theirs)):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        for a, b in zip(net.parameters(), twin.parameters()):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-15)
    assert not torch.equal(net[0].weight, start[0].weight)  # it moved


@pytest.mark.parametrize("make_opt", [lambda m: PathSGD(m, 1e-3, momentum=0.9), lambda m: PathAdaGrad(m, 1e-4),
                                      lambda m: PathAdam(m, 1e-6)], ids=["momentum", "adagrad", "adam"])
def test_unbalanced_init_in_float32_tracks_the_balanced_run(make_opt):
    """The paper's input size and unbalanced init on a narrower net: units scaled beyond 1e10 (the overflow risk
    comes from the rescaling, not from the width), and still the balanced run's losses in float32."""
    torch.manual_seed(0)
    balanced = MLP(784, 10, hidden=(256, 256)).float()
    balanced_init_(balanced, torch.Generator().manual_seed(0))
    unbalanced = copy.deepcopy(balanced)
    exps = unbalanced_init_(unbalanced, torch.Generator().manual_seed(1))
    assert max(e.max().item() for e in exps) > 10  # some unit scaled beyond 1e10
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(784, 10, generator=g)
    data = [(x, ((x - 0.5) @ teacher).argmax(1)) for x in (torch.rand(100, 784, generator=g) for _ in range(8))]
    def whole(model):
        with torch.no_grad():
            return sum(F.cross_entropy(model(x), y).item() for x, y in data) / len(data)

    start = whole(balanced)
    losses = {}
    for name, model in (("balanced", balanced), ("unbalanced", unbalanced)):
        opt = make_opt(model)
        losses[name] = []
        for x, y in data:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert all(math.isfinite(v) for v in losses["balanced"] + losses["unbalanced"])
    assert whole(balanced) < start  # it trains
    torch.testing.assert_close(torch.tensor(losses["unbalanced"]), torch.tensor(losses["balanced"]), rtol=1e-3, atol=0)


def test_state_dict_round_trip_continues_the_same_trajectory(batches):
    torch.manual_seed(0)
    model = MLP(6, 3, hidden=(5,)).double()
    data = batches(6)
    runs = []
    for split in (None, 3):
        m = copy.deepcopy(model)
        opt = PathAdam(m, 0.01)
        for t, (x, y) in enumerate(data):
            if t == split:  # a fresh optimizer from the saved state
                state = copy.deepcopy(opt.state_dict())
                opt = PathAdam(m, 0.5)
                opt.load_state_dict(state)
            opt.step(lambda x=x, y=y, m=m, opt=opt: (opt.zero_grad(), F.cross_entropy(m(x), y).backward()))
        runs.append(m)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("build, message", [
    (lambda m: PathSGD(m, 0.1, momentum=-1.0), "momentum=-1.0 is invalid"),
    (lambda m: PathSGD(m, 0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda m: PathAdaGrad(m, 0.1, eps=float("nan")), "eps=nan is invalid"),
    (lambda m: PathAdam(m, 0.1, betas=(1.0, 0.9)), r"betas=\(1.0, 0.9\) is invalid"),
    (lambda m: PathAdam(m, 0.1, weight_decay=-1.0), "weight_decay=-1.0 is invalid"),
    (lambda m: PathAdam(m, float("inf")), "lr=inf is invalid"),
    (lambda m: PathAdaGrad(m.parameters(), 0.1), "PathAdaGrad needs the model itself"),
])
def test_bad_hyperparameters_are_refused(build, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build(MLP(4, 2, hidden=(3,)))


@pytest.mark.parametrize("make_opt", [lambda m: PathSGD(m, 0.05, input_shape=(36,)),
                                      lambda m: PathSGD(m, 0.05, momentum=0.9, input_shape=(36,)),
                                      lambda m: PathAdaGrad(m, 0.05, input_shape=(36,)),
                                      lambda m: PathAdam(m, 0.01, input_shape=(36,))],
                         ids=["pathsgd", "momentum", "adagrad", "adam"])
def test_theorem_4_1_on_the_runners_conv_net(make_opt, batches):
    """The runner's ConvNet (conv, average pooling, a residual block): rescaling a channel inside the residual
    block (its first conv's output by c, the second conv's input by 1/c) leaves each trajectory rescaled."""
    from pathsgd.models import ConvNet

    torch.manual_seed(0)
    net = ConvNet((1, 6, 6), 3, channels=3).double()

    def rescaled(m, c=40.0, k=1):
        m = copy.deepcopy(m)
        with torch.no_grad():
            m.block[0].weight[k].mul_(c)
            m.block[0].bias[k].mul_(c)
            m.block[2].weight[:, k].div_(c)
        return m

    twin = rescaled(net)
    opt, opt_twin = make_opt(net), make_opt(twin)
    for x, y in batches(4, d=36):
        for model, o in ((net, opt), (twin, opt_twin)):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
        want = dict(rescaled(net).named_parameters())
        for name, got in twin.named_parameters():
            torch.testing.assert_close(got, want[name], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["pathsgd", "sgd"])
def test_the_conv_nets_unbalanced_init_keeps_its_function_and_only_path_sgd_ignores_it(name, batches):
    """unbalanced_init_ on the ConvNet rescales stem and inner channels: the same function from other weights;
    Path-SGD then follows the balanced run's function step by step, SGD does not."""
    from pathsgd.models import ConvNet

    torch.manual_seed(0)
    net = balanced_init_(ConvNet((1, 6, 6), 3, channels=4).double(), torch.Generator().manual_seed(0))
    twin = copy.deepcopy(net)
    factors = unbalanced_init_(twin, torch.Generator().manual_seed(1), n_units=8, max_exponent=3.0)
    assert [f.shape[0] for f in factors] == [4, 4] and all((f != 0).any() for f in factors)
    assert max((a - b).abs().max() for a, b in zip(net.parameters(), twin.parameters())) > 1.0
    probe = torch.randn(5, 36, dtype=torch.float64)
    torch.testing.assert_close(twin(probe), net(probe), rtol=1e-9, atol=1e-12)
    make = (lambda m: PathSGD(m, 0.05, input_shape=(36,))) if name == "pathsgd" else (lambda m: torch.optim.SGD(m.parameters(), 0.05))
    opts = make(net), make(twin)
    for x, y in batches(4, d=36):
        for model, o in zip((net, twin), opts):
            o.zero_grad()
            F.cross_entropy(model(x), y).backward()
            o.step()
    gap = (twin(probe) - net(probe)).abs().max().item()
    if name == "pathsgd":
        assert gap < 1e-9
    else:
        assert gap > 1e-3  # SGD from the rescaled weights computes another function
