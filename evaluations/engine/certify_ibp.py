"""Verified accuracy by interval bound propagation (Gowal et al. 2018) at L-infinity radii.

An example is *verified* at ``eps`` when the IBP lower bound of every margin ``logit_y - logit_j``
(``j != y``, with the elision of the last layer, :func:`robustbench_sparse.bounds.margin_lower_bounds`)
over the box ``[x - eps, x + eps]`` clipped to ``[0, 1]`` is ``> 0`` and the clean prediction is
correct. It is a sound certificate: no input of the box is misclassified (up to float rounding of
about 1e-6 relative on the margins). It is loose: normally trained networks verify almost nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from robustbench_sparse.bounds import input_box, interval_bounds, margin_lower_bounds
from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)

__all__ = ["verified_ibp"]

_MISMATCH_TOL = 1e-4  # relative to the logit scale: the walker must reproduce model(x)


def _check_epsilons(epsilons: Sequence[float]) -> list[float]:
    eps = [float(e) for e in epsilons]
    if not eps:
        raise UserError("IBP certification needs at least one eps (e.g. --eps 0.05,0.1)")
    for e in eps:
        if not math.isfinite(e) or e < 0 or e >= 1:
            raise UserError(
                f"IBP eps {e:g} is not in [0, 1) pixel units (L-infinity); did you mean "
                f"{e:g}/255 = {e / 255:.4g}?"
                if e >= 1
                else f"IBP eps {e!r} is not in [0, 1) pixel units (L-infinity); use e.g. 0.1"
            )
    return eps


def _verify_batch(model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]) -> Tensor:
    """(len(eps), n) verified flags of one batch ``x`` (n, C, H, W), ``y`` (n,)."""
    logits = model(x).float()  # (n, K)
    lo, hi = interval_bounds(model, (x, x))  # zero radius: must be the model's own logits
    scale = 1.0 + float(logits.abs().max())
    gap = float(torch.maximum((lo - logits).abs(), (hi - logits).abs()).max())
    if gap > _MISMATCH_TOL * scale:
        raise RuntimeError(
            f"IBP's walk of {type(model).__name__} differs from its forward by {gap:.3g}: "
            "the model's forward is not the structure IBP walks; no certificate is given"
        )
    correct = logits.argmax(1) == y  # (n,)
    rows = []
    for e in epsilons:
        margins = margin_lower_bounds(model, input_box(x, e), y)  # (n, K), column y is 0
        others = torch.ones_like(margins, dtype=torch.bool).scatter(1, y[:, None], False)
        rows.append(correct & torch.where(others, margins > 0, True).all(1))
    return torch.stack(rows)  # (len(eps), n)


def verified_ibp(
    model: nn.Module, x: Tensor, y: Tensor, epsilons: Sequence[float], *, batch_size: int
) -> Tensor:
    """Which examples IBP verifies at each L-infinity ``eps``.

    Args:
        model: a registry network (e.g. a loaded checkpoint's ``NormalizedModel``); evaluated in
            eval mode (its mode is restored), BatchNorm with running statistics.
        x: (N, C, H, W) inputs in ``[0, 1]`` pixel scale, on the model's device.
        y: (N,) int64 labels.
        epsilons: L-infinity radii in ``[0, 1]`` pixel units; the box is clipped to ``[0, 1]``.
        batch_size: examples bounded at once.

    Returns:
        bool tensor (len(epsilons), N) on ``x``'s device: True where the clean prediction is
        correct and the IBP lower bound of ``logit_y - logit_j`` is ``> 0`` for every ``j != y``.

    Raises:
        UserError: no eps, an eps outside ``[0, 1)``, a layer type IBP does not support (named),
            ``batch_size < 1``.
        RuntimeError: the walk does not reproduce the model's logits at zero radius.
    """
    eps = _check_epsilons(epsilons)
    if batch_size < 1:
        raise UserError(f"batch size must be >= 1 (got {batch_size})")
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            for start in range(0, int(x.shape[0]), batch_size):
                xb = x[start : start + batch_size].float()
                out.append(_verify_batch(model, xb, y[start : start + batch_size], eps))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros((len(eps), 0), dtype=torch.bool, device=x.device)
    verified = torch.cat(out, dim=1)
    logger.info(
        "IBP verified accuracy %s at eps %s (n=%d)",
        [round(float(v), 4) for v in verified.float().mean(1)],
        eps,
        int(x.shape[0]),
    )
    return verified
