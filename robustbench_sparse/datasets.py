"""Datasets by name: offline ``digits`` plus torchvision MNIST/Fashion-MNIST/CIFAR/SVHN and ImageNet folders.

Every dataset yields ``(x, y)`` with ``x`` a float32 tensor ``(C, H, W)`` in ``[0, 1]`` (``ToTensor``
semantics) and ``y`` an integer class. There is **no normalization here**: the per-channel mean/std live in
:class:`DatasetInfo` and are consumed by the model's ``Normalize`` layer, so attacks work in pixel space.

Layout on disk is torchvision's own, under ``root`` (default: ``$RBS_DATA_DIR`` or ``./data``)::

    root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
    root/FashionMNIST/raw/...              (same names)
    root/cifar-10-batches-py/...           root/cifar-100-python/...
    root/train_32x32.mat, root/test_32x32.mat   (SVHN)
    root/train/<class>/*.JPEG, root/val/<class>/*.JPEG   (imagefolder; root is the dataset folder)

Nothing is downloaded unless ``download=True``; missing files raise :class:`~robustbench_sparse.errors.UserError`
naming the expected path. Each split is checked on its own, so :func:`load_split` can load the test split
alone (e.g. for attacking a checkpoint when only the test files are present).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from robustbench_sparse.errors import UserError, unknown_name

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetInfo",
    "DatasetSplits",
    "dataset_info",
    "default_data_root",
    "default_eps_grid",
    "list_datasets",
    "load_dataset",
    "load_split",
]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)

# Mean/std of the digits *train* split (1347 images, pixels /16), computed once with
# sklearn's load_digits + train_test_split(test_size=0.25, stratify=y, random_state=0);
# tests/test_datasets.py recomputes and checks them.
DIGITS_MEAN = 0.3052247181
DIGITS_STD = 0.3760055962


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of a dataset, as models see it.

    Attributes:
        name: registry name, e.g. ``"digits"``.
        num_classes: number of classes.
        input_shape: ``(C, H, W)`` of one example as the model receives it.
        mean: per-channel mean in ``[0, 1]`` pixel units (for the model's ``Normalize`` layer).
        std: per-channel standard deviation (same units).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class DatasetSplits:
    """A train and a test split with their metadata. The test split is never augmented."""

    info: DatasetInfo
    train: Dataset[Any]
    test: Dataset[Any]


_INFOS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo("digits", 10, (1, 8, 8), (DIGITS_MEAN,), (DIGITS_STD,)),
    "mnist": DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,)),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,)),
    "cifar10": DatasetInfo(
        "cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, (3, 32, 32), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": DatasetInfo(
        "svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    ),
    # num_classes is only known once the folders are read; load_dataset() returns the real count.
    "imagefolder": DatasetInfo("imagefolder", 1000, (3, 224, 224), _IMAGENET_MEAN, _IMAGENET_STD),
}

_SMALL_GRAY = ("digits", "mnist", "fashion-mnist")
_CIFAR_LIKE = ("cifar10", "cifar100", "svhn")

_EPS_GRIDS: dict[str, dict[str, tuple[float, ...]]] = {
    "linf": {
        **dict.fromkeys(_SMALL_GRAY, (0.0, 0.05, 0.1, 0.15, 0.2, 0.3)),
        **dict.fromkeys(_CIFAR_LIKE, (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)),
        "imagefolder": (0.0, 1 / 255, 2 / 255, 4 / 255),
    },
    "l2": {
        # 8x8 images: an L2 ball of radius 2 already allows changing several pixels fully.
        "digits": (0.0, 0.25, 0.5, 1.0, 1.5, 2.0),
        "mnist": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
        "fashion-mnist": (0.0, 0.5, 1.0, 1.5, 2.0, 3.0),
        **dict.fromkeys(_CIFAR_LIKE, (0.0, 0.125, 0.25, 0.5, 1.0)),
        "imagefolder": (0.0, 0.25, 0.5, 1.0, 2.0),
    },
}

_SPLITS = ("train", "test")


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`, sorted."""
    return sorted(_INFOS)


def _check_name(name: str) -> str:
    if name not in _INFOS:
        raise unknown_name("dataset", name, list_datasets())
    return name


def dataset_info(name: str) -> DatasetInfo:
    """Metadata of ``name`` without touching the disk.

    For ``imagefolder`` the class count is a placeholder (1000, ImageNet); :func:`load_dataset` returns
    the count found in the folders.
    """
    return _INFOS[_check_name(name)]


def default_eps_grid(name: str, norm: str) -> list[float]:
    """Default epsilon grid (pixel units, inputs in ``[0, 1]``) for dataset ``name`` and ``norm``.

    Args:
        name: dataset name.
        norm: ``"linf"`` or ``"l2"`` (a ``str``-valued enum member works too).
    """
    _check_name(name)
    key = str(getattr(norm, "value", norm)).lower()
    if key not in _EPS_GRIDS:
        raise unknown_name("norm", key, _EPS_GRIDS)
    return list(_EPS_GRIDS[key][name])


def default_data_root() -> Path:
    """``$RBS_DATA_DIR`` if set, else ``./data``."""
    return Path(os.environ.get("RBS_DATA_DIR", "data"))


# --------------------------------------------------------------------------------------------- limits


def _labels_of(dataset: Dataset[Any]) -> torch.Tensor | None:
    """Labels of a dataset without loading images, where the type allows it."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    for attr in ("targets", "labels"):
        labels = getattr(dataset, attr, None)
        if labels is not None:
            return torch.as_tensor(labels)
    return None


def _take_first(dataset: Dataset[Any], limit: int | None) -> Dataset[Any]:
    if limit is None:
        return dataset
    if limit < 0:
        raise UserError(f"test limit must be >= 0, got {limit}")
    n = len(dataset)  # type: ignore[arg-type]
    return Subset(dataset, list(range(min(limit, n))))


def _take_stratified(dataset: Dataset[Any], limit: int | None, seed: int) -> Dataset[Any]:
    """A deterministic, seeded subset of ``limit`` examples, balanced over classes where labels are known.

    Each class's indices are shuffled with ``seed``; classes are then visited round-robin, so every class
    contributes ``limit // num_classes`` or one more example (while it has any left).
    """
    if limit is None:
        return dataset
    if limit < 0:
        raise UserError(f"train limit must be >= 0, got {limit}")
    n = len(dataset)  # type: ignore[arg-type]
    if limit >= n:
        return dataset
    gen = torch.Generator().manual_seed(seed)
    labels = _labels_of(dataset)
    if labels is None:
        idx = torch.randperm(n, generator=gen)[:limit]
        return Subset(dataset, sorted(idx.tolist()))
    labels = labels.reshape(-1).long()
    per_class: list[list[int]] = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).reshape(-1)
        per_class.append(members[torch.randperm(len(members), generator=gen)].tolist())
    chosen: list[int] = []
    depth = 0
    while len(chosen) < limit:
        for class_members in per_class:
            if depth < len(class_members) and len(chosen) < limit:
                chosen.append(class_members[depth])
        depth += 1
    return Subset(dataset, sorted(chosen))


# --------------------------------------------------------------------------------------------- digits


def _digits_tensors(split: str) -> TensorDataset:
    """sklearn's 8x8 digits (bundled, offline), stratified 1347/450 split, pixels 0..16 -> [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.data, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0
    )
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
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


IMAGEFOLDER_EVAL_SPLITS = ("val", "test")
"""Names the evaluation split of an ``imagefolder`` root may have (the first present is used)."""


def imagefolder_split_dir(root: str | Path, split: str) -> Path:
    """``root/train`` for ``"train"``; ``root/val`` or else ``root/test`` for ``"test"``.

    Raises:
        UserError: naming the folders looked for when none exists.
    """
    base = Path(root)
    names = ("train",) if split == "train" else IMAGEFOLDER_EVAL_SPLITS
    for name in names:
        if (base / name).is_dir():
            return base / name
    expected = " or ".join(f"{base / n}/<class>/<image>" for n in names)
    raise UserError(
        f"imagefolder dataset not found: expected {expected} "
        "(ImageFolder layout: root/train and root/val or root/test; nothing is downloaded)"
    )


def imagefolder_classes(root: str | Path) -> list[str]:
    """Class names of an ``imagefolder`` root: its evaluation split's sub-folders, else train's.

    Sorted like ``torchvision.datasets.ImageFolder`` (the index of a name is its label). Reads
    directory names only, no image.

    Raises:
        UserError: when neither split folder exists or it has no class sub-folder.
    """
    try:
        folder = imagefolder_split_dir(root, "test")
    except UserError:
        folder = imagefolder_split_dir(root, "train")
    classes = sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"imagefolder dataset at {folder} has no class folders")
    return classes


def _imagefolder_split(root: Path, train: bool, transform: Any) -> Dataset[Any]:
    from torchvision import datasets as tvd

    folder = imagefolder_split_dir(root, "train" if train else "test")
    try:
        return tvd.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"imagefolder dataset at {folder} is unusable: {exc}") from exc


def _transform(name: str, train: bool, augment: bool) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms as T

    steps: list[Any] = []
    if name == "imagefolder":
        if train and augment:
            steps += [T.RandomResizedCrop(224), T.RandomHorizontalFlip()]
        else:
            steps += [T.Resize(256), T.CenterCrop(224)]
    elif train and augment and name in ("cifar10", "cifar100"):
        steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    elif train and augment and name == "svhn":
        # No horizontal flip: house-number digits are not mirror-symmetric (a flipped 2 is not a 2).
        steps += [T.RandomCrop(32, padding=4)]
    steps.append(
        T.ToTensor()
    )  # uint8 HWC -> float32 CHW in [0, 1]; no Normalize (it is in the model)
    return T.Compose(steps)  # type: ignore[no-any-return]


def _load_raw_split(
    name: str, split: str, root: Path, download: bool, augment: bool
) -> Dataset[Any]:
    train = split == "train"
    if name == "digits":
        return _digits_tensors(split)
    transform = _transform(name, train, augment)
    if name in ("mnist", "fashion-mnist"):
        return _mnist_split(name, root, train, download, transform)
    if name in ("cifar10", "cifar100"):
        return _cifar_split(name, root, train, download, transform)
    if name == "svhn":
        return _svhn_split(root, train, download, transform)
    if name == "imagefolder":
        return _imagefolder_split(root, train, transform)
    raise AssertionError(f"dataset {name!r} registered without a loader")  # pragma: no cover


def load_split(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    *,
    augment: bool = False,
    seed: int = 0,
) -> Dataset[Any]:
    """Load one split (``"train"`` or ``"test"``) of ``name``; only that split's files must exist.

    Args:
        name: dataset name (see :func:`list_datasets`).
        split: ``"train"`` or ``"test"`` (``imagefolder``: ``root/train`` or ``root/val``).
        root: data root (default :func:`default_data_root`); ignored by ``digits``.
        download: fetch missing files with torchvision (not for ``digits``/``imagefolder``).
        limit: test: the first ``limit`` examples; train: a seeded class-balanced subset.
        augment: apply training augmentation (train split only; the test split never is).
        seed: seed of the train subset.
    """
    _check_name(name)
    if split not in _SPLITS:
        raise unknown_name("split", split, _SPLITS)
    root_path = Path(root) if root is not None else default_data_root()
    dataset = _load_raw_split(name, split, root_path, download, augment and split == "train")
    if split == "test":
        return _take_first(dataset, limit)
    return _take_stratified(dataset, limit, seed)


def _num_classes(dataset: Dataset[Any]) -> int:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    classes: Sequence[Any] | None = getattr(dataset, "classes", None)
    if classes is None:
        raise AssertionError("dataset without classes")  # pragma: no cover
    return len(classes)


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    augment: bool = True,
    seed: int = 0,
) -> DatasetSplits:
    """Load the train and test splits of ``name``.

    Args:
        name: one of :func:`list_datasets`; ``digits`` is bundled with scikit-learn (offline).
        root: data root in torchvision's layout (default :func:`default_data_root`).
        download: let torchvision download missing files; otherwise missing data raises ``UserError``.
        train_limit: keep a deterministic seeded, class-balanced subset of this many train examples.
        test_limit: keep the first ``test_limit`` test examples.
        augment: training augmentation (CIFAR: crop+flip, SVHN: crop, ImageNet: RandomResizedCrop+flip;
            digits/MNIST: none). The test split is never augmented.
        seed: seed of the train subset.
    """
    _check_name(name)
    train = load_split(name, "train", root, download, train_limit, augment=augment, seed=seed)
    test = load_split(name, "test", root, download, test_limit, augment=False, seed=seed)
    info = _INFOS[name]
    if name == "imagefolder":
        n_train, n_test = _num_classes(train), _num_classes(test)
        if n_train != n_test:
            raise UserError(
                f"imagefolder: train has {n_train} class folders but val has {n_test}; they must match"
            )
        info = DatasetInfo(name, n_train, info.input_shape, info.mean, info.std)
    logger.info(
        "loaded %s: %d train / %d test examples",
        name,
        len(train),  # type: ignore[arg-type]
        len(test),  # type: ignore[arg-type]
    )
    return DatasetSplits(info=info, train=train, test=test)
