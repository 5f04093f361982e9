"""Runtime pieces shared by the library adapters (adv-lib, pyautoattack)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from attacks.backends.counting import GradCounter
from attacks.base import FixedBudgetOutput

__all__ = ["per_eps", "target_count"]


def per_eps(
    perturb: Callable[[nn.Module, float], Tensor], model: nn.Module, epsilons: list[float]
) -> FixedBudgetOutput:
    """Run ``perturb(counted_model, eps)`` -> (n, ...) once per epsilon and stack (K, n, ...).

    ``grad_evals`` counts examples forwarded with a gradient-tracked input
    (:class:`~attacks.backends.counting.GradCounter`); ``details["forward_evals"]`` counts every
    example forwarded.
    """
    counter = GradCounter(model)
    advs = [perturb(counter, e).detach() for e in epsilons]
    return FixedBudgetOutput(
        adversarials=torch.stack(advs),
        grad_evals=counter.count,
        details={"forward_evals": counter.forwards},
    )


def target_count(model: nn.Module, x: Tensor, n_target_classes: int) -> int:
    """``n_target_classes`` capped at ``classes − 1`` (classes read from one forward of ``x[:1]``)."""
    with torch.no_grad():
        n_classes = int(model(x[:1]).shape[1])
    return min(n_target_classes, n_classes - 1)
