"""Tests for robustbench_sparse.datasets (offline: digits, fake image folders, the shared MNIST test set)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from robustbench_sparse import datasets as ds
from robustbench_sparse.errors import UserError

MNIST_T10K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist-t10k"


def _stack(dataset: torch.utils.data.Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)  # type: ignore[arg-type]
    return torch.stack(xs), torch.as_tensor([int(y) for y in ys])


@pytest.fixture(scope="module")
def digits() -> ds.DatasetSplits:
    return ds.load_dataset("digits")


def test_list_datasets_and_info_without_disk() -> None:
    names = ds.list_datasets()
    assert names == sorted(names)
    assert {
        "digits",
        "mnist",
        "fashion-mnist",
        "cifar10",
        "cifar100",
        "svhn",
        "imagefolder",
    } <= set(names)
    for name in names:
        info = ds.dataset_info(name)
        assert info.name == name
        c, _h, _w = info.input_shape
        assert len(info.mean) == len(info.std) == c
        assert all(0 < s < 1 for s in info.std) and all(0 < m < 1 for m in info.mean)
    assert ds.dataset_info("cifar100").num_classes == 100
    assert ds.dataset_info("mnist").input_shape == (1, 28, 28)
    assert ds.dataset_info("svhn").input_shape == (3, 32, 32)


def test_unknown_dataset_lists_valid_names() -> None:
    with pytest.raises(UserError) as err:
        ds.load_dataset("cifar-10")
    msg = str(err.value)
    assert "'cifar-10'" in msg and "cifar10" in msg and "digits" in msg and "\n" not in msg
    with pytest.raises(UserError, match="valid"):
        ds.dataset_info("imagenet1k")
    with pytest.raises(UserError, match="split"):
        ds.load_split("digits", "validation")


def test_digits_split_sizes_range_and_dtype(digits: ds.DatasetSplits) -> None:
    assert digits.info == ds.dataset_info("digits")
    assert len(digits.train) == 1347 and len(digits.test) == 450
    x, _ = digits.train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    xs, _ = _stack(digits.test)
    assert xs.min() >= 0.0 and xs.max() <= 1.0 and xs.max() == 1.0


def test_digits_is_deterministic_and_stratified(digits: ds.DatasetSplits) -> None:
    again = ds.load_dataset("digits", seed=123)  # seed only affects train_limit subsets
    for a, b in ((digits.train, again.train), (digits.test, again.test)):
        xa, ya = _stack(a)
        xb, yb = _stack(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    _, y_tr = _stack(digits.train)
    _, y_te = _stack(digits.test)
    tr = np.bincount(y_tr.numpy(), minlength=10) / len(y_tr)
    te = np.bincount(y_te.numpy(), minlength=10) / len(y_te)
    assert np.abs(tr - te).max() < 0.01  # stratified: same class proportions in both splits


def test_digits_mean_std_constants_match_train_split(digits: ds.DatasetSplits) -> None:
    xs, _ = _stack(digits.train)
    x64 = xs.double()
    assert x64.mean().item() == pytest.approx(ds.DIGITS_MEAN, abs=1e-7)
    assert x64.std(unbiased=False).item() == pytest.approx(ds.DIGITS_STD, abs=1e-7)
    assert ds.dataset_info("digits").mean == (ds.DIGITS_MEAN,)


def test_limits_are_deterministic(digits: ds.DatasetSplits) -> None:
    lim = ds.load_dataset("digits", train_limit=100, test_limit=30, seed=1)
    assert len(lim.train) == 100 and len(lim.test) == 30
    # The test subset is class-balanced with a fixed seed, whatever the training seed.
    _, y_lim = _stack(lim.test)
    assert np.bincount(y_lim.numpy(), minlength=10).tolist() == [3] * 10
    again = ds.load_dataset("digits", test_limit=30, seed=7).test
    assert isinstance(lim.test, Subset) and isinstance(again, Subset)
    assert list(lim.test.indices) == list(again.indices)
    _, y_tr = _stack(lim.train)
    assert np.bincount(y_tr.numpy(), minlength=10).tolist() == [10] * 10  # class-balanced
    same = ds.load_dataset("digits", train_limit=100, seed=1)
    other = ds.load_dataset("digits", train_limit=100, seed=2)
    assert isinstance(lim.train, Subset) and isinstance(same.train, Subset)
    assert isinstance(other.train, Subset)
    assert list(lim.train.indices) == list(same.train.indices)
    assert list(lim.train.indices) != list(other.train.indices)
    assert len(ds.load_dataset("digits", train_limit=10_000).train) == 1347
    with pytest.raises(UserError):
        ds.load_dataset("digits", test_limit=-1)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cifar10", "cifar-10-batches-py"),
        ("cifar100", "cifar-100-python"),
        ("mnist", "MNIST/raw/train-images-idx3-ubyte"),
        ("fashion-mnist", "FashionMNIST/raw/train-images-idx3-ubyte"),
        ("svhn", "train_32x32.mat"),
    ],
)
def test_missing_data_names_path_and_download_flag(
    tmp_path: Path, name: str, expected: str
) -> None:
    with pytest.raises(UserError) as err:
        ds.load_dataset(name, root=tmp_path)
    msg = str(err.value)
    assert str(tmp_path) in msg and expected in msg and "--download" in msg and "\n" not in msg


def test_missing_imagefolder_names_layout(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        ds.load_dataset("imagefolder", root=tmp_path)
    assert str(tmp_path / "train") in str(err.value) and "root/val" in str(err.value)


def test_imagefolder_reads_class_folders(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("ant", "bee", "cat"):
            (tmp_path / split / cls).mkdir(parents=True)
            img = rng.integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / split / cls / "0.png")
    data = ds.load_dataset("imagefolder", root=tmp_path)  # native size: never resized
    assert data.info.num_classes == 3 and data.info.input_shape == (3, 40, 30)
    assert data.info.stats_source == "computed on 3 training images"
    for split in (data.train, data.test):
        x, y = split[2]
        assert x.shape == (3, 40, 30) and x.min() >= 0.0 and x.max() <= 1.0 and y == 2
    big = ds.load_dataset("imagefolder", root=tmp_path, image_size=224, mean=[0.5], std=[0.25])
    assert big.info.input_shape == (3, 224, 224) and big.info.stats_source == "given"
    assert big.info.mean == (0.5,) * 3
    assert big.test[0][0].shape == (3, 224, 224)


def test_default_eps_grids() -> None:
    for name in ds.list_datasets():
        for norm in ("linf", "l2", "l1"):
            grid = ds.default_eps_grid(name, norm)
            assert grid[0] == 0.0 and grid == sorted(grid) and len(set(grid)) == len(grid)
            d = math.prod(ds.dataset_info(name).input_shape)
            assert grid[-1] < {"linf": 1.0, "l2": math.sqrt(d), "l1": d}[norm]  # not everything
    assert ds.default_eps_grid("digits", "linf") == [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
    assert ds.default_eps_grid("cifar10", "linf")[-1] == pytest.approx(16 / 255)
    assert ds.default_eps_grid("imagefolder", "linf")[-1] == pytest.approx(4 / 255)
    assert ds.default_eps_grid("digits", "l2") == [0.0, 0.25, 0.5, 1.0, 1.5, 2.0]
    assert ds.default_eps_grid("mnist", "L2")[-1] == 3.0
    assert ds.default_eps_grid("svhn", "l2") == [0.0, 0.125, 0.25, 0.5, 1.0]
    assert ds.default_eps_grid("imagefolder", "l2") == [0.0, 0.25, 0.5, 1.0, 2.0]
    ds.default_eps_grid("digits", "linf").append(9.0)  # a copy: the default is not mutated
    assert ds.default_eps_grid("digits", "linf")[-1] == 0.3
    assert ds.default_eps_grid("cifar10", "l1")[-1] == 12.0  # Croce & Hein 2021's CIFAR-10 budget
    with pytest.raises(UserError, match="norm"):
        ds.default_eps_grid("digits", "l0")


@pytest.fixture
def mnist_test_only_root(tmp_path: Path) -> Path:
    if not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST test set not found at {MNIST_T10K}")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (raw / name).symlink_to(MNIST_T10K / name)
    return tmp_path


def test_mnist_real_test_split(mnist_test_only_root: Path) -> None:
    test = ds.load_split("mnist", "test", root=mnist_test_only_root)
    assert len(test) == 10_000  # type: ignore[arg-type]
    counts = torch.zeros(10, dtype=torch.long)
    lo, hi = 1.0, 0.0
    for x, y in DataLoader(test, batch_size=2500):
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32
        lo, hi = min(lo, x.min().item()), max(hi, x.max().item())
        counts += torch.bincount(y, minlength=10)
    assert lo == 0.0 and hi == 1.0
    assert counts.sum() == 10_000 and counts[1] == 1135
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    limited = ds.load_split("mnist", "test", root=mnist_test_only_root, limit=25)
    assert len(limited) == 25  # type: ignore[arg-type]
    assert isinstance(limited, Subset)
    labels = [int(limited[i][1]) for i in range(25)]
    assert sorted(np.bincount(labels, minlength=10).tolist()) == [2] * 5 + [3] * 5  # balanced
    first = int(limited.indices[0])
    assert torch.equal(limited[0][0], test[first][0])


def test_mnist_full_load_needs_train_split(mnist_test_only_root: Path) -> None:
    with pytest.raises(UserError, match=r"train split.*train-images-idx3-ubyte.*--download"):
        ds.load_dataset("mnist", root=mnist_test_only_root)
