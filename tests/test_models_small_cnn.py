"""Tests for robustbench_sparse.models.small_cnn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import SmallCNN, create_model


def _n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_layers_and_parameter_count() -> None:
    net = SmallCNN(num_classes=10, in_channels=1)
    assert _n_params(net) == 147_818
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(3, 3)] * 4 + [(1, 1)]
    assert all(
        isinstance(m.weight, torch.Tensor) for m in net.modules() if isinstance(m, nn.BatchNorm2d)
    )
    half = SmallCNN(num_classes=10, in_channels=1, width=0.5)
    assert half.fc.in_features == 64 and _n_params(half) < _n_params(net) / 3


def test_pools_only_large_inputs() -> None:
    net = SmallCNN(num_classes=10, in_channels=1).eval()
    seen: list[tuple[int, ...]] = []
    net.conv2.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape[-2:])))
    with torch.no_grad():
        net(torch.rand(1, 1, 8, 8))
        net(torch.rand(1, 1, 28, 28))
    assert seen == [(8, 8), (14, 14)]


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread: on a shared 2-core runner, spinning OpenMP threads cost far more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_learns_digits_quickly() -> None:
    torch.manual_seed(0)
    data = load_dataset("digits", train_limit=500)  # ~0.15 s per epoch on 2 idle cores
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=data.info.mean, std=data.info.std
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        model.train()
        for x, y in DataLoader(data.train, batch_size=50, shuffle=True, generator=gen):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    model.eval()
    x_te, y_te = next(iter(DataLoader(data.test, batch_size=len(data.test))))  # type: ignore[arg-type]
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    assert acc > 0.8, acc
