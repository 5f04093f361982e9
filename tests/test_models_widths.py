"""Module widths: read off a model, recorded, and rebuilt on a fresh registry model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.models.widths import apply_widths, changed_widths, module_widths


def test_apply_widths_rebuilds_the_changed_modules_only() -> None:
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)
    before = module_widths(model)
    assert before["net.conv2.0"] == {"in": 8, "out": 16, "groups": 1}
    assert before["net.conv2.1"] == {"features": 16}
    widths = {
        "net.conv2.0": {"in": 8, "out": 5, "groups": 1},
        "net.conv2.1": {"features": 5},
        "net.conv3.0": {"in": 5, "out": 16, "groups": 1},
    }
    first = model.net.conv1[0]  # type: ignore[index, union-attr]
    apply_widths(model, widths)
    assert changed_widths(before, module_widths(model)) == widths
    assert model.net.conv1[0] is first  # type: ignore[index, union-attr]
    conv = model.net.conv2[0]  # type: ignore[index, union-attr]
    assert conv.kernel_size == (3, 3) and conv.padding == (1, 1)
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_apply_widths_refuses_unknown_modules_and_bad_values() -> None:
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)
    with pytest.raises(UserError, match="not a module"):
        apply_widths(model, {"net.nope": {"features": 3}})
    with pytest.raises(UserError, match="positive integers"):
        apply_widths(model, {"net.conv2.1": {"features": 0}})
    with pytest.raises(UserError, match="only Conv2d"):
        apply_widths(model, {"net.conv2.2": {"features": 3}})  # a ReLU
    assert isinstance(model, nn.Module)
