"""attacks.tensors and attacks.gradients.input_gradient: the small helpers every attack shares."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attacks
from attacks import engine, gradients
from attacks.gradients import input_gradient, logits_and_gradient, loss_gradient
from attacks.tensors import expand_like, generator, generator_or_global, per_row
from tests.attack_helpers import Digits, digits


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def test_per_row_and_expand_like_shapes() -> None:
    like = torch.zeros(3, 2, 4, 5)
    v = torch.tensor([1.0, 2.0, 3.0])
    assert per_row(v, like).shape == (3, 1, 1, 1)
    assert torch.equal((like + 1) * per_row(v, like), v.reshape(3, 1, 1, 1).expand(3, 2, 4, 5))
    assert expand_like(torch.ones(3, dtype=torch.bool), like).shape == (3, 1, 1, 1)
    assert expand_like(torch.ones(2, 3, dtype=torch.bool), like.unsqueeze(0)).shape == (
        2,
        3,
        1,
        1,
        1,
    )


def test_generators() -> None:
    cpu = torch.device("cpu")
    a = torch.rand(5, generator=generator(3, cpu))
    b = torch.rand(5, generator=generator(3, cpu))
    assert torch.equal(a, b)
    assert generator_or_global(None, cpu) is None
    c = torch.rand(5, generator=generator_or_global(3, cpu))
    assert torch.equal(a, c)
    state = torch.get_rng_state()
    torch.rand(5, generator=generator(None, cpu))  # seeded from entropy, global RNG untouched
    assert torch.equal(state, torch.get_rng_state())


def _manual(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xg), y, reduction="sum"), xg)
    return grad


def test_input_gradient_is_the_plain_autograd_gradient(data: Digits) -> None:
    x, y = data.x[:16], data.y[:16]
    before = [None if p.grad is None else p.grad.clone() for p in data.model.parameters()]
    expected = _manual(data.model, x, y)
    assert torch.equal(loss_gradient(data.model, x, y), expected)
    logits, grad = logits_and_gradient(data.model, x, y)
    assert torch.equal(grad, expected)
    with torch.no_grad():
        assert torch.equal(logits, data.model(x))
    # per-example values: the gradient of their sum, values returned detached
    _, values, grad2 = input_gradient(
        data.model, x, lambda z: F.cross_entropy(z, y, reduction="none")
    )
    assert values.shape == (16,) and not values.requires_grad and not grad2.requires_grad
    assert torch.allclose(grad2, expected, atol=1e-6)
    after = [p.grad for p in data.model.parameters()]  # no parameter .grad written
    assert all(
        (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))
        for a, b in zip(before, after, strict=True)
    )


def test_input_gradient_makes_gradients_finite() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten())  # logits = pixels
    x = torch.tensor([[0.0, 0.25, 1.0]])
    _, _, grad = input_gradient(model, x, lambda z: z.sqrt().sum())
    assert torch.isfinite(grad).all()


def test_engine_reexports_the_one_gradient_helper() -> None:
    assert engine.logits_and_gradient is gradients.logits_and_gradient


def test_shared_helpers_are_defined_once() -> None:
    """No attack module keeps its own copy of the helpers that now live in attacks.tensors."""
    root = Path(attacks.__file__).parent
    copies = {"_bcast", "_generator", "_expand", "per_row", "generator", "expand_like"}
    found: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in copies:
                found.setdefault(node.name, []).append(str(path.relative_to(root)))
    assert found == {
        "per_row": ["tensors.py"],
        "generator": ["tensors.py"],
        "expand_like": ["tensors.py"],
    }
