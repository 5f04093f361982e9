"""dataset_sources: the per-source readers (digits, torchvision, ImageFolder) and transforms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustbench_sparse import dataset_sources as sources
from robustbench_sparse.errors import UserError


def test_transforms_augment_train_only() -> None:
    from torchvision import transforms as T

    from robustbench_sparse.augmentation import Augment, resolve_augment

    def kinds(name: str, train: bool, augment: bool | str) -> set[type]:
        mode = resolve_augment(name, augment) if train else Augment.NONE
        return {type(t) for t in sources._transform(name, mode).transforms}

    assert T.RandomHorizontalFlip in kinds("cifar10", True, True)
    assert T.RandomCrop in kinds("cifar100", True, True)
    assert T.RandomCrop in kinds("svhn", True, True)
    assert T.RandomHorizontalFlip not in kinds("svhn", True, True)  # digits are not flip-symmetric
    assert kinds("cifar10", False, True) == {T.ToTensor}
    assert kinds("cifar10", True, False) == {T.ToTensor}
    assert kinds("cifar10", True, "crop") == {T.RandomCrop, T.ToTensor}
    assert kinds("mnist", True, True) == {T.ToTensor}
    assert kinds("mnist", True, "crop-flip") == {T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor}


def test_digits_reader_gives_the_whole_split_in_unit_range() -> None:
    train = sources.load_raw_split("digits", "train", Path("unused"), False, False)
    test = sources.load_raw_split("digits", "test", Path("unused"), False, False)
    assert len(train) == 1347 and len(test) == 450  # type: ignore[arg-type]
    x, y = train[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and 0 <= int(y) < 10


def test_digits_split_equals_scikit_learns_stratified_split() -> None:
    """The stored split is scikit-learn's train_test_split, example for example and in order."""
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x_tr, x_te, y_tr, y_te = train_test_split(
        bunch.data, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0
    )
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        data = sources.load_raw_split("digits", split, Path("unused"), False, False)
        images, labels = data.tensors  # type: ignore[attr-defined]
        expected = torch.as_tensor(x, dtype=torch.float32).div_(16.0).reshape(-1, 1, 8, 8)
        assert torch.equal(images, expected)
        assert torch.equal(labels, torch.as_tensor(y, dtype=torch.long))
    pixels, labels = sources.digits_arrays()  # the file scikit-learn reads, parsed without it
    assert np.array_equal(pixels, bunch.data) and np.array_equal(labels, bunch.target)


def test_digits_fall_back_to_scikit_learn_when_its_file_moves(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fast = sources.load_raw_split("digits", "test", Path("unused"), False, False)
    monkeypatch.setattr(sources, "_digits_csv", lambda: None)
    slow = sources.load_raw_split("digits", "test", Path("unused"), False, False)
    assert torch.equal(fast.tensors[0], slow.tensors[0])  # type: ignore[attr-defined]
    assert torch.equal(fast.tensors[1], slow.tensors[1])  # type: ignore[attr-defined]


def test_reading_digits_imports_no_scikit_learn() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from pathlib import Path; from robustbench_sparse import dataset_sources as s;"
        "s.load_raw_split('digits', 'test', Path('x'), False, False);"
        "print('sklearn' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_missing_torchvision_files_name_the_expected_path(tmp_path: Path) -> None:
    with pytest.raises(
        UserError, match=r"dataset 'mnist' \(test split\) not found: expected .*t10k"
    ):
        sources.load_raw_split("mnist", "test", tmp_path, False, False)
    with pytest.raises(UserError, match="does not exist"):
        sources.load_raw_split("cifar10", "train", tmp_path / "nowhere", False, False)


def test_cifar10_folder_is_recognised_by_its_ten_classes(tmp_path: Path) -> None:
    assert sources.cifar10_folder(tmp_path) is None
    for name in sources.CIFAR10_CLASSES:
        (tmp_path / "cifar10-jpeg" / "test" / name).mkdir(parents=True)
    assert sources.cifar10_folder(tmp_path) == tmp_path / "cifar10-jpeg"
    (tmp_path / "cifar-10-batches-py").mkdir()  # torchvision's own batches take precedence
    assert sources.cifar10_folder(tmp_path) is None
