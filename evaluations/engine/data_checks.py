"""Does the evaluation data fit the checkpoint? Input shape (an error) and clean accuracy (a warning).

A checkpoint evaluated on data it was not trained on (another dataset given with ``--dataset``,
another folder under ``--data-root``, the wrong ``--normalize`` for a plain state dict) gives a
near-chance clean accuracy and meaningless robust accuracies. The input shape is checked before any
work; the clean accuracy is compared with the one recorded at training (or with chance, when none is
recorded) once it is measured, and a shortfall is a warning recorded with the results and shown in
the report: the numbers stay, but never silently.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from robustbench_sparse.errors import UserError
from robustbench_sparse.state_dicts import describe_normalization

__all__ = ["MIN_DROP", "NEAR_CHANCE", "Z", "accuracy_warning", "check_input_shape"]

MIN_DROP = 0.05
"""A clean accuracy this far (5 points) or more below the recorded one can be a warning."""

Z = 3.0
"""...and only when it is also more than ``Z`` binomial standard errors below (subset noise)."""

NEAR_CHANCE = 0.25
"""Without a recorded accuracy, a clean accuracy less than this fraction of the way from chance to
100 % is near chance (32.5 % for 10 classes, 62.5 % for 2): no trained classifier worth attacking
scores that low, a wrong ``--normalize`` does (21.5 % and 17 % for two digits models at 94 %)."""


def check_input_shape(name: str, meta: dict[str, Any], dataset: str, x: torch.Tensor) -> None:
    """Refuse data whose example shape differs from the checkpoint's recorded input shape.

    Args:
        name: checkpoint name (for the message).
        meta: checkpoint metadata; ``input_shape`` ``[C, H, W]`` is compared when recorded (plain
            state dicts record none of their own and are not checked).
        dataset: the dataset name the data comes from.
        x: the evaluation inputs ``(N, C, H, W)``.

    Raises:
        UserError: naming both shapes.
    """
    recorded = meta.get("input_shape")
    if meta.get("source") == "plain-state-dict" or not recorded or x.dim() != 4:
        return
    want = tuple(int(v) for v in recorded)
    got = tuple(int(v) for v in x.shape[1:])
    if got != want:
        shape = "x".join(str(v) for v in want)
        raise UserError(
            f"checkpoint {name!r} was trained on {shape} inputs ({meta.get('dataset')}) but "
            f"dataset {dataset!r} gives {'x'.join(str(v) for v in got)}; pass the data it was "
            "trained on (--dataset, --data-root, --image-size)"
        )


def accuracy_warning(
    name: str, meta: dict[str, Any], num_classes: int, correct: int, n: int
) -> str | None:
    """A warning when the measured clean accuracy is far below what the checkpoint should reach.

    Compared with the recorded ``clean_accuracy`` when there is one: a warning when the measured
    accuracy ``correct / n`` is at least :data:`MIN_DROP` *and* :data:`Z` standard errors
    ``sqrt(p (1 - p) / n)`` (``p`` the recorded accuracy) below it. Without a record (a plain
    state dict) the reference is chance, ``c = 1 / num_classes``: a warning when the measured
    accuracy is below ``c + NEAR_CHANCE (1 - c)`` or not more than ``Z`` standard errors above
    ``c``; it names the normalization the inputs were given (``meta["normalization"]``: assumed
    when ``--normalize`` was not passed) and how to change it.

    Returns:
        The warning text, or ``None`` when the accuracy is plausible (or ``n`` is 0).
    """
    if n <= 0:
        return None
    measured = correct / n
    recorded = meta.get("clean_accuracy")
    if recorded is not None:
        p = min(max(float(recorded), 0.0), 1.0)
        margin = max(MIN_DROP, Z * math.sqrt(p * (1.0 - p) / n))
        if measured < p - margin:
            return (
                f"checkpoint {name!r}: clean accuracy {measured:.4f} ({correct}/{n}) is far below "
                f"the {p:.4f} recorded at training; the evaluation data (dataset, data root, "
                "normalization, image size) is probably not what it was trained on, so its "
                "robust accuracies mean little"
            )
        return None
    chance = 1.0 / max(num_classes, 1)
    noise = Z * math.sqrt(chance * (1.0 - chance) / n)
    if measured < chance + NEAR_CHANCE * (1.0 - chance) or measured <= chance + noise:
        norm = meta.get("normalization")
        if isinstance(norm, dict):
            applied, how = describe_normalization(norm)
            hint = (
                f"its inputs were normalized with {applied}: {how}, or check --arch and --dataset"
            )
        else:
            hint = "check --arch, --dataset and --normalize"
        return (
            f"checkpoint {name!r}: clean accuracy {measured:.4f} ({correct}/{n}) is near chance "
            f"(1/{num_classes}); {hint}"
        )
    return None
