"""augmentation: one setting (auto / none / crop / crop-flip), resolved per dataset and recorded."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset
from torchvision import transforms as T

from robustbench_sparse.augmentation import (
    Augment,
    AugmentedTensors,
    augment_ops,
    augmentation_record,
    crop_padding,
    parse_augment,
    resolve_augment,
)
from robustbench_sparse.dataset_sources import load_raw_split
from robustbench_sparse.errors import UserError
from robustbench_sparse.imagefolder import ImageFolderLayout, transform


@pytest.mark.parametrize(
    "value,expected",
    [
        (True, Augment.AUTO),
        (False, Augment.NONE),
        ("Crop-Flip", Augment.CROP_FLIP),
        ("crop_flip", Augment.CROP_FLIP),
        (" none ", Augment.NONE),
        (Augment.CROP, Augment.CROP),
    ],
)
def test_parse_accepts_the_names_and_older_bools(value: Any, expected: Augment) -> None:
    assert parse_augment(value) is expected


@pytest.mark.parametrize("value", ["flip", "yes", 1, None])
def test_an_unknown_setting_is_a_one_line_error(value: Any) -> None:
    with pytest.raises(UserError, match=r"valid: auto, none, crop, crop-flip \(--augment"):
        parse_augment(value)


@pytest.mark.parametrize(
    "dataset,applied",
    [
        ("cifar10", Augment.CROP_FLIP),
        ("svhn", Augment.CROP),
        ("imagefolder", Augment.CROP_FLIP),
        ("digits", Augment.NONE),
        ("mnist", Augment.NONE),
    ],
)
def test_auto_is_the_datasets_recipe_and_explicit_settings_win(
    dataset: str, applied: Augment
) -> None:
    assert resolve_augment(dataset, "auto") is applied
    assert resolve_augment(dataset, "none") is Augment.NONE
    assert resolve_augment(dataset, "crop") is Augment.CROP


def test_ops_and_descriptions_follow_the_size() -> None:
    assert crop_padding((32, 32)) == 4 and crop_padding((8, 8)) == 1 and crop_padding((28, 28)) == 4
    kinds = [type(op) for op in augment_ops(Augment.CROP_FLIP, (32, 32))]
    assert kinds == [T.RandomCrop, T.RandomHorizontalFlip]
    assert [type(op) for op in augment_ops(Augment.CROP, (224, 224), large=True)] == [
        T.RandomResizedCrop
    ]
    assert augment_ops(Augment.NONE, (8, 8)) == []
    with pytest.raises(ValueError):
        augment_ops(Augment.AUTO, (8, 8))
    rec = augmentation_record("imagefolder", "auto", (3, 32, 32))
    assert rec == {
        "setting": "auto",
        "applied": "crop-flip",
        "description": "crop-flip (random 32x32 crop after 4 px padding + horizontal flip)",
    }
    big = augmentation_record("imagefolder", "crop", (3, 224, 224))["description"]
    assert big == "crop (RandomResizedCrop to 224x224)"


@pytest.mark.parametrize(
    "native,size,augment,expected",
    [
        (True, (32, 32), "auto", [T.RandomCrop, T.RandomHorizontalFlip]),
        (True, (32, 32), "crop", [T.RandomCrop]),
        (True, (32, 32), "none", []),
        (False, (16, 16), "crop", [T.Resize, T.RandomCrop]),
        (False, (160, 160), "crop-flip", [T.RandomResizedCrop, T.RandomHorizontalFlip]),
        (False, (160, 160), "none", [T.Resize, T.CenterCrop]),
        (True, (160, 160), "crop", [T.RandomResizedCrop]),
    ],
)
def test_imagefolder_transforms_take_the_setting(
    native: bool, size: tuple[int, int], augment: str, expected: list[type]
) -> None:
    layout = ImageFolderLayout(("a", "b"), size, native)
    ops = transform(layout, True, augment).transforms  # type: ignore[attr-defined]
    assert [type(op) for op in ops[1:-1]] == expected  # between the RGB conversion and ToTensor
    evaluation = transform(layout, False, augment).transforms  # type: ignore[attr-defined]
    assert not any("Random" in type(op).__name__ for op in evaluation)


def test_digits_crop_flip_moves_pixels_and_keeps_shape_range_and_labels(tmp_path: Any) -> None:
    plain = load_raw_split("digits", "train", tmp_path, False, "none")
    assert isinstance(plain, TensorDataset)
    augmented = load_raw_split("digits", "train", tmp_path, False, "crop-flip")
    assert isinstance(augmented, AugmentedTensors) and len(augmented) == len(plain)
    assert torch.equal(augmented.targets, plain.tensors[1])
    torch.manual_seed(0)
    changed = 0
    for i in range(40):
        x, y = augmented[i]
        x0, y0 = plain[i]
        assert x.shape == x0.shape == (1, 8, 8) and y == y0
        assert float(x.min()) >= 0 and float(x.max()) <= 1
        changed += int(not torch.equal(x, x0))
    assert changed > 20  # a 1 px shift or a flip changes most digits
    test = load_raw_split("digits", "test", tmp_path, False, "crop-flip")
    assert isinstance(test, TensorDataset)  # the test split never is augmented
