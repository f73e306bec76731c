"""Small fixture files in each dataset's real on-disk format and torchvision's layout.

``write_fake_dataset(name, root)`` writes what ``pathsgd.data.load_splits(name, root, download=False)``
reads, in the real formats. Pixels are random with a class-dependent mean
brightness, so labels carry a little signal. ``fake_pixels`` regenerates the exact pixels and labels
written, in the loader's ``[N, D]`` layout (CHW for colour images), for round-trip checks.

Fixtures cannot have the original files' MD5s or MNIST's 60000/10000 records, so tests load them with
``load_splits(..., verify=False)`` (the runner's ``data.verify=false``); the other checks and the restricted
unpickler still apply. Tests of the checksums themselves load with ``verify=True``.
"""

from __future__ import annotations

import builtins
import gzip as gzip_module
import os
import pickle
import struct
from pathlib import Path

import numpy as np

__all__ = ["FAKE_NAMES", "PickledCall", "evil_object", "fake_pixels", "write_fake_dataset"]

FAKE_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn")

_SHAPES = {  # (channels, height, width), number of classes
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "svhn": ((3, 32, 32), 10),
}


def fake_pixels(name: str, n: int, seed: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [n, C*H*W] in CHW order, int64 [n] labels in 0..num_classes-1) for one split."""
    if name not in _SHAPES:
        raise ValueError(f"unknown fake dataset {name!r}; expected one of {', '.join(FAKE_NAMES)}")
    (c, h, w), k = _SHAPES[name]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    y = rng.integers(0, k, size=n).astype(np.int64)
    # Class-dependent mean brightness in [40, 215], plus noise; full range 0..255 still occurs.
    mean = 40.0 + 175.0 * y / max(k - 1, 1)
    x = rng.normal(mean[:, None], 40.0, size=(n, c * h * w))
    x[:, 0], x[:, 1] = 0, 255  # make the extremes appear so range checks can see them
    return np.clip(np.rint(x), 0, 255).astype(np.uint8), y


def _write_idx(path: Path, array: np.ndarray, magic: int, gzip: bool) -> None:
    # IDX: big-endian magic (2051 images, 2049 labels), big-endian dims, then raw uint8 data.
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()
    if gzip:
        with gzip_module.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _write_mnist(name: str, root: Path, n_train: int, n_test: int, seed: int, gzip: bool) -> Path:
    folder = root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, split, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        x, y = fake_pixels(name, n, seed, split)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte", x.reshape(n, 28, 28), 2051, gzip)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte", y.astype(np.uint8), 2049, gzip)
    return folder


def _pickle(path: Path, obj: dict) -> None:
    # The real CIFAR pickles come from Python 2: their byte-string keys load as str under the
    # encoding="latin1" torchvision uses. Python 3 bytes keys would load as bytes, so write str keys.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _write_cifar(name: str, root: Path, n_train: int, n_test: int, seed: int) -> Path:
    xtr, ytr = fake_pixels(name, n_train, seed, "train")
    xte, yte = fake_pixels(name, n_test, seed, "test")
    if name == "cifar10":
        # Real CIFAR-10: five training batches and one test batch, labels as a list.
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.array_split(np.arange(n_train), 5), start=1):
            _pickle(folder / f"data_batch_{i}",
                    {"batch_label": f"training batch {i} of 5", "data": xtr[idx], "labels": ytr[idx].tolist()})
        _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": xte, "labels": yte.tolist()})
        _pickle(folder / "batches.meta",
                {"label_names": [f"class_{i}" for i in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072})
    else:
        # Real CIFAR-100: one "train" and one "test" pickle with fine and coarse labels.
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for fname, x, y in (("train", xtr, ytr), ("test", xte, yte)):
            _pickle(folder / fname, {"data": x, "fine_labels": y.tolist(), "coarse_labels": (y // 5).tolist()})
        _pickle(folder / "meta",
                {"fine_label_names": [f"fine_{i}" for i in range(100)],
                 "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return folder


def _write_svhn(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    import scipy.io

    folder = root / "SVHN"
    folder.mkdir(parents=True, exist_ok=True)
    for fname, split, n in (("train_32x32.mat", "train", n_train), ("test_32x32.mat", "test", n_test)):
        x, y = fake_pixels("svhn", n, seed, split)
        # Real SVHN: X is [H, W, C, N] uint8, y is [N, 1] with digit 0 stored as label 10.
        images = x.reshape(n, 3, 32, 32).transpose(2, 3, 1, 0)
        labels = np.where(y == 0, 10, y).astype(np.uint8).reshape(n, 1)
        scipy.io.savemat(folder / fname, {"X": images, "y": labels})
    return folder


def write_fake_dataset(
    name: str, root, *, n_train: int = 64, n_test: int = 32, seed: int = 0, gzip: bool = True
) -> Path:
    """Write a small fake copy of dataset ``name`` under ``root``; return the folder written.

    ``gzip`` applies to MNIST and Fashion-MNIST only (IDX files as ``.gz`` or uncompressed).
    """
    root = Path(root)
    if name in ("mnist", "fashion_mnist"):
        return _write_mnist(name, root, n_train, n_test, seed, gzip)
    if name in ("cifar10", "cifar100"):
        return _write_cifar(name, root, n_train, n_test, seed)
    if name == "svhn":
        return _write_svhn(root, n_train, n_test, seed)
    raise ValueError(f"unknown fake dataset {name!r}; expected one of {', '.join(FAKE_NAMES)}")


class PickledCall:
    """Pickles as the call ``func(*args)``, which plain ``pickle.load`` makes while loading."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def evil_object(target: str, marker) -> PickledCall:
    """An object whose unpickling creates the file ``marker``, through ``target``: "posix.system"
    (``os.system``) or "__builtin__.exec" (``builtins.exec``, named so by pickle protocol 2)."""
    if target == "posix.system":
        return PickledCall(os.system, f"touch {marker}")
    assert target == "__builtin__.exec", target
    return PickledCall(builtins.exec, f"open({str(marker)!r}, 'w').close()")
