"""attacks.backends.common: per-eps stacking with work counts, target count capped at classes - 1."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attacks.backends.common import per_eps, target_count


def _model(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, n_classes))


def test_per_eps_stacks_one_run_per_eps_and_counts_work() -> None:
    x = torch.rand(3, 1, 2, 2)

    def perturb(m: nn.Module, e: float) -> Tensor:
        xg = x.clone().requires_grad_(True)
        m(xg).sum().backward()  # one gradient evaluation per example
        with torch.no_grad():
            m(x)  # one forward without a gradient
        return (x + e).requires_grad_(True)

    out = per_eps(perturb, _model(5), [0.0, 0.5])
    assert out.adversarials.shape == (2, 3, 1, 2, 2)
    assert not out.adversarials.requires_grad
    assert torch.equal(out.adversarials[1], x + 0.5)
    assert out.grad_evals == 2 * 3
    assert out.details == {"forward_evals": 2 * 2 * 3}


def test_target_count_is_capped_at_classes_minus_one() -> None:
    x = torch.rand(2, 1, 2, 2)
    assert target_count(_model(10), x, 9) == 9
    assert target_count(_model(10), x, 3) == 3
    assert target_count(_model(4), x, 9) == 3
