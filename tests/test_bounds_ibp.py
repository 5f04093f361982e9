"""Interval bound propagation (robustbench_sparse/bounds/ibp.py): soundness on random networks of
every layer type, the closed form on a linear layer, the elision of the last layer, refusals, and a
cross-check with ART's PyTorchIBPClassifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.bounds.ibp import (
    batch_statistics,
    input_box,
    interval_bounds,
    margin_lower_bounds,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.models.normalize import NormalizedModel
from robustbench_sparse.models.resnet_cifar import BasicBlock

N_POINTS = 10_000


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Random running statistics and affine parameters (some negative scales) in every BN."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.copy_(torch.randn(c, generator=gen) * 0.5)
            m.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(c, generator=gen))
                m.bias.copy_(torch.randn(c, generator=gen) * 0.3)
    return model.eval()


def _box_points(lo: torch.Tensor, hi: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` points of the box of one example (1, ...): half uniform, half vertices (where linear
    layers reach their extremes)."""
    shape = (n, *lo.shape[1:])
    u = torch.rand(shape, generator=gen)
    u[n // 2 :] = (u[n // 2 :] > 0.5).float()
    return lo + u * (hi - lo)


def _plain_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, stride=1, padding=1, bias=False),
        nn.AvgPool2d(2),
        nn.ReLU(),
        nn.Conv2d(6, 6, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 8),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Linear(8, 5),
    )


def _residual_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False),
        BasicBlock(4, 4),  # identity shortcut
        BasicBlock(4, 6, stride=2),  # 1x1 conv + BN shortcut
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )


def _networks() -> dict[str, nn.Module]:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    nets: dict[str, nn.Module] = {
        "plain": NormalizedModel(_plain_net(), [0.3, 0.6], [0.2, 0.4]),
        "residual": NormalizedModel(_residual_net(), [0.5, 0.5], [0.25, 0.5]),
        "small_cnn": create_model("small_cnn", num_classes=5, in_channels=2, width=0.125),
        "resnet20": create_model("resnet20", num_classes=5, in_channels=2, width=4),
        "resnet18_cifar": create_model(
            "resnet18_cifar", num_classes=5, in_channels=2, width=1 / 16
        ),
        "preact_resnet18": create_model(
            "preact_resnet18", num_classes=5, in_channels=2, width=1 / 16
        ),
        "wrn": create_model("wrn28_10", num_classes=5, in_channels=2, widen_factor=1),
    }
    return {name: _randomise_bn(net, gen) for name, net in nets.items()}


@pytest.mark.parametrize("name", list(_networks()))
def test_bounds_contain_outputs_of_random_points_of_the_box(name: str) -> None:
    net = _networks()[name]
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 2, 8, 8, generator=gen)
    box = input_box(x, 0.03)
    lo, hi = interval_bounds(net, box)  # (1, 5)
    margins = margin_lower_bounds(net, box, torch.tensor([1]))  # (1, 5)
    points = _box_points(*box, N_POINTS, gen)
    with torch.no_grad():
        z = torch.cat([net(p) for p in points.split(2500)])  # (N_POINTS, 5)
    tol = 1e-5 * (1 + z.abs().max())
    assert (z >= lo - tol).all() and (z <= hi + tol).all()
    assert (z[:, 1:2] - z >= margins - tol).all()
    assert (hi - lo).min() > 0  # a real box, not a point
    # zero radius: the bounds are the model's own logits (the walker mirrors forward)
    z0 = net(x)
    lo0, hi0 = interval_bounds(net, (x, x))
    assert torch.allclose(lo0, z0, atol=1e-5) and torch.allclose(hi0, z0, atol=1e-5)


def test_linear_layer_equals_the_closed_form() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(12, 4)
    x = 0.2 + 0.6 * torch.rand(3, 12)  # away from 0 and 1: no clipping at eps 0.05
    eps = 0.05
    lo, hi = interval_bounds(layer, input_box(x, eps))
    centre = x @ layer.weight.T + layer.bias
    radius = eps * layer.weight.abs().sum(1)  # |W| eps
    torch.testing.assert_close(lo, centre - radius, rtol=0, atol=1e-6)
    torch.testing.assert_close(hi, centre + radius, rtol=0, atol=1e-6)


def test_normalisation_divides_the_radius_by_std_after_clipping_in_pixels() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(2, 3)
    norm = NormalizedModel(nn.Sequential(nn.Flatten(), layer), [0.5], [0.25])
    x = torch.tensor([[[[0.98, 0.5]]]])  # (1, 1, 1, 2): the first pixel is clipped at 1
    lo, hi = interval_bounds(norm, input_box(x, 0.1))
    x_lo = (torch.tensor([0.88, 0.4]) - 0.5) / 0.25
    x_hi = (torch.tensor([1.0, 0.6]) - 0.5) / 0.25
    c, r = (x_lo + x_hi) / 2, (x_hi - x_lo) / 2
    torch.testing.assert_close(lo[0], layer(c) - layer.weight.abs() @ r, rtol=0, atol=1e-6)
    torch.testing.assert_close(hi[0], layer(c) + layer.weight.abs() @ r, rtol=0, atol=1e-6)


def test_elision_is_never_looser_than_the_logit_box_and_is_tighter_somewhere() -> None:
    net = _networks()["small_cnn"]
    x = torch.rand(16, 2, 8, 8, generator=torch.Generator().manual_seed(3))
    y = torch.arange(16) % 5
    box = input_box(x, 0.01)
    elided = margin_lower_bounds(net, box, y)
    lo, hi = interval_bounds(net, box)
    naive = (lo.gather(1, y[:, None]) - hi).scatter(1, y[:, None], 0.0)
    assert (elided >= naive - 1e-5).all()
    assert (elided > naive + 1e-4).any()
    assert (elided.gather(1, y[:, None]) == 0).all()


def test_unknown_layer_type_is_refused_naming_it() -> None:
    with pytest.raises(UserError, match="layer type Tanh") as err:
        interval_bounds(nn.Sequential(nn.Linear(3, 3), nn.Tanh()), (torch.zeros(1, 3),) * 2)
    assert "\n" not in str(err.value)


def test_subclass_with_its_own_forward_is_refused() -> None:
    class Twisted(BasicBlock):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -super().forward(x)

    with pytest.raises(UserError, match="layer type Twisted"):
        interval_bounds(Twisted(2, 2).eval(), (torch.zeros(1, 2, 4, 4),) * 2)


def test_train_mode_batchnorm_needs_batch_statistics() -> None:
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = torch.rand(4, 1, 4, 4)
    net.train()
    with pytest.raises(UserError, match="eval mode"):
        interval_bounds(net, (x, x))
    with batch_statistics(net) as stats:
        z = net(x)  # train mode: batch statistics
    lo, hi = interval_bounds(net, (x, x), bn_stats=stats)
    torch.testing.assert_close(lo, z, rtol=0, atol=1e-5)
    torch.testing.assert_close(hi, z, rtol=0, atol=1e-5)


@pytest.mark.filterwarnings("ignore:.*dense layers before convolutional")
def test_agrees_with_art_interval_classifier() -> None:
    """ART's PyTorchIBPClassifier (art.estimators.certification.interval) on the same model and
    boxes: it takes top-level Conv2d / ReLU / Linear only and infers the reshape, so the same
    modules are given to it without the Flatten. Before elision, both must agree to float
    tolerance (ART turns convolutions into dense matrices: summation order differs)."""
    pytest.importorskip("art", reason="adversarial-robustness-toolbox (dev extra) not installed")
    from art.estimators.certification.interval import PyTorchIBPClassifier

    class Flat(nn.Module):  # ART's shape: top-level Conv2d / ReLU / Linear, a reshape in forward
        def __init__(self, layers: list[nn.Module]) -> None:
            super().__init__()
            self.layers = layers
            for i, layer in enumerate(layers):
                self.add_module(f"l{i}", layer)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers[:-1]:
                x = layer(x)
            return self.layers[-1](x.flatten(1))  # type: ignore[no-any-return]

    torch.manual_seed(0)
    conv1, conv2, fc = nn.Conv2d(1, 3, 3), nn.Conv2d(3, 4, 3, stride=2), nn.Linear(4 * 2 * 2, 5)
    ours = nn.Sequential(conv1, nn.ReLU(), conv2, nn.ReLU(), nn.Flatten(), fc).eval()
    theirs = Flat([conv1, nn.ReLU(), conv2, nn.ReLU(), fc])
    classifier = PyTorchIBPClassifier(
        model=theirs,
        loss=nn.CrossEntropyLoss(),
        input_shape=(1, 8, 8),
        nb_classes=5,
        clip_values=(0.0, 1.0),
        device_type="cpu",
    )
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    for eps in (0.01, 0.1):
        art = classifier.predict_intervals(x.numpy(), bounds=eps, limits=[0.0, 1.0])  # (N, 2, 5)
        lo, hi = interval_bounds(ours, input_box(x, eps))
        torch.testing.assert_close(lo, torch.from_numpy(art[:, 0]).float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hi, torch.from_numpy(art[:, 1]).float(), rtol=1e-5, atol=1e-5)
