"""Tests for robustbench_sparse.models.normalize."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.models import Normalize, NormalizedModel


def test_normalize_math_per_channel() -> None:
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.rand(4, 3, 5, 6)
    out = norm(x)
    expected = torch.stack(
        [(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 0.25, (x[:, 2] - 0.0) / 2.0], dim=1
    )
    torch.testing.assert_close(out, expected)
    assert norm.mean.shape == (1, 3, 1, 1)


def test_normalize_single_channel_and_identity() -> None:
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(Normalize((0.0,), (1.0,))(x), x)
    torch.testing.assert_close(Normalize((0.1307,), (0.3081,))(x), (x - 0.1307) / 0.3081)


def test_normalize_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        Normalize((0.5, 0.5), (0.5,))
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def test_normalized_model_forward_names_and_buffers() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    model = NormalizedModel(net, (0.4, 0.5, 0.6), (0.2, 0.2, 0.2), arch="toy", num_classes=2)
    x = torch.rand(3, 3, 6, 6)
    out = model(x)
    torch.testing.assert_close(out, net((x - model.normalize.mean) / model.normalize.std))
    keys = set(model.state_dict())
    assert {"normalize.mean", "normalize.std", "net.0.weight"} <= keys
    assert next(n for n, _ in model.named_parameters()) == "net.0.weight"
    assert not any(p is model.normalize.mean for p in model.parameters())  # buffers, not trained


def test_gradient_reaches_the_input() -> None:
    model = NormalizedModel(nn.Flatten(), (0.5,), (0.25,))
    x = torch.rand(2, 1, 2, 2, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.full_like(x, 4.0))
