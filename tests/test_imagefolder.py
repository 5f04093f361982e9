"""imagefolder: native size, resize only when asked, size-fitted augmentation, mean/std, class folders.

Real images: a few hundred members of the shared CIFAR-10 JPEG archive (skipped where it is absent);
synthetic folders for the cases real data does not cover (mixed sizes, large images).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from rbs.cli import main
from robustbench_sparse import datasets as ds
from robustbench_sparse import imagefolder as imf
from robustbench_sparse.errors import UserError
from tests.data_helpers import extract_cifar_jpeg

TRAIN_PER_CLASS = 20
TEST_PER_CLASS = 10


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 train + 100 test real CIFAR-10 JPEGs, ImageFolder layout (``train/``, ``test/``)."""
    return extract_cifar_jpeg(tmp_path_factory.mktemp("cifar"), TRAIN_PER_CLASS, TEST_PER_CLASS)


def _folder(
    root: Path, sizes: dict[str, list[tuple[int, int]]], split_names: tuple[str, ...]
) -> Path:
    """Synthetic ImageFolder: ``sizes[class]`` lists (H, W) of its images, in every split."""
    rng = np.random.default_rng(0)
    for split in split_names:
        for cls, hw in sizes.items():
            (root / split / cls).mkdir(parents=True)
            for i, (h, w) in enumerate(hw):
                pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
    return root


def _kinds(transform: object) -> list[type]:
    return [type(t) for t in transform.transforms]  # type: ignore[attr-defined]


def test_cifar_jpeg_native_layout(cifar_root: Path) -> None:
    layout = imf.resolve_layout(cifar_root, ["train", "test"])
    assert layout.size == (32, 32) and layout.native
    assert layout.classes == ds.CIFAR10_CLASSES  # the eval split is named "test" here
    data = ds.load_dataset("imagefolder", root=cifar_root)
    assert data.info.num_classes == 10 and data.info.input_shape == (3, 32, 32)
    assert len(data.train) == 10 * TRAIN_PER_CLASS and len(data.test) == 10 * TEST_PER_CLASS  # type: ignore[arg-type]
    # mean/std computed on the training images, close to CIFAR-10's published values
    assert data.info.stats_source == f"computed on {10 * TRAIN_PER_CLASS} training images"
    published = ds.dataset_info("cifar10")
    np.testing.assert_allclose(data.info.mean, published.mean, atol=0.05)
    np.testing.assert_allclose(data.info.std, published.std, atol=0.05)
    x, y = data.test[0]
    assert x.shape == (3, 32, 32) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and y == 0


def test_cifar10_name_accepts_the_imagefolder_copy(cifar_root: Path) -> None:
    as_cifar = ds.load_dataset("cifar10", root=cifar_root, augment=False)
    as_folder = ds.load_dataset("imagefolder", root=cifar_root, augment=False)
    assert as_cifar.info == ds.dataset_info("cifar10")  # same name, same defaults and eps grids
    for i in (0, 57, 199):
        xa, ya = as_cifar.train[i]
        xb, yb = as_folder.train[i]
        assert ya == yb and torch.equal(xa, xb)
    # the parent folder works too (root/cifar10-jpeg)
    assert len(ds.load_split("cifar10", "test", root=cifar_root.parent)) == 100  # type: ignore[arg-type]


def test_augmentation_fits_the_size(cifar_root: Path, tmp_path: Path) -> None:
    small = imf.resolve_layout(cifar_root, ["train"])
    assert _kinds(imf.transform(small, True, True)) == [
        T.Lambda,
        T.RandomCrop,
        T.RandomHorizontalFlip,
        T.Lambda,
    ]
    assert _kinds(imf.transform(small, False, True)) == [T.Lambda, T.Lambda]
    crop = imf.transform(small, True, True).transforms[1]  # type: ignore[attr-defined]
    assert crop.padding == 4  # the CIFAR recipe at 32x32
    big = imf.resolve_layout(cifar_root, ["train"], image_size=224)  # asked: ImageNet style
    assert not big.native and big.size == (224, 224)
    assert T.RandomResizedCrop in _kinds(imf.transform(big, True, True))
    assert _kinds(imf.transform(big, False, False)) == [
        T.Lambda,
        T.Resize,
        T.CenterCrop,
        T.Lambda,
    ]
    mid = imf.resolve_layout(cifar_root, ["train"], image_size=64)  # asked, small: plain resize
    assert _kinds(imf.transform(mid, False, False)) == [T.Lambda, T.Resize, T.Lambda]
    large = _folder(tmp_path / "large", {"a": [(160, 160)], "b": [(160, 160)]}, ("train", "val"))
    native_large = imf.resolve_layout(large, ["train"])
    assert native_large.native and native_large.size == (160, 160)
    assert _kinds(imf.transform(native_large, True, True)) == [
        T.Lambda,
        T.RandomResizedCrop,
        T.RandomHorizontalFlip,
        T.Lambda,
    ]
    assert _kinds(imf.transform(native_large, False, False)) == [T.Lambda, T.Lambda]


@pytest.mark.parametrize(
    "sizes",
    [
        {"a": [(32, 32), (32, 32)], "b": [(32, 32), (28, 28)]},
        {"a": [(10, 20)], "b": [(20, 10)]},
        {"a": [(64, 64)], "b": [(64, 64), (65, 64), (64, 65)]},
    ],
)
def test_mixed_sizes_need_image_size(
    tmp_path: Path, sizes: dict[str, list[tuple[int, int]]]
) -> None:
    root = _folder(tmp_path, sizes, ("train", "val"))
    with pytest.raises(UserError, match=r"different sizes .* pass --image-size S"):
        ds.load_dataset("imagefolder", root=root)
    data = ds.load_dataset("imagefolder", root=root, image_size=24, mean=[0.5], std=[0.2])
    assert data.info.input_shape == (3, 24, 24)
    assert all(data.test[i][0].shape == (3, 24, 24) for i in range(len(data.test)))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"image_size": 0}, "--image-size must be >= 1"),
        ({"mean": [0.5]}, "give both --mean and --std"),
        ({"mean": [0.5, 0.5], "std": [0.2, 0.2]}, "1 or 3 values each"),
        ({"mean": [0.5], "std": [0.0]}, "std > 0"),
    ],
)
def test_bad_imagefolder_options(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    root = _folder(tmp_path, {"a": [(8, 8)], "b": [(8, 8)]}, ("train", "val"))
    with pytest.raises(UserError, match=match):
        ds.load_dataset("imagefolder", root=root, **kwargs)  # type: ignore[arg-type]


def test_split_folders_must_agree(tmp_path: Path) -> None:
    root = _folder(tmp_path, {"a": [(8, 8)], "b": [(8, 8)]}, ("train",))
    _folder(tmp_path, {"a": [(8, 8)], "c": [(8, 8)]}, ("test",))
    with pytest.raises(UserError, match="must match"):
        ds.load_dataset("imagefolder", root=root)
    with pytest.raises(UserError, match=r"root/val or root/test"):
        ds.load_split("imagefolder", "test", root=tmp_path / "nothing")


def test_options_of_other_datasets_are_refused() -> None:
    with pytest.raises(UserError, match="imagefolder only"):
        ds.load_dataset("digits", image_size=32)
    with pytest.raises(UserError, match="imagefolder only"):
        ds.load_split("digits", "test", image_size=32)


@pytest.mark.parametrize("limit", [10, 25, 57])
def test_limit_is_class_balanced_on_a_class_sorted_folder(cifar_root: Path, limit: int) -> None:
    test = ds.load_split("imagefolder", "test", root=cifar_root, limit=limit)
    labels = [int(test[i][1]) for i in range(len(test))]  # type: ignore[arg-type]
    counts = np.bincount(labels, minlength=10)
    assert counts.sum() == limit and counts.max() - counts.min() <= 1
    record = ds.evaluation_subset_record(
        ds.load_split("imagefolder", "test", root=cifar_root), limit
    )
    assert record["n"] == limit and record["indices"] == ds.subset_indices(test)
    assert record["seed"] == ds.EVAL_SUBSET_SEED


@pytest.mark.slow
def test_full_real_test_split(tmp_path: Path) -> None:
    root = extract_cifar_jpeg(tmp_path, 1, None)
    test = ds.load_split("cifar10", "test", root=root)
    assert len(test) == 10_000  # type: ignore[arg-type]
    labels = torch.as_tensor(test.targets)  # type: ignore[attr-defined]
    assert torch.bincount(labels).tolist() == [1000] * 10
    x, _ = next(iter(torch.utils.data.DataLoader(test, batch_size=500)))
    assert x.shape == (500, 3, 32, 32)


@pytest.mark.slow
def test_cli_trains_and_attacks_the_real_imagefolder(cifar_root: Path, tmp_path: Path) -> None:
    """Issue 13 acceptance 3: imagefolder at native 32x32 trains and attacks from the CLI."""
    ck = tmp_path / "ck"
    train = ["train", "--dataset", "imagefolder", "--data-root", str(cifar_root), "--out", str(ck)]
    train += ["--arch", "resnet20", "--epochs", "1", "--warmup-epochs", "0", "--batch-size", "50"]
    assert main(train) == 0
    meta = json.loads((ck / "checkpoint.json").read_text())
    assert meta["input_shape"] == [3, 32, 32] and meta["num_classes"] == 10
    assert meta["normalization"]["source"] == f"computed on {10 * TRAIN_PER_CLASS} training images"
    res = tmp_path / "res"
    attack = ["attack", "--checkpoint", str(ck), "--data-root", str(cifar_root), "--out", str(res)]
    attack += ["--attack", "fgsm", "--attack", "pgd", "--param", "pgd.steps=3", "--limit", "30"]
    attack += ["--eps", "0,2/255,8/255", "--no-report"]
    assert main(attack) == 0
    side = json.loads((res / "results.json").read_text())
    subset = side["evaluation_subset"]["imagefolder"]
    assert subset["n"] == 30 and len(subset["indices"]) == 30
    assert side["clean_checks"][0]["n"] == 30


def _tar(path: Path, names: list[str]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = name.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_extract_per_class_takes_the_first_n_of_each_class(tmp_path: Path) -> None:
    names = [
        f"set/{split}/{c}/{i}.jpg" for split in ("train", "val") for c in "ab" for i in range(4)
    ]
    archive = _tar(tmp_path / "set.tar.gz", [*names, "set/README", "set/extra/a/0.jpg"])
    root = imf.extract_per_class(archive, tmp_path / "out", {"train": 2, "val": None})
    assert root == tmp_path / "out" / "set"
    got = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))
    assert got == sorted(
        [f"train/{c}/{i}.jpg" for c in "ab" for i in range(2)]
        + [f"val/{c}/{i}.jpg" for c in "ab" for i in range(4)]
    )


@pytest.mark.parametrize(
    ("names", "per_class", "match"),
    [
        (["set/train/a/0.jpg"], {"train": 1, "test": 1}, "no .* member of split.*test"),
        (["x/train/a/0.jpg", "y/train/a/0.jpg"], {"train": None}, "several top folders"),
        ([], {"train": 1}, "split.*train"),
    ],
)
def test_extract_per_class_bad_archives(
    tmp_path: Path, names: list[str], per_class: dict[str, int | None], match: str
) -> None:
    archive = _tar(tmp_path / "a.tar.gz", names)
    with pytest.raises(UserError, match=match):
        imf.extract_per_class(archive, tmp_path / "out", per_class)


def test_extract_per_class_unreadable_archive(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tar")
    for archive in (bad, tmp_path / "missing.tar.gz"):
        with pytest.raises(UserError, match="cannot read the archive"):
            imf.extract_per_class(archive, tmp_path / "out", {"train": 1})


# ------------------------------------------ issue 29 (6, 7): hidden entries, 16-bit images
def _hidden_tree(root: Path, hidden_in: tuple[str, ...]) -> Path:
    """3 classes x 4 images of 8x8 in train/ and val/, a hidden folder (with images) in ``hidden_in``."""
    rng = np.random.default_rng(1)
    for split in ("train", "val"):
        names = ["a", "b", "c"] + ([".ipynb_checkpoints"] if split in hidden_in else [])
        for cls in names:
            (root / split / cls).mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / cls / f"{i}.png")
        (root / split / "a" / ".DS_Store").write_bytes(b"\0\1")
        (root / split / "b" / ".ipynb_checkpoints").mkdir()
        Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(
            root / split / "b" / ".ipynb_checkpoints" / "0-checkpoint.png"  # another size, too
        )
    return root


@pytest.mark.parametrize("hidden_in", [("train",), ("val",), ("train", "val")])
def test_hidden_entries_are_no_classes_anywhere(tmp_path: Path, hidden_in: tuple[str, ...]) -> None:
    root = _hidden_tree(tmp_path / "d", hidden_in)
    assert imf.class_names(root) == ["a", "b", "c"]
    layout = imf.resolve_layout(root, ["train", "test"])
    assert layout.classes == ("a", "b", "c") and layout.size == (8, 8)  # 5x5 checkpoint ignored
    data = ds.load_dataset("imagefolder", root=root, augment=False)
    assert data.info.num_classes == 3
    for split in (data.train, data.test):
        labels = sorted(int(split[i][1]) for i in range(len(split)))  # type: ignore[arg-type]
        assert labels == [0] * 4 + [1] * 4 + [2] * 4


def test_training_with_a_hidden_folder_in_train(tmp_path: Path) -> None:
    """The field report: ``IndexError: Target 10 is out of bounds`` from a .ipynb_checkpoints."""
    root = _hidden_tree(tmp_path / "d", ("train",))
    out = tmp_path / "ck"
    argv = ["train", "--dataset", "imagefolder", "--data-root", str(root), "--out", str(out)]
    argv += ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4"]
    assert main(argv) == 0
    assert json.loads((out / "checkpoint.json").read_text())["num_classes"] == 3


def test_sixteen_bit_imagefolder_is_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0.0, 1.0, 64).reshape(8, 8)
    for split in ("train", "val"):
        for c, cls in enumerate(("dark", "light")):
            (tmp_path / split / cls).mkdir(parents=True)
            values = np.round((0.1 + 0.8 * c) * ramp * 65535).astype(np.uint16)
            Image.fromarray(values).save(tmp_path / split / cls / "0.png")  # mode I;16
    data = ds.load_dataset("imagefolder", root=tmp_path, augment=False)
    x, y = data.test[1]  # the "light" image: 0.9 * ramp, nothing near white
    assert int(y) == 1 and x.shape == (3, 8, 8)
    assert float(x.max()) == pytest.approx(0.9, abs=1e-4)
    assert torch.allclose(x[0].double(), torch.from_numpy(0.9 * ramp), atol=1e-4)
