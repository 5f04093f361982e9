"""The readers behind :func:`~robustbench_sparse.datasets.load_split`: one per data source.

One reader per source: scikit-learn's bundled ``digits``, torchvision's MNIST / Fashion-MNIST /
CIFAR / SVHN checked one split at a time, ImageFolder trees (``imagefolder`` and a JPEG copy of
CIFAR-10), and the per-dataset transforms (``ToTensor`` plus training augmentation; never a
normalization, which lives in the model). :func:`load_raw_split` picks the reader.
"""

from __future__ import annotations

import gzip
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from robustbench_sparse import imagefolder
from robustbench_sparse.augmentation import Augment, AugmentedTensors, augment_ops, resolve_augment
from robustbench_sparse.errors import UserError
from robustbench_sparse.image_files import image_dataset

__all__ = ["CIFAR10_CLASSES", "cifar10_folder", "load_raw_split"]


# --------------------------------------------------------------------------------------------- digits


DIGITS_SPLIT = Path(__file__).with_name("digits_split.npy")  # (1797,) int16: 1347 train, 450 test
DIGITS_TRAIN = 1347


def _digits_csv() -> Path | None:
    """scikit-learn's bundled ``digits.csv.gz``, located without importing scikit-learn."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    return path if path.is_file() else None


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as ``(pixels (1797, 64) float64 in 0..16, labels (1797,) int64)``.

    The file :func:`sklearn.datasets.load_digits` reads, parsed the way it parses it (``np.loadtxt``,
    last column the label), without importing scikit-learn: ``import sklearn`` pulls in
    ``scipy.stats`` and costs about a second of every command's start-up. Falls back to
    ``load_digits`` where the file is not where scikit-learn 1.x keeps it.
    """
    path = _digits_csv()
    if path is None:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return np.asarray(bunch.data), np.asarray(bunch.target, dtype=np.int64)
    with gzip.open(path, mode="rt", encoding="utf-8") as f:
        data = np.loadtxt(f, delimiter=",")  # (1797, 65)
    return data[:, :-1], data[:, -1].astype(np.int64)


def _digits_tensors(split: str) -> TensorDataset:
    """sklearn's 8x8 digits (bundled, offline), stratified 1347/450 split, pixels 0..16 -> [0, 1].

    The split is scikit-learn's ``train_test_split(test_size=0.25, stratify=labels,
    random_state=0)``, stored once in ``digits_split.npy`` (train order, then test order) so every
    machine and scikit-learn version gets the same examples in the same order;
    ``tests/test_dataset_sources.py`` checks it against scikit-learn's function.
    """
    pixels, labels = digits_arrays()
    order = np.load(DIGITS_SPLIT, allow_pickle=False).astype(np.int64)
    rows = order[:DIGITS_TRAIN] if split == "train" else order[DIGITS_TRAIN:]
    x, y = pixels[rows], labels[rows]
    images = torch.as_tensor(x, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)  # (N, 1, 8, 8)
    return TensorDataset(images, torch.as_tensor(y, dtype=torch.long))


# ------------------------------------------------------------------------------- torchvision datasets


def _missing(name: str, split: str, expected: str, root: Path) -> UserError:
    where = "" if root.is_dir() else f" (the data root {str(root)!r} does not exist)"
    return UserError(
        f"dataset {name!r} ({split} split) not found: expected {expected}{where}; "
        "pass --download (download=True) to fetch it, or --data-root DIR pointing at a copy"
    )


def _mnist_split(
    name: str, root: Path, train: bool, download: bool, transform: Any
) -> Dataset[Any]:
    """torchvision MNIST/FashionMNIST that requires only the requested split's two IDX files.

    torchvision checks for all four files; here each split is checked alone. If only the ``.gz`` files
    are present they are decompressed next to themselves (what torchvision's download does as well).
    """
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import extract_archive

    base: type[tvd.MNIST] = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
    prefix = "train" if train else "t10k"
    files = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    raw = root / base.__name__ / "raw"

    def ensure_raw() -> bool:
        for f in files:
            if (raw / f).is_file():
                continue
            if (raw / f"{f}.gz").is_file():
                extract_archive(str(raw / f"{f}.gz"), str(raw), remove_finished=False)
            else:
                return False
        return True

    class _SplitOnly(base):  # type: ignore[valid-type,misc]
        @property
        def raw_folder(self) -> str:
            return str(raw)

        @property
        def processed_folder(self) -> str:
            return str(root / base.__name__ / "processed")

        def _check_exists(self) -> bool:
            return ensure_raw()

    if download:
        raw.mkdir(parents=True, exist_ok=True)
        if not ensure_raw():
            base(str(root), train=train, download=True)
    if not ensure_raw():
        raise _missing(
            name, "train" if train else "test", f"{raw}/{files[0]}[.gz] and {files[1]}[.gz]", root
        )
    return _SplitOnly(str(root), train=train, transform=transform, download=False)


def _cifar_split(
    name: str, root: Path, train: bool, download: bool, transform: Any
) -> Dataset[Any]:
    """torchvision CIFAR10/100 that checks (md5) only the requested split's batch files and the meta file."""
    from torchvision import datasets as tvd
    from torchvision.datasets.utils import check_integrity

    base: type[tvd.CIFAR10] = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    folder = root / base.base_folder

    class _SplitOnly(base):  # type: ignore[valid-type,misc]
        def _check_integrity(self) -> bool:
            wanted = [
                *(self.train_list if self.train else self.test_list),
                (self.meta["filename"], self.meta["md5"]),
            ]
            return all(check_integrity(str(folder / fname), md5) for fname, md5 in wanted)

    if download:
        base(str(root), train=train, download=True)
    try:
        return _SplitOnly(str(root), train=train, transform=transform, download=False)
    except RuntimeError as exc:
        split = "train" if train else "test"
        raise _missing(name, split, f"{folder}/ (torchvision layout, md5-checked)", root) from exc


def _svhn_split(root: Path, train: bool, download: bool, transform: Any) -> Dataset[Any]:
    from torchvision import datasets as tvd

    split = "train" if train else "test"
    try:
        return tvd.SVHN(str(root), split=split, transform=transform, download=download)
    except RuntimeError as exc:
        raise _missing("svhn", split, f"{root / f'{split}_32x32.mat'} (md5-checked)", root) from exc


CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
"""torchvision's CIFAR10 class order (alphabetical, so an ImageFolder copy gets the same labels)."""


def _imagefolder_split(
    root: Path, split: str, transform: Any, classes: Sequence[str] | None = None
) -> Dataset[Any]:
    folder = imagefolder.split_dir(root, split)
    # Hidden entries skipped, 16-bit and float images scaled by their depth (image_files).
    dataset: Any = image_dataset(folder, transform)
    if classes is not None and list(dataset.classes) != list(classes):
        raise UserError(
            f"{folder} has class folders {dataset.classes} but {list(classes)} were expected"
        )
    return dataset


def cifar10_folder(root: Path) -> Path | None:
    """The ImageFolder copy of CIFAR-10 at ``root`` or ``root/cifar10-jpeg``, else ``None``.

    Recognised by ``train/`` or ``test/`` holding exactly the ten CIFAR-10 class folders (e.g. the
    JPEG copy in ``../shared/data/cifar10-jpeg``, extracted). torchvision's pickled batches
    (``root/cifar-10-batches-py``) take precedence.
    """
    if (root / "cifar-10-batches-py").is_dir():
        return None
    for base in (root, root / "cifar10-jpeg"):
        for split in ("train", "test"):
            folder = base / split
            if folder.is_dir() and tuple(imagefolder._classes_in(folder)) == CIFAR10_CLASSES:
                return base
    return None


def _transform(name: str, mode: Augment) -> Callable[[Any], torch.Tensor]:
    """``mode`` (resolved, :mod:`robustbench_sparse.augmentation`) then ``ToTensor``."""
    from torchvision import transforms as T

    size = (28, 28) if name in ("mnist", "fashion-mnist") else (32, 32)
    # uint8 HWC -> float32 CHW in [0, 1]; no Normalize (it is in the model)
    return T.Compose([*augment_ops(mode, size), T.ToTensor()])  # type: ignore[no-any-return]


def load_raw_split(
    name: str,
    split: str,
    root: Path,
    download: bool,
    augment: Any,
    layout: imagefolder.ImageFolderLayout | None = None,
) -> Dataset[Any]:
    """The whole ``split`` of ``name`` as stored under ``root``, transformed to ``[0, 1]`` tensors.

    ``augment`` is the training augmentation setting (``auto`` / ``none`` / ``crop`` /
    ``crop-flip``, or a bool: :func:`~robustbench_sparse.augmentation.parse_augment`), applied to
    the train split only; ``layout`` is an ``imagefolder``'s resolved layout (resolved here from
    ``root`` when not given). Missing files raise ``UserError``.
    """
    train = split == "train"
    mode = resolve_augment(name, augment) if train else Augment.NONE
    if name == "digits":
        tensors = _digits_tensors(split)
        return AugmentedTensors(tensors, mode, (8, 8)) if mode is not Augment.NONE else tensors
    if name == "imagefolder":
        layout = layout or imagefolder.resolve_layout(root, [split])
        return _imagefolder_split(root, split, imagefolder.transform(layout, train, mode))
    transform = _transform(name, mode)
    if name in ("mnist", "fashion-mnist"):
        return _mnist_split(name, root, train, download, transform)
    if name == "cifar10" and (folder := cifar10_folder(root)) is not None:
        found = imagefolder.resolve_layout(folder, [split])
        if found.size != (32, 32) or not found.native:
            raise UserError(f"cifar10 images under {folder} must all be 32x32 (found {found.size})")
        return _imagefolder_split(folder, split, transform, CIFAR10_CLASSES)
    if name in ("cifar10", "cifar100"):
        return _cifar_split(name, root, train, download, transform)
    if name == "svhn":
        return _svhn_split(root, train, download, transform)
    raise AssertionError(f"dataset {name!r} registered without a loader")  # pragma: no cover
