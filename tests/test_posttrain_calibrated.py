"""``calibrated`` (Lazarevich et al. 2021) on small_cnn: masks, correction, calibration, report."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.posttrain import CalibrationData, PostTrainConfig, get_post_training_method
from robustbench_sparse.posttrain.magnitude import correct_weights
from robustbench_sparse.sparsity import SparsityConfig, sparsity_report
from tests.core_helpers import single_thread, tiny_digits

FAST = {"iterations": 3, "samples_per_iteration": 200, "batch_size": 20, "lr": 1e-3}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, input_shape=(1, 8, 8), width=0.25
    ).eval()


def _calibration(n: int = 100) -> CalibrationData:
    train = tiny_digits().train
    images = torch.stack([train[i][0] for i in range(n)])  # (n, 1, 8, 8) in [0, 1]
    return CalibrationData(images, None, "train")


def _run(model: nn.Module, granularity: str = "unstructured", **options: object):  # type: ignore[no-untyped-def]
    method = get_post_training_method("calibrated")
    cfg = PostTrainConfig("calibrated", 0.7, granularity, options={**FAST, **options})
    with single_thread():
        return method.run(model, cfg.with_defaults(method.default_options), _calibration())


def test_unstructured_layers_follow_the_normalised_global_ranking() -> None:
    model = _model()
    params = dict(model.named_parameters())
    result = _run(model, tune=False)
    names = result.pruned_layers
    assert names == ["net.conv2.0.weight", "net.conv3.0.weight", "net.conv4.0.weight",
                     "net.conv5.0.weight"]  # fmt: skip
    dense = _model()
    ref = dict(dense.named_parameters())
    flat = [ref[n].detach().numpy().ravel() for n in names]
    scores = np.concatenate([np.abs(f) / np.linalg.norm(f) for f in flat])
    owner = np.concatenate([np.full(f.size, i) for i, f in enumerate(flat)])
    pruned = owner[np.argsort(scores, kind="stable")[: int(0.7 * scores.size)]]
    for i, n in enumerate(names):
        assert int((~result.masks[n]).sum()) == int((pruned == i).sum())
        assert bool((params[n][~result.masks[n]] == 0).all())
    # tune=False: the kept weights are exactly the corrected dense weights
    for n in names:
        assert torch.allclose(params[n], correct_weights(ref[n].detach(), result.masks[n]))
    assert params["net.conv1.0.weight"].count_nonzero() == ref["net.conv1.0.weight"].numel()


def test_masks_are_bit_identical_before_and_after_tuning_and_errors_fall() -> None:
    untuned = _run(_model(), tune=False)
    model = _model()
    tuned = _run(model)
    assert sorted(tuned.masks) == sorted(untuned.masks)
    params = dict(model.named_parameters())
    for name, mask in tuned.masks.items():
        assert torch.equal(mask, untuned.masks[name])
        assert torch.equal(params[name] != 0, mask)  # the zeros are the mask, nothing more
    for row in tuned.layers:
        assert row["error_after"] < row["error_before"], row["name"]
    for row in untuned.layers:
        assert row["error_after"] == row["error_before"]


def test_structured_granularity_uses_campfires_masks_and_the_report_reads_them() -> None:
    model = _model()
    result = _run(model, "window")
    assert result.granularity == "calibrated-window"
    params = dict(model.named_parameters())
    w = params["net.conv2.0.weight"]
    assert bool(((w != 0).reshape(-1, 9).sum(dim=1) == 3).all())  # 70 % of 3x3 keeps 3
    config = SparsityConfig.from_dict(result.sparsity or {})
    report = sparsity_report(model, config, result.pruned_layers)
    assert report.method == "calibrated" and report.target == 0.7
    assert report.pruned_names == result.pruned_layers


def test_unstructured_report_has_no_per_layer_target_but_the_achieved_value() -> None:
    model = _model()
    result = _run(model, tune=False)
    config = SparsityConfig.from_dict(result.sparsity or {})
    report = sparsity_report(model, config, result.pruned_layers)
    pruned = [layer for layer in report.layers if layer.pruned]
    assert all(layer.rounded_target == layer.achieved for layer in pruned)
    assert len({round(layer.achieved, 3) for layer in pruned}) > 1  # non-uniform
    total = sum(layer.numel for layer in pruned)
    assert report.numel_pruned - report.nnz_pruned == int(0.7 * total)


def test_bad_settings_are_one_line_user_errors() -> None:
    method = get_post_training_method("calibrated")
    with pytest.raises(UserError, match="iterations"):
        _run(_model(), iterations=0)
    with pytest.raises(UserError, match="> 0"):
        cfg = PostTrainConfig("calibrated", 0.0).with_defaults(method.default_options)
        method.run(_model(), cfg, _calibration())
    with pytest.raises(UserError, match="at least 2 calibration images"):
        cfg = PostTrainConfig("calibrated", 0.5).with_defaults(method.default_options)
        method.run(_model(), cfg, CalibrationData(torch.rand(1, 1, 8, 8), None, "train"))
