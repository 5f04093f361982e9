"""Calibration data for a checkpoint: a seeded training subset, fractals, and the refusals."""

from __future__ import annotations

import pytest
import torch

from robustbench_sparse.checkpoint import load_checkpoint, save_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.posttrain.data import calibration_data


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = create_model("small_cnn", num_classes=10, in_channels=1, input_shape=(1, 8, 8))
    meta = {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "dataset": "digits"}
    return load_checkpoint(save_checkpoint(tmp_path_factory.mktemp("d") / "c", model, meta))


def test_real_images_are_a_seeded_subset_of_the_training_split(ckpt) -> None:  # type: ignore[no-untyped-def]
    a = calibration_data(ckpt, "calibration", n=20, seed=1)
    b = calibration_data(ckpt, "calibration", n=20, seed=1)
    c = calibration_data(ckpt, "calibration", n=20, seed=2)
    assert a is not None and b is not None and c is not None
    assert a.images.shape == (20, 1, 8, 8) and a.labels is not None and a.labels.shape == (20,)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert a.record["source"] == "train" and a.train_set is None
    trained = calibration_data(ckpt, "train", n=5)
    assert trained is not None and trained.train_set is not None
    assert calibration_data(ckpt, "none") is None


def test_fractal_images_and_refusals(ckpt) -> None:  # type: ignore[no-untyped-def]
    f = calibration_data(ckpt, "calibration", n=10, source="fractal", seed=3)
    assert f is not None and f.labels is None and f.images.shape == (10, 1, 8, 8)
    assert f.record == {"source": "fractal", "images": 10, "seed": 3, "shape": [1, 8, 8]}
    with pytest.raises(UserError, match="fine-tunes on the training split"):
        calibration_data(ckpt, "train", n=10, source="fractal")
    with pytest.raises(UserError, match="more images than"):
        calibration_data(ckpt, "calibration", n=10**6)
    with pytest.raises(UserError, match="positive"):
        calibration_data(ckpt, "calibration", n=0)
    with pytest.raises(UserError, match="--calibration-data"):
        calibration_data(ckpt, "calibration", source="noise")
