"""The ``synthetic`` dataset: a small generated classification set for tests, smoke studies and a laptop."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from pathsgd.data import _integer

__all__ = ["make_synthetic"]

_SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "n_train": 2000, "n_test": 500, "in_features": 64, "num_classes": 10, "seed": 0, "label": "synthetic",
}

def make_synthetic(
    options: Mapping[str, Any] | None = None) -> tuple[str, tuple[Tensor, Tensor], tuple[Tensor, Tensor], int]:
    """A small generated classification set: ``(label, (train_x, train_y), (test_x, test_y), num_classes)``.

    Inputs are uint8 "pixels" drawn uniformly from 0..255 (so every ``scale`` behaves as for images);
    labels are the argmax of a random one-hidden-layer ReLU teacher applied to ``pixels / 255``, with
    the teacher's output biases set so that classes are roughly balanced, and 5% of labels replaced by a
    uniformly random class. A student network learns it well above chance but not perfectly.

    Deterministic given the options; ``label`` is mixed into the seed with ``zlib.crc32`` (stable across
    processes, unlike ``hash()``), so different labels give different data. Options (all optional):
    ``n_train`` (2000), ``n_test`` (500), ``in_features`` (64), ``num_classes`` (10), ``seed`` (0),
    ``label`` ("synthetic").
    """
    opts = dict(_SYNTHETIC_DEFAULTS)
    given = dict(options or {})
    unknown = sorted(set(given) - set(opts))
    if unknown:
        raise ValueError(f"unknown synthetic option(s) {unknown}; accepted: {sorted(opts)}")
    opts.update(given)
    label = str(opts["label"])
    ints = {}
    for key, low in (("n_train", 1), ("n_test", 1), ("in_features", 1), ("num_classes", 2), ("seed", 0)):
        ints[key] = _integer(opts[key], f"synthetic option {key}")
        if ints[key] < low:
            raise ValueError(f"synthetic option {key}={ints[key]} must be >= {low}")
    n_train, n_test, d, k = ints["n_train"], ints["n_test"], ints["in_features"], ints["num_classes"]

    gen = torch.Generator().manual_seed(zlib.crc32(f"{label}\0{ints['seed']}".encode()))
    n = n_train + n_test
    pixels = torch.randint(0, 256, (n, d), generator=gen, dtype=torch.uint8)
    hidden = 4 * k
    w1 = torch.randn(d, hidden, generator=gen) * (12.0 / d) ** 0.5  # unit-variance preactivations
    b1 = torch.randn(hidden, generator=gen) * 0.5
    w2 = torch.randn(hidden, k, generator=gen) / hidden**0.5
    u = pixels.float() / 255.0 - 0.5
    logits = torch.relu(u @ w1 + b1) @ w2
    # Without centring, a random teacher's argmax puts most points in one or two classes.
    logits = logits - logits.median(dim=0).values
    y = logits.argmax(dim=1)
    flip = torch.rand(n, generator=gen) < 0.05
    y = torch.where(flip, torch.randint(0, k, (n,), generator=gen), y)
    return label, (pixels[:n_train], y[:n_train]), (pixels[n_train:], y[n_train:]), k
