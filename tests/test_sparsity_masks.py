"""Mask math: rounding rule, exact counts per group, monotonicity, deterministic ties."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robustbench_sparse.sparsity import (
    Granularity,
    achievable_sparsity,
    combined_counts,
    compute_mask,
    cubic_sparsity,
    kept_per_group,
)

STRUCTURED = [Granularity.WINDOW, Granularity.CHANNEL, Granularity.COMBINED]
# nm needs input channels in whole groups of M: its own tests are at the end of this module
ANY_SHAPE = [g for g in Granularity if g is not Granularity.NM]


@pytest.mark.parametrize(
    ("group", "sparsity", "kept"),
    [
        (9, 0.0, 9),
        (9, 0.7, 3),  # 66.7 % beats 77.8 %
        (9, 0.75, 2),  # 2.25 -> 2 (77.8 %)
        (9, 0.9, 1),  # 88.9 %
        (9, 0.95, 1),  # never empties a group
        (9, 0.5, 4),  # 4.5: tie -> sparser (keep 4, 55.6 %)
        (4, 0.5, 2),
        (4, 0.625, 1),  # 1.5: tie -> keep 1
        (2, 0.75, 1),  # 0.5 -> clamped to 1
        (1, 0.9, 1),
        (25, 0.8, 5),
        (64, 0.3, 45),  # 44.8 -> 45
        (10, 0.7, 3),  # float noise (0.3 * 10 = 3.0000000000000004) does not bump to 4
    ],
)
def test_rounding_rule_table(group: int, sparsity: float, kept: int) -> None:
    assert kept_per_group(group, sparsity) == kept


@given(group=st.integers(1, 600), sparsity=st.floats(0.0, 0.999))
def test_rounding_rule_is_nearest_then_sparser(group: int, sparsity: float) -> None:
    k = kept_per_group(group, sparsity)
    assert 1 <= k <= group
    err = abs((1 - k / group) - sparsity)
    for other in range(1, group + 1):
        other_err = abs((1 - other / group) - sparsity)
        assert err <= other_err + 1e-9
        if other < k:  # a sparser choice must be strictly worse
            assert other_err > err - 1e-9


@given(group=st.integers(1, 100), a=st.floats(0.0, 0.99), b=st.floats(0.0, 0.99))
def test_rounding_rule_monotone(group: int, a: float, b: float) -> None:
    lo, hi = sorted((a, b))
    assert kept_per_group(group, hi) <= kept_per_group(group, lo)


def test_combined_counts_documented_example() -> None:
    assert combined_counts(64, 9, 0.9) == (20, 3)
    assert combined_counts(64, 9, 0.0) == (64, 9)
    assert achievable_sparsity((8, 64, 3, 3), 0.9, Granularity.COMBINED) == pytest.approx(
        1 - 60 / 576
    )


def _kernel_counts(mask: torch.Tensor) -> torch.Tensor:
    return mask.reshape(mask.shape[0], mask.shape[1], -1).sum(-1)  # (K, C)


def test_window_exact_nnz_per_kernel() -> None:
    w = torch.randn(6, 5, 3, 3)
    mask = compute_mask(w, 0.7, Granularity.WINDOW)
    assert mask.dtype == torch.bool and mask.shape == w.shape
    assert (_kernel_counts(mask) == 3).all()
    # the kept ones are the largest in each kernel
    flat_w = w.abs().reshape(30, 9)
    flat_m = mask.reshape(30, 9)
    assert (
        flat_w[flat_m].reshape(30, 3).min(1).values >= flat_w.masked_fill(flat_m, -1).max(1).values
    ).all()


def test_channel_exact_kernels_per_filter_by_norm() -> None:
    w = torch.randn(4, 8, 3, 3)
    w[:, 2] *= 100  # kernel 2 has the largest norm in every filter
    mask = compute_mask(w, 0.75, Granularity.CHANNEL)  # keep 2 of 8 kernels
    counts = _kernel_counts(mask)
    assert set(counts.unique().tolist()) <= {0, 9}  # whole kernels
    assert ((counts > 0).sum(1) == 2).all()
    assert (counts[:, 2] == 9).all()


def test_combined_exact_counts() -> None:
    w = torch.randn(5, 8, 3, 3)
    n_c, n_w = combined_counts(8, 9, 0.8)
    mask = compute_mask(w, 0.8, Granularity.COMBINED)
    counts = _kernel_counts(mask)
    assert ((counts > 0).sum(1) == n_c).all()
    assert set(counts.unique().tolist()) <= {0, n_w}
    assert mask.sum().item() == 5 * n_c * n_w


@pytest.mark.parametrize("granularity", STRUCTURED)
@pytest.mark.parametrize("shape", [(6, 10), (6, 5, 1, 1)])
def test_balanced_rows_for_linear_and_1x1(granularity: Granularity, shape: tuple[int, ...]) -> None:
    w = torch.randn(shape)
    mask = compute_mask(w, 0.7, granularity)
    assert (mask.reshape(6, -1).sum(1) == kept_per_group(10 if len(shape) == 2 else 5, 0.7)).all()


def test_unstructured_is_layerwise() -> None:
    w = torch.randn(4, 3, 3, 3)
    mask = compute_mask(w, 0.6, Granularity.UNSTRUCTURED)
    assert mask.sum().item() == kept_per_group(108, 0.6)
    kept = w.abs()[mask]
    assert kept.min() >= w.abs()[~mask].max()


def _expected_count(shape: tuple[int, ...], sparsity: float, granularity: Granularity) -> int:
    numel = torch.Size(shape).numel()
    return round((1 - achievable_sparsity(shape, sparsity, granularity)) * numel)


@settings(max_examples=60, deadline=None)
@given(
    k=st.integers(1, 8),
    c=st.integers(1, 8),
    ks=st.sampled_from([1, 3, 5]),
    linear=st.booleans(),
    sparsity=st.floats(0.0, 0.98),
    granularity=st.sampled_from(ANY_SHAPE),
    seed=st.integers(0, 2**16),
)
def test_exact_counts_any_shape(
    k: int,
    c: int,
    ks: int,
    linear: bool,
    sparsity: float,
    granularity: Granularity,
    seed: int,
) -> None:
    shape = (k, c * ks * ks) if linear else (k, c, ks, ks)
    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    mask = compute_mask(w, sparsity, granularity)
    assert mask.sum().item() == _expected_count(shape, sparsity, granularity)
    if granularity is Granularity.UNSTRUCTURED:
        return
    if linear or ks == 1:
        rows = mask.reshape(k, -1).sum(1)
        assert (rows == rows[0]).all()
        return
    counts = _kernel_counts(mask)
    per_filter = (counts > 0).sum(1)
    if granularity is Granularity.WINDOW:
        assert (counts == kept_per_group(ks * ks, sparsity)).all()
    elif granularity is Granularity.CHANNEL:
        assert (per_filter == kept_per_group(c, sparsity)).all()
        assert set(counts.unique().tolist()) <= {0, ks * ks}
    else:
        n_c, n_w = combined_counts(c, ks * ks, sparsity)
        assert (per_filter == n_c).all()
        assert set(counts.unique().tolist()) <= {0, n_w}


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 8),
    c=st.integers(1, 8),
    ks=st.sampled_from([1, 3, 5]),
    final=st.floats(0.05, 0.97),
    granularity=st.sampled_from(ANY_SHAPE),
    seed=st.integers(0, 2**16),
)
def test_masks_monotone_along_schedule(
    k: int, c: int, ks: int, final: float, granularity: Granularity, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(k, c, ks, ks, generator=gen)
    mask = torch.ones_like(w, dtype=torch.bool)
    for t in range(0, 11):
        s = cubic_sparsity(t, initial=0.0, final=final, start_step=0, end_step=10)
        # weights move between updates, as in training
        w = (w + 0.3 * torch.randn(w.shape, generator=gen)) * mask
        new = compute_mask(w, s, granularity, previous=mask)
        assert not (new & ~mask).any(), "a pruned weight was revived"
        mask = new
    # structured groups stay balanced after the whole ramp
    if granularity is Granularity.WINDOW and ks > 1:
        counts = _kernel_counts(mask)
        assert (counts == counts[0, 0]).all()
    if granularity is Granularity.CHANNEL and ks > 1:
        per_filter = (_kernel_counts(mask) > 0).sum(1)
        assert (per_filter == per_filter[0]).all()
    if granularity is Granularity.UNSTRUCTURED:
        assert mask.sum().item() <= kept_per_group(w.numel(), final)


def test_previous_with_fewer_kept_is_not_revived() -> None:
    w = torch.randn(2, 2, 3, 3)
    previous = torch.zeros_like(w, dtype=torch.bool)
    previous[0, 0, 0, 0] = True  # one kernel keeps 1, all others nothing
    mask = compute_mask(w, 0.5, Granularity.WINDOW, previous=previous)
    assert torch.equal(mask, previous)


@pytest.mark.parametrize("granularity", ANY_SHAPE)
@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (4, 6), (4, 3, 1, 1)])
def test_constant_tensor_ties_are_deterministic(
    granularity: Granularity, shape: tuple[int, ...]
) -> None:
    w = torch.full(shape, 0.5)
    first = compute_mask(w, 0.6, granularity)
    second = compute_mask(w.clone(), 0.6, granularity)
    assert torch.equal(first, second)
    assert first.sum().item() == _expected_count(shape, 0.6, granularity)
    if granularity is Granularity.WINDOW and len(shape) == 4 and shape[2] > 1:
        # ties keep the lowest indices of each kernel
        assert first.reshape(-1, 9)[:, :4].all() and not first.reshape(-1, 9)[:, 4:].any()


def test_zero_sparsity_keeps_everything_alive() -> None:
    w = torch.randn(3, 2, 3, 3)
    previous = torch.rand(w.shape) > 0.3
    for g in ANY_SHAPE:
        assert compute_mask(w, 0.0, g).all()
        assert torch.equal(compute_mask(w, 0.0, g, previous=previous), previous)


def test_invalid_inputs() -> None:
    with pytest.raises(ValueError):
        compute_mask(torch.randn(3, 3, 3), 0.5, Granularity.WINDOW)
    with pytest.raises(ValueError):
        compute_mask(torch.randn(3, 3), 1.0, Granularity.WINDOW)
    with pytest.raises(ValueError):
        compute_mask(torch.randn(3, 3), 0.5, Granularity.WINDOW, previous=torch.ones(3, 3))
    with pytest.raises(ValueError):
        kept_per_group(0, 0.5)


# ---------------------------------------------------------------- nm (N:M along input channels)
def _nm_groups(mask: torch.Tensor, m: int) -> torch.Tensor:
    """(groups,) nonzeros per M-group along C at every kernel position (NVIDIA's layout)."""
    m4 = mask if mask.ndim == 4 else mask[:, :, None, None]
    return m4.permute(0, 2, 3, 1).reshape(-1, m).sum(dim=1)


@pytest.mark.parametrize("shape", [(8, 16, 3, 3), (12, 8, 1, 1), (6, 16)])
@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (4, 8)])
def test_nm_mask_keeps_exactly_n_of_every_m_input_channels(
    shape: tuple[int, ...], nm: tuple[int, int]
) -> None:
    from robustbench_sparse.sparsity.masks import nm_violations

    torch.manual_seed(0)
    w = torch.randn(shape)
    target = 1 - nm[0] / nm[1]
    mask = compute_mask(w, target, Granularity.NM, nm=nm)
    assert set(_nm_groups(mask, nm[1]).tolist()) == {nm[0]}  # exactly N kept in every group
    assert nm_violations(mask, nm) == 0
    # the kept ones are the largest |w| of their group
    g = (
        w.abs().permute(0, 2, 3, 1)
        if w.ndim == 4
        else w.abs()[:, :, None, None].permute(0, 2, 3, 1)
    )
    gm = (mask if mask.ndim == 4 else mask[:, :, None, None]).permute(0, 2, 3, 1)
    g, gm = g.reshape(-1, nm[1]), gm.reshape(-1, nm[1])
    kept_min = g.masked_fill(~gm, float("inf")).min(dim=1).values
    pruned_max = g.masked_fill(gm, float("-inf")).max(dim=1).values
    assert bool((kept_min >= pruned_max).all())
    assert achievable_sparsity(shape, target, Granularity.NM, nm) == pytest.approx(target)


def test_nm_violation_check_catches_a_bad_mask_and_window_masks_fail_it() -> None:
    from robustbench_sparse.sparsity.masks import nm_violations

    mask = torch.zeros(2, 8, 3, 3, dtype=torch.bool)
    mask[:, 0:2] = True
    assert nm_violations(mask, (2, 4)) == 0
    mask[1, 2, 1, 1] = True  # a third weight in one group at one kernel position
    assert nm_violations(mask, (2, 4)) == 1
    torch.manual_seed(1)
    window = compute_mask(torch.randn(8, 16, 3, 3), 0.7, Granularity.WINDOW)
    assert nm_violations(window, (2, 4)) > 0  # Campfire's window pattern is not 2:4 along C


def test_nm_ramp_is_monotone_and_removes_filters_beyond_n_of_m() -> None:
    from robustbench_sparse.sparsity.masks import nm_counts, nm_violations

    assert nm_counts(64, 0.3, (2, 4)) == (3, 64)  # the ramp passes 3:4
    assert nm_counts(64, 0.5, (2, 4)) == (2, 64)
    assert nm_counts(64, 0.75, (2, 4)) == (2, 32)  # half the filters go at 75 %
    torch.manual_seed(0)
    w = torch.randn(16, 8, 3, 3)
    prev = None
    for s in (0.25, 0.5, 0.6, 0.75, 0.875):
        mask = compute_mask(w, s, Granularity.NM, previous=prev)
        if prev is not None:
            assert not bool((mask & ~prev).any())  # nothing revived
        assert nm_violations(mask, (2, 4)) == (0 if s >= 0.5 else mask.numel() // 4)
        assert 1 - mask.float().mean().item() == pytest.approx(
            achievable_sparsity(w.shape, s, Granularity.NM)
        )
        prev = mask
    alive = prev.reshape(16, -1).any(dim=1)  # type: ignore[union-attr]
    assert int(alive.sum()) == nm_counts(16, 0.875, (2, 4))[1] == 4
    # a kept filter still holds exactly 2 of every 4 (the hardware pattern), a dead one nothing
    assert set(_nm_groups(prev[alive], 4).tolist()) == {2}  # type: ignore[index]


def test_nm_mask_refuses_channels_not_divisible_by_m_and_keeps_all_at_zero() -> None:
    with pytest.raises(ValueError, match="divisible by 4"):
        compute_mask(torch.randn(8, 3, 3, 3), 0.5, Granularity.NM)
    w = torch.randn(4, 8, 3, 3)
    previous = torch.rand(w.shape) > 0.3
    assert compute_mask(w, 0.0, Granularity.NM).all()
    assert torch.equal(compute_mask(w, 0.0, Granularity.NM, previous=previous), previous)
    ties = compute_mask(torch.full((2, 8, 1, 1), 0.5), 0.5, Granularity.NM)
    assert ties.reshape(2, 2, 4)[:, :, :2].all() and not ties.reshape(2, 2, 4)[:, :, 2:].any()
