"""``torchvision.datasets.ImageFolder`` whose classes are the *visible* sub-folders only.

Kept apart from :mod:`robustbench_sparse.image_files` because it imports torchvision at module level
(a defined, picklable class for DataLoader workers): import it lazily.
"""

from __future__ import annotations

import os

from torchvision import datasets as tvd

__all__ = ["VisibleImageFolder"]


class VisibleImageFolder(tvd.ImageFolder):  # type: ignore[misc]
    """An ImageFolder that skips hidden class folders (``.ipynb_checkpoints``, ``.git``, ...).

    Pass ``is_valid_file`` (:func:`robustbench_sparse.image_files.is_image_file`) so that hidden
    files and files under hidden sub-folders are skipped too.
    """

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Sorted visible sub-folder names and their labels (index in that order).

        Raises:
            FileNotFoundError: when ``directory`` has no visible sub-folder.
        """
        classes = sorted(
            e.name for e in os.scandir(directory) if e.is_dir() and not e.name.startswith(".")
        )
        if not classes:
            raise FileNotFoundError(f"no class folder in {directory}")
        return classes, {name: i for i, name in enumerate(classes)}
