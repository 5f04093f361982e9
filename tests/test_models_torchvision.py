"""Tests for robustbench_sparse.models.torchvision_models (random weights only; no downloads)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.models.torchvision_models import (
    replace_first_conv,
    tv_builder,
    tv_classification_models,
)


def test_resnet50_is_v1_5() -> None:
    net = create_model("resnet50", num_classes=10).net
    block = net.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert net.fc.out_features == 10


def test_replace_first_conv_adapts_weights() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.ReLU())
    old = net[0].weight.detach().clone()
    replace_first_conv(net, 1)
    assert net[0].in_channels == 1 and net[0].padding == (1, 1) and net[0].bias is not None
    torch.testing.assert_close(net[0].weight, old.sum(dim=1, keepdim=True))
    # A gray image fed as 1 channel gives the same response as the same image replicated over RGB.
    net2 = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False))
    x = torch.rand(1, 1, 5, 5)
    ref = net2(x.repeat(1, 3, 1, 1))
    replace_first_conv(net2, 1)
    torch.testing.assert_close(net2(x), ref)
    replace_first_conv(net2, 4)
    assert net2[0].weight.shape == (4, 4, 3, 3)


def test_tv_model_list() -> None:
    names = tv_classification_models()
    assert {"resnet18", "resnet50", "mobilenet_v2", "vit_b_16"} <= set(names)
    assert "fasterrcnn_resnet50_fpn" not in names


@pytest.mark.parametrize("name", ["tv:resnet18", "tv:squeezenet1_1"])
def test_tv_prefix_models(name: str) -> None:
    model = create_model(name, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)


def test_tv_builder_builds_torchvision_models_and_lists_them_when_unknown() -> None:
    net = tv_builder("squeezenet1_1")(num_classes=4, in_channels=1)
    assert net(torch.rand(1, 1, 64, 64)).shape == (1, 4)
    with pytest.raises(UserError, match=r"arch 'tv:resnet181'.*tv:resnet18"):
        tv_builder("resnet181")
