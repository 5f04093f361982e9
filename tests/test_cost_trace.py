"""cost.trace: one recorded forward pass: every conv/linear call, shapes, coupled channel groups,
structural zeros; ops it does not understand pin their channels."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from robustbench_sparse.cost.trace import trace_channels
from robustbench_sparse.models import create_model
from tests.cost_helpers import small_cnn


def _roots(trace: object, groups: np.ndarray) -> list[int]:
    return [trace.find(int(g)) for g in groups]  # type: ignore[attr-defined]


def test_small_cnn_layers_shapes_and_chain_groups() -> None:
    model = small_cnn(width=0.5)
    model.train()
    trace = trace_channels(model, (1, 28, 28))
    assert model.training  # mode restored
    names = [c.name for c in trace.layers]
    assert names == [f"net.conv{i}.0" for i in range(1, 6)] + ["net.fc"]
    conv2, conv3, fc = trace.layers[1], trace.layers[2], trace.layers[-1]
    assert conv2.in_shape == (16, 14, 14) and conv2.out_hw == (14, 14)  # after the max-pool
    assert conv3.out_hw == (7, 7)
    assert _roots(trace, conv2.out_groups) == _roots(trace, conv3.in_groups)
    assert fc.kind == "linear" and fc.in_shape == (64,)
    assert all(trace.is_pinned(int(g)) for g in trace.layers[0].in_groups)  # the image
    assert all(trace.is_pinned(int(g)) for g in fc.out_groups)  # the logits
    assert not trace.is_pinned(int(conv2.out_groups[0]))


def test_resnet_skip_connections_couple_the_stream() -> None:
    trace = trace_channels(create_model("resnet20", num_classes=10).eval(), (3, 8, 8))
    by_name = {c.name: c for c in trace.layers}
    stream = _roots(trace, by_name["net.conv1"].out_groups)
    for i in range(3):
        assert _roots(trace, by_name[f"net.layer1.{i}.conv2"].out_groups) == stream
        assert _roots(trace, by_name[f"net.layer1.{i}.conv1"].in_groups) == stream
    inner = _roots(trace, by_name["net.layer1.0.conv1"].out_groups)
    assert set(inner).isdisjoint(stream)


def test_structural_zeros_follow_zero_filters_and_bn() -> None:
    model = small_cnn(width=0.5)
    with torch.no_grad():
        model.net.conv2[0].weight[4] = 0
        model.net.conv2[1].weight[4] = 0
        model.net.conv2[1].bias[4] = 0
        model.net.conv2[0].weight[6] = 0  # zero filter but BN shifts it: not zero after BN
        model.net.conv2[1].bias[6] = 0.5
    zero = trace_channels(model, (1, 8, 8)).layers[2].in_zero
    assert zero[4] and not zero[6] and int(zero.sum()) == 1


class _Gated(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.sigmoid(self.a(x))  # not a rule of the trace: pins a's output channels
        return self.b(h).mean(dim=(2, 3))


def test_unknown_ops_pin_their_channels() -> None:
    trace = trace_channels(_Gated(), (3, 5, 5))
    a, b = trace.layers
    assert all(trace.is_pinned(int(g)) for g in a.out_groups)
    assert all(trace.is_pinned(int(g)) for g in b.in_groups)
