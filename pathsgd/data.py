"""Datasets as whole on-device tensors: torchvision files -> one cached tensor file per split -> device.

``load_splits(name, root)`` returns a :class:`DataSplits` whose ``x`` tensors are float32 ``[N, D]``
(images flattened; colour images in CHW order) and whose ``y`` tensors are int64 ``[N]``, already on the
requested device. There are no DataLoaders: the training loop indexes these tensors with an on-device
permutation.

On-disk layout under ``root`` (``data.root=`` in the Hydra config). These are torchvision's own layouts,
so a directory that torchvision has downloaded into works as is:

==============  =========================================================================================
name            files expected under ``root``
==============  =========================================================================================
mnist           ``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (each may instead be ``.gz``)
fashion_mnist   ``FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (each may be ``.gz``)
cifar10         ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (python pickles)
cifar100        ``cifar-100-python/{train, test, meta}`` (python pickles; the 100 fine labels are used)
svhn            ``SVHN/{train_32x32.mat, test_32x32.mat}`` (MATLAB files; reading them needs scipy)
synthetic       nothing: generated in memory from its options, see :func:`make_synthetic`
==============  =========================================================================================

The first load of a split converts it once to ``<root>/pathsgd_cache/<name>_<split>.pt`` (raw uint8
pixels ``[N, D]`` and int64 labels ``[N]``); later loads read only that file, so the raw files may then
be removed. Delete the cache directory to rebuild it (e.g. after replacing the raw files).

Files are accepted whatever their checksum (torchvision's MD5 check is replaced by an existence check),
so mirrors, distribution packages (Debian's ``dataset-fashion-mnist``) and test fixtures all load.
Downloads, when allowed and needed, go through torchvision's own download code and checksums.

Pixel scaling (``scale=``) happens after loading: ``"unit"`` divides by 255 (inputs in [0, 1]);
``"standardize"`` subtracts the per-feature mean and divides by the per-feature standard deviation of
the training portion (after the validation split; constant features are divided by 1, not 0);
``"none"`` keeps the raw 0..255 values as float32.

The validation split holds out ``validation`` training points chosen by
``torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:validation]``; the rest is
the training portion. Both portions keep the original file order.
"""

from __future__ import annotations

import gzip
import operator
import os
import shutil
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "DATASET_NAMES",
    "SCALES",
    "DataSplits",
    "DatasetNotFoundError",
    "expected_files",
    "load_splits",
    "make_synthetic",
]

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "synthetic")
SCALES = ("unit", "standardize", "none")

CACHE_DIR = "pathsgd_cache"
# Bumped whenever the cached tensors' meaning changes, so stale caches are rebuilt rather than misread.
_CACHE_VERSION = 1

_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}

_SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "n_train": 2000,
    "n_test": 500,
    "in_features": 64,
    "num_classes": 10,
    "seed": 0,
    "label": "synthetic",
}


@dataclass
class DataSplits:
    """One dataset's splits, each a pair of whole tensors on the same device.

    ``*_x`` are float32 ``[N, in_features]``, ``*_y`` int64 ``[N]`` with values in ``[0, num_classes)``.
    ``val_x``/``val_y`` are None when no validation points were held out.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor | None
    val_y: Tensor | None
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_features: int


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under ``root`` and could not (or may not) be downloaded."""


# ----------------------------------------------------------------------------------------------------
# Layout


def _mnist_dir(name: str, root: Path) -> Path:
    # torchvision's MNIST classes use ``<root>/<ClassName>/raw``.
    return root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"


_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def _dataset_dir(name: str, root: Path) -> Path:
    if name in ("mnist", "fashion_mnist"):
        return _mnist_dir(name, root)
    if name in _CIFAR_FILES:
        return root / _CIFAR_FILES[name][0]
    if name == "svhn":
        return root / "SVHN"
    return root


def expected_files(name: str, root: str | os.PathLike) -> list[Path]:
    """The files ``load_splits(name, root)`` reads on its first load (empty for ``synthetic``).

    For MNIST and Fashion-MNIST these are the uncompressed names; a ``.gz`` next to each is accepted too.
    """
    _check_name(name)
    root = Path(root)
    folder = _dataset_dir(name, root)
    if name in ("mnist", "fashion_mnist"):
        return [folder / f for f in _MNIST_FILES]
    if name in _CIFAR_FILES:
        return [folder / f for f in _CIFAR_FILES[name][1]]
    if name == "svhn":
        return [folder / f for f in _SVHN_FILES]
    return []


def _missing_files(name: str, root: Path) -> list[Path]:
    missing = []
    for path in expected_files(name, root):
        gz = path.with_name(path.name + ".gz")
        if path.is_file() or (name in ("mnist", "fashion_mnist") and gz.is_file()):
            continue
        missing.append(path)
    return missing


def _not_found(name: str, root: Path, reason: str) -> DatasetNotFoundError:
    folder = _dataset_dir(name, root)
    names = ", ".join(p.name for p in expected_files(name, root))
    gz_note = " (each may instead be gzipped, with a .gz suffix)" if name in ("mnist", "fashion_mnist") else ""
    return DatasetNotFoundError(
        f"dataset {name!r} not found: {reason}. Expected in directory {folder}: {names}{gz_note}. "
        f"Put the files there, or point data.root= at a directory that has them."
    )


# ----------------------------------------------------------------------------------------------------
# Reading the raw files through torchvision


def _gunzip_in_place(folder: Path) -> None:
    """Decompress ``X.gz`` to ``X`` when only the ``.gz`` is present.

    torchvision's MNIST checks for the uncompressed names and otherwise tries to download (and its
    download path would verify the .gz against its own MD5, which other copies such as Debian's fail).
    The output is written to a temp file and renamed, so an interrupted run never leaves a truncated
    file that torchvision's existence check would accept.
    """
    for base in _MNIST_FILES:
        target, gz = folder / base, folder / (base + ".gz")
        if target.is_file() or not gz.is_file():
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{base}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out, gzip.open(gz, "rb") as src:
                shutil.copyfileobj(src, out)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _torchvision_classes():
    """torchvision dataset classes whose MD5 checks are replaced by existence checks.

    torchvision verifies the MD5 of CIFAR's and SVHN's files even with ``download=False``, which rejects
    any copy that is not byte-identical to the original (mirrors, re-pickled files, test fixtures). For
    CIFAR, setting the per-file md5 to None makes ``torchvision.datasets.utils.check_integrity`` an
    existence check; those md5s serve no download (the archive is checked against ``tgz_md5``). Parsing
    stays torchvision's own code. Built lazily so importing this module does not import torchvision.
    """
    from torchvision import datasets

    class CIFAR10(datasets.CIFAR10):
        train_list = [[f, None] for f, _ in datasets.CIFAR10.train_list]
        test_list = [[f, None] for f, _ in datasets.CIFAR10.test_list]
        meta = {**datasets.CIFAR10.meta, "md5": None}

    class CIFAR100(datasets.CIFAR100):
        train_list = [[f, None] for f, _ in datasets.CIFAR100.train_list]
        test_list = [[f, None] for f, _ in datasets.CIFAR100.test_list]
        meta = {**datasets.CIFAR100.meta, "md5": None}

    class SVHN(datasets.SVHN):
        # SVHN's download passes split_list's md5 on to download_url, so keep it there (downloads stay
        # verified) and relax only the check made before parsing.
        def _check_integrity(self) -> bool:
            return os.path.isfile(os.path.join(self.root, self.filename))

    return {
        "mnist": datasets.MNIST,  # MNIST's own check is already an existence check
        "fashion_mnist": datasets.FashionMNIST,
        "cifar10": CIFAR10,
        "cifar100": CIFAR100,
        "svhn": SVHN,
    }


def _read_split(name: str, root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    """One split as (uint8 [N, D], int64 [N]) via torchvision's parsing code."""
    cls = _torchvision_classes()[name]
    if name == "svhn":
        # torchvision's SVHN keeps its .mat files directly in its root; give it a folder of its own.
        ds = cls(str(root / "SVHN"), split="train" if train else "test", download=download)
        x = torch.as_tensor(ds.data)  # [N, 3, 32, 32], already CHW
        y = torch.as_tensor(ds.labels)  # torchvision maps label 10 to 0
    else:
        ds = cls(str(root), train=train, download=download)
        x = torch.as_tensor(ds.data)
        if name in _CIFAR_FILES:
            x = x.permute(0, 3, 1, 2)  # torchvision stores CIFAR as HWC; flatten in CHW like SVHN
        y = torch.as_tensor(ds.targets)
    x = x.reshape(len(x), -1).to(torch.uint8).contiguous()
    y = y.reshape(-1).to(torch.int64)
    if len(x) != len(y):
        raise ValueError(f"dataset {name!r}: {len(x)} images but {len(y)} labels under {root}")
    return x, y


def _load_raw(name: str, root: Path, download: bool) -> None:
    """Make sure the raw files are present, downloading them if allowed; raise DatasetNotFoundError if not."""
    if name in ("mnist", "fashion_mnist") and _mnist_dir(name, root).is_dir():
        _gunzip_in_place(_mnist_dir(name, root))
    if not _missing_files(name, root):
        return
    if not download:
        raise _not_found(name, root, "files missing and download=False")
    root.mkdir(parents=True, exist_ok=True)
    try:
        # Constructing with download=True runs torchvision's download code (and verifies checksums).
        _read_split(name, root, train=False, download=True)
        if name == "svhn":
            _read_split(name, root, train=True, download=True)
    except Exception as err:  # network errors come in many types (URLError, RuntimeError, ssl, http)
        if _missing_files(name, root):
            raise _not_found(name, root, f"files missing and download failed ({type(err).__name__}: {err})") from err
        raise


# ----------------------------------------------------------------------------------------------------
# Cache


def _cache_path(name: str, root: Path, split: str) -> Path:
    return root / CACHE_DIR / f"{name}_{split}.pt"


def _read_cache(path: Path) -> tuple[Tensor, Tensor] | None:
    if not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if blob.get("version") != _CACHE_VERSION:
        return None
    return blob["x"], blob["y"]


def _write_cache(path: Path, x: Tensor, y: Tensor) -> None:
    # Temp file + os.replace: a concurrent reader or an interrupted write never sees a partial file.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"version": _CACHE_VERSION, "x": x, "y": y}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cached_splits(name: str, root: Path, download: bool) -> dict[str, tuple[Tensor, Tensor]]:
    splits = {split: _read_cache(_cache_path(name, root, split)) for split in ("train", "test")}
    if all(v is not None for v in splits.values()):
        return splits
    _load_raw(name, root, download)
    for split, cached in splits.items():
        if cached is None:
            x, y = _read_split(name, root, train=split == "train", download=False)
            _write_cache(_cache_path(name, root, split), x, y)
            splits[split] = (x, y)
    return splits


# ----------------------------------------------------------------------------------------------------
# Synthetic data


def make_synthetic(
    options: Mapping[str, Any] | None = None,
) -> tuple[str, tuple[Tensor, Tensor], tuple[Tensor, Tensor], int]:
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
        try:
            ints[key] = operator.index(opts[key])
        except TypeError:
            raise ValueError(f"synthetic option {key}={opts[key]!r} must be an integer") from None
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


# ----------------------------------------------------------------------------------------------------
# Public entry point


def load_splits(
    name: str,
    root: str | os.PathLike,
    *,
    validation: int = 10000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    download: bool = True,
    scale: str = "unit",
    synthetic: Mapping[str, Any] | None = None,
) -> DataSplits:
    """Load dataset ``name`` from ``root`` as whole tensors on ``device`` (see the module docstring).

    Args:
        name: one of :data:`DATASET_NAMES`.
        root: directory holding the datasets in torchvision's layout; also where the cache is written.
        validation: number of training points held out as the validation split (0: none). Must be in
            ``[0, n_train)``.
        seed: seeds the ``torch.Generator`` that picks the validation points.
        device: where all returned tensors live.
        download: let torchvision download missing files (otherwise raise DatasetNotFoundError).
        scale: ``"unit"``, ``"standardize"`` or ``"none"``.
        synthetic: options of the ``synthetic`` dataset (see :func:`make_synthetic`); must be None or
            empty for the other datasets.
    """
    _check_name(name)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    try:
        validation = operator.index(validation)
    except TypeError:
        raise ValueError(f"validation={validation!r} must be an integer number of points") from None
    if validation < 0:
        raise ValueError(f"validation={validation} must be >= 0")
    root = Path(root).expanduser()

    if name == "synthetic":
        label, (train_x, train_y), (test_x, test_y), num_classes = make_synthetic(synthetic)
    else:
        if synthetic:
            raise ValueError(
                f"synthetic options {dict(synthetic)} given for dataset {name!r}; they apply only to 'synthetic'"
            )
        splits = _cached_splits(name, root, download)
        (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
        label, num_classes = name, _NUM_CLASSES[name]

    n_train = len(train_x)
    if validation >= n_train:
        raise ValueError(
            f"validation={validation} must be smaller than the training set size {n_train} of {label!r}"
        )
    val_x = val_y = None
    if validation > 0:
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:validation].sort().values, perm[validation:].sort().values
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]

    # Move uint8 pixels (4x smaller than float32) once, then convert and scale on the device.
    device = torch.device(device)

    def to_device(x: Tensor) -> Tensor:
        return x.to(device).to(torch.float32)

    train_xf = to_device(train_x)
    if scale == "unit":
        shift, div = 0.0, 255.0
    elif scale == "standardize":
        shift = train_xf.mean(dim=0)
        std = train_xf.std(dim=0) if len(train_xf) > 1 else torch.zeros_like(shift)
        div = torch.where(std > 0, std, torch.ones_like(std))  # constant pixels (MNIST borders) stay 0
    else:
        shift, div = 0.0, 1.0

    def scaled(x: Tensor | None) -> Tensor | None:
        return None if x is None else (to_device(x) - shift) / div

    return DataSplits(
        name=label,
        train_x=(train_xf - shift) / div,
        train_y=train_y.to(device),
        val_x=scaled(val_x),
        val_y=None if val_y is None else val_y.to(device),
        test_x=scaled(test_x),
        test_y=test_y.to(device),
        num_classes=num_classes,
        in_features=train_x.shape[1],
    )
