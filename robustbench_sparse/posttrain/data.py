"""The data a post-training method asks for (:attr:`PostTrainMethod.data`), from a checkpoint.

- ``"calibration"``: a pool of ``n`` images, either real -- a seeded random subset of the
  checkpoint's dataset's *training* split (never the test split the attacks evaluate on), read
  without augmentation from the root :func:`~robustbench_sparse.data_roots.choose_root` picks --
  or data-free: ``n`` fractal images (:mod:`robustbench_sparse.posttrain.fractal`) at the
  checkpoint's input shape, generated from the seed on the spot (no file, no network).
- ``"train"``: the same pool plus the whole training split (``CalibrationData.train_set``) with
  the augmentation the checkpoint was trained with, for methods that fine-tune.
- ``"none"``: nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.data_roots import choose_root
from robustbench_sparse.datasets import load_split
from robustbench_sparse.errors import UserError
from robustbench_sparse.posttrain.base import CalibrationData, DataNeed
from robustbench_sparse.posttrain.fractal import fractal_images

__all__ = ["CALIBRATION_SOURCES", "DEFAULT_CALIBRATION_IMAGES", "calibration_data"]

logger = logging.getLogger(__name__)

#: ``--calibration-data`` values
CALIBRATION_SOURCES = ("train", "fractal")
#: POT's calibration pool (300 images)
DEFAULT_CALIBRATION_IMAGES = 300


def calibration_data(
    ckpt: LoadedCheckpoint,
    need: DataNeed,
    *,
    n: int = DEFAULT_CALIBRATION_IMAGES,
    source: str = "train",
    seed: int = 0,
    data_root: str | Path | None = None,
) -> CalibrationData | None:
    """The :class:`CalibrationData` of ``need`` for the checkpoint ``ckpt``.

    Args:
        ckpt: the loaded checkpoint (its dataset, input shape and recorded data root).
        need: the method's data need.
        n: calibration images (``>= 1``).
        source: ``"train"`` (real training images) or ``"fractal"`` (data-free).
        seed: seeds the subset / the fractals.
        data_root: ``--data-root`` (default: the recorded root, else the default root).

    Raises:
        UserError: ``n < 1``, an unknown source, fractal images for a method that fine-tunes on
            the training split, more images than the training split holds, missing data.
    """
    if need == "none":
        return None
    if source not in CALIBRATION_SOURCES:
        raise UserError(
            f"--calibration-data must be one of {', '.join(CALIBRATION_SOURCES)}, got {source!r}"
        )
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"--calibration must be a positive number of images, got {n!r}")
    dataset = str(ckpt.meta["dataset"])
    shape = tuple(int(s) for s in ckpt.info.input_shape)
    if source == "fractal":
        if need == "train":
            raise UserError(
                "this method fine-tunes on the training split: --calibration-data fractal "
                "(data-free) does not apply to it"
            )
        images = fractal_images(n, (shape[0], shape[1], shape[2]), seed)
        made = {"source": "fractal", "images": n, "seed": seed, "shape": list(shape)}
        logger.info("calibration: %d fractal images %s (seed %d)", n, shape, seed)
        return CalibrationData(images, None, "fractal", None, made)
    root = choose_root(dataset, {ckpt.name: ckpt.meta.get("data_root")}, data_root).root
    data = _meta_data(ckpt)
    train = load_split(
        dataset, "train", root, False, None, augment=False, image_size=data.get("image_size")
    )
    size = len(train)  # type: ignore[arg-type]
    if n > size:
        raise UserError(
            f"--calibration {n} asks for more images than the {dataset} training split holds "
            f"({size}); pass at most {size}"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
    pairs = [train[int(i)] for i in order]
    images = torch.stack([x for x, _ in pairs]).float()  # (n, C, H, W) in [0, 1]
    labels = torch.tensor([int(y) for _, y in pairs], dtype=torch.long)  # (n,)
    if tuple(images.shape[1:]) != shape:
        raise UserError(
            f"the {dataset} training images are {tuple(images.shape[1:])} but the checkpoint "
            f"takes {shape}; pass the --data-root it was trained on"
        )
    record: dict[str, Any] = {
        "source": "train",
        "dataset": dataset,
        "images": n,
        "seed": seed,
        "split_size": size,
    }
    logger.info("calibration: %d %s training images (seed %d)", n, dataset, seed)
    train_seed = int(ckpt.meta.get("seed") or 0)  # the seed of the checkpoint's train subset
    train_set = _train_set(dataset, root, data, train_seed) if need == "train" else None
    return CalibrationData(images, labels, "train", train_set, record)


def _meta_data(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    data = ckpt.meta.get("data")
    return dict(data) if isinstance(data, dict) else {}


def _train_set(dataset: str, root: Path | None, data: dict[str, Any], seed: int) -> Dataset[Any]:
    """The training split as the checkpoint was trained on it (limit, augmentation)."""
    return load_split(
        dataset,
        "train",
        root,
        False,
        data.get("train_limit"),
        augment=data.get("augment", "auto"),
        seed=seed,
        image_size=data.get("image_size"),
    )
