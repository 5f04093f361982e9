"""thinned_sparsity_report: a thinned model's sparsity against its dense widths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.sparsity.detect import measured_sparsity_report
from robustbench_sparse.sparsity.selection import weight_layers
from robustbench_sparse.sparsity.thinned import thinned_sparsity_report


def _net(width: int, mid: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, width, 3), nn.ReLU(), nn.Conv2d(width, mid, 3), nn.ReLU(),
        nn.Flatten(), nn.Linear(mid * 4 * 4, 10),
    )  # fmt: skip


def _numels(model: nn.Module) -> dict[str, int]:
    return {f"{n}.weight": int(m.weight.numel()) for n, m in weight_layers(model)}


def test_removed_weights_count_against_the_dense_layer() -> None:
    torch.manual_seed(0)
    dense, thin = _net(8, 16), _net(8, 4)  # the middle conv keeps 4 of 16 filters
    report = thinned_sparsity_report(
        measured_sparsity_report(thin), _numels(dense), target=0.75, granularity="fs", method="fs"
    )
    by_name = {layer.name: layer for layer in report.layers}
    first, middle, classifier = by_name["0.weight"], by_name["2.weight"], by_name["5.weight"]
    assert not first.pruned and first.numel == 8 * 9 and first.achieved == 0.0
    assert middle.pruned and middle.numel == 16 * 8 * 9 and middle.nnz == 4 * 8 * 9
    assert middle.achieved == pytest.approx(0.75)
    assert classifier.pruned and classifier.numel == 10 * 256 and classifier.nnz == 10 * 64
    # denominators: the dense weights of the thinned layers; of every layer
    assert report.numel_pruned == 16 * 8 * 9 + 10 * 256
    assert report.nnz_pruned == 4 * 8 * 9 + 10 * 64
    assert report.achieved_pruned == pytest.approx(1 - report.nnz_pruned / report.numel_pruned)
    assert report.numel_all == sum(_numels(dense).values())
    assert report.nnz_all == sum(_numels(thin).values())
    # counted on the thin model's own weights, the same model looks dense
    assert measured_sparsity_report(thin).achieved_pruned == 0.0
    assert report.target == 0.75 and report.method == "fs" and report.granularity == "fs"


def test_zeros_inside_a_thinned_layer_count_too() -> None:
    torch.manual_seed(0)
    dense, thin = _net(8, 16), _net(8, 4)
    with torch.no_grad():
        conv = thin[2]
        assert isinstance(conv, nn.Conv2d)
        conv.weight[:, :, 0, :] = 0  # a third of every kept kernel
    report = thinned_sparsity_report(
        measured_sparsity_report(thin), _numels(dense), target=0.75, granularity="fs", method="fs"
    )
    middle = {layer.name: layer for layer in report.layers}["2.weight"]
    assert middle.nnz == 4 * 8 * 6
    assert middle.achieved == pytest.approx(1 - (4 * 8 * 6) / (16 * 8 * 9))


def test_a_layer_the_dense_architecture_lacks_or_a_larger_one_is_refused() -> None:
    thin = measured_sparsity_report(_net(8, 4))
    with pytest.raises(ValueError, match="not in the dense architecture"):
        thinned_sparsity_report(thin, {"0.weight": 72}, target=0.5, granularity="g", method="m")
    smaller = _numels(_net(8, 2))
    with pytest.raises(ValueError, match="dense"):
        thinned_sparsity_report(thin, smaller, target=0.5, granularity="g", method="m")
