"""The sampled black-box probe's budget, allocation, class-balanced draw and power (pure)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom

from evaluations.engine.masking_budget import (
    FLOOR_ROWS,
    FORWARDS_PER_GRAD,
    MAX_QUERIES,
    MIN_QUERIES,
    SHARE,
    allocate,
    cheap_forwards,
    class_balanced_sample,
    detection_power,
    detection_threshold,
    probe_budget,
)


def test_budget_is_a_share_of_the_grid_work_minus_the_cheap_probes() -> None:
    assert probe_budget(100_000, 0, 1) == int(SHARE * FORWARDS_PER_GRAD * 100_000)
    assert probe_budget(100_000, 7_000, 1) == int(SHARE * FORWARDS_PER_GRAD * 100_000) - 7_000
    # a tiny grid still gets the floor, per norm that needs the probe
    assert probe_budget(10, 0, 2) == 2 * FLOOR_ROWS * MIN_QUERIES
    with pytest.raises(ValueError):
        probe_budget(-1, 0, 1)


def test_cheap_forwards_counts_every_cheap_probe() -> None:
    # 200 examples, the unbounded attack spent 300 gradients
    assert cheap_forwards(200, 300) == int(FORWARDS_PER_GRAD * 500) + 800 + 32


@pytest.mark.parametrize("budget", [0, 5_000, 60_000, 10**7])
def test_allocation_stays_within_budget_and_survivors(budget: int) -> None:
    survivors = [0, 400, 200, 21, 1, 0]
    q, sizes = allocate(survivors, budget)
    assert MIN_QUERIES <= q <= MAX_QUERIES
    assert all(0 <= s <= n for s, n in zip(sizes, survivors, strict=True))
    assert all(s >= 1 for s, n in zip(sizes, survivors, strict=True) if n)  # every live eps
    live = sum(1 for n in survivors if n)
    assert sum(sizes) * (q + 1) <= max(budget, live * (q + 1))


def test_allocation_water_fills_small_epsilons_first() -> None:
    q, sizes = allocate([400, 200, 5], 101 * 60)
    assert q == MIN_QUERIES
    assert sizes[2] == 5  # the small one takes all its survivors
    assert sizes[0] + sizes[1] == 55 and abs(sizes[0] - sizes[1]) <= 1
    # a large budget raises the queries before it samples beyond the target
    q_big, _ = allocate([400, 200, 5], 10**7)
    assert q_big == MAX_QUERIES


def test_sample_is_class_balanced_seeded_and_a_subset() -> None:
    rng_labels = np.random.default_rng(1)
    indices = np.arange(100, 400)  # 300 survivors
    labels = np.where(rng_labels.random(300) < 0.8, 0, rng_labels.integers(1, 5, 300))
    a = class_balanced_sample(indices, labels, 40, np.random.default_rng(7))
    b = class_balanced_sample(indices, labels, 40, np.random.default_rng(7))
    c = class_balanced_sample(indices, labels, 40, np.random.default_rng(8))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.size == 40 and np.unique(a).size == 40 and set(a) <= set(indices)
    chosen = labels[np.searchsorted(indices, a)]
    counts = np.bincount(chosen, minlength=5)
    rare = np.bincount(labels, minlength=5)
    # every class gets min(its survivors, an equal share); class 0 does not dominate
    share = [min(int(r), 8) for r in rare]
    assert all(counts[k] >= share[k] for k in range(1, 5)), (counts, rare)
    assert counts[0] < 0.8 * 40
    # asking for more than there are returns all of them
    assert np.array_equal(
        class_balanced_sample(indices, labels, 999, np.random.default_rng(0)), indices
    )


def test_threshold_applies_the_full_probes_rule_to_the_estimate() -> None:
    # 450 examples, tolerance 1 %: more than 4.5 breakable survivors flag
    assert detection_threshold(450, 450, 450, 0.01) == 5  # the whole population: the plain rule
    assert detection_threshold(450, 182, 30, 0.01) == 1  # 1 of 30 -> ~6 of 182 > 4.5
    assert detection_threshold(450, 90, 30, 0.01) == 2  # 1 of 30 -> 3 of 90 is within tolerance
    for b in range(1, 10):  # the threshold is exactly where the estimate crosses the tolerance
        t = detection_threshold(450, 90, 30, 0.01)
        assert (b * 90 / 30 > 4.5) == (b >= t)


@pytest.mark.parametrize(("sample", "threshold"), [(30, 1), (30, 2), (19, 1), (100, 7), (5, 0)])
def test_power_is_the_binomial_tail(sample: int, threshold: int) -> None:
    expected = 1.0 if threshold <= 0 else float(binom.sf(threshold - 1, sample, 0.10))
    assert detection_power(sample, threshold, 0.10) == pytest.approx(expected, abs=1e-12)
    assert detection_power(30, 1, 0.10) == pytest.approx(1 - 0.9**30)
    assert math.isclose(detection_power(30, 31, 0.1), 0.0, abs_tol=1e-15)
    with pytest.raises(ValueError):
        detection_power(10, 1, 1.5)
