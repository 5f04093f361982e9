"""ImageFolder datasets at any resolution: image size, transforms, class names and mean/std from the files.

Layout: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (or ``root/test/...``), as
``torchvision.datasets.ImageFolder`` reads it; the label of a class is its index among the sorted
folder names.

- **Size**: by default the images' own size when every image of the split has the same one (read from
  the file headers, no decoding); a split of mixed sizes needs ``image_size`` and is refused without
  it. Images at their native size are never resized.
- **Resize/crop** only when asked (``image_size`` differing from the native size, or mixed sizes):
  ImageNet style for large outputs (``>= 128``: ``RandomResizedCrop`` to train, ``Resize(S*256/224)``
  + ``CenterCrop(S)`` to evaluate), a plain ``Resize((S, S))`` for small ones.
- **Augmentation** (``[data] augment``, :mod:`robustbench_sparse.augmentation`; default ``auto`` =
  ``crop-flip``) fits the size: below 128 px, ``RandomCrop`` with ``S/8`` padding (+ horizontal
  flip), the CIFAR recipe at 32x32; from 128 px, ``RandomResizedCrop`` (+ flip). Flips are wrong
  for digits and text: ``--augment crop`` or ``none`` turns them off.
- **Mean/std**: given, or computed once on the training split (at the model's input size, without
  augmentation) and recorded in the checkpoint.
- **Files**: hidden folders and files (a name starting with ``.``) are neither classes nor images;
  16-bit and float images are scaled by their own depth (:mod:`robustbench_sparse.image_files`).
"""

from __future__ import annotations

import logging
import tarfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from robustbench_sparse.augmentation import LARGE_MIN, Augment, augment_ops, resolve_augment
from robustbench_sparse.errors import UserError
from robustbench_sparse.image_files import is_image_file

logger = logging.getLogger(__name__)

__all__ = [
    "EVAL_SPLITS",
    "IMAGENET_STYLE_MIN",
    "ImageFolderLayout",
    "channel_mean_std",
    "class_names",
    "extract_per_class",
    "resolve_layout",
    "split_dir",
    "transform",
]

EVAL_SPLITS = ("val", "test")
"""Names the evaluation split may have (the first present is used)."""

IMAGENET_STYLE_MIN = LARGE_MIN
"""Output sizes from this many pixels up are resized/cropped ImageNet style."""


def split_dir(root: str | Path, split: str) -> Path:
    """``root/train`` for ``"train"``; ``root/val`` or else ``root/test`` for ``"test"``.

    Raises:
        UserError: naming the folders looked for when none exists.
    """
    base = Path(root)
    names = ("train",) if split == "train" else EVAL_SPLITS
    for name in names:
        if (base / name).is_dir():
            return base / name
    expected = " or ".join(f"{base / n}/<class>/<image>" for n in names)
    raise UserError(
        f"imagefolder dataset not found: expected {expected} "
        "(ImageFolder layout: root/train and root/val or root/test; nothing is downloaded); "
        "pass --data-root DIR ([data] data_root) pointing at it"
    )


def _classes_in(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.is_dir() and not e.name.startswith("."))


def class_names(root: str | Path) -> list[str]:
    """Class names: the evaluation split's sub-folders, else train's (sorted, as ImageFolder labels them).

    Reads directory names only.

    Raises:
        UserError: when neither split folder exists or it has no class sub-folder.
    """
    try:
        folder = split_dir(root, "test")
    except UserError:
        folder = split_dir(root, "train")
    classes = _classes_in(folder)
    if not classes:
        raise UserError(f"imagefolder dataset at {folder} has no class folders")
    return classes


@lru_cache(maxsize=16)
def _sizes(folder: str) -> tuple[tuple[tuple[int, int], int], ...]:
    """``((height, width), count)`` over every image file under ``folder`` (headers only).

    Hidden entries (``.ipynb_checkpoints/``, ``.DS_Store``, ...) are skipped, as the datasets skip
    them (:func:`robustbench_sparse.image_files.is_image_file`).
    """
    from PIL import Image, UnidentifiedImageError

    counts: Counter[tuple[int, int]] = Counter()
    for path in sorted(Path(folder).rglob("*")):
        if not is_image_file(path, folder) or not path.is_file():
            continue
        try:
            with Image.open(path) as img:
                width, height = img.size
        except (UnidentifiedImageError, OSError) as exc:
            raise UserError(f"imagefolder: {path} is not a readable image ({exc})") from None
        counts[(height, width)] += 1
    return tuple(sorted(counts.items()))


@dataclass(frozen=True)
class ImageFolderLayout:
    """What the model sees of an ImageFolder root.

    Attributes:
        classes: class names (label = index).
        size: ``(H, W)`` of the model's input.
        native: the images already have ``size`` (no resizing).
    """

    classes: tuple[str, ...]
    size: tuple[int, int]
    native: bool


def resolve_layout(
    root: str | Path, splits: Sequence[str], image_size: int | None = None
) -> ImageFolderLayout:
    """Classes and input size of the ``splits`` (``"train"`` / ``"test"``) of an ImageFolder root.

    Args:
        root: the dataset folder.
        splits: the splits that will be read; their class folders must agree.
        image_size: square output size ``S`` (``S x S``); ``None``: the images' own size, which
            must then be the same for every image of every split.

    Raises:
        UserError: missing folders, no class folder, class folders that differ between splits,
            mixed image sizes without ``image_size``, an ``image_size`` < 1, or no image at all.
    """
    if image_size is not None and image_size < 1:
        raise UserError(f"--image-size must be >= 1 (got {image_size})")
    classes: list[str] | None = None
    sizes: Counter[tuple[int, int]] = Counter()
    for split in splits:
        folder = split_dir(root, split)
        found = _classes_in(folder)
        if not found:
            raise UserError(f"imagefolder dataset at {folder} has no class folders")
        if classes is not None and found != classes:
            raise UserError(
                f"imagefolder: {folder} has class folders {found[:5]}... ({len(found)}) but the "
                f"other split has {classes[:5]}... ({len(classes)}); they must match"
            )
        classes = found
        sizes.update(dict(_sizes(str(folder))))
    if not sizes:
        raise UserError(f"imagefolder dataset at {Path(root)} holds no image files")
    assert classes is not None
    if len(sizes) == 1:
        (native,) = sizes
        if image_size is None or (image_size, image_size) == native:
            return ImageFolderLayout(tuple(classes), native, True)
    elif image_size is None:
        common = ", ".join(f"{h}x{w} ({n})" for (h, w), n in sizes.most_common(3))
        raise UserError(
            f"imagefolder images under {Path(root)} have {len(sizes)} different sizes ({common}, "
            "...); pass --image-size S to resize them to S x S"
        )
    assert image_size is not None
    return ImageFolderLayout(tuple(classes), (image_size, image_size), False)


def transform(
    layout: ImageFolderLayout, train: bool, augment: Any
) -> Callable[[Any], torch.Tensor]:
    """PIL image -> float32 tensor ``(3, H, W)`` in ``[0, 1]`` (see the module docstring for the rules).

    ``augment``: the training augmentation setting (:mod:`robustbench_sparse.augmentation`;
    ``auto`` is ``crop-flip`` here), applied when ``train``.
    """
    from torchvision import transforms as T

    h, w = layout.size
    large = min(h, w) >= IMAGENET_STYLE_MIN
    mode = resolve_augment("imagefolder", augment) if train else Augment.NONE
    steps: list[Any] = [T.Lambda(_to_rgb)]
    if not layout.native and not (large and mode is not Augment.NONE):
        # (large and augmented: RandomResizedCrop below resizes and crops in one)
        if large:
            steps += [T.Resize(round(min(h, w) * 256 / 224)), T.CenterCrop((h, w))]
        else:
            steps.append(T.Resize((h, w)))
    steps += augment_ops(mode, (h, w), large=large)
    steps.append(T.Lambda(_to_tensor))  # float32 CHW in [0, 1]; Normalize is in the model
    return T.Compose(steps)  # type: ignore[no-any-return]


def _to_rgb(img: Any) -> Any:
    """A PIL image in RGB; a tensor (a 16-bit or float image, already ``(3, H, W)``) as is."""
    return img if isinstance(img, torch.Tensor) else img.convert("RGB")


def _to_tensor(img: Any) -> torch.Tensor:
    """PIL RGB (uint8 HWC) -> float32 ``(3, H, W)`` in ``[0, 1]``; a tensor is already one.

    16-bit, 32-bit and float images arrive as tensors scaled by their own bit depth
    (:func:`robustbench_sparse.image_files.read_image`).
    """
    from torchvision.transforms import functional as F

    if isinstance(img, torch.Tensor):
        return img
    return F.to_tensor(img)  # type: ignore[no-any-return]


def channel_mean_std(
    dataset: Dataset[Any], batch_size: int = 256
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of ``dataset``'s images (``[0, 1]`` pixel units).

    ``dataset`` yields ``(x, y)`` with ``x`` ``(C, H, W)``; computed in float64 over every pixel.

    Raises:
        UserError: for an empty dataset.
    """
    total = torch.zeros(0, dtype=torch.float64)
    squares = torch.zeros(0, dtype=torch.float64)
    count = 0
    for x, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        xd = x.to(torch.float64)  # (B, C, H, W)
        if count == 0:
            total = torch.zeros(xd.shape[1], dtype=torch.float64)
            squares = torch.zeros(xd.shape[1], dtype=torch.float64)
        total += xd.sum(dim=(0, 2, 3))
        squares += (xd * xd).sum(dim=(0, 2, 3))
        count += xd.shape[0] * xd.shape[2] * xd.shape[3]
    if count == 0:
        raise UserError("cannot compute mean/std of an empty training split")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(1e-12).sqrt()
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-6) for s in std)


def extract_per_class(
    archive: str | Path, dest: str | Path, per_class: Mapping[str, int | None]
) -> Path:
    """Extract the first ``N`` images of every class of each named split from a tar archive.

    The archive holds one ImageFolder tree, ``<top>/<split>/<class>/<file>`` (e.g. the CIFAR-10 JPEG
    copy, ``cifar10-jpeg/train/cat/0001.jpg``). ``per_class`` maps a split name to how many files
    per class to take (``None``: all of them); other splits are skipped. Members are read one by
    one, so a subset costs a pass over the archive but no space for the rest. Extraction uses
    tarfile's ``data`` filter (no absolute paths, links out of ``dest`` or special files).

    Returns ``dest / <top>``. Raises ``UserError`` when the archive cannot be read or holds no
    member of a requested split.
    """
    taken: Counter[tuple[str, str]] = Counter()
    tops: set[str] = set()
    try:
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = member.name.split("/")
                if not member.isfile() or len(parts) != 4 or parts[1] not in per_class:
                    continue
                limit = per_class[parts[1]]
                key = (parts[1], parts[2])
                if limit is not None and taken[key] >= limit:
                    continue
                taken[key] += 1
                tops.add(parts[0])
                tar.extract(member, dest, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise UserError(f"cannot read the archive {archive}: {exc}") from None
    missing = sorted(s for s in per_class if not any(k[0] == s for k in taken))
    if missing:
        raise UserError(
            f"{archive} has no <top>/<split>/<class>/<file> member of split(s) "
            f"{', '.join(missing)}; check the split names"
        )
    if len(tops) != 1:
        raise UserError(
            f"{archive} holds several top folders ({', '.join(sorted(tops))}); "
            "expected one ImageFolder tree"
        )
    return Path(dest) / tops.pop()
