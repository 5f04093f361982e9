"""The epsilon-grid engine behind the native fixed-budget attacks: nested balls + early stop.

Two facts about Lp threat models make a whole epsilon grid much cheaper than one attack per eps:

* **Nested balls.** For sorted epsilons ``eps_0 < eps_1 < ...`` the ball of radius ``eps_i`` lies
  inside the ball of radius ``eps_j`` (``j > i``), so an adversarial found at ``eps_i`` is a valid
  adversarial at every larger epsilon. :func:`nested_grid` attacks only the *survivors* of the
  previous epsilon and copies the earlier adversarial forward for the others. The success curve
  is therefore monotone by construction, and it equals the union "broken at some ``eps_j <= e``"
  of what the per-eps attacks found (no example is ever dropped: survivors get a full attack).
* **Early stop.** Inside PGD (:func:`pgd_early_stop`) an example whose current iterate is
  misclassified is finished: that iterate (already projected by
  :func:`attacks.norms.clip_to_ball`, so inside the ball and ``[0, 1]``) is kept and the example
  leaves the batch, which shrinks as the attack progresses. Keeping the first misclassified
  iterate can only help compared with PGD's last iterate, which may have wandered back.

Work accounting is honest: ``grad_evals`` counts every example that went through a
forward+backward pass, including the ones that finish at that very step (their gradient was
computed, even if it is then not used). Classification-only forward passes (the final check after
the last step) are not gradient evaluations and are not counted.

Every adversarial the engine returns is re-verified and re-classified by the
:class:`attacks.base.Attack` template before it is counted, like those of any other attack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attacks.gradients import logits_and_gradient
from attacks.norms import Norm, clip_to_ball, perturbation_norm
from attacks.tensors import per_row

__all__ = [
    "EpsRun",
    "ascent_direction",
    "logits_and_gradient",
    "nested_grid",
    "pgd_early_stop",
    "random_start",
]


def random_start(x: Tensor, eps: Tensor, norm: Norm) -> Tensor:
    """Random point of the eps ball around ``x`` (M, ...), eps (M,); inside [0, 1].

    Linf and L2: uniform in the ball, then clipped; L1: a Gaussian projected onto the ball ∩ box.
    """
    if norm is Norm.LINF:
        delta = (torch.rand_like(x) * 2 - 1) * per_row(eps, x)
    elif norm is Norm.L1:
        # A Gaussian projected onto the L1 ball ∩ box (l1-APGD's start; not uniform in the ball).
        delta = torch.randn_like(x)
    else:
        # Uniform in the L2 ball: Gaussian direction, radius eps · U^(1/d).
        direction = torch.randn_like(x)
        direction = direction / per_row(perturbation_norm(direction, Norm.L2).clamp_min(1e-12), x)
        d = x[0].numel()
        radius = eps * torch.rand(x.shape[0], dtype=x.dtype, device=x.device) ** (1.0 / d)
        delta = direction * per_row(radius, x)
    return clip_to_ball(x + delta, x, eps, norm)


def ascent_direction(grad: Tensor, norm: Norm) -> Tensor:
    """Steepest-ascent direction of unit ``norm`` for ``grad`` (M, ...) -> (M, ...).

    Linf: ``sign(grad)``; L2: ``grad / ‖grad‖`` per example. Used by PGD and adversarial training.
    L1 has no useful steepest-ascent direction of this kind (it moves one coordinate; l1-APGD
    uses its own k-sparse step, :mod:`attacks.apgd_l1`): ``ValueError``.
    """
    if norm is Norm.LINF:
        return grad.sign()
    if norm is not Norm.L2:
        raise ValueError(f"no ascent direction for norm {norm.value!r}")
    g_norm = perturbation_norm(grad, Norm.L2).clamp_min(1e-12)
    return grad / per_row(g_norm, grad)


@dataclass
class EpsRun:
    """Outcome of attacking m examples at one budget (or one budget per row)."""

    adversarials: Tensor  # (m, ...) inside the ball and [0, 1]
    broken: Tensor  # bool (m,): the attack saw this adversarial misclassified
    grad_evals: int


def pgd_early_stop(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    step: Tensor,
    *,
    norm: Norm,
    steps: int,
    start: Tensor | None,
    early_stop: bool = True,
) -> EpsRun:
    """PGD on ``x`` (m, ...) with per-row budgets ``eps`` (m,) and step sizes ``step`` (m,).

    ``start`` is the first iterate (a random point of the ball, a warm start, or ``x``); it must
    lie in the ball. With ``early_stop`` a row leaves the batch at the first iterate the model
    misclassifies and that iterate is returned for it; otherwise every row runs all ``steps`` and
    the last iterate is returned (plain PGD). ``broken`` is decided on the returned iterate.
    """
    m = x.shape[0]
    out = (start if start is not None else x).clone()  # (m, ...) final adversarials
    broken = torch.zeros(m, dtype=torch.bool, device=x.device)
    active = torch.arange(m, device=x.device)  # rows still being attacked
    adv = out.clone()
    xa, ya, ea, sa = x, y, eps, step
    evals = 0
    for _ in range(steps):
        if active.numel() == 0:
            break
        logits, grad = logits_and_gradient(model, adv, ya)
        evals += int(active.numel())
        if early_stop:
            hit = logits.argmax(dim=1) != ya  # (a,) this iterate is already adversarial
            if bool(hit.any()):
                out[active[hit]] = adv[hit]
                broken[active[hit]] = True
                keep = ~hit
                active, adv, grad = active[keep], adv[keep], grad[keep]
                xa, ya, ea, sa = xa[keep], ya[keep], ea[keep], sa[keep]
                if active.numel() == 0:
                    break
        adv = clip_to_ball(adv + per_row(sa, adv) * ascent_direction(grad, norm), xa, ea, norm)
    if active.numel() > 0:
        out[active] = adv
        with torch.no_grad():
            pred = torch.cat([model(c).argmax(dim=1) for c in adv.split(1024)])
        broken[active] = pred != ya
    return EpsRun(adversarials=out, broken=broken, grad_evals=evals)


#: attack m examples at one epsilon: (x, y, eps, previous iterate or None) -> EpsRun
EpsAttack = Callable[[Tensor, Tensor, float, Tensor | None], EpsRun]


def nested_grid(x: Tensor, y: Tensor, epsilons: list[float], attack_at: EpsAttack) -> EpsRun:
    """Attack ``x`` (n, ...) over sorted positive ``epsilons`` (K), survivors only.

    ``attack_at(x_s, y_s, eps, prev_s)`` attacks the survivors at one epsilon; ``prev_s`` is their
    last iterate at the previous epsilon (a point of the smaller ball, usable as a warm start) or
    ``None`` at the first epsilon. Returns adversarials (K, n, ...) where row k of an example
    broken at ``eps_j <= eps_k`` is the adversarial found at ``eps_j``, ``broken`` (K, n) and the
    summed gradient evaluations.
    """
    k_eps, n = len(epsilons), x.shape[0]
    advs = x.unsqueeze(0).repeat((k_eps,) + (1,) * x.ndim)  # (K, n, ...)
    broken = torch.zeros(k_eps, n, dtype=torch.bool, device=x.device)  # (K, n)
    found = x.clone()  # (n, ...) adversarial of broken examples, last iterate of the others
    alive = torch.ones(n, dtype=torch.bool, device=x.device)
    evals = 0
    for k, e in enumerate(epsilons):
        idx = alive.nonzero().squeeze(1)
        if idx.numel() > 0:
            run = attack_at(x[idx], y[idx], e, None if k == 0 else found[idx])
            evals += run.grad_evals
            found[idx] = run.adversarials.to(x.dtype)
            alive[idx[run.broken]] = False
        advs[k] = found
        broken[k] = ~alive
    return EpsRun(adversarials=advs, broken=broken, grad_evals=evals)
