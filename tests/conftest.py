"""Helpers shared by several test modules, as fixtures."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pathsgd import MLP, balanced_init_, path_norm, rescale_unit_

from pathsgd.collect import RUN_COLUMNS
from pathsgd.selection import select_alphas


@pytest.fixture
def tidy_study():
    """``tidy_study(root, name, datasets=..., inits=...)``: a small hand-made study in the pipeline's CSV layout
    (runs.csv, selection.csv) under ``root/name``; returns that folder."""
    return _tidy_study


def _tidy_study(root: Path, name: str, datasets=("mnist", "svhn"), inits=("balanced", "unbalanced")) -> Path:
    """A small hand-made study in the pipeline's CSV layout: runs.csv, selection.csv (and toy.csv)."""
    rows = []
    for d in datasets:
        for o in ("pathsgd", "sgd", "adagrad"):
            for a in (0, 1, 2):
                status = "diverged" if a == 0 and o == "sgd" else "completed"
                for e in range(4):
                    err = 0.9 - 0.1 * e * (1 + a % 2)
                    rows.append(dict(dataset=d, optimizer=o, init="balanced", dropout=0.0, alpha=a, phase="sweep", seed=0,
                                     width=8, epoch=e, train_loss=2 - 0.3 * e, train_error=err, val_error=err,
                                     test_error=err, path_norm=3.0, seconds=e * 0.1, status=status))
            for i in inits:
                for e in range(6):
                    slow = 1 if (i == "balanced" or o == "pathsgd") else 3
                    rows.append(dict(dataset=d, optimizer=o, init=i, dropout=0.0, alpha=1, phase="final", seed=0,
                                     width=8, epoch=e, train_loss=2 / (1 + e / slow), train_error=0.5 / (1 + e / slow),
                                     val_error=None, test_error=0.6 / (1 + e / slow), path_norm=3.0, seconds=e * 0.1,
                                     status="completed"))
    out = root / name
    out.mkdir(parents=True)
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    table.to_csv(out / "runs.csv", index=False)
    select_alphas(table[table.phase == "sweep"]).to_csv(out / "selection.csv", index=False)
    return out




# Theorem 4.1's check and its parts: a small MLP with non-zero biases, random rescalings rho, batches.


def _small_mlp(seed=0, dropout=0.0, dtype=torch.float64):
    torch.manual_seed(seed)
    model = MLP(6, 3, hidden=(5, 4), dropout=dropout).to(dtype)
    balanced_init_(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for lin in model.layers:
            lin.bias.uniform_(-0.5, 0.5)  # non-zero biases: bias paths matter
    return model


def _batches(n_steps, batch=8, d=6, classes=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch, d, generator=g, dtype=dtype), torch.randint(classes, (batch,), generator=g))
            for _ in range(n_steps)]


def _random_rescalings(model, n=6, seed=0):
    """Random hidden units with factors c in [1e-2, 1e2] (log-uniform)."""
    g = torch.Generator().manual_seed(seed)
    widths = model.hidden
    out = []
    for _ in range(n):
        layer = int(torch.randint(len(widths), (1,), generator=g))
        unit = int(torch.randint(widths[layer], (1,), generator=g))
        c = 10 ** (4 * torch.rand(1, generator=g, dtype=torch.float64).item() - 2)
        out.append((layer, unit, c))
    return out


def _rho(model, rescalings):
    model = copy.deepcopy(model)
    for layer, unit, c in rescalings:
        rescale_unit_(model, layer, unit, c)
    return model


def _train_step(model, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _check_invariance(make_opt, steps=5, rtol=1e-9):
    """Theorem 4.1: from w and w~ = _rho(w), the same batches: w~(t) = _rho(w(t)) at every t."""
    w = _small_mlp()
    rescalings = _random_rescalings(w)
    w_tilde = _rho(w, rescalings)
    opt, opt_tilde = make_opt(w), make_opt(w_tilde)
    for t, (x, y) in enumerate(_batches(steps)):
        _train_step(w, opt, x, y)
        _train_step(w_tilde, opt_tilde, x, y)
        want = dict(_rho(w, rescalings).named_parameters())
        for name, got in w_tilde.named_parameters():
            torch.testing.assert_close(got, want[name], rtol=rtol, atol=0, msg=f"step {t + 1}, {name}")
        torch.testing.assert_close(path_norm(w_tilde), path_norm(w), rtol=rtol, atol=0)


@pytest.fixture(name="small_mlp")
def _small_mlp_fixture():
    return _small_mlp


@pytest.fixture(name="batches")
def _batches_fixture():
    return _batches


@pytest.fixture(name="random_rescalings")
def _random_rescalings_fixture():
    return _random_rescalings


@pytest.fixture(name="rho")
def _rho_fixture():
    return _rho


@pytest.fixture(name="train_step")
def _train_step_fixture():
    return _train_step


@pytest.fixture(name="check_invariance")
def _check_invariance_fixture():
    return _check_invariance
