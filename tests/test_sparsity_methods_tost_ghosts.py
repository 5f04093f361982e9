"""ToST's ghost transforms (robustbench_sparse.sparsity.methods.tost_ghosts).

Invariants: a ghost activation is exactly ReLU at blend 0 and the smooth function at blend 1;
a ghost skip path matches its conv's output shape (any stride), starts at ToST's 1e-4, is no
``Conv2d`` (so no layer selection or report sees it) and adds nothing at scale 0; removal puts
the very same ReLU modules back (shared ones included) and leaves the logits bit for bit at
strength 0, but not at strength 1 (the removal a sloppy version would do).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity.methods.tost_ghosts import (
    GHOST_INIT,
    GHOST_NAME,
    GhostActivation,
    GhostSkip,
    install_ghosts,
)
from robustbench_sparse.sparsity.selection import weight_layers
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def test_ghost_activation_is_relu_at_0_and_smooth_at_1() -> None:
    x = torch.linspace(-3, 3, 61)
    act = GhostActivation("swish", nn.ReLU())
    act.blend = 0.0
    assert torch.equal(act(x), F.relu(x))
    act.blend = 1.0
    assert torch.allclose(act(x), F.silu(x), atol=1e-7)
    act.blend = 0.25
    assert torch.allclose(act(x), 0.75 * F.relu(x) + 0.25 * F.silu(x), atol=1e-7)
    soft = GhostActivation("softplus", nn.ReLU())
    assert torch.allclose(soft(x), F.softplus(x), atol=1e-7)
    with pytest.raises(ValueError, match="unknown ghost activation"):
        GhostActivation("tanh", nn.ReLU())


@pytest.mark.parametrize("kernel,stride,padding", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (5, 2, 2)])
def test_ghost_skip_matches_the_conv_output_and_starts_at_1e4(
    kernel: int, stride: int, padding: int
) -> None:
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, bias=False)
    model = nn.Sequential(conv)
    ghosts = install_ghosts(model, ["0"], activation="relu", skip=True)
    assert len(ghosts.skips) == 1 and not ghosts.activations
    path = getattr(conv, GHOST_NAME)
    assert isinstance(path, GhostSkip) and not isinstance(path, nn.Conv2d)
    assert path.weight.shape == (6, 4, 1, 1) and bool((path.weight == GHOST_INIT).all())
    assert [n for n, _ in weight_layers(model)] == ["0"]  # not a Conv2d: never selected/reported
    x = torch.randn(2, 4, 9, 9)
    plain = F.conv2d(x, conv.weight, stride=stride, padding=padding)
    assert torch.allclose(model(x), plain + path(x), atol=1e-6)
    ghosts.set_strength(0.0)
    assert torch.equal(model(x), plain)


def test_no_skip_path_where_the_size_would_differ() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=0), nn.Conv2d(4, 4, 3, padding=1, groups=2))
    ghosts = install_ghosts(model, ["0", "1"], activation="relu", skip=True)
    assert not ghosts.skips
    assert not any(GHOST_NAME in n for n, _ in model.named_parameters())


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=10, in_channels=3)


def test_removal_restores_shared_relus_and_the_logits_at_strength_0() -> None:
    model = _resnet()
    relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][1:]
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    before = model(x).detach()
    ghosts = install_ghosts(model, convs, activation="gelu", skip=True)
    assert len(ghosts.activations) == len(relus) and ghosts.skips
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    with_ghosts = model(x).detach()
    assert not torch.equal(with_ghosts, before)
    ghosts.set_strength(0.0)
    assert torch.equal(model(x).detach(), before)
    ghosts.remove()
    ghosts.remove()  # idempotent
    assert {n: m for n, m in model.named_modules() if isinstance(m, nn.ReLU)} == relus
    assert all(a is relus[n] for n, a in relus.items())
    assert torch.equal(model(x).detach(), before)
    assert not any(GHOST_NAME in k for k in model.state_dict())


def test_removal_at_full_strength_changes_the_logits() -> None:
    """The sloppy removal (ghosts dropped while still contributing) is caught by the logits."""
    model = _resnet()
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)][1:]
    ghosts = install_ghosts(model, convs, activation="swish", skip=True)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    at_full = model(x).detach()
    ghosts.remove()
    assert not torch.allclose(model(x).detach(), at_full, atol=1e-4)


def test_a_state_without_ghost_tensors_loads_into_a_model_with_ghosts() -> None:
    plain = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    state = plain.state_dict()
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1))
    install_ghosts(model, ["0"], activation="relu", skip=True)
    model.load_state_dict(state)  # strict: ghost weights absent is not "missing"
    assert torch.equal(dict(model.named_parameters())["0.weight"], plain.state_dict()["0.weight"])
    full = model.state_dict()
    full[f"0.{GHOST_NAME}.weight"] = torch.full((3, 2, 1, 1), 0.5)
    model.load_state_dict(full)
    assert bool((getattr(model[0], GHOST_NAME).weight == 0.5).all())


def test_a_model_without_relu_modules_gets_a_warning_not_ghost_activations(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.relu(self.conv(x))

    ghosts = install_ghosts(Functional(), ["conv"], activation="swish", skip=True)
    assert not ghosts.activations and len(ghosts.skips) == 1
    assert "no ghost activations" in caplog.text
