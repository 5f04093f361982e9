"""cost.metadata: rank-code bits equal the packed export's, bit for bit; the other formats by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sparse.cost import FORMATS, metadata_bits
from robustbench_sparse.packed_format import pack_tensors
from robustbench_sparse.sparsity.granularity import Granularity
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, random_masks, small_cnn


@pytest.mark.parametrize(
    "granularity",
    [Granularity.WINDOW, Granularity.CHANNEL, Granularity.COMBINED, Granularity.UNSTRUCTURED],
)
def test_rank_bits_and_bound_equal_the_packed_exports(granularity: Granularity) -> None:
    model = small_cnn(width=0.5)
    masks = apply_masks(model, granularity, 0.75, SMALL_CNN_PRUNED)
    tensors = dict(model.state_dict()) | {f"__mask__.{k}": v for k, v in masks.items()}
    _, stats = pack_tensors(tensors)
    assert {s.name for s in stats} == set(masks)
    for s in stats:
        bits = metadata_bits(masks[s.name].numpy())
        assert bits["rank"] == s.code_bits
        assert bits["bound"] == s.bound_code_bits


def test_random_masks_fall_back_to_the_bitmap_like_the_export() -> None:
    model = small_cnn(width=0.5)
    masks = random_masks(model, 0.3, SMALL_CNN_PRUNED)
    tensors = dict(model.state_dict()) | {f"__mask__.{k}": v for k, v in masks.items()}
    _, stats = pack_tensors(tensors)
    for s in stats:
        assert s.encoding == "bitmask"
        assert metadata_bits(masks[s.name].numpy())["rank"] == s.code_bits == s.numel


def test_formats_by_hand() -> None:
    mask = np.zeros((4, 8, 3, 3), dtype=bool)
    mask[:, 0:2, 1, 1] = True  # every kernel position: channels 0,1 of each 4 -> 2:4 along C
    mask[:, 4:6, 1, 1] = True  # 16 nonzeros in all
    bits = metadata_bits(mask)
    assert set(bits) == set(FORMATS)
    assert bits["bitmap"] == 4 * 8 * 9
    assert bits["csr"] == 16 * 7 + 32 * 5  # ceil(log2 72) = 7 index bits, K + 1 row pointers
    assert bits["2to4"] == mask.size  # 2 bits for each of numel/2 stored values
    assert metadata_bits(torch.ones(4, 8, 3, 3, dtype=torch.bool).numpy())["2to4"] is None
    dense = metadata_bits(np.ones((4, 8), dtype=bool))
    assert dense["rank"] == 0 and dense["bound"] == 0
