"""Common corruptions (issue 28): contracts, seeding, and severity on a dense digits model."""

from __future__ import annotations

import pytest
import torch

from evaluations.engine.corruptions import (
    COMMON,
    EXTRA,
    corrupt_batch,
    corruption_names,
    evaluate_corruptions,
    parameter_source,
)
from robustbench_sparse.errors import UserError


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (2, 3, 32, 32)])
@pytest.mark.parametrize("name", COMMON + EXTRA)
def test_each_corruption_changes_the_image_and_keeps_its_contract(name: str, shape: tuple) -> None:
    x = torch.rand(*shape) * 0.8 + 0.1
    for severity in (1, 5):
        y = corrupt_batch(x, name, severity, seed=0)
        assert y.shape == x.shape and y.dtype == x.dtype
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert float((y - x).abs().max()) > 1 / 255, (name, severity)


def test_same_seed_same_images_and_batch_split_does_not_matter() -> None:
    x = torch.rand(6, 1, 8, 8)
    for name in ("gaussian_noise", "impulse_noise", "glass_blur", "snow", "fog"):
        a = corrupt_batch(x, name, 3, seed=7)
        assert torch.equal(a, corrupt_batch(x, name, 3, seed=7))
        halves = torch.cat(
            [
                corrupt_batch(x[:3], name, 3, seed=7),
                corrupt_batch(x[3:], name, 3, seed=7, first_index=3),
            ]
        )
        assert torch.equal(a, halves)
        assert not torch.equal(a, corrupt_batch(x, name, 3, seed=8)), name


def test_global_numpy_state_is_left_alone() -> None:
    import numpy as np

    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    corrupt_batch(torch.rand(2, 3, 32, 32), "gaussian_noise", 1, seed=0)
    assert np.random.rand() == expected


def test_names_are_checked_and_parameters_named() -> None:
    assert corruption_names() == list(COMMON) and len(COMMON) == 15
    assert corruption_names(extra=True)[-4:] == list(EXTRA)
    with pytest.raises(UserError, match="unknown corruption 'rain'"):
        corruption_names(["rain"])
    assert parameter_source("gaussian_noise") == "cifar10-c"
    assert parameter_source("snow") == "imagenet-c"


def test_a_failing_corruption_is_skipped_and_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    import evaluations.engine.corruptions as mod

    def broken(image, name, severity):  # type: ignore[no-untyped-def]
        raise AttributeError("Image width and height must be at least 32 pixels")

    monkeypatch.setattr(mod, "_corrupt_hwc", broken)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    out = evaluate_corruptions(model, torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), ["fog"])
    assert out.rows == [] and "at least 32 pixels" in out.skipped["fog"]


@pytest.mark.slow
def test_mean_accuracy_does_not_rise_with_severity_on_dense_digits(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from robustbench_sparse.datasets import load_split
    from robustbench_sparse.train_job import run_train_job
    from tests.eval_helpers import single_thread, train_job

    job = train_job("dense")
    job = replace(job, train=replace(job.train, epochs=6), data=replace(job.data, train_limit=None))
    with single_thread():
        ckpt = run_train_job(job, tmp_path / "dense", progress=False)
        test = load_split("digits", "test", None, limit=120)
        x = torch.stack([test[i][0] for i in range(len(test))])
        y = torch.tensor([int(test[i][1]) for i in range(len(test))])
        out = evaluate_corruptions(ckpt.model, x, y, list(COMMON), seed=0)
    assert not out.skipped
    by_severity = {
        s: sum(int(r["correct"]) for r in out.rows if r["severity"] == s) for s in range(1, 6)
    }
    assert out.clean_correct / len(y) > 0.8
    for s in range(1, 5):
        assert by_severity[s + 1] <= by_severity[s], by_severity
    assert by_severity[1] <= out.clean_correct * len(COMMON)
