"""evaluations.engine.data_checks: input-shape refusal and the clean-accuracy warning."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from evaluations.engine.data_checks import accuracy_warning, check_input_shape
from robustbench_sparse.errors import UserError

_META: dict[str, Any] = {"input_shape": [3, 32, 32], "dataset": "cifar10"}


@pytest.mark.parametrize("shape", [(4, 3, 32, 32), (0, 3, 32, 32)])
def test_matching_shape_passes(shape: tuple[int, ...]) -> None:
    check_input_shape("a", _META, "cifar10", torch.zeros(shape))


@pytest.mark.parametrize(
    ("shape", "found"),
    [((4, 3, 28, 28), "3x28x28"), ((4, 1, 32, 32), "1x32x32"), ((2, 3, 224, 224), "3x224x224")],
)
def test_other_shape_is_refused(shape: tuple[int, ...], found: str) -> None:
    with pytest.raises(UserError, match=f"trained on 3x32x32 inputs .* gives {found}"):
        check_input_shape("a", _META, "imagefolder", torch.zeros(shape))


@pytest.mark.parametrize(
    "meta", [{}, {"input_shape": [3, 32, 32], "source": "plain-state-dict"}, {"input_shape": None}]
)
def test_nothing_recorded_is_not_checked(meta: dict[str, Any]) -> None:
    check_input_shape("a", meta, "x", torch.zeros(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("recorded", "correct", "n"),
    [(0.9, 880, 1000), (0.9, 17, 20), (0.5, 45, 100), (0.95, 95, 100), (0.9, 0, 0)],
)
def test_plausible_accuracy_gives_no_warning(recorded: float, correct: int, n: int) -> None:
    assert accuracy_warning("a", {"clean_accuracy": recorded}, 10, correct, n) is None


@pytest.mark.parametrize(
    ("recorded", "correct", "n"),
    [(0.9, 100, 1000), (0.9, 5, 40), (0.95, 80, 100), (0.6, 500, 1000)],
)
def test_far_below_recorded_warns(recorded: float, correct: int, n: int) -> None:
    text = accuracy_warning("ck", {"clean_accuracy": recorded}, 10, correct, n)
    assert text is not None
    assert "'ck'" in text and f"{correct}/{n}" in text and "far below" in text


@pytest.mark.parametrize(
    ("num_classes", "correct", "n", "warns"),
    [
        (10, 10, 100, True),
        (10, 14, 100, True),
        (10, 60, 100, False),
        (10, 215, 1000, True),  # the field reports: 21.5 % and 17 % for 94 % / 93 % models
        (10, 17, 100, True),
        (10, 32, 100, True),  # below 32.5 %: a quarter of the way from chance to 100 %
        (10, 33, 100, False),
        (100, 20, 100, True),  # chance 1 %: 25.75 %
        (100, 30, 100, False),
        (2, 52, 100, True),
        (2, 62, 100, True),
        (2, 90, 100, False),
    ],
)
def test_without_record_chance_level_warns(
    num_classes: int, correct: int, n: int, warns: bool
) -> None:
    text = accuracy_warning("ck", {}, num_classes, correct, n)
    assert (text is not None) == warns
    if text is not None:
        assert f"1/{num_classes}" in text and "--normalize" in text


@pytest.mark.parametrize(
    ("normalization", "applied", "advice"),
    [
        (
            {"mean": [0.5], "std": [0.25], "source": "dataset", "assumed": True},
            "the dataset's mean/std (mean 0.5, std 0.25); assumed, the file does not record it",
            "pass --normalize none",
        ),
        (
            {"mean": [0.0], "std": [1.0], "source": "none", "assumed": False},
            "none (raw [0, 1] inputs)",
            "pass --normalize dataset",
        ),
        (
            {"mean": [0.1], "std": [0.3], "source": "custom", "assumed": False},
            "the given mean 0.1, std 0.3",
            "check --normalize",
        ),
    ],
)
def test_near_chance_names_the_normalization_applied(
    normalization: dict[str, object], applied: str, advice: str
) -> None:
    meta = {"source": "plain-state-dict", "normalization": normalization}
    text = accuracy_warning("p", meta, 10, 43, 200)
    assert text is not None and "\n" not in text
    assert "0.2150 (43/200) is near chance (1/10)" in text
    assert f"normalized with {applied}: {advice}" in text
    assert accuracy_warning("p", meta, 10, 188, 200) is None  # 94 %: nothing to say
