"""path_scales and path_norm against brute-force path enumeration; invariance of the path-norm."""

import pytest
import torch
from torch import nn

from pathsgd import MLP, path_norm, path_scales, rescale_unit_, unbalanced_init_
from pathsgd.geometry import mlp_path_sums

from .oracle import Residual, enumerate_paths

P_VALUES = [1.0, 2.0, 3.0]


def random_mlp(sizes=(3, 4, 3), classes=2, seed=0, dropout=0.0):
    torch.manual_seed(seed)
    model = MLP(sizes[0], classes, hidden=sizes[1:], dropout=dropout).double()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_()  # biases non-zero, so bias paths count
    return model


def conv_net():
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)
    ).double()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_()
    return model, (1, 4, 4)


def residual_net():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(),
        Residual(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 4))),
        nn.ReLU(), nn.Linear(4, 2),
    ).double()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_()
    return model, (3,)


def assert_scales_equal(got, want, rtol=1e-10):
    assert set(got) == set(want)
    for name in want:
        assert got[name].dtype == torch.float64
        torch.testing.assert_close(got[name], want[name], rtol=rtol, atol=0, msg=name)


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("method", ["mlp", "generic"])
def test_mlp_scales_and_norm_match_enumeration(p, method):
    model = random_mlp()
    total, gamma, n_paths = enumerate_paths(model, p, (3,))
    # 3*4*3*2 input paths + 4*3*2 + 3*2 + 2 bias paths
    assert n_paths == 72 + 24 + 6 + 2
    assert_scales_equal(path_scales(model, p, method=method), gamma)
    norm = path_norm(model, p, method=method)
    assert norm.dtype == torch.float64 and norm.dim() == 0
    torch.testing.assert_close(norm, torch.tensor(total, dtype=torch.float64) ** (1 / p), rtol=1e-12, atol=0)


@pytest.mark.parametrize("p", P_VALUES)
def test_sequential_mlp_uses_closed_form_and_matches_enumeration(p):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.ReLU(), nn.Dropout(0.2), nn.Linear(3, 2)).double()
    with torch.no_grad():
        for w in model.parameters():
            w.normal_()
    total, gamma, _ = enumerate_paths(model, p, (3,))
    assert_scales_equal(path_scales(model, p, method="mlp"), gamma)
    assert_scales_equal(path_scales(model, p, method="generic"), gamma)


@pytest.mark.parametrize("p", P_VALUES)
@pytest.mark.parametrize("make", [conv_net, residual_net], ids=["conv-avgpool", "residual"])
def test_generic_scales_match_enumeration(p, make):
    model, shape = make()
    total, gamma, n_paths = enumerate_paths(model, p, shape)
    assert n_paths > 50
    assert_scales_equal(path_scales(model, p, input_shape=shape), gamma)
    torch.testing.assert_close(
        path_norm(model, p, input_shape=shape), torch.tensor(total, dtype=torch.float64) ** (1 / p), rtol=1e-12, atol=0
    )


def test_avgpool_fixed_weight_enters_as_power():
    # The pool's fixed weight 1/4 is a path weight like any other and enters as (1/4)^p: a twin
    # that averaged plainly would agree with the oracle at p=1 only.
    model, shape = conv_net()
    _, gamma3, _ = enumerate_paths(model, 3.0, shape)
    got = path_scales(model, 3.0, input_shape=shape)
    torch.testing.assert_close(got["4.weight"], gamma3["4.weight"], rtol=1e-10, atol=0)


def test_conv_net_needs_input_shape():
    model, _ = conv_net()
    with pytest.raises(ValueError, match="input_shape"):
        path_scales(model)


class TanhNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return torch.tanh(self.fc(x))


@pytest.mark.parametrize(
    "model, shape, name",
    [
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)), (3,), "BatchNorm1d"),
        (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)), (1, 6, 6), "MaxPool2d"),
        (nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)), (3,), "Tanh"),
        (nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)), (3,), "Sigmoid"),
        (TanhNet(), (3,), "tanh"),
    ],
)
def test_unsupported_modules_are_named(model, shape, name):
    with pytest.raises(ValueError, match=name):
        path_scales(model, input_shape=shape)
    with pytest.raises(ValueError, match=name):
        path_norm(model, input_shape=shape)


def test_scales_ignore_dropout_and_keep_mode():
    model = random_mlp(dropout=0.5)
    model.train()
    want = path_scales(random_mlp(dropout=0.0))
    got = path_scales(model, method="generic")
    assert model.training
    assert_scales_equal(got, want)


@pytest.mark.parametrize("p", P_VALUES)
def test_path_norm_invariant_to_rescaling(p):
    model = random_mlp(sizes=(5, 6, 6, 4), classes=3, seed=4)
    x = torch.rand(7, 5, dtype=torch.float64)
    before_norm, before_out = path_norm(model, p), model(x)
    before_scales = path_scales(model, p)
    for layer, unit, c in [(0, 1, 1e-2), (1, 3, 37.0), (2, 0, 1e2), (0, 1, 5.0)]:
        rescale_unit_(model, layer, unit, c)
    torch.testing.assert_close(path_norm(model, p), before_norm, rtol=1e-12, atol=0)
    torch.testing.assert_close(model(x), before_out, rtol=1e-10, atol=1e-12)
    # gamma itself moves (by c^2 on a rescaled unit's edges): a rescaling is not a no-op
    assert not torch.allclose(path_scales(model, p)["layers.0.weight"], before_scales["layers.0.weight"])


def test_path_norm_invariant_to_unbalanced_init():
    model = random_mlp(sizes=(10, 16, 16), classes=4, seed=5)
    before = path_norm(model)
    exps = unbalanced_init_(model, torch.Generator().manual_seed(0), n_units=50)
    assert max(e.max().item() for e in exps) > 1.0  # factors above 10: genuinely unbalanced
    torch.testing.assert_close(path_norm(model), before, rtol=1e-10, atol=0)


def test_path_sums_total_is_phi_to_the_p():
    model = random_mlp()
    ins, outs, total = mlp_path_sums(list(model.layers), 2.0)
    torch.testing.assert_close(total.sqrt(), path_norm(model), rtol=1e-14, atol=0)
    # the input-side sums of layer 0 are ones and the output-side sums of the last layer are ones
    assert torch.equal(ins[0], torch.ones(3, dtype=torch.float64))
    assert torch.equal(outs[-1], torch.ones(2, dtype=torch.float64))


def test_float32_model_scales_in_float64_without_overflow():
    model = MLP(6, 3, hidden=(5, 5)).float()
    rescale_unit_(model, 0, 2, 1e30)  # |w|^2 ~ 1e60 overflows float32
    rescale_unit_(model, 1, 4, 1e-30)
    scales = path_scales(model)
    assert all(torch.isfinite(s).all() for s in scales.values())
    assert torch.isfinite(path_norm(model))


def test_bad_p_is_rejected():
    model = random_mlp()
    for bad in (0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="p="):
            path_norm(model, bad)
    with pytest.raises(ValueError, match="method="):
        path_scales(model, method="magic")
