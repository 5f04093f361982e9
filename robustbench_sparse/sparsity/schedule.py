"""The Zhu & Gupta cubic sparsity schedule, as pure functions (no model, no state)."""

from __future__ import annotations

import math


def cubic_sparsity(
    step: int, *, initial: float, final: float, start_step: int, end_step: int
) -> float:
    """Target sparsity at optimizer step ``step`` (Zhu & Gupta 2017, arXiv 1710.01878).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (t1 - t0)) ** 3`` for ``t0 <= t < t1``;
    ``initial`` before ``start_step`` and ``final`` at and after ``end_step``. When
    ``start_step == end_step`` the schedule is a one-shot prune: ``initial`` before, ``final``
    from that step on. Non-decreasing in ``step`` whenever ``final >= initial``.
    """
    if end_step < start_step:
        raise ValueError(f"end_step ({end_step}) must be >= start_step ({start_step})")
    if step >= end_step:
        return float(final)
    if step < start_step:
        return float(initial)
    progress = (step - start_step) / (end_step - start_step)  # in [0, 1)
    return float(final + (initial - final) * (1.0 - progress) ** 3)


def epochs_to_steps(epoch: float, steps_per_epoch: int) -> int:
    """Convert a (fractional) epoch to an optimizer-step index, rounding half up."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if not math.isfinite(epoch) or epoch < 0:
        raise ValueError(f"epoch must be a finite number >= 0, got {epoch}")
    return math.floor(epoch * steps_per_epoch + 0.5)
