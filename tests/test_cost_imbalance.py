"""cost.imbalance: Campfire's balanced masks score 1.00 in their own mapping, unstructured more."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from robustbench_sparse.cost import MAPPINGS, imbalance, lane_work
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import compute_mask


def _weight(shape: tuple[int, ...] = (32, 16, 3, 3)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    ("granularity", "mappings"),
    [
        (Granularity.WINDOW, ["kernel-per-lane", "filter-per-pe"]),
        (Granularity.CHANNEL, ["filter-per-pe", "kernel-per-lane"]),
        (Granularity.COMBINED, ["filter-per-pe", "kernel-per-lane"]),
    ],
)
@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_campfire_masks_score_one_in_their_mapping(
    granularity: Granularity, mappings: list[str], sparsity: float
) -> None:
    mask = compute_mask(_weight(), sparsity, granularity).numpy()
    for mapping in mappings:
        assert imbalance(mask, mapping) == pytest.approx(1.0, abs=1e-12)


def test_balanced_rows_of_1x1_and_linear_score_one_per_filter() -> None:
    for shape in [(32, 16, 1, 1), (10, 64)]:
        mask = compute_mask(_weight(shape), 0.7, Granularity.WINDOW).numpy()
        assert imbalance(mask, "filter-per-pe") == pytest.approx(1.0, abs=1e-12)


def test_a_two_of_four_mask_scores_one_per_nm_group() -> None:
    w = _weight().numpy()
    groups = np.abs(w).transpose(0, 2, 3, 1).reshape(32, 3, 3, 4, 4)  # (K, r, s, C/4, 4)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[..., :2], True, axis=-1)
    mask = keep.reshape(32, 3, 3, 16).transpose(0, 3, 1, 2)  # (K, C, r, s)
    assert imbalance(mask, "nm-group-per-lane") == pytest.approx(1.0, abs=1e-12)
    assert imbalance(mask, "kernel-per-lane") > 1.0  # 2:4 along C is not balanced per kernel


@pytest.mark.parametrize("density", [1 / 3, 1 / 9])
def test_random_unstructured_masks_score_more_than_one(density: float) -> None:
    mask = np.random.default_rng(0).random((32, 16, 3, 3)) < density
    for mapping in MAPPINGS:
        assert imbalance(mask, mapping) > 1.05


def test_lane_work_and_edge_cases() -> None:
    mask = np.zeros((2, 3, 1, 2), dtype=bool)
    mask[0, 0] = True  # filter 0: kernel 0 full (2); filter 1 empty
    assert lane_work(mask, "filter-per-pe").tolist() == [2, 0]
    assert lane_work(mask, "kernel-per-lane").tolist() == [2]  # empty kernels are not dispatched
    assert imbalance(mask, "filter-per-pe") == 2.0
    assert math.isnan(imbalance(np.zeros((2, 2), dtype=bool), "filter-per-pe"))
    with pytest.raises(KeyError, match="unknown mapping"):
        lane_work(mask, "row-per-pe")
