"""rescale_unit_, balanced_init_ and unbalanced_init_."""

import math

import pytest
import torch
from torch import nn

from pathsgd import MLP, balanced_init_, rescale_unit_, unbalanced_init_


def test_rescale_unit_moves_exactly_the_units_edges():
    model = MLP(4, 3, hidden=(5, 6)).double()
    before = {n: w.detach().clone() for n, w in model.named_parameters()}
    rescale_unit_(model, 1, 2, 4.0)
    after = dict(model.named_parameters())
    assert torch.equal(after["layers.1.weight"][2], 4.0 * before["layers.1.weight"][2])
    assert after["layers.1.bias"][2] == 4.0 * before["layers.1.bias"][2]
    assert torch.equal(after["layers.2.weight"][:, 2], before["layers.2.weight"][:, 2] / 4.0)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"layers.1.weight", "layers.1.bias", "layers.2.weight"}


@pytest.mark.parametrize(
    "args, match",
    [((2, 0, 2.0), "layer=2"), ((0, 5, 2.0), "unit=5"), ((0, 0, 0.0), "c=0.0"), ((0, 0, float("inf")), "c=inf")],
)
def test_rescale_unit_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        rescale_unit_(MLP(4, 3, hidden=(5, 6)), *args)


def test_rescale_unit_needs_a_layered_net():
    with pytest.raises(ValueError, match="not a layered ReLU MLP"):
        rescale_unit_(nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 2)), 0, 0, 2.0)


def test_balanced_init_statistics_and_seed():
    model = MLP(400, 10, hidden=(300, 200))
    balanced_init_(model, torch.Generator().manual_seed(0))
    for lin in model.layers:
        std = lin.weight.std().item()
        assert abs(std * math.sqrt(lin.in_features) - 1) < 0.05
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    again = balanced_init_(MLP(400, 10, hidden=(300, 200)), torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))


def test_unbalanced_init_preserves_function_and_counts_units():
    torch.manual_seed(0)
    model = MLP(20, 5, hidden=(40, 40)).double()
    x = torch.rand(9, 20, dtype=torch.float64)
    out = model(x)
    exps = unbalanced_init_(model, torch.Generator().manual_seed(3))
    assert [e.numel() for e in exps] == [40, 40]
    assert 0 < sum(int((e > 0).sum()) for e in exps) <= 20  # default: a quarter of 80 units drawn
    torch.testing.assert_close(model(x), out, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_unbalanced_init_is_finite_when_every_unit_is_drawn_many_times(seed):
    # 2000 draws over 16 units: each unit compounds ~125 factors 10^c, far past float32's range
    model = MLP(20, 5, hidden=(8, 8))
    x = torch.rand(9, 20)
    out = model(x)
    exps = unbalanced_init_(model, torch.Generator().manual_seed(seed), n_units=2000, max_exponent=30.0)
    assert all(torch.isfinite(w).all() for w in model.parameters())
    assert all(e.max().item() == 30.0 for e in exps)  # the bound is what held them
    torch.testing.assert_close(model(x), out, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # the paper's 2 x 4000 net
def test_unbalanced_init_paper_scale_float32_is_finite():
    # The paper's 2000 draws at 2 x 4000: per seed, a fresh network; some seed must need the clamp.
    largest = []
    for seed in range(3):
        model = MLP(784, 10)
        exps = unbalanced_init_(model, torch.Generator().manual_seed(seed))
        assert sum(int((e > 0).sum()) for e in exps) > 1500  # ~2000 draws, a few units twice
        assert all(torch.isfinite(w).all() and (w != 0).any() for w in model.parameters())
        largest.append(max(e.max().item() for e in exps))
    assert max(largest) > 10  # factors beyond 1e10: genuinely unbalanced


def test_unbalanced_init_linear_mode_uses_ten_times_c():
    model = MLP(4, 2, hidden=(3,)).double()
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    exps = unbalanced_init_(model, g1, n_units=1, base_mode="linear")
    # replay the draw: same generator stream, one unit, c ~ LogNormal(0, 1)
    unit = int(torch.randint(3, (1,), generator=g2))
    c = torch.exp(torch.randn(1, generator=g2, dtype=torch.float64))
    assert math.isclose(10 ** exps[0][unit].item(), 10 * c.item(), rel_tol=1e-12)
    assert int((exps[0] != 0).sum()) == 1


def test_unbalanced_init_refuses_to_overflow_and_leaves_weights():
    model = MLP(20, 5, hidden=(8, 8))
    before = [w.detach().clone() for w in model.parameters()]
    with pytest.raises(ValueError, match="max_exponent=60"):
        unbalanced_init_(model, torch.Generator().manual_seed(0), n_units=2000, max_exponent=60.0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), before))


def test_unbalanced_init_rejects_bad_options():
    with pytest.raises(ValueError, match="base_mode='cubic'"):
        unbalanced_init_(MLP(4, 2, hidden=(3,)), base_mode="cubic")
    with pytest.raises(ValueError, match="n_units=-1"):
        unbalanced_init_(MLP(4, 2, hidden=(3,)), n_units=-1)
