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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from robustbench_sparse import imagefolder
from robustbench_sparse.dataset_sources import CIFAR10_CLASSES, cifar10_folder, load_raw_split
from robustbench_sparse.errors import UserError, unknown_name

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_CLASSES",
    "DatasetInfo",
    "DatasetSplits",
    "balanced_subset",
    "cifar10_folder",
    "dataset_info",
    "default_data_root",
    "default_eps_grid",
    "list_datasets",
    "load_dataset",
    "load_split",
    "subset_indices",
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
        stats_source: where ``mean``/``std`` come from: ``"published"`` (the dataset's usual values),
            ``"given"`` (``--mean``/``--std``) or ``"computed on N training images"``.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    stats_source: str = "published"


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
    "l1": {
        # An L1 budget of e can change about e pixels fully: 8x8 digits are broken by a few.
        "digits": (0.0, 0.5, 1.0, 2.0, 3.0, 4.0),
        # MNIST/CIFAR/ImageNet: around the budgets of the L1 literature (MNIST 10, Tramer & Boneh
        # 2019; CIFAR-10 12 and ImageNet 60, Croce & Hein 2021).
        "mnist": (0.0, 2.5, 5.0, 10.0, 15.0),
        "fashion-mnist": (0.0, 2.5, 5.0, 10.0, 15.0),
        **dict.fromkeys(_CIFAR_LIKE, (0.0, 2.0, 4.0, 8.0, 12.0)),
        "imagefolder": (0.0, 15.0, 30.0, 60.0),
    },
}

_SPLITS = ("train", "test")

EVAL_SUBSET_SEED = 0
"""Seed of the class-balanced evaluation subset (``--limit``): fixed, so every checkpoint, run and
backend evaluates the same examples."""


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
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (a ``str``-valued enum member works too).
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
    if isinstance(dataset, Subset):
        inner = _labels_of(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(list(dataset.indices))]
    for attr in ("targets", "labels"):
        labels = getattr(dataset, attr, None)
        if labels is not None:
            return torch.as_tensor(labels)
    return None


def balanced_subset(
    dataset: Dataset[Any], limit: int | None, seed: int = 0, what: str = "limit"
) -> Dataset[Any]:
    """A deterministic, seeded subset of ``limit`` examples, balanced over classes where labels are known.

    Each class's indices are shuffled with ``seed``; classes are then visited round-robin, so every class
    contributes ``limit // num_classes`` or one more example (while it has any left). The indices are
    kept in ascending order. ``limit`` ``None`` or ``>= len(dataset)`` returns ``dataset`` itself.
    Used for the training subset (``--train-limit``) and the evaluation subset (``--limit``: the same
    examples for every checkpoint, whatever order the split is stored in, e.g. class-sorted folders).

    Raises:
        UserError: ``limit < 0`` (``what`` names the option in the message).
    """
    if limit is None:
        return dataset
    if limit < 0:
        raise UserError(f"{what} must be >= 0, got {limit}")
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


def subset_indices(dataset: Dataset[Any]) -> list[int] | None:
    """Indices into the underlying split of a (nested) ``Subset``; ``None`` for a whole split."""
    if not isinstance(dataset, Subset):
        return None
    inner = subset_indices(dataset.dataset)
    own = [int(i) for i in dataset.indices]
    return own if inner is None else [inner[i] for i in own]


def evaluation_subset_record(dataset: Dataset[Any], limit: int | None) -> dict[str, Any]:
    """What the sidecar records of an evaluation subset: seed, limit, size and indices into the split.

    ``dataset`` is the test split as loaded (possibly already a subset); ``limit`` the ``--limit``
    applied on top (see :func:`balanced_subset`). ``indices`` is ``None`` for the whole split.
    """
    chosen = balanced_subset(dataset, limit, EVAL_SUBSET_SEED, "limit")
    return {
        "seed": EVAL_SUBSET_SEED,
        "limit": limit,
        "n": len(chosen),  # type: ignore[arg-type]
        "class_balanced": True,
        "indices": subset_indices(chosen),
    }


IMAGEFOLDER_EVAL_SPLITS = imagefolder.EVAL_SPLITS
imagefolder_split_dir = imagefolder.split_dir
imagefolder_classes = imagefolder.class_names


def load_split(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    *,
    augment: bool | str = False,
    seed: int = EVAL_SUBSET_SEED,
    image_size: int | None = None,
) -> Dataset[Any]:
    """Load one split (``"train"`` or ``"test"``) of ``name``; only that split's files must exist.

    Args:
        name: dataset name (see :func:`list_datasets`).
        split: ``"train"`` or ``"test"`` (``imagefolder``: ``root/train``; ``root/val`` or
            ``root/test``).
        root: data root (default :func:`default_data_root`); ignored by ``digits``.
        download: fetch missing files with torchvision (not for ``digits``/``imagefolder``).
        limit: keep a seeded, class-balanced subset of ``limit`` examples (:func:`balanced_subset`).
        augment: the training augmentation, ``auto`` / ``none`` / ``crop`` / ``crop-flip`` or a
            bool (:mod:`robustbench_sparse.augmentation`); train split only, the test split never is.
        seed: seed of the subset (the test split's default :data:`EVAL_SUBSET_SEED`).
        image_size: ``imagefolder`` only: square input size (default: the images' own, uniform size;
            see :mod:`robustbench_sparse.imagefolder`).

    Raises:
        UserError: missing files, an unknown name, a negative limit, mixed image sizes.
    """
    _check_name(name)
    if split not in _SPLITS:
        raise unknown_name("split", split, _SPLITS)
    if image_size is not None and name != "imagefolder":
        raise UserError(
            f"--image-size applies to imagefolder only (dataset {name!r} has a fixed size)"
        )
    root_path = Path(root) if root is not None else default_data_root()
    layout = (
        imagefolder.resolve_layout(root_path, [split], image_size)
        if name == "imagefolder"
        else None
    )
    dataset = load_raw_split(
        name, split, root_path, download, augment if split == "train" else False, layout
    )
    return balanced_subset(dataset, limit, seed, f"{split} limit")


def _imagefolder_info(
    root: Path,
    layout: imagefolder.ImageFolderLayout,
    train: Dataset[Any],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> DatasetInfo:
    """Class count and input shape from the folders; mean/std given or computed on ``train``."""
    h, w = layout.size
    if (mean is None) != (std is None):
        raise UserError("give both --mean and --std, or neither (they are then computed)")
    if mean is not None and std is not None:
        if len(mean) not in (1, 3) or len(std) not in (1, 3) or any(v <= 0 for v in std):
            raise UserError(
                "--mean/--std: 1 or 3 values each (RGB), std > 0; e.g. --mean 0.49,0.48,0.45"
            )
        m = tuple(float(v) for v in mean) * (3 // len(mean))
        sd = tuple(float(v) for v in std) * (3 // len(std))
        return DatasetInfo("imagefolder", len(layout.classes), (3, h, w), m, sd, "given")
    # Without augmentation and over the same (limited) training examples the model sees.
    plain = load_raw_split("imagefolder", "train", root, False, False, layout)
    indices = subset_indices(train)
    stats_data = Subset(plain, indices) if indices is not None else plain
    m, sd = imagefolder.channel_mean_std(stats_data)
    n = len(stats_data)  # type: ignore[arg-type]
    logger.info("imagefolder mean %s std %s (computed on %d training images)", m, sd, n)
    return DatasetInfo(
        "imagefolder", len(layout.classes), (3, h, w), m, sd, f"computed on {n} training images"
    )


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    train_limit: int | None = None,
    test_limit: int | None = None,
    augment: bool | str = True,
    seed: int = 0,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetSplits:
    """Load the train and test splits of ``name``.

    Args:
        name: one of :func:`list_datasets`; ``digits`` is bundled with scikit-learn (offline).
        root: data root in torchvision's layout (default :func:`default_data_root`); ``cifar10``
            also accepts an ImageFolder copy (see :func:`cifar10_folder`).
        download: let torchvision download missing files; otherwise missing data raises ``UserError``.
        train_limit: keep a deterministic seeded, class-balanced subset of this many train examples.
        test_limit: keep a class-balanced subset of this many test examples (seed
            :data:`EVAL_SUBSET_SEED`).
        augment: training augmentation, ``auto`` (``True``: CIFAR crop-flip, SVHN crop,
            imagefolder crop-flip, digits/MNIST none), ``none`` (``False``), ``crop`` or
            ``crop-flip`` (:mod:`robustbench_sparse.augmentation`). The test split never is.
        seed: seed of the train subset.
        image_size: ``imagefolder``: square input size (default: the images' own uniform size).
        mean: ``imagefolder``: per-channel mean (default: computed on the training split).
        std: ``imagefolder``: per-channel std (with ``mean``).

    Raises:
        UserError: missing files, bad limits, mixed image sizes without ``image_size``, class
            folders that differ between the splits, ``mean``/``std`` for another dataset.
    """
    _check_name(name)
    if name != "imagefolder" and (image_size is not None or mean is not None or std is not None):
        raise UserError(
            f"--image-size/--mean/--std apply to imagefolder only (dataset {name!r} has fixed ones)"
        )
    root_path = Path(root) if root is not None else default_data_root()
    layout = (
        imagefolder.resolve_layout(root_path, ["train", "test"], image_size)
        if name == "imagefolder"
        else None
    )
    raw_train = load_raw_split(name, "train", root_path, download, augment, layout)
    train = balanced_subset(raw_train, train_limit, seed, "train limit")
    raw_test = load_raw_split(name, "test", root_path, download, False, layout)
    test = balanced_subset(raw_test, test_limit, EVAL_SUBSET_SEED, "test limit")
    info = _INFOS[name]
    if layout is not None:
        info = _imagefolder_info(root_path, layout, train, mean, std)
    logger.info(
        "loaded %s: %d train / %d test examples",
        name,
        len(train),  # type: ignore[arg-type]
        len(test),  # type: ignore[arg-type]
    )
    return DatasetSplits(info=info, train=train, test=test)
