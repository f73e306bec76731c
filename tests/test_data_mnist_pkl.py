"""pathsgd.data: the classic mnist.pkl.gz -> torchvision's raw MNIST files, and the restricted unpickler.

Fixtures are small pickles in the real format (float32 k/256 pixels, int64 labels, a tuple of three
(x, y) pairs), checked against their own statistics; the real file is used where present
(``data/mnist.pkl.gz``, which ``make data-mnist`` leaves, or ``$PATHSGD_MNIST_PKL``).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file, read_label_file

from pathsgd.data import DataFileError, load_splits, safe_load_numpy_pickle
from pathsgd.mnist_pkl import MNIST_STATS, check_mnist_arrays, convert_mnist_pickle
from tests.fakedata import PickledCall, evil_object

REPO = Path(__file__).parents[1]
REAL_PKL = Path(os.environ.get("PATHSGD_MNIST_PKL", REPO / "data" / "mnist.pkl.gz"))
SIZES = (50, 30, 20)  # train, valid, test
# MD5s of the original uncompressed MNIST files (yann.lecun.com), which the conversion reproduces.
ORIGINAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _parts(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pixels k as uint8 [N, 784], labels int64 [N]) for train, valid, test; every class in test."""
    rng = np.random.default_rng(seed)
    parts = []
    for n in SIZES:
        k = rng.integers(0, 256, size=(n, 784)).astype(np.uint8)
        k[:, 0], k[:, 1] = 0, 255
        parts.append((k, np.arange(n, dtype=np.int64) % 10))
    return parts


def _stats(parts) -> dict:
    train = np.concatenate([parts[0][0], parts[1][0]]).astype(np.float64) / 255
    return {
        "shapes": ((SIZES[0] + SIZES[1], 28, 28), (SIZES[2], 28, 28)),
        "test_label_counts": tuple(np.bincount(parts[2][1], minlength=10).tolist()),
        "mean": float(train.mean()),
        "std": float(train.std()),
    }


def _py2_array(a: np.ndarray) -> bytes:
    # What Python 2's cPickle (protocol 2) wrote for a numpy array, as in the real mnist.pkl.gz: the
    # data is a Python 2 str, which loads under encoding="latin1".
    dims = b"".join(b"J" + struct.pack("<i", d) for d in a.shape) + {1: b"\x85", 2: b"\x86"}[a.ndim]
    dtype = {np.dtype(np.float32): b"f4", np.dtype(np.int64): b"i8"}[a.dtype]
    data = a.tobytes()
    return (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R(K\x01" + dims
        + b"cnumpy\ndtype\nU\x02" + dtype + b"K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
        + b"\x89T" + struct.pack("<I", len(data)) + data + b"tb"
    )


def _write_pkl(path: Path, parts, fmt: str = "protocol2") -> Path:
    """Write parts as the classic pickle: x = k / 256 (float32 [N, 784]), y int64 [N]."""
    obj = tuple((k.astype(np.float32) / 256 if k.dtype == np.uint8 else k, y) for k, y in parts)
    if fmt == "python2":
        payload = b"\x80\x02" + b"".join(_py2_array(x) + _py2_array(y) + b"\x86" for x, y in obj) + b"\x87."
        assert all(np.array_equal(a, b) for a, b in zip(pickle.loads(payload, encoding="latin1")[0], obj[0]))
    else:
        payload = pickle.dumps(obj, protocol=2 if fmt == "protocol2" else pickle.HIGHEST_PROTOCOL)
    with gzip.open(path, "wb") as f:
        f.write(payload)
    return path


def _leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


@pytest.mark.parametrize("fmt", ["python2", "protocol2", "latest"])
def test_round_trip_exact(tmp_path, monkeypatch, fmt):
    parts = _parts()
    pkl = _write_pkl(tmp_path / "mnist.pkl.gz", parts, fmt)
    root = tmp_path / "root"
    found = convert_mnist_pickle(pkl, root, _stats(parts))
    assert found["shapes"] == ((80, 28, 28), (20, 28, 28))
    raw = root / "MNIST" / "raw"
    assert _leftovers(root) == ["MNIST", "MNIST/raw"] + sorted(f"MNIST/raw/{f}" for f in ORIGINAL_MD5)
    train_k = torch.from_numpy(np.concatenate([parts[0][0], parts[1][0]]))
    train_y = torch.from_numpy(np.concatenate([parts[0][1], parts[1][1]]))
    test_k, test_y = torch.from_numpy(parts[2][0]), torch.from_numpy(parts[2][1])
    # torchvision's own reader sees exactly the fixture's pixels (x * 256) and labels, train then valid.
    assert torch.equal(read_image_file(str(raw / "train-images-idx3-ubyte")), train_k.view(-1, 28, 28))
    assert torch.equal(read_label_file(str(raw / "train-labels-idx1-ubyte")), train_y)
    assert torch.equal(read_image_file(str(raw / "t10k-images-idx3-ubyte")), test_k.view(-1, 28, 28))
    assert torch.equal(read_label_file(str(raw / "t10k-labels-idx1-ubyte")), test_y)
    s = load_splits("mnist", root, validation=0, download=False, scale="none", verify=False)  # 80/20 images
    assert torch.equal(s.train_x, train_k.float()) and torch.equal(s.train_y, train_y)
    assert torch.equal(s.test_x, test_k.float()) and torch.equal(s.test_y, test_y)


def _doctor(case: str):
    """(parts to write, expected statistics, text the error must contain) for one broken file."""
    parts = _parts()
    expected = _stats(parts)
    (k0, y0), (k1, y1), (k2, y2) = [(k.astype(np.float32) / 256, y) for k, y in parts]
    if case == "non-integer pixel":
        k0[3, 7] = 7.5 / 256
        return [(k0, y0), (k1, y1), (k2, y2)], expected, "train part: pixel 0.029296875 at (3, 7) is not k/256"
    if case == "pixel above 255":
        k1[2, 9] = 1.0
        return [(k0, y0), (k1, y1), (k2, y2)], expected, "valid part: pixel 1.0 at (2, 9)"
    if case == "negative pixel":
        k2[0, 5] = -1 / 256
        return [(k0, y0), (k1, y1), (k2, y2)], expected, "test part: pixel -0.00390625 at (0, 5)"
    if case == "783 columns":
        return [(k0, y0), (k1, y1), (k2[:, :783], y2)], expected, "test part: x torch.float32 [20, 783]"
    if case == "one image fewer":
        return [(k0, y0), (k1[1:], y1[1:]), (k2, y2)], expected, "shapes ((79, 28, 28), (20, 28, 28)), expected"
    if case == "label 10":
        y0 = y0.copy()
        y0[4] = 10
        return [(k0, y0), (k1, y1), (k2, y2)], expected, ", train part: label 10 at position 4 is outside 0..9"
    if case == "float labels":
        return [(k0, y0), (k1, y1.astype(np.float64)), (k2, y2)], expected, "valid part: labels torch.float64 [30]"
    if case == "test label counts":
        y2 = y2.copy()
        y2[0] = 1  # one 0 became a 1
        return [(k0, y0), (k1, y1), (k2, y2)], expected, "test label counts (1, 3, 2,"
    if case == "mean":
        k0 = k0.copy()
        k0[:, 2:] = np.minimum(k0[:, 2:] + 20 / 256, 255 / 256)
        return [(k0, y0), (k1, y1), (k2, y2)], expected, "mean 0."
    assert case == "std"  # same mean (each row keeps 0 + 255 = 127 + 128), smaller spread
    k0, k1 = k0.copy(), k1.copy()
    for k in (k0, k1):
        k[:, 0], k[:, 1] = 127 / 256, 128 / 256
    assert _stats([(np.rint(k0 * 256).astype(np.uint8), y0), (np.rint(k1 * 256).astype(np.uint8), y1), parts[2]])[
        "mean"] == pytest.approx(expected["mean"], abs=1e-12)
    return [(k0, y0), (k1, y1), (k2, y2)], expected, "std 0."


CASES = ["non-integer pixel", "pixel above 255", "negative pixel", "783 columns", "one image fewer", "label 10",
         "float labels", "test label counts", "mean", "std"]


@pytest.mark.parametrize("case", CASES)
def test_each_check_refuses_a_doctored_file_and_leaves_nothing(tmp_path, case):
    parts, expected, text = _doctor(case)
    pkl = _write_pkl(tmp_path / "doctored.pkl.gz", parts)
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(DataFileError) as info:
        convert_mnist_pickle(pkl, root, expected)
    msg = str(info.value)
    assert msg.startswith(f"{pkl}") and text in msg and "make data-mnist" in msg and "\n" not in msg
    assert _leftovers(root) == []


def test_check_function_on_arrays():
    parts = _parts()
    expected = _stats(parts)
    train = torch.from_numpy(np.concatenate([parts[0][0], parts[1][0]])).view(-1, 28, 28)
    test_x, test_y = torch.from_numpy(parts[2][0]).view(-1, 28, 28), torch.from_numpy(parts[2][1])
    found = check_mnist_arrays("fixture", train, test_x, test_y, expected)
    assert found["mean"] == pytest.approx(expected["mean"], abs=1e-12)
    assert found["std"] == pytest.approx(expected["std"], abs=1e-12)
    with pytest.raises(DataFileError, match=r"^fixture: shapes .*expected \(\(60000, 28, 28\), \(10000, 28, 28\)\)"):
        check_mnist_arrays("fixture", train, test_x, test_y)  # the real MNIST's statistics by default
    assert MNIST_STATS["mean"] == 0.1307 and MNIST_STATS["std"] == 0.3081


@pytest.mark.parametrize("target", ["posix.system", "__builtin__.exec"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, target):
    marker = tmp_path / "marker"
    evil = evil_object(target, marker)
    pickle.loads(pickle.dumps(evil))
    assert marker.exists()  # the payload does run when unrestricted
    marker.unlink()
    parts = _parts()
    pkl = _write_pkl(tmp_path / "evil.pkl.gz", [(parts[0][0], evil), parts[1], parts[2]])
    with pytest.raises(pickle.UnpicklingError, match=rf"refused {target}"):
        with gzip.open(pkl) as f:
            safe_load_numpy_pickle(f)
    root = tmp_path / "root"
    with pytest.raises(DataFileError, match=rf"{pkl}: not the MNIST pickle .*refused {target}"):
        convert_mnist_pickle(pkl, root, _stats(parts))
    assert not marker.exists() and _leftovers(root) == []
    # The command line: exit status 2, one line naming the file and what it asked for.
    run = subprocess.run([sys.executable, "-m", "pathsgd.mnist_pkl", str(pkl), "--root", str(root)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and str(pkl) in run.stderr and f"refused {target}" in run.stderr
    assert "Traceback" not in run.stderr and not marker.exists() and _leftovers(root) == []


def test_unpickler_accepts_numpy_and_plain_data_only():
    obj = {"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "labels": [1, 2, 3], "name": "batch 1",
           "f": 2.5, "nested": ({"x": np.zeros(2)}, 7, None, True, b"raw")}
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        back = safe_load_numpy_pickle(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
        assert back.keys() == obj.keys() and np.array_equal(back["data"], obj["data"]) and back["labels"] == [1, 2, 3]
    # numpy.ndarray may only be named for _reconstruct: called itself on an object dtype and a buffer it
    # would make an array of raw pointers.
    forged = PickledCall(np.ndarray, (1,), np.dtype(object), b"A" * 8)
    with pytest.raises(pickle.UnpicklingError, match="refused a call of numpy.ndarray"):
        safe_load_numpy_pickle(io.BytesIO(pickle.dumps(forged, protocol=2)))
    for name in ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2"):
        module, attr = name.rsplit(".", 1)
        payload = b"\x80\x02c" + module.encode() + b"\n" + attr.encode() + b"\n)R."
        with pytest.raises(pickle.UnpicklingError, match=f"refused {name}"):
            safe_load_numpy_pickle(io.BytesIO(payload))


def test_existing_files_identical_accepted_different_refused(tmp_path, monkeypatch):
    parts = _parts()
    pkl, root = _write_pkl(tmp_path / "mnist.pkl.gz", parts), tmp_path / "root"
    convert_mnist_pickle(pkl, root, _stats(parts))
    before = _leftovers(root)
    convert_mnist_pickle(pkl, root, _stats(parts))  # a second run with the same result is harmless
    assert _leftovers(root) == before
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    changed = labels.read_bytes()[:-1] + b"\x03"
    labels.write_bytes(changed)
    with pytest.raises(DataFileError, match=rf"{labels} exists and differs from the conversion; nothing was written"):
        convert_mnist_pickle(pkl, root, _stats(parts))
    assert labels.read_bytes() == changed and _leftovers(root) == before


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
@pytest.mark.skipif(not REAL_PKL.is_file(), reason=f"{REAL_PKL} not present (make data-mnist)")
def test_real_mnist_pkl(tmp_path, monkeypatch):
    root = tmp_path / "root"
    run = subprocess.run([sys.executable, "-m", "pathsgd.mnist_pkl", str(REAL_PKL), "--root", str(root)],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "(980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)" in run.stdout
    assert "mean 0.1307 std 0.3081" in run.stdout
    raw = root / "MNIST" / "raw"
    for name, md5 in ORIGINAL_MD5.items():  # byte-identical to the original files
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5
    s = load_splits("mnist", root, validation=10000, download=False)
    assert (len(s.train_x), len(s.val_x), len(s.test_x)) == (50000, 10000, 10000)
    assert s.in_features == 784 and s.num_classes == 10


def test_the_old_converter_command_names_the_new_one():
    run = subprocess.run([sys.executable, "-m", "pathsgd.data", "mnist-pkl", "x.pkl.gz", "--root", "data"],
                         capture_output=True, text=True, cwd=REPO)
    assert run.returncode != 0 and "python -m pathsgd.mnist_pkl FILE --root DIR" in run.stderr
