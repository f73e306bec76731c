"""pathsgd.data: every raw file is verified before it is parsed; corrupt caches are rebuilt; file modes.

Fixtures (tests/fakedata.py) cannot have the original MD5s or MNIST's 60000/10000 counts: they load with
``verify=False``; tests of those checks load with ``verify=True``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision import datasets

from pathsgd import data
from pathsgd.data import DataFileError, DatasetNotFoundError, load_splits
from tests.fakedata import evil_object, fake_pixels, write_fake_dataset

N_TRAIN, N_TEST = 40, 20
BATCH = {"cifar10": "data_batch_1", "cifar100": "train"}


def _write(name, root, **kw):
    return write_fake_dataset(name, root, n_train=N_TRAIN, n_test=N_TEST, **kw)


def _load(name, root, verify=False):
    return load_splits(name, root, validation=0, download=False, verify=verify)


def _cache_files(root: Path) -> list[str]:
    cache = root / "pathsgd_cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def _one_line(err: BaseException, *parts) -> str:
    msg = str(err)
    assert "\n" not in msg and "Remedy:" in msg, msg
    for part in parts:
        assert str(part) in msg, (part, msg)
    return msg


@pytest.mark.parametrize("checksums", ["on", "skipped"])
@pytest.mark.parametrize("target", ["posix.system", "__builtin__.exec"])
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_crafted_cifar_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch, name, target, checksums):
    folder = _write(name, tmp_path)
    marker = tmp_path / "marker"
    batch = folder / BATCH[name]
    # Keep the real structure, with a payload in place of the labels.
    entry = pickle.load(open(batch, "rb"), encoding="latin1")
    entry["labels" if name == "cifar10" else "fine_labels"] = evil_object(target, marker)
    batch.write_bytes(pickle.dumps(entry, protocol=2))
    if checksums == "on":
        with pytest.raises(DataFileError) as info:
            _load(name, tmp_path, verify=True)
        _one_line(info.value, batch, "MD5 is", hashlib.md5(batch.read_bytes()).hexdigest())
    else:
        with pytest.raises(DataFileError) as info:
            _load(name, tmp_path)
        _one_line(info.value, batch, f"refused {target}")
    assert not marker.exists() and _cache_files(tmp_path) == []
    pickle.load(open(batch, "rb"), encoding="latin1")  # the payload is real: plain pickle runs it
    assert marker.exists()


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_wrong_md5_names_file_both_md5s_and_remedy(tmp_path, monkeypatch, name):
    _write(name, tmp_path)
    if name == "svhn":
        first, expected = tmp_path / "SVHN" / "train_32x32.mat", datasets.SVHN.split_list["train"][2]
    else:
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        first, expected = tmp_path / cls.base_folder / cls.train_list[0][0], cls.train_list[0][1]
    with pytest.raises(DataFileError) as info:
        _load(name, tmp_path, verify=True)
    found = hashlib.md5(first.read_bytes()).hexdigest()
    _one_line(info.value, f"{first}: MD5 is {found}, torchvision expects {expected}", "delete it", "download it again",
              "put the original file there")
    assert _cache_files(tmp_path) == []


def test_cifar_file_not_a_pickle(tmp_path):
    folder = _write("cifar10", tmp_path)
    (folder / "test_batch").write_bytes((folder / "test_batch").read_bytes()[:1000])  # truncated
    with pytest.raises(DataFileError) as info:
        _load("cifar10", tmp_path)
    _one_line(info.value, folder / "test_batch", "not a CIFAR batch")
    assert _cache_files(tmp_path) == []


def test_truncated_gz(tmp_path):
    folder = _write("mnist", tmp_path, gzip=True)
    gz = folder / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(DataFileError) as info:
        _load("mnist", tmp_path)
    _one_line(info.value, gz, "cannot be decompressed")
    names = sorted(p.name for p in folder.iterdir())
    assert "train-images-idx3-ubyte" not in names and not [n for n in names if n.endswith(".tmp")]


@pytest.mark.parametrize(
    "case, file, text",
    [
        ("random bytes", "t10k-images-idx3-ubyte", "expected 2051 (an IDX images file)"),
        ("labels as images", "train-images-idx3-ubyte", "magic number 2049, expected 2051"),
        ("truncated", "train-images-idx3-ubyte", f"bytes where its header ({N_TRAIN}x28x28) needs"),
        ("too short", "t10k-labels-idx1-ubyte", "only 3 bytes, too short for an IDX header"),
        ("fewer labels", "train-labels-idx1-ubyte", f"labels torch.int64 [{N_TRAIN - 1}] for {N_TRAIN} images"),
        ("label out of range", "train-labels-idx1-ubyte", "label 200 at position 3 is outside 0..9"),
    ],
)
def test_bad_mnist_files_one_clear_error_and_no_cache(tmp_path, case, file, text):
    folder = _write("fashion_mnist", tmp_path, gzip=False)
    path = folder / file
    data = path.read_bytes()
    if case == "random bytes":
        data = np.random.default_rng(0).integers(0, 256, len(data), dtype=np.uint8).tobytes()
    elif case == "labels as images":
        data = (folder / "train-labels-idx1-ubyte").read_bytes()
    elif case == "truncated":
        data = data[:-100]
    elif case == "too short":
        data = data[:3]
    elif case == "fewer labels":
        data = data[:4] + (N_TRAIN - 1).to_bytes(4, "big") + data[8:-1]
    else:
        data = data[:8 + 3] + bytes([200]) + data[8 + 4:]
    path.write_bytes(data)
    with pytest.raises(DataFileError) as info:
        _load("fashion_mnist", tmp_path)
    assert _one_line(info.value, text).startswith(f"{path}: ")
    assert _cache_files(tmp_path) == []
    _write("fashion_mnist", tmp_path, gzip=False)  # the original file back: loads, then caches
    s = _load("fashion_mnist", tmp_path)
    assert torch.equal(s.train_y, torch.from_numpy(fake_pixels("fashion_mnist", N_TRAIN, 0, "train")[1]))
    assert _cache_files(tmp_path) == ["fashion_mnist_test.pt", "fashion_mnist_train.pt"]


def test_a_bad_unpacked_file_of_a_gz_names_the_gz_as_the_remedy(tmp_path):
    """Deleting the unpacked file alone would unpack the same bad bytes again: the remedy is the .gz."""
    folder = _write("fashion_mnist", tmp_path, gzip=True)
    _load("fashion_mnist", tmp_path)  # unpacks each .gz next to it
    path = folder / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    for cache in (tmp_path / "pathsgd_cache").iterdir():
        cache.unlink()
    with pytest.raises(DataFileError) as info:
        _load("fashion_mnist", tmp_path)
    assert f"Remedy: replace {path}.gz, from which it was unpacked, with the original and delete {path}" in str(info.value)


def test_mnist_counts_are_checked_outside_fixtures(tmp_path, monkeypatch):
    folder = _write("mnist", tmp_path, gzip=False)
    with pytest.raises(DataFileError) as info:
        _load("mnist", tmp_path, verify=True)
    _one_line(info.value, f"{folder / 'train-images-idx3-ubyte'}: dimensions {N_TRAIN}x28x28, expected 60000x28x28")


def test_svhn_label_out_of_range(tmp_path):
    import scipy.io

    _write("svhn", tmp_path)
    path = tmp_path / "SVHN" / "test_32x32.mat"
    mat = scipy.io.loadmat(path)
    mat["y"][5, 0] = 11
    scipy.io.savemat(path, {"X": mat["X"], "y": mat["y"]})
    with pytest.raises(DataFileError) as info:
        _load("svhn", tmp_path)
    _one_line(info.value, f"{path}: label 11 at position 5 is outside 0..9")
    assert _cache_files(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not our dict", "cut to 100 features", "a label of 999",
                                    "pixels edited"])
def test_corrupt_cache_is_rebuilt_with_a_warning(tmp_path, damage):
    """A damaged or tampered cache (valid torch format too) is rebuilt from the raw files, never trained on."""
    _write("cifar100", tmp_path)
    first = _load("cifar100", tmp_path)
    cache = tmp_path / "pathsgd_cache" / "cifar100_train.pt"
    blob = torch.load(cache, weights_only=True)
    x, y = blob["x"].clone(), blob["y"].clone()
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:5000])
    elif damage == "garbage":
        cache.write_bytes(os.urandom(3000))
    elif damage == "not our dict":
        torch.save({**blob, "x": torch.zeros(3, dtype=torch.float32), "y": torch.zeros(3)}, cache)
    elif damage in ("cut to 100 features", "a label of 999"):  # with a checksum made to match
        x, y = (x[:, :100].contiguous(), y) if damage == "cut to 100 features" else (x, y.index_fill(0, torch.tensor([0]), 999))
        torch.save({**blob, "x": x, "y": y, "sha256": data._digest(x, y)}, cache)
    else:
        x[0, 0] ^= 1
        torch.save({**blob, "x": x}, cache)
    with pytest.warns(UserWarning, match=rf"cache file {cache} is corrupt .*rebuilding it from the raw files"):
        second = _load("cifar100", tmp_path)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.train_y, second.train_y)
    blob = torch.load(cache, weights_only=True)
    assert torch.equal(blob["y"], first.train_y)
    assert _cache_files(tmp_path) == ["cifar100_test.pt", "cifar100_train.pt"]


def test_corrupt_cache_without_raw_files_is_a_clear_error(tmp_path):
    folder = _write("mnist", tmp_path)
    _load("mnist", tmp_path)
    cache = tmp_path / "pathsgd_cache" / "mnist_test.pt"
    cache.write_bytes(b"not a torch file")
    for f in folder.iterdir():
        f.unlink()
    with pytest.warns(UserWarning, match="corrupt"), pytest.raises(DatasetNotFoundError) as info:
        _load("mnist", tmp_path)
    msg = str(info.value)
    assert f"cache file {cache} is unusable and cannot be rebuilt" in msg and "Put the files there" in msg


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_cache_and_unpacked_files_are_readable_by_others(tmp_path, umask):
    old = os.umask(umask)
    try:
        folder = _write("mnist", tmp_path, gzip=True)
        _load("mnist", tmp_path)
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    files = [folder / "train-images-idx3-ubyte", folder / "t10k-labels-idx1-ubyte"]
    files += sorted((tmp_path / "pathsgd_cache").iterdir())
    assert len(files) == 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == want, (path, oct(path.stat().st_mode))


def test_converted_mnist_files_are_readable_by_others(tmp_path):
    from pathsgd.mnist_pkl import convert_mnist_pickle

    x = np.tile(np.arange(784, dtype=np.float32) % 256 / 256, (20, 1))
    y = np.arange(20, dtype=np.int64) % 10
    pkl = tmp_path / "m.pkl.gz"
    with gzip.open(pkl, "wb") as f:
        pickle.dump(((x, y), (x[:5], y[:5]), (x, y)), f, protocol=2)
    old = os.umask(0o022)
    try:
        stats = {"shapes": ((25, 28, 28), (20, 28, 28)), "test_label_counts": (2,) * 10}
        train = np.concatenate([x, x[:5]]).astype(np.float64) * 256 / 255
        convert_mnist_pickle(pkl, tmp_path / "root", {**stats, "mean": train.mean(), "std": train.std()})
    finally:
        os.umask(old)
    raw = tmp_path / "root" / "MNIST" / "raw"
    assert stat.S_IMODE(raw.stat().st_mode) == 0o755
    for path in raw.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
