"""The shared real-data archives, read member by member (never copied into the repository).

``../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz`` (relative to the repository root) holds CIFAR-10
as JPEG files in ImageFolder layout (``cifar10-jpeg/{train,test}/<class>/NNNN.jpg``). Tests extract
only the members they need into a temporary folder and skip, with the reason, where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from robustbench_sparse.imagefolder import extract_per_class

CIFAR_ARCHIVE = (
    Path(__file__).resolve().parents[1]
    / ".."
    / "shared"
    / "data"
    / "cifar10-jpeg"
    / "cifar10-jpeg.tar.gz"
).resolve()


def require_cifar_archive() -> Path:
    """The archive path, or skip the test saying where it was looked for."""
    if not CIFAR_ARCHIVE.is_file():
        pytest.skip(f"shared CIFAR-10 JPEG archive not found at {CIFAR_ARCHIVE}")
    return CIFAR_ARCHIVE


def extract_cifar_jpeg(dest: Path, train_per_class: int, test_per_class: int | None) -> Path:
    """Extract the first ``N`` images per class of each split into ``dest``; returns the dataset root.

    ``test_per_class=None`` extracts the whole test split. Returns ``dest / "cifar10-jpeg"`` (with
    ``train/`` and ``test/``).
    """
    archive = require_cifar_archive()
    return extract_per_class(archive, dest, {"train": train_per_class, "test": test_per_class})
