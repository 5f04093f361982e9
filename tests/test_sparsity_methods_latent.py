"""The latent-weight machinery (robustbench_sparse.sparsity.methods.latent) on a toy method.

The toy's ``effective(W) = 2 W`` with a trainable scalar ``c`` added (``2 W + c``) shows the
whole cycle: the model holds ``effective(W)``; backward gives ``dL/dW = 2 g`` and
``dL/dc = sum g`` through the hook; the optimizer updates the *latent* ``W`` (plain SGD:
``W - lr · 2 g``) and ``c``; after ``step`` the model holds ``effective`` of the new latent.
Ending GA drops the latents and keeps the weights; a state saved after that reloads without them.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

from robustbench_sparse.sparsity import SparsityConfig
from robustbench_sparse.sparsity.methods.latent import LatentSparsifier


class _Toy(LatentSparsifier):
    def __init__(self, config: Any, steps_per_epoch: int) -> None:
        super().__init__(config, steps_per_epoch)
        self.c = nn.Parameter(torch.zeros(1, 1))

    def extra_parameters(self) -> dict[str, nn.Parameter]:
        return {"c": self.c}

    def effective(self, name: str, latent: Tensor) -> Tensor:
        return 2.0 * latent + self.c


def _setup() -> tuple[nn.Module, _Toy, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    config = SparsityConfig(target=0.5, granularity="unstructured", prune_classifier=True)  # type: ignore[arg-type]
    sp = _Toy(config, steps_per_epoch=1)
    sp.prepare(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sp.attach_optimizer(optimizer, 0.0)
    return model, sp, optimizer


def test_model_holds_effective_and_optimizer_updates_the_latent() -> None:
    model, sp, optimizer = _setup()
    name = "2.weight"
    latent0 = sp.state_dict()["latent"]["weights"][name].clone()
    assert torch.equal(model.get_parameter(name).detach(), 2.0 * latent0)
    x = torch.randn(5, 3)
    optimizer.zero_grad()
    out = model(x)
    out.sum().backward()
    first = model.get_submodule("0")
    h = torch.relu(first(x))  # the classifier's input
    g_p = torch.ones(5, 2).T @ h  # dL/dP of the classifier weight, (2, 4)
    assert torch.allclose(model.get_parameter(name).grad, 2.0 * g_p, atol=1e-6)  # type: ignore[arg-type]
    optimizer.step()
    sp.step(optimizer)
    latent1 = sp.state_dict()["latent"]["weights"][name]
    assert torch.allclose(latent1, latent0 - 0.1 * 2.0 * g_p, atol=1e-6)
    c = float(sp.c.detach())
    assert c != 0.0  # the extra parameter got its gradient and was stepped
    assert torch.allclose(model.get_parameter(name).detach(), 2.0 * latent1 + c, atol=1e-6)


def test_finish_keeps_the_weights_and_state_reloads_without_latents() -> None:
    model, sp, _ = _setup()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sp.finish_latent()
    assert not sp.latent_active and sp.frozen
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), before[name])
    state = sp.state_dict()
    assert state["latent"]["weights"] == {}
    model2 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    config = SparsityConfig(target=0.5, granularity="unstructured", prune_classifier=True)  # type: ignore[arg-type]
    sp2 = _Toy(config, steps_per_epoch=1)
    sp2.prepare(model2)  # fit's resume order: prepare, load the model, load the sparsifier
    model2.load_state_dict(model.state_dict())
    sp2.load_state_dict(state)
    assert not sp2.latent_active
    for name, p in model2.named_parameters():
        assert torch.equal(p.detach(), before[name])


def test_attach_twice_is_an_error() -> None:
    _, sp, optimizer = _setup()
    with pytest.raises(RuntimeError, match="already"):
        sp.attach_optimizer(optimizer, 0.0)
