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

from robustbench_sparse import imagefolder
from robustbench_sparse.errors import UserError, unknown_name

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetInfo",
    "DatasetSplits",
    "balanced_subset",
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


IMAGEFOLDER_EVAL_SPLITS = imagefolder.EVAL_SPLITS
imagefolder_split_dir = imagefolder.split_dir
imagefolder_classes = imagefolder.class_names

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
    from torchvision import datasets as tvd

    folder = imagefolder.split_dir(root, split)
    try:
        dataset = tvd.ImageFolder(str(folder), transform=transform)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"imagefolder dataset at {folder} is unusable: {exc}") from exc
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


def _transform(name: str, train: bool, augment: bool) -> Callable[[Any], torch.Tensor]:
    from torchvision import transforms as T

    steps: list[Any] = []
    if train and augment and name in ("cifar10", "cifar100"):
        steps += [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()]
    elif train and augment and name == "svhn":
        # No horizontal flip: house-number digits are not mirror-symmetric (a flipped 2 is not a 2).
        steps += [T.RandomCrop(32, padding=4)]
    steps.append(
        T.ToTensor()
    )  # uint8 HWC -> float32 CHW in [0, 1]; no Normalize (it is in the model)
    return T.Compose(steps)  # type: ignore[no-any-return]


def _load_raw_split(
    name: str,
    split: str,
    root: Path,
    download: bool,
    augment: bool,
    layout: imagefolder.ImageFolderLayout | None = None,
) -> Dataset[Any]:
    train = split == "train"
    if name == "digits":
        return _digits_tensors(split)
    if name == "imagefolder":
        layout = layout or imagefolder.resolve_layout(root, [split])
        return _imagefolder_split(root, split, imagefolder.transform(layout, train, augment))
    transform = _transform(name, train, augment)
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


def load_split(
    name: str,
    split: str,
    root: str | Path | None = None,
    download: bool = False,
    limit: int | None = None,
    *,
    augment: bool = False,
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
        augment: apply training augmentation (train split only; the test split never is).
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
    dataset = _load_raw_split(
        name, split, root_path, download, augment and split == "train", layout
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
    plain = _load_raw_split("imagefolder", "train", root, False, False, layout)
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
    augment: bool = True,
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
        augment: training augmentation (CIFAR: crop+flip, SVHN: crop, imagefolder: by image size;
            digits/MNIST: none). The test split is never augmented.
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
    raw_train = _load_raw_split(name, "train", root_path, download, augment, layout)
    train = balanced_subset(raw_train, train_limit, seed, "train limit")
    raw_test = _load_raw_split(name, "test", root_path, download, False, layout)
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
