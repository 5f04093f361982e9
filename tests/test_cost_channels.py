"""cost.channels: compaction removes dead filters and the inputs they feed, in chains and in
ResNets only where the whole coupled group is dead; compact MACs equal the thin model's flops."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robustbench_sparse.cost import model_cost
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import kept_per_group
from robustbench_sparse.sparsity.methods import export_thin
from tests.cost_helpers import (
    SMALL_CNN_PRUNED,
    apply_masks,
    filter_prune,
    flop_counter_macs,
    small_cnn,
)


@pytest.mark.parametrize("sparsity", [0.5, 0.75])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28)])
def test_compact_macs_of_a_filter_pruned_small_cnn_equal_the_thin_models_flops(
    sparsity: float, shape: tuple[int, int, int]
) -> None:
    model = small_cnn(width=0.5)
    masks = filter_prune(model, sparsity, SMALL_CNN_PRUNED)
    cost = model_cost(model, masks, shape)
    thin = export_thin(model, shape)
    assert cost.total()["macs_compact"] == flop_counter_macs(thin, shape)
    assert (
        cost.total()["macs_compact"] < cost.total()["macs_effective"] < cost.total()["macs_dense"]
    )
    kept = kept_per_group(32, sparsity)
    by_name = {lc.name: lc for lc in cost.layers}
    assert (by_name["net.conv3.0"].kept_filters, by_name["net.conv3.0"].kept_inputs) == (kept, kept)
    assert by_name["net.fc"].kept_inputs == kept_per_group(64, sparsity)


def test_window_pruning_leaves_nothing_to_compact() -> None:
    for granularity in (Granularity.WINDOW, Granularity.COMBINED, Granularity.CHANNEL):
        model = small_cnn(width=0.5)
        apply_masks(model, granularity, 0.5, SMALL_CNN_PRUNED)
        total = model_cost(model, None, (1, 8, 8)).total()
        assert total["macs_compact"] == total["macs_dense"]


def test_channel_pruning_compacts_exactly_the_inputs_no_filter_reads() -> None:
    model = small_cnn(width=0.5)  # n_c = 2 of 16..64 kernels per filter: some inputs go unread
    masks = apply_masks(model, Granularity.CHANNEL, 0.9, SMALL_CNN_PRUNED)
    by_name = {lc.name: lc for lc in model_cost(model, masks, (1, 8, 8)).layers}
    unread_total = 0
    for i in range(2, 5):  # conv(i) filter c is removable iff no filter of conv(i+1) reads c
        read = masks[f"net.conv{i + 1}.0.weight"].flatten(2).any(dim=2).any(dim=0)  # (C,)
        unread = int((~read).sum())
        unread_total += unread
        assert by_name[f"net.conv{i}.0"].kept_filters == read.numel() - unread
        assert by_name[f"net.conv{i + 1}.0"].kept_inputs == read.numel() - unread
    assert unread_total > 0  # the case this test is about does occur with these seeds


def _dead(conv: torch.nn.Conv2d, bn: torch.nn.BatchNorm2d, k: int) -> None:
    with torch.no_grad():
        conv.weight[k] = 0
        bn.weight[k] = 0
        bn.bias[k] = 0


def test_resnet_block_internal_channel_is_removed_like_a_chain() -> None:
    torch.manual_seed(0)
    model: Any = create_model("resnet20", num_classes=10).eval()
    block = model.net.layer1[0]
    _dead(block.conv1, block.bn1, 3)
    cost = model_cost(model, None, (3, 8, 8))
    by_name = {lc.name: lc for lc in cost.layers}
    assert by_name["net.layer1.0.conv1"].kept_filters == 15
    assert by_name["net.layer1.0.conv2"].kept_inputs == 15
    saved = cost.total()["macs_dense"] - cost.total()["macs_compact"]
    assert saved == 2 * 16 * 9 * 8 * 8  # one filter of conv1 and one input channel of conv2


def test_resnet_residual_channel_only_when_its_whole_group_is_dead() -> None:
    torch.manual_seed(0)
    model: Any = create_model("resnet20", num_classes=10).eval()
    net = model.net
    _dead(net.conv1, net.bn1, 5)
    for block in list(net.layer1)[:-1]:  # all but the last block writing the stream
        _dead(block.conv2, block.bn2, 5)
    partial = model_cost(model, None, (3, 8, 8)).total()
    assert partial["macs_compact"] == partial["macs_dense"]  # the last block still writes it
    _dead(net.layer1[-1].conv2, net.layer1[-1].bn2, 5)
    cost = model_cost(model, None, (3, 8, 8))
    by_name = {lc.name: lc for lc in cost.layers}
    assert by_name["net.conv1"].kept_filters == 15
    for i in range(3):
        assert by_name[f"net.layer1.{i}.conv1"].kept_inputs == 15
        assert by_name[f"net.layer1.{i}.conv2"].kept_filters == 15
    assert by_name["net.layer2.0.downsample.0"].kept_inputs == 15
    assert by_name["net.layer2.0.conv1"].kept_inputs == 15


def test_an_unread_filter_is_removed_even_if_it_computes_something() -> None:
    model = small_cnn(width=0.5)
    with torch.no_grad():
        model.net.conv3[0].weight[:, 7] = 0  # no filter of conv3 reads channel 7 of conv2
    by_name = {lc.name: lc for lc in model_cost(model, None, (1, 8, 8)).layers}
    assert by_name["net.conv2.0"].kept_filters == 31
    assert by_name["net.conv3.0"].kept_inputs == 31
    assert by_name["net.conv3.0"].kept_filters == 32


def test_compact_macs_equal_the_thin_exports_flops_on_a_filter_pruned_resnet() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10).eval()
    convs = [n for n, p in model.named_parameters() if p.ndim == 4][1:]  # all but the stem
    masks = filter_prune(model, 0.5, convs)
    shape = (3, 8, 8)
    total = model_cost(model, masks, shape).total()
    assert total["macs_compact"] == flop_counter_macs(export_thin(model, shape), shape)
    assert total["macs_compact"] < 0.6 * total["macs_dense"]
