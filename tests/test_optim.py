"""PathSGD: Theorem 4.1 (rescaling invariance), the exact update, numerics, torch optimizer behaviour."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pathsgd import MLP, PathSGD, balanced_init_, path_norm, path_scales, rescale_unit_, unbalanced_init_

from .oracle import Residual


def test_theorem_4_1_pathsgd_is_rescaling_invariant(check_invariance):
    check_invariance(lambda m: PathSGD(m, lr=0.05))


@pytest.mark.parametrize("p", [1.0, 3.0])
def test_theorem_4_1_holds_for_other_p(p, check_invariance):
    check_invariance(lambda m: PathSGD(m, lr=0.05, p=p))


@pytest.mark.parametrize(
    "make_opt",
    [lambda m: torch.optim.SGD(m.parameters(), lr=0.05), lambda m: torch.optim.Adagrad(m.parameters(), lr=0.05)],
    ids=["SGD", "Adagrad"],
)
def test_sgd_and_adagrad_fail_the_invariance_test(make_opt, check_invariance):
    with pytest.raises(AssertionError, match=r"step 1, layers\.\d\.(weight|bias)"):  # w~(1) != rho(w(1))
        check_invariance(make_opt)


def test_theorem_4_1_on_a_residual_net_through_the_generic_twin(batches, train_step):
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Linear(4, 5), nn.ReLU(), Residual(nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Linear(5, 5))),
        nn.ReLU(), nn.Linear(5, 2),
    ).double()

    def rescaled(m, c=30.0):  # unit 2 of the first hidden layer: model[0] in, model[2].inner[0] and skip out.
        # A skip edge of fixed weight 1 cannot be rescaled, so rescale a unit inside the block instead.
        m = copy.deepcopy(m)
        inner = m[2].inner
        with torch.no_grad():
            inner[0].weight[2].mul_(c)
            inner[0].bias[2].mul_(c)
            inner[2].weight[:, 2].div_(c)
        return m

    w, w_tilde = model, rescaled(model)
    opt, opt_t = PathSGD(w, lr=0.02), PathSGD(w_tilde, lr=0.02)
    for x, y in batches(3, d=4, classes=2):
        train_step(w, opt, x, y)
        train_step(w_tilde, opt_t, x, y)
        want = dict(rescaled(w).named_parameters())
        for name, got in w_tilde.named_parameters():
            torch.testing.assert_close(got, want[name], rtol=1e-9, atol=0)


def grads_of(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return {n: w.grad.clone() for n, w in model.named_parameters()}


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_step_is_the_papers_update_and_not_sgd(kind, small_mlp, batches):
    if kind == "mlp":
        model, shape = small_mlp(), None
        x, y = batches(1)[0]
    else:
        torch.manual_seed(3)
        model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                              nn.Linear(12, 3)).double()
        shape = (2, 4, 4)
        x, y = torch.rand(5, *shape, dtype=torch.float64), torch.randint(3, (5,))
    lr = 0.1
    before = {n: w.detach().clone() for n, w in model.named_parameters()}
    gamma = path_scales(model, input_shape=shape)
    grads = grads_of(model, x, y)
    PathSGD(model, lr=lr, input_shape=shape).step()
    differs_from_sgd = []
    for name, w in model.named_parameters():
        by_hand = before[name] - lr * grads[name] / gamma[name]
        torch.testing.assert_close(w.detach(), by_hand, rtol=1e-12, atol=1e-15)
        sgd = before[name] - lr * grads[name]
        differs_from_sgd.append(bool((w.detach() - sgd).abs().max() > 1e-3 * (sgd - before[name]).abs().max()))
    # Only the output bias has gamma = 1 (its one path has no other edge); a plain-SGD
    # "path-sgd" would leave every tensor equal to SGD's step.
    assert differs_from_sgd[:-1] == [True] * (len(differs_from_sgd) - 1)


def test_unbalanced_init_float32_mlp_tracks_balanced_run():
    """The paper's input and init in float32, on 784-256-256-10 (the overflow comes from the rescaling, not the
    width): |w|^2 overflows float32 on the unbalanced copy, and Path-SGD still follows the balanced run."""
    torch.manual_seed(0)
    balanced = MLP(784, 10, hidden=(256, 256)).float()
    balanced_init_(balanced, torch.Generator().manual_seed(0))
    unbalanced = copy.deepcopy(balanced)
    exps = unbalanced_init_(unbalanced, torch.Generator().manual_seed(1))
    assert max(e.max().item() for e in exps) > 10  # some unit scaled beyond 1e10
    for layer in (0, 1):  # a few units rescaled by 1e25 on top, among units the init left alone
        for unit in torch.nonzero(exps[layer] == 0).flatten()[:3].tolist():
            rescale_unit_(unbalanced, layer, unit, 1e25)
    assert max(w.abs().max().item() for w in unbalanced.parameters()) > 1e20  # |w|^2 > float32 max (3.4e38)
    g = torch.Generator().manual_seed(2)
    teacher = torch.randn(784, 10, generator=g)
    xs = [torch.rand(100, 784, generator=g) for _ in range(20)]
    data = [(x, ((x - 0.5) @ teacher).argmax(1)) for x in xs]
    losses = {}
    for name, model in (("balanced", balanced), ("unbalanced", unbalanced)):
        opt = PathSGD(model, lr=1e-3)
        losses[name] = []
        for x, y in data:
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert all(math.isfinite(v) for v in losses["balanced"] + losses["unbalanced"])
    assert losses["balanced"][-1] < losses["balanced"][0] - 0.05  # it trains: the step is not tiny
    torch.testing.assert_close(torch.tensor(losses["unbalanced"]), torch.tensor(losses["balanced"]), rtol=1e-3, atol=0)
    # and the two networks stayed rescaling-equivalent: the same function and path-norm
    x_new = torch.rand(50, 784, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(unbalanced(x_new), balanced(x_new), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(path_norm(unbalanced), path_norm(balanced), rtol=1e-5, atol=0)


# --------------------------------------------------------------------------------------------------
# Behaves like a torch optimizer
# --------------------------------------------------------------------------------------------------


def test_param_groups_use_their_own_lr_and_skip_the_rest(small_mlp, batches):
    model = small_mlp()
    x, y = batches(1)[0]
    before = {n: w.detach().clone() for n, w in model.named_parameters()}
    gamma = path_scales(model)
    grads = grads_of(model, x, y)
    l0, l1 = model.layers[0], model.layers[1]
    opt = PathSGD(model, lr=0.1, param_groups=[{"params": [l0.weight, l0.bias]}, {"params": [l1.weight], "lr": 0.3}])
    opt.step()
    params = dict(model.named_parameters())
    for name, lr in (("layers.0.weight", 0.1), ("layers.0.bias", 0.1), ("layers.1.weight", 0.3)):
        torch.testing.assert_close(params[name].detach(), before[name] - lr * grads[name] / gamma[name], rtol=1e-12, atol=0)
    for name in ("layers.1.bias", "layers.2.weight", "layers.2.bias"):
        assert torch.equal(params[name].detach(), before[name])


def test_zero_grad_closure_and_state_dict(small_mlp, batches):
    model = small_mlp()
    opt = PathSGD(model, lr=0.1)
    x, y = batches(1)[0]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    with torch.no_grad():
        expected = F.cross_entropy(model(x), y)
    loss = opt.step(closure)
    torch.testing.assert_close(loss.detach(), expected)  # the closure's loss, before the update
    with torch.no_grad():
        assert F.cross_entropy(model(x), y) < expected  # and the step happened
    opt.zero_grad()
    assert all(w.grad is None for w in model.parameters())

    opt.param_groups[0]["lr"] = 0.025
    state = opt.state_dict()
    other = PathSGD(small_mlp(), lr=1.0)
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 0.025 and other.param_groups[0]["p"] == 2.0
    assert other.state_dict() == state


@pytest.mark.parametrize("lr", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_lr_is_rejected(lr, small_mlp):
    with pytest.raises(ValueError, match="lr="):
        PathSGD(small_mlp(), lr=lr)


def test_bad_p_and_bad_model_are_rejected(small_mlp):
    with pytest.raises(ValueError, match="p=0.5"):
        PathSGD(small_mlp(), lr=0.1, p=0.5)
    with pytest.raises(TypeError, match="needs the model"):
        PathSGD(small_mlp().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        PathSGD(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)), lr=0.1)
    with pytest.raises(ValueError, match="input_shape"):
        PathSGD(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)), lr=0.1)
    with pytest.raises(ValueError, match="differs between parameter groups"):
        m = small_mlp()
        PathSGD(m, lr=0.1, param_groups=[{"params": [m.layers[0].weight]}, {"params": [m.layers[1].weight], "p": 1.0}])


def test_dropout_train_mode_uses_whole_network_and_keeps_mode(small_mlp, batches):
    model = small_mlp(dropout=0.5)
    twin = small_mlp(dropout=0.0)  # same weights, no dropout
    x, y = batches(1)[0]
    torch.manual_seed(0)
    model.train()
    grads = grads_of(model, x, y)
    for w, g in zip(twin.parameters(), grads.values()):
        w.grad = g.clone()
    PathSGD(model, lr=0.1).step()
    PathSGD(twin, lr=0.1).step()
    assert model.training
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=0)
