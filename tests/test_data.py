"""pathsgd.data: loading through torchvision from fixture files in the real formats; no network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from pathsgd.data import DATASET_NAMES, DataSplits, DatasetNotFoundError, expected_files, load_splits
from tests.fakedata import FAKE_NAMES, fake_pixels, write_fake_dataset

N_TRAIN, N_TEST = 40, 20
DIMS = {"mnist": 784, "fashion_mnist": 784, "cifar10": 3072, "cifar100": 3072, "svhn": 3072}
CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn": 10}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def _write(name, root, **kw):
    return write_fake_dataset(name, root, n_train=N_TRAIN, n_test=N_TEST, **kw)


@pytest.mark.parametrize("name", FAKE_NAMES)
def test_load_real_formats_round_trip(name, tmp_path):
    _write(name, tmp_path)
    s = load_splits(name, tmp_path, validation=0, download=False, verify=False)
    assert isinstance(s, DataSplits)
    assert s.name == name and s.num_classes == CLASSES[name] and s.in_features == DIMS[name]
    assert s.val_x is None and s.val_y is None
    assert s.train_x.shape == (N_TRAIN, DIMS[name]) and s.test_x.shape == (N_TEST, DIMS[name])
    assert s.train_x.dtype == torch.float32 and s.train_y.dtype == torch.int64
    assert s.train_y.shape == (N_TRAIN,) and s.test_y.shape == (N_TEST,)
    for split, x, y in (("train", s.train_x, s.train_y), ("test", s.test_x, s.test_y)):
        pixels, labels = fake_pixels(name, len(x), 0, split)
        # Exact: same pixels, same order (CHW for colour images), same division by 255.
        assert torch.equal(x, torch.from_numpy(pixels).float() / 255)
        assert torch.equal(y, torch.from_numpy(labels))
        assert x.min() == 0.0 and x.max() == 1.0
        assert 0 <= y.min() and y.max() < CLASSES[name]


@pytest.mark.parametrize("name", FAKE_NAMES)
def test_cache_written_and_used_without_raw_files(name, tmp_path):
    folder = _write(name, tmp_path)
    first = load_splits(name, tmp_path, validation=0, download=False, verify=False)
    for split in ("train", "test"):
        assert (tmp_path / "pathsgd_cache" / f"{name}_{split}.pt").is_file()
    shutil.rmtree(folder)
    second = load_splits(name, tmp_path, validation=0, download=False, verify=False)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)
    # No stray temp files from the atomic writes.
    assert sorted(p.name for p in (tmp_path / "pathsgd_cache").iterdir()) == [f"{name}_test.pt", f"{name}_train.pt"]


def test_ungzipped_mnist_files(tmp_path):
    folder = _write("mnist", tmp_path, gzip=False)
    assert not list(folder.glob("*.gz"))
    s = load_splits("mnist", tmp_path, validation=0, download=False, verify=False)
    pixels, _ = fake_pixels("mnist", N_TRAIN, 0, "train")
    assert torch.equal(s.train_x, torch.from_numpy(pixels).float() / 255)


def test_gzipped_mnist_is_decompressed_next_to_itself(tmp_path):
    folder = _write("fashion_mnist", tmp_path, gzip=True)
    load_splits("fashion_mnist", tmp_path, validation=0, download=False, verify=False)
    names = sorted(p.name for p in folder.iterdir())
    assert "train-images-idx3-ubyte" in names and "train-images-idx3-ubyte.gz" in names
    assert not [n for n in names if n.endswith(".tmp")]


def test_scales(tmp_path):
    _write("mnist", tmp_path)
    raw = load_splits("mnist", tmp_path, validation=10, download=False, verify=False, scale="none")
    unit = load_splits("mnist", tmp_path, validation=10, download=False, verify=False, scale="unit")
    std = load_splits("mnist", tmp_path, validation=10, download=False, verify=False, scale="standardize")
    assert raw.train_x.max() == 255.0 and torch.equal(raw.train_x, raw.train_x.round())
    assert torch.equal(unit.test_x, raw.test_x / 255)
    # Standardized with the training portion's statistics only.
    mean, sd = raw.train_x.mean(0), raw.train_x.std(0)
    sd = torch.where(sd > 0, sd, torch.ones_like(sd))
    torch.testing.assert_close(std.train_x, (raw.train_x - mean) / sd)
    torch.testing.assert_close(std.val_x, (raw.val_x - mean) / sd)
    torch.testing.assert_close(std.test_x, (raw.test_x - mean) / sd)
    varying = raw.train_x.std(0) > 0
    torch.testing.assert_close(std.train_x.mean(0), torch.zeros(784), atol=1e-5, rtol=0)
    torch.testing.assert_close(std.train_x.std(0)[varying], torch.ones(int(varying.sum())), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"'minmax'.*unit, standardize, none"):
        load_splits("mnist", tmp_path, download=False, verify=False, scale="minmax")


def test_validation_split(tmp_path):
    _write("cifar10", tmp_path)
    full = load_splits("cifar10", tmp_path, validation=0, download=False, verify=False)
    a = load_splits("cifar10", tmp_path, validation=15, seed=1, download=False, verify=False)
    b = load_splits("cifar10", tmp_path, validation=15, seed=1, download=False, verify=False)
    c = load_splits("cifar10", tmp_path, validation=15, seed=2, download=False, verify=False)
    assert a.train_x.shape == (N_TRAIN - 15, 3072) and a.val_x.shape == (15, 3072) and a.val_y.shape == (15,)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    assert not torch.equal(a.val_x, c.val_x)
    assert torch.equal(a.test_x, full.test_x)

    def rows(x):  # fixture rows are distinct, so a row identifies a training point
        return {tuple(r.tolist()) for r in x}

    train, val, every = rows(a.train_x), rows(a.val_x), rows(full.train_x)
    assert len(every) == N_TRAIN
    assert not train & val and train | val == every


@pytest.mark.parametrize("bad", [N_TRAIN, N_TRAIN + 1, 10000])
def test_validation_too_large(bad, tmp_path):
    _write("mnist", tmp_path)
    with pytest.raises(ValueError, match=rf"{bad}.*{N_TRAIN}"):
        load_splits("mnist", tmp_path, validation=bad, download=False, verify=False)


def test_validation_negative(tmp_path):
    with pytest.raises(ValueError, match="-1"):
        load_splits("synthetic", tmp_path, validation=-1)


def test_unknown_dataset_lists_names(tmp_path):
    with pytest.raises(ValueError, match="'imagenet'") as info:
        load_splits("imagenet", tmp_path)
    for name in DATASET_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize("name", FAKE_NAMES)
def test_missing_files_error_names_directory_and_files(name, tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        load_splits(name, tmp_path, download=False, verify=False)
    msg = str(info.value)
    files = expected_files(name, tmp_path)
    assert files and str(files[0].parent) in msg and "data.root=" in msg
    for f in files:
        assert f.name in msg
    assert isinstance(info.value, FileNotFoundError)
    assert ("make data-mnist" in msg) == (name == "mnist")  # MNIST's offline route


def test_failed_download_becomes_not_found(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download failed") as info:
        load_splits("mnist", tmp_path, download=True)
    assert str(tmp_path / "MNIST" / "raw") in str(info.value)


def test_expected_files_layout(tmp_path):
    svhn = tmp_path / "SVHN"
    assert expected_files("svhn", tmp_path) == [svhn / "train_32x32.mat", svhn / "test_32x32.mat"]
    assert expected_files("mnist", tmp_path)[0] == tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    assert expected_files("cifar100", tmp_path)[0].parent == tmp_path / "cifar-100-python"
    assert expected_files("synthetic", tmp_path) == []


def test_synthetic_deterministic_and_label_dependent(tmp_path):
    opts = {"n_train": 300, "n_test": 100, "in_features": 16, "num_classes": 4}
    a = load_splits("synthetic", tmp_path, validation=50, synthetic=opts)
    b = load_splits("synthetic", tmp_path, validation=50, synthetic=dict(opts))
    c = load_splits("synthetic", tmp_path, validation=50, synthetic={**opts, "label": "other"})
    d = load_splits("synthetic", tmp_path, validation=50, synthetic={**opts, "seed": 1})
    assert a.name == "synthetic" and c.name == "other"
    assert a.train_x.shape == (250, 16) and a.val_x.shape == (50, 16) and a.test_x.shape == (100, 16)
    assert a.num_classes == 4 and a.in_features == 16
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert not torch.equal(a.train_x, c.train_x) and not torch.equal(a.train_x, d.train_x)
    assert 0 <= a.train_x.min() and a.train_x.max() <= 1
    # Every class occurs, none dominates: a constant predictor is far from perfect.
    counts = torch.bincount(torch.cat([a.train_y, a.val_y]), minlength=4)
    assert counts.min() > 0 and counts.max() < 0.6 * 300
    assert not list(tmp_path.iterdir())  # synthetic writes nothing


@pytest.mark.slow  # seconds of training or subprocesses: make test-slow (CI runs it)
def test_synthetic_is_learnable(tmp_path):
    s = load_splits("synthetic", tmp_path, validation=0)
    assert s.train_x.shape == (2000, 64) and s.num_classes == 10
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = s.train_x - 0.5
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), s.train_y).backward()
        opt.step()
    acc = (model(s.test_x - 0.5).argmax(1) == s.test_y).float().mean().item()
    assert acc > 0.3  # chance is 0.1


def test_synthetic_bad_options(tmp_path):
    with pytest.raises(ValueError, match="n_trian"):
        load_splits("synthetic", tmp_path, validation=0, synthetic={"n_trian": 10})
    with pytest.raises(ValueError, match="num_classes=1"):
        load_splits("synthetic", tmp_path, validation=0, synthetic={"num_classes": 1})
    with pytest.raises(ValueError, match="only to 'synthetic'"):
        load_splits("mnist", tmp_path, synthetic={"n_train": 10})


def test_device_argument(tmp_path):
    s = load_splits("synthetic", tmp_path, validation=10, device=torch.device("cpu"))
    assert all(t.device.type == "cpu" for t in (s.train_x, s.train_y, s.val_x, s.val_y, s.test_x, s.test_y))


def test_import_does_not_import_torchvision():
    # torchvision (and scipy) are needed only once a real dataset is read.
    code = "import sys, pathsgd.data; assert 'torchvision' not in sys.modules and 'scipy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist_from_debian(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for f in expected_files("fashion_mnist", tmp_path):
        (raw / (f.name + ".gz")).symlink_to(DEBIAN_FASHION / (f.name + ".gz"))
    s = load_splits("fashion_mnist", tmp_path, validation=0, download=False)  # the real files: verified
    assert s.train_x.shape == (60000, 784) and s.test_x.shape == (10000, 784)
    assert torch.equal(torch.bincount(s.train_y), torch.full((10,), 6000))
    assert torch.equal(torch.bincount(s.test_y), torch.full((10,), 1000))
    assert 0 <= s.train_x.min() and s.train_x.max() == 1.0
