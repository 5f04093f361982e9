"""Training augmentation as one setting: ``auto``, ``none``, ``crop`` or ``crop-flip``.

``[data] augment`` (``rbs train --augment``) picks it; ``auto`` is the dataset's usual recipe:

============================  ===========  =========================================================
dataset                       ``auto``     why
============================  ===========  =========================================================
cifar10, cifar100             crop-flip    the CIFAR recipe (He et al. 2016): 4 px padded crop + flip
svhn                          crop         house numbers are not mirror-symmetric (a flipped 2 is no 2)
imagefolder                   crop-flip    ImageNet-style objects; **turn it off for digits or text**
digits, mnist, fashion-mnist  none         centred glyphs; flips change the class
============================  ===========  =========================================================

``crop`` is a random crop back to the input size after ``max(1, round(min(H, W) / 8))`` pixels of
zero padding (4 at 32x32, 1 at 8x8), or ``RandomResizedCrop`` for ImageFolder inputs of 128 px and
more; ``crop-flip`` adds a horizontal flip with probability 1/2. The test split and the validation
hold-out are never augmented. ``true`` / ``false`` (older configs) mean ``auto`` / ``none``.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import torch
from torch.utils.data import Dataset

from robustbench_sparse.errors import UserError

__all__ = [
    "Augment",
    "AugmentedTensors",
    "augment_ops",
    "augmentation_record",
    "crop_padding",
    "describe",
    "parse_augment",
    "resolve_augment",
]

#: ImageFolder outputs from this many pixels up crop ImageNet style (``RandomResizedCrop``)
LARGE_MIN = 128


class Augment(str, Enum):
    """The training augmentation setting (see the module docstring)."""

    AUTO = "auto"
    NONE = "none"
    CROP = "crop"
    CROP_FLIP = "crop-flip"

    @classmethod
    def _missing_(cls, value: object) -> Augment | None:
        if value is True:  # older configs and checkpoints: augment = true / false
            return cls.AUTO
        if value is False:
            return cls.NONE
        if isinstance(value, str):
            text = value.strip().lower().replace("_", "-").replace("+", "-")
            for member in cls:
                if member.value == text:
                    return member
        return None


_AUTO = {
    "cifar10": Augment.CROP_FLIP,
    "cifar100": Augment.CROP_FLIP,
    "svhn": Augment.CROP,
    "imagefolder": Augment.CROP_FLIP,
}


def parse_augment(value: Any) -> Augment:
    """``"crop-flip"``, ``True`` (= ``auto``), ``Augment.NONE``, ... -> :class:`Augment`.

    Raises:
        UserError: any other value (one line listing the valid ones).
    """
    try:
        return Augment(value)
    except ValueError:
        valid = ", ".join(m.value for m in Augment)
        raise UserError(
            f"augment {value!r} is unknown; valid: {valid} (--augment / [data] augment)"
        ) from None


def resolve_augment(dataset: str, value: Any) -> Augment:
    """The augmentation that runs on ``dataset``'s training split: ``auto`` resolved, never ``AUTO``."""
    setting = parse_augment(value)
    if setting is Augment.AUTO:
        return _AUTO.get(dataset, Augment.NONE)
    return setting


def crop_padding(size: tuple[int, int]) -> int:
    """Zero padding of the random crop at input size ``(H, W)``: ``max(1, round(min(H, W) / 8))``."""
    return max(1, round(min(size) / 8))


def augment_ops(mode: Augment, size: tuple[int, int], *, large: bool = False) -> list[Any]:
    """torchvision transforms of ``mode`` at ``(H, W)`` (PIL images or ``(C, H, W)`` tensors).

    ``mode`` is resolved (``AUTO`` is refused: call :func:`resolve_augment` first); ``large``:
    ``RandomResizedCrop`` instead of the padded crop (ImageFolder inputs of :data:`LARGE_MIN` px).
    """
    from torchvision import transforms as T

    if mode is Augment.AUTO:
        raise ValueError("resolve 'auto' with resolve_augment(dataset, value) first")
    if mode is Augment.NONE:
        return []
    crop = T.RandomResizedCrop(size) if large else T.RandomCrop(size, padding=crop_padding(size))
    return [crop, T.RandomHorizontalFlip()] if mode is Augment.CROP_FLIP else [crop]


def describe(mode: Augment, size: tuple[int, int], *, large: bool = False) -> str:
    """``"crop-flip (random 32x32 crop after 4 px padding + horizontal flip)"``, ``"none"``, ..."""
    if mode is Augment.NONE:
        return "none"
    h, w = size
    crop = (
        f"RandomResizedCrop to {h}x{w}"
        if large
        else f"random {h}x{w} crop after {crop_padding(size)} px padding"
    )
    flip = " + horizontal flip" if mode is Augment.CROP_FLIP else ""
    return f"{mode.value} ({crop}{flip})"


def augmentation_record(dataset: str, value: Any, input_shape: Sequence[int]) -> dict[str, str]:
    """What a checkpoint records: the setting, the augmentation that ran and its description.

    ``input_shape`` is the model's ``(C, H, W)``; ImageFolder inputs of :data:`LARGE_MIN` px and
    more crop with ``RandomResizedCrop``.
    """
    mode = resolve_augment(dataset, value)
    size = (int(input_shape[-2]), int(input_shape[-1]))
    large = dataset == "imagefolder" and min(size) >= LARGE_MIN
    return {
        "setting": parse_augment(value).value,
        "applied": mode.value,
        "description": describe(mode, size, large=large),
    }


class AugmentedTensors(Dataset[tuple[torch.Tensor, Any]]):
    """A tensor dataset (``x`` ``(C, H, W)`` in ``[0, 1]``) with a training augmentation applied.

    Wraps datasets that have no transform of their own (the bundled ``digits``); the transforms
    draw from torch's global RNG, which the training loop seeds per epoch.
    """

    def __init__(self, base: Dataset[Any], mode: Augment, size: tuple[int, int]) -> None:
        from torchvision import transforms as T

        self.base = base
        self.transform = T.Compose(augment_ops(mode, size))
        labels = getattr(base, "tensors", None)
        if labels is not None:  # TensorDataset: balanced_subset reads the labels without images
            self.targets = labels[1]

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Any]:
        x, y = self.base[index]
        return self.transform(x), y
