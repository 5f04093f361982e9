"""Shared fixtures for the attack tests: a tiny BatchNorm CNN trained on sklearn's digits.

Built once per test session (``functools.cache``) in about a second on CPU; no downloads.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks import list_backends

#: the third-party package behind each reference backend ("native" needs none)
BACKEND_PACKAGES = {
    "torchattacks": "torchattacks",
    "foolbox": "foolbox",
    "autoattack": "pyautoattack",
    "adv-lib": "adv_lib",
}


def installed_backends() -> list[str]:
    """The backends whose package is importable here, in registry order.

    adv-lib is not in the dev extra (it needs a separate install, see .ci/run), so on a machine
    that ran only the README's ``pip install -e ".[dev]"`` its attacks are left out of the
    registry-wide tests instead of failing them; tests/test_attacks_backend_advlib.py skips.
    """
    return [
        b
        for b in list_backends()
        if b not in BACKEND_PACKAGES or importlib.util.find_spec(BACKEND_PACKAGES[b]) is not None
    ]


class Normalize(nn.Module):
    """Normalization inside the model, as the attacks require."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("std", torch.tensor(std))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def tiny_cnn(num_classes: int = 10) -> nn.Module:
    """Conv-BN-ReLU ×2 + linear on 1×8×8 inputs."""
    return nn.Sequential(
        Normalize(0.3, 0.4),
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1, stride=2),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, num_classes),
    )


@dataclass(frozen=True)
class Digits:
    model: nn.Module  # trained, left in eval mode, parameters requiring grad (as after training)
    x: Tensor  # (450, 1, 8, 8) held-out test images in [0, 1]
    y: Tensor  # (450,)
    clean_accuracy: float


@functools.cache
def digits() -> Digits:
    """Train the tiny CNN on 1347 digits for 60 Adam steps; return it with 450 test images."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    data = load_digits()
    x_all = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (1797, 1, 8, 8)
    y_all = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(0))
    x_all, y_all = x_all[perm], y_all[perm]
    x_train, y_train = x_all[:-450], y_all[:-450]
    x_test, y_test = x_all[-450:], y_all[-450:]

    model = tiny_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(60):
        idx = torch.randint(0, len(y_train), (128,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        acc = float((model(x_test).argmax(1) == y_test).float().mean())
    return Digits(model=model, x=x_test, y=y_test, clean_accuracy=acc)


def fresh_bn_model() -> nn.Module:
    """An untrained tiny CNN in *train* mode, with nonzero BN statistics (for guard tests)."""
    torch.manual_seed(1)
    model = tiny_cnn()
    with torch.no_grad():
        model(torch.rand(32, 1, 8, 8))  # move running stats off their init values
    model.train()
    return model
