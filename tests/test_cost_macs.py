"""cost.macs: dense MACs equal the flop counter's on every registry model; window masks give
exactly n_w / (kh*kw) of the dense MACs; the 2:4 rule follows NVIDIA's layout along C."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sparse.cost import model_cost, nm_compliant
from robustbench_sparse.cost.macs import layer_macs
from robustbench_sparse.models import create_model, list_models
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import kept_per_group
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, flop_counter_macs, small_cnn

#: small inputs keep the test fast; the big models are marked slow
_SHAPES = {
    "resnet18": (3, 32, 32),
    "resnet50": (3, 32, 32),
    "small_cnn": (1, 28, 28),
    "vgg16_bn_cifar": (3, 32, 32),  # five 2x2 max-pools
}
_SLOW = {"resnet50", "wrn28_10", "wrn34_10", "vgg16_bn_cifar"}


@pytest.mark.parametrize(
    "arch",
    [pytest.param(a, marks=pytest.mark.slow) if a in _SLOW else a for a in list_models()]
    + ["tv:mobilenet_v3_small"],
)
def test_dense_macs_equal_the_flop_counter_on_every_registry_model(arch: str) -> None:
    shape = _SHAPES.get(arch, (3, 16, 16))
    torch.manual_seed(0)
    model = create_model(arch, num_classes=10, in_channels=shape[0]).eval()
    cost = model_cost(model, None, shape)
    assert cost.total()["macs_dense"] == flop_counter_macs(model, shape)
    assert cost.total()["macs_compact"] == cost.total()["macs_dense"]  # nothing is dead


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.7, 0.9])
def test_window_masks_give_exactly_n_w_over_window_of_dense_macs(sparsity: float) -> None:
    model = small_cnn(width=0.5)
    apply_masks(model, Granularity.WINDOW, sparsity, SMALL_CNN_PRUNED)
    cost = model_cost(model, None, (1, 8, 8))
    n_w = kept_per_group(9, sparsity)
    by_name = {lc.name: lc for lc in cost.layers}
    for name in ("net.conv2.0", "net.conv3.0", "net.conv4.0"):  # 3x3 convs
        macs = by_name[name].macs
        assert macs.effective * 9 == macs.dense * n_w
        assert macs.compact == macs.dense  # no filter or channel dies under window pruning
    assert by_name["net.conv1.0"].macs.effective == by_name["net.conv1.0"].macs.dense


def test_layer_macs_counts_by_hand() -> None:
    nonzero = np.zeros((4, 8, 3, 3), dtype=bool)
    nonzero[:, :, 1, 1] = True  # 32 nonzeros
    macs = layer_macs((4, 8, 3, 3), (5, 6), nonzero, kept_filters=3, kept_inputs=2)
    assert macs.dense == 4 * 8 * 9 * 30
    assert macs.effective == 32 * 30
    assert macs.compact == 3 * 2 * 9 * 30
    assert macs.nm == macs.dense  # 4 nonzeros in each group of 4 channels: not 2:4


def test_nm_compliant_groups_along_input_channels() -> None:
    mask = np.zeros((2, 8, 3, 3), dtype=bool)
    mask[:, 0::4] = True
    mask[:, 1::4] = True  # channels 0,1 and 4,5 of every (k, r, s): 2 of each 4
    assert nm_compliant(mask)
    assert nm_compliant(mask[:, :, :1, :1].reshape(2, 8))  # Linear layout
    assert nm_compliant(mask & ~np.eye(8, dtype=bool)[None, :, :1, None])  # fewer is fine (1:4)
    bad = mask.copy()
    bad[0, 2, 1, 1] = True  # 3 of 4 in one group
    assert not nm_compliant(bad)
    along_window = np.zeros((2, 8, 2, 2), dtype=bool)
    along_window[..., 0, :] = True  # 2 of 4 per kernel, but 4 of 4 along C
    assert not nm_compliant(along_window)
    assert not nm_compliant(np.zeros((2, 6, 3, 3), dtype=bool))  # C % 4 != 0
    macs = layer_macs((2, 8, 3, 3), (4, 4), mask, 2, 8)
    assert macs.nm * 2 == macs.dense


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
def test_nm_granularity_masks_run_at_half_the_macs_under_2to4(sparsity: float) -> None:
    from robustbench_sparse.cost import imbalance
    from robustbench_sparse.sparsity.masks import compute_mask, nm_violations

    model = small_cnn(width=0.5)
    params = dict(model.named_parameters())
    masks = {}
    with torch.no_grad():
        for name in SMALL_CNN_PRUNED:
            mask = compute_mask(params[name], sparsity, Granularity.NM, nm=(2, 4))
            assert nm_violations(mask, (2, 4)) == 0
            params[name].mul_(mask)
            masks[name] = mask
    cost = model_cost(model, masks, (1, 8, 8))
    for lc in cost.layers:
        if f"{lc.name}.weight" in masks:
            assert lc.nm_compliant and lc.macs.nm * 2 == lc.macs.dense
            assert lc.metadata_bits["2to4"] == masks[f"{lc.name}.weight"].numel()
            if sparsity == 0.5:
                assert imbalance(masks[f"{lc.name}.weight"].numpy(), "nm-group-per-lane") == 1.0
        else:  # the first conv (1 input channel) and the classifier stay dense
            assert not lc.nm_compliant and lc.macs.nm == lc.macs.dense
