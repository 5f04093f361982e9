"""Layer-time prediction of a thinned model's speed-up (robustbench_sparse.speed_prediction)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse import speed_prediction
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import SparsityConfig, create_sparsifier
from robustbench_sparse.thin import count_macs, thin_model


def _filter_pruned(target: float) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=3, width=0.5).eval()
    create_sparsifier(SparsityConfig(target=target, method="filter", end=0.0), 1).prepare(model)
    return model


def test_leaf_work_macs_equal_the_mac_counter() -> None:
    model = _filter_pruned(0.5)
    x = torch.rand(2, 3, 16, 16)
    work = speed_prediction.leaf_work(model, x)
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sum(work[n] for n in layers) == 2 * count_macs(model, (3, 16, 16))


def test_nothing_thinned_predicts_exactly_one() -> None:
    model = _filter_pruned(0.5)
    x = torch.rand(4, 3, 16, 16)
    out = speed_prediction.layer_time_prediction(model, model, x, repeats=2)
    assert out["predicted_speedup"] == 1.0
    assert out["unchanged_share"] == pytest.approx(1.0)


def test_each_layer_time_scales_by_its_own_work_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fixed leaf times: 1 s dense first conv, 1 s pool, 2 s in a conv whose work drops to a
    quarter, 0.5 s between modules -> 4.5 / (4.5 - 2 x 0.75) = 1.5 (the MAC ratio says more)."""
    model = _filter_pruned(0.75)
    x = torch.rand(2, 3, 16, 16)
    thin = thin_model(model, (3, 16, 16)).model
    masked_work = speed_prediction.leaf_work(model, x)
    names = list(masked_work)
    conv1, pool, conv2 = "net.conv1.0", "net.pool", "net.conv2.0"
    assert {conv1, pool, conv2} <= set(names)
    times = {n: 0.0 for n in names} | {conv1: 1.0, pool: 1.0, conv2: 2.0}
    monkeypatch.setattr(speed_prediction, "_leaf_times", lambda *a, **k: (times, 4.5))
    thin_work = dict(masked_work) | {conv2: masked_work[conv2] / 4}
    calls = iter([masked_work, thin_work])
    monkeypatch.setattr(speed_prediction, "leaf_work", lambda *a, **k: next(calls))
    out = speed_prediction.layer_time_prediction(model, thin, x)
    assert out["predicted_speedup"] == pytest.approx(4.5 / 3.0)
    assert out["leaves"][conv2]["work_ratio"] == pytest.approx(0.25)
    assert out["unchanged_share"] == pytest.approx((4.5 - 2.0) / 4.5)


def test_thinned_model_predicts_a_speedup_below_the_mac_ratio() -> None:
    """Real timings: the dense first conv and pooling keep their time, so the layer-time
    prediction lies between 1 and the whole-model MAC ratio."""
    model = _filter_pruned(0.75)
    thin = thin_model(model, (3, 16, 16))
    out = speed_prediction.layer_time_prediction(model, thin.model, torch.rand(8, 3, 16, 16))
    assert 1.0 < out["predicted_speedup"] < thin.macs_before / thin.macs_after
