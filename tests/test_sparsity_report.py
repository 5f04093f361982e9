"""Sparsity report: achieved vs target, denominators, per-group min/max, JSON round trip."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    Granularity,
    LayerSparsity,
    SparsityConfig,
    SparsityReport,
    sparsity_report,
)


def _model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential()
    net.add_module("conv1", nn.Conv2d(3, 4, 3))  # 108
    net.add_module("conv2", nn.Conv2d(4, 8, 3))  # 288
    net.add_module("conv3", nn.Conv2d(8, 10, 1))  # 80
    net.add_module("pool", nn.AdaptiveAvgPool2d(1))
    net.add_module("flat", nn.Flatten())
    net.add_module("fc", nn.Linear(10, 3))  # 30
    model = nn.Module()
    model.add_module("net", net)
    return model


def _pruned_report(granularity: Granularity, target: float = 0.7) -> SparsityReport:
    model = _model()
    sp = CampfireSparsifier(SparsityConfig(target=target, granularity=granularity, end=0.0), 1)
    sp.prepare(model)  # one-shot prune at step 0
    return sp.report()


def _layer(report: SparsityReport, name: str) -> LayerSparsity:
    return next(layer for layer in report.layers if layer.name == name)


def test_window_report_counts_and_denominators() -> None:
    report = _pruned_report(Granularity.WINDOW)
    assert [layer.name for layer in report.layers] == [
        "net.conv1.weight",
        "net.conv2.weight",
        "net.conv3.weight",
        "net.fc.weight",
    ]
    assert report.pruned_names == ["net.conv2.weight", "net.conv3.weight"]
    conv1, conv2 = _layer(report, "net.conv1.weight"), _layer(report, "net.conv2.weight")
    conv3, fc = _layer(report, "net.conv3.weight"), _layer(report, "net.fc.weight")

    assert (conv1.granularity, conv1.pruned, conv1.target, conv1.achieved) == (
        "dense",
        False,
        0.0,
        0.0,
    )
    assert fc.kind == "linear" and fc.granularity == "dense"
    assert fc.kernel_nnz_min is None and fc.filter_kernels_min is None

    assert conv2.kind == "conv3x3" and conv2.granularity == "window"
    assert conv2.target == 0.7
    assert conv2.rounded_target == pytest.approx(6 / 9)  # keep 3 of 9
    assert conv2.nnz == 32 * 3 and conv2.numel == 288
    assert conv2.achieved == pytest.approx(conv2.rounded_target)
    assert (conv2.kernel_nnz_min, conv2.kernel_nnz_max) == (3, 3)
    assert (conv2.filter_kernels_min, conv2.filter_kernels_max) == (4, 4)

    assert conv3.kind == "conv1x1" and conv3.granularity == "balanced-filter"
    assert conv3.nnz == 10 * 2  # 8 * 0.3 = 2.4 -> 2 per row
    assert conv3.kernel_nnz_min is None
    assert (conv3.filter_kernels_min, conv3.filter_kernels_max) == (2, 2)

    assert report.numel_pruned == 288 + 80
    assert report.numel_all == 108 + 288 + 80 + 30
    assert report.nnz_pruned == 96 + 20
    assert report.achieved_pruned == pytest.approx(1 - 116 / 368)
    assert report.achieved_all == pytest.approx(1 - (108 + 116 + 30) / 506)
    assert report.per_layer_target["net.conv2.weight"] == pytest.approx(6 / 9)
    assert report.per_layer_target["net.conv1.weight"] == 0.0


def test_channel_and_combined_group_counts() -> None:
    channel = _layer(_pruned_report(Granularity.CHANNEL, 0.5), "net.conv2.weight")
    assert channel.granularity == "channel"
    assert (channel.filter_kernels_min, channel.filter_kernels_max) == (2, 2)
    assert (channel.kernel_nnz_min, channel.kernel_nnz_max) == (9, 9)  # whole kernels

    combined = _layer(_pruned_report(Granularity.COMBINED, 0.8), "net.conv2.weight")
    # d = 0.2: n_c = round(4 * sqrt(0.2) = 1.79) = 2, n_w = round(0.2 * 4 * 9 / 2 = 3.6) = 4
    assert (combined.filter_kernels_min, combined.filter_kernels_max) == (2, 2)
    assert (combined.kernel_nnz_min, combined.kernel_nnz_max) == (4, 4)
    assert combined.achieved == pytest.approx(1 - 8 / 36)


def test_report_reads_actual_zeros_of_a_reloaded_model() -> None:
    model = _model()
    sp = CampfireSparsifier(
        SparsityConfig(target=0.5, granularity=Granularity.UNSTRUCTURED, end=0.0), 1
    )
    sp.prepare(model)
    reloaded = _model()
    reloaded.load_state_dict(model.state_dict())
    fresh = sparsity_report(reloaded, sp.config, sp.pruned_names)
    assert fresh == sp.report()
    # module names are accepted as well as parameter names
    assert sparsity_report(reloaded, sp.config, ["net.conv2", "net.conv3"]) == fresh
    with pytest.raises(UserError, match=r"net\.conv9"):
        sparsity_report(reloaded, sp.config, ["net.conv9.weight"])


def test_kernel_min_max_ignores_fully_pruned_kernels() -> None:
    model = _model()
    with torch.no_grad():
        model.net.conv2.weight[0, 0] = 0.0
        model.net.conv2.weight[1, :, 0, 0] = 0.0
    report = sparsity_report(model, SparsityConfig(target=0.5), ["net.conv2.weight"])
    conv2 = _layer(report, "net.conv2.weight")
    assert (conv2.kernel_nnz_min, conv2.kernel_nnz_max) == (8, 9)
    assert (conv2.filter_kernels_min, conv2.filter_kernels_max) == (3, 4)


def test_dense_report() -> None:
    report = sparsity_report(_model(), SparsityConfig(), [])
    assert report.achieved_pruned == 0.0 and report.numel_pruned == 0
    assert report.achieved_all == 0.0 and report.numel_all == 506
    assert all(layer.granularity == "dense" for layer in report.layers)


def test_json_round_trip_and_table() -> None:
    report = _pruned_report(Granularity.COMBINED)
    data = json.loads(json.dumps(report.to_dict()))
    assert SparsityReport.from_dict(data) == report
    table = report.format_table()
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["layer", "kind", "shape"]
    kind_column = lines[0].index("kind")
    assert all(line[kind_column:].startswith(("conv", "linear")) for line in lines[2:6])
    assert "net.conv2.weight" in table and "combined" in table and "balanced-filter" in table
    assert "pruned layers" in lines[-1] and "/368" in lines[-1]
