"""IBP training loss and its kappa schedule (Gowal et al. 2018; Zhang et al., CROWN-IBP, ICLR 2020).

The loss of one batch at the current radius ``eps_t`` (ramped by the caller,
:meth:`robustbench_sparse.adversarial.AdversarialConfig.eps_at`)::

    L = kappa * CE(z(x), y) + (1 - kappa) * CE(z_worst, y)

where ``z_worst_j = -lb(z_y - z_j)`` for ``j != y`` and ``z_worst_y = 0``: the worst-case logits
from the elided IBP margin lower bounds (:func:`robustbench_sparse.bounds.margin_lower_bounds`;
Gowal et al.'s reference code appends the zero column, CROWN-IBP takes the CE of ``-lb`` the
same way). ``kappa`` follows the eps ramp as in CROWN-IBP's ``train.py``:
``kappa = 1 - (1 - kappa_final) * eps_t / eps``, so it is 1 while ``eps_t`` is 0 (the nominal
warm-up), falls linearly to ``kappa_final`` (0.5 in Gowal et al.) over the eps ramp and stays
there. BatchNorm layers in training mode bound with the batch statistics of the nominal pass
(:func:`robustbench_sparse.bounds.batch_statistics`), as the reference code does.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.bounds.ibp import batch_statistics, input_box, margin_lower_bounds

__all__ = ["ibp_kappa", "ibp_training_loss"]


def ibp_kappa(eps_t: float, eps: float, kappa_final: float) -> float:
    """The nominal-loss weight at radius ``eps_t`` of a ramp to ``eps`` (> 0): 1 at ``eps_t = 0``,
    ``kappa_final`` from ``eps_t = eps`` on, linear in between."""
    frac = min(max(eps_t / eps, 0.0), 1.0)
    return 1.0 - (1.0 - kappa_final) * frac


def ibp_training_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps_t: float,
    kappa: float,
    *,
    forward: nn.Module | None = None,
    label_smoothing: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, nominal logits (N, K), worst-case logits (N, K))`` of one IBP training batch.

    ``x`` (N, C, H, W) in ``[0, 1]``; ``y`` (N,); ``eps_t`` the L-infinity radius in pixel units
    (the box is clipped to ``[0, 1]``); ``kappa`` the nominal weight (:func:`ibp_kappa`).
    ``forward`` is the module of the nominal pass (a DDP wrapper; default ``model``); the bounds
    walk ``model``. At ``eps_t == 0`` the bounds are skipped (the loss is the nominal CE) and the
    worst-case logits are the nominal ones. An example whose worst-case logits predict ``y`` is
    IBP-verified at ``eps_t`` (the training statistics show that fraction as "adv" accuracy).

    Raises:
        UserError: a layer IBP does not support (named).
    """
    fwd = forward if forward is not None else model
    with batch_statistics(model) as stats:
        logits = fwd(x)  # (N, K), updates the BatchNorm running statistics once
    nominal = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if eps_t <= 0:
        return nominal, logits, logits
    margins = margin_lower_bounds(model, input_box(x, eps_t), y, bn_stats=stats)  # (N, K)
    worst = -margins  # column y is 0
    robust = F.cross_entropy(worst, y, label_smoothing=label_smoothing)
    return kappa * nominal + (1.0 - kappa) * robust, logits, worst
