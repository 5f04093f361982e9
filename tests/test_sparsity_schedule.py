"""The cubic schedule as a pure function (no model)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustbench_sparse.sparsity import cubic_sparsity, epochs_to_steps


def _s(step: int, initial: float = 0.1, final: float = 0.9, t0: int = 10, t1: int = 110) -> float:
    return cubic_sparsity(step, initial=initial, final=final, start_step=t0, end_step=t1)


def test_endpoints() -> None:
    assert _s(0) == 0.1
    assert _s(9) == 0.1
    assert _s(10) == pytest.approx(0.1)
    assert _s(110) == 0.9
    assert _s(10_000) == 0.9


def test_cubic_value_at_midpoint() -> None:
    # s_f + (s_i - s_f) * (1 - 1/2)^3 = 0.9 - 0.8 / 8
    assert _s(60) == pytest.approx(0.9 - 0.8 / 8)
    assert _s(35) == pytest.approx(0.9 - 0.8 * 0.75**3)


def test_one_shot_when_start_equals_end() -> None:
    assert cubic_sparsity(4, initial=0.0, final=0.8, start_step=5, end_step=5) == 0.0
    assert cubic_sparsity(5, initial=0.0, final=0.8, start_step=5, end_step=5) == 0.8
    assert cubic_sparsity(6, initial=0.0, final=0.8, start_step=5, end_step=5) == 0.8


def test_end_before_start_rejected() -> None:
    with pytest.raises(ValueError):
        cubic_sparsity(0, initial=0.0, final=0.5, start_step=5, end_step=4)


@given(
    initial=st.floats(0.0, 0.5),
    extra=st.floats(0.0, 0.49),
    t0=st.integers(0, 50),
    length=st.integers(0, 200),
)
def test_monotone_non_decreasing_and_bounded(
    initial: float, extra: float, t0: int, length: int
) -> None:
    final = initial + extra
    values = [
        cubic_sparsity(t, initial=initial, final=final, start_step=t0, end_step=t0 + length)
        for t in range(t0 + length + 3)
    ]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert all(initial - 1e-12 <= v <= final + 1e-12 for v in values)
    assert values[-1] == final


def test_epochs_to_steps_rounds_half_up() -> None:
    assert epochs_to_steps(0, 100) == 0
    assert epochs_to_steps(1.5, 100) == 150
    assert epochs_to_steps(0.5, 3) == 2  # 1.5 -> 2
    assert epochs_to_steps(0.25, 2) == 1  # 0.5 -> 1
    assert epochs_to_steps(0.2, 3) == 1  # 0.6 -> 1
    with pytest.raises(ValueError):
        epochs_to_steps(1.0, 0)
    with pytest.raises(ValueError):
        epochs_to_steps(-1.0, 10)
