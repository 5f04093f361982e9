"""sparsity.detect: the pattern read off a weight's zeros, and a report needing no recorded config."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from robustbench_sparse.sparsity import Granularity, compute_mask
from robustbench_sparse.sparsity.detect import (
    MEASURED_METHOD,
    detect_pattern,
    looks_pruned,
    measured_sparsity_report,
    model_pattern,
)


def _weight(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g)  # no exact zero (almost surely)


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (6, 5, 5, 5), (4, 16, 3, 3)])
@pytest.mark.parametrize(
    ("granularity", "sparsity"),
    [
        (Granularity.WINDOW, 0.7),
        (Granularity.WINDOW, 0.9),
        (Granularity.CHANNEL, 0.5),
        (Granularity.CHANNEL, 0.7),
        (Granularity.COMBINED, 0.7),
    ],
)
def test_campfire_masks_are_detected(
    shape: tuple[int, ...], granularity: Granularity, sparsity: float
) -> None:
    w = _weight(*shape)
    pruned = w * compute_mask(w, sparsity, granularity)
    assert detect_pattern(pruned) == granularity.value


@pytest.mark.parametrize("shape", [(8, 4, 3, 3), (10, 20), (8, 4, 1, 1)])
def test_unstructured_dense_and_filter(shape: tuple[int, ...]) -> None:
    w = _weight(*shape)
    assert detect_pattern(w) == "dense"
    # torch.nn.utils.prune's global L1 magnitude pruning: no balance per group.
    unstructured = w * compute_mask(w, 0.495, Granularity.UNSTRUCTURED)
    assert detect_pattern(unstructured) == "unstructured"
    filters = w.clone()
    filters[::2] = 0.0  # whole filters / output rows removed
    assert detect_pattern(filters) == "filter"


@pytest.mark.parametrize("shape", [(10, 20), (8, 4, 1, 1), (16, 32)])
def test_rows_with_equal_counts_are_balanced_filter(shape: tuple[int, ...]) -> None:
    w = _weight(*shape)
    pruned = w * compute_mask(w, 0.75, Granularity.WINDOW)  # 1x1 / Linear: balanced fallback
    assert detect_pattern(pruned) == "balanced-filter"


def test_one_stray_zero_breaks_a_structure() -> None:
    w = _weight(8, 4, 3, 3)
    window = w * compute_mask(w, 0.7, Granularity.WINDOW)
    kept = window.nonzero()[0]
    window[tuple(kept)] = 0.0  # one kernel now has one weight fewer than the others
    assert detect_pattern(window) == "unstructured"


def test_rejects_other_ranks() -> None:
    with pytest.raises(ValueError, match="Conv2d"):
        detect_pattern(torch.ones(3))


@pytest.mark.parametrize(
    ("patterns", "expected"),
    [
        (["dense", "dense"], "dense"),
        (["dense", "window", "window", "balanced-filter", "dense"], "window"),
        (["channel", "balanced-filter"], "channel"),
        (["balanced-filter", "balanced-filter"], "balanced-filter"),
        (["unstructured", "unstructured", "dense"], "unstructured"),
        (["window", "channel"], "mixed"),
        (["window", "unstructured"], "mixed"),
    ],
)
def test_model_pattern(patterns: list[str], expected: str) -> None:
    assert model_pattern(patterns) == expected


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3)
        self.conv2 = nn.Conv2d(8, 8, 3)
        self.fc = nn.Linear(32, 10)


def test_report_of_a_prune_removed_model() -> None:
    torch.manual_seed(0)
    net = _Net()
    params = [(net.conv2, "weight"), (net.fc, "weight")]
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.495)
    for module, name in params:
        prune.remove(module, name)
    report = measured_sparsity_report(net)
    assert report.method == MEASURED_METHOD
    assert report.pruned_names == ["conv2.weight", "fc.weight"]
    zeros = sum(int((m.weight == 0).sum()) for m, _ in params)
    numel = sum(m.weight.numel() for m, _ in params)
    assert report.numel_pruned == numel
    assert report.achieved_pruned == pytest.approx(zeros / numel)
    assert report.achieved_pruned == pytest.approx(0.495, abs=1 / numel)
    assert report.target == report.achieved_pruned
    by_name = {layer.name: layer for layer in report.layers}
    assert by_name["conv1.weight"].granularity == "dense"
    assert not by_name["conv1.weight"].pruned
    for layer in report.layers:
        if layer.pruned:
            assert layer.target == layer.achieved == layer.rounded_target
            assert layer.granularity == "unstructured"


def test_report_of_a_window_model_names_it() -> None:
    torch.manual_seed(1)
    net = _Net()
    with torch.no_grad():
        net.conv2.weight.mul_(compute_mask(net.conv2.weight, 0.7, Granularity.WINDOW))
        net.fc.weight.mul_(compute_mask(net.fc.weight, 0.7, Granularity.WINDOW))
    report = measured_sparsity_report(net)
    assert report.granularity == "window"
    assert [layer.granularity for layer in report.layers] == ["dense", "window", "balanced-filter"]
    # 3x3 kernels keep 3 of 9 (66.7 %): the achieved value is reported, not the 70 % asked for.
    assert report.layers[1].achieved == pytest.approx(6 / 9)


# ------------------------------------------------ issue 29 (9): accidental zeros are no pruning
def _with_zeros(weight: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``weight`` with ``count`` scattered entries set to exactly zero."""
    g = torch.Generator().manual_seed(seed)
    flat = weight.clone().reshape(-1)
    flat[torch.randperm(flat.numel(), generator=g)[:count]] = 0.0
    return flat.reshape(weight.shape)


@pytest.mark.parametrize(
    ("shape", "zeros"),
    [
        ((64, 32, 3, 3), 1),  # the field report: one exact zero
        ((64, 32, 3, 3), 18),  # just under 0.1 % of 18 432
        ((256, 512), 100),  # a Linear layer, 0.076 %
        ((128, 128, 1, 1), 16),  # a 1x1 conv, 0.098 %
    ],
)
def test_a_few_accidental_zeros_leave_a_layer_dense(shape: tuple[int, ...], zeros: int) -> None:
    w = _with_zeros(_weight(*shape), zeros)
    assert int((w == 0).sum()) == zeros
    assert not looks_pruned(w)


@pytest.mark.parametrize(
    ("shape", "make"),
    [
        ((64, 32, 3, 3), lambda w: _with_zeros(w, 19)),  # 0.103 %: pruning, however light
        ((64, 32, 3, 3), lambda w: w.index_fill(0, torch.tensor([5]), 0.0)),  # one whole filter
        ((64, 32, 3, 3), lambda w: _zero_kernel(w)),  # one whole 3x3 kernel (9 zeros)
        ((256, 512), lambda w: w.index_fill(0, torch.tensor([3]), 0.0)),  # one Linear row
        ((64, 32, 3, 3), lambda w: w * compute_mask(w, 0.5, Granularity.WINDOW)),
    ],
)
def test_zeros_beyond_chance_are_pruning(shape: tuple[int, ...], make: object) -> None:
    assert looks_pruned(make(_weight(*shape)))  # type: ignore[operator]


def _zero_kernel(w: torch.Tensor) -> torch.Tensor:
    out = w.clone()
    out[2, 7] = 0.0
    return out


def test_dense_models_with_stray_zeros_report_dense() -> None:
    """A dense small model with one zero, and a random-init WRN-28-10 (a few zeros among 36 M)."""
    from robustbench_sparse.models import create_model

    torch.manual_seed(0)
    small = create_model("small_cnn", num_classes=10, in_channels=1)
    with torch.no_grad():
        small.net.fc.weight[0, 0] = 0.0  # type: ignore[index, union-attr, operator]
    torch.manual_seed(2)  # this seed draws 3 exact zeros in float32
    wrn = create_model("wrn28_10", num_classes=10)
    for model in (small, wrn):
        report = measured_sparsity_report(model)
        assert report.nnz_all < report.numel_all  # the zeros are counted...
        assert report.granularity == "dense" and report.pruned_names == []  # ...but no pruning
        assert report.target == 0.0 and report.achieved_pruned == 0.0
