"""The extra probes the masking checks need beyond the grid: gradient health, randomness of the
forward pass, batch dependence of the predictions, an unbounded attack, and a black-box (Square)
attack confirmed by APGD-CE / APGD-T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks import AttackConfigError, AttackKind, frozen_eval, get_attack, list_attacks
from attacks.registry import attack_class
from evaluations.engine.masking_checks import unbounded_budget, white_box_robust
from evaluations.engine.protocols import (
    MaskingProbes,
)
from evaluations.record.cells import CellRecord

PROBE_BATCH = 500
#: attacks only the thorough protocol adds (their effect is what check 5 measures)


def probe_gradients(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, int]:
    """Input gradients of the cross-entropy loss, ``x`` (N, C, H, W), ``y`` (N,).

    Returns ``{n, zero, nonfinite}``: examples whose gradient is all zero / has a non-finite value.
    """
    zero = nonfinite = 0
    with frozen_eval(model), torch.enable_grad():
        for xb, yb in zip(x.split(PROBE_BATCH), y.split(PROBE_BATCH), strict=True):
            xb = xb.detach().clone().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xb), yb, reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            flat = grad.reshape(grad.shape[0], -1)  # (B, d)
            bad = ~torch.isfinite(flat).all(dim=1)
            nonfinite += int(bad.sum())
            zero += int(((flat == 0).all(dim=1) & ~bad).sum())
    return {"n": int(x.shape[0]), "zero": zero, "nonfinite": nonfinite}


@torch.no_grad()
def probe_randomness(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """Two eval-mode forward passes of ``x`` (N, C, H, W): differing predictions and logits."""
    disagree, diff = 0, 0.0
    with frozen_eval(model):
        for xb in x.split(PROBE_BATCH):
            a, b = model(xb), model(xb)  # (B, classes) each
            disagree += int((a.argmax(1) != b.argmax(1)).sum())
            d = (a - b).abs()
            d = torch.where(torch.isnan(d), torch.full_like(d, math.inf), d)
            diff = max(diff, float(d.max()) if d.numel() else 0.0)
    return {"n": int(x.shape[0]), "disagree": disagree, "max_logit_diff": diff}


#: how many probe examples are also run one at a time by :func:`probe_batch_dependence`
ALONE_EXAMPLES = 32


@torch.no_grad()
def probe_batch_dependence(model: nn.Module, x: Tensor) -> dict[str, Any]:
    """Logits of ``x`` (N, C, H, W) in eval mode, in their batch vs in other company.

    Three evaluations of the same examples: (a) in probe batches, as the grid evaluates them;
    (b) the first :data:`ALONE_EXAMPLES` one at a time (batch of 1); (c) all of them in reversed
    order and batches of half the size (a differently composed batch). A model whose eval-mode
    output depends on the batch (BatchNorm without running statistics, ``track_running_stats=
    False``, or any layer mixing examples) gives each example a different logit in (b) and (c)
    than in (a) (TRADES#3; its robust accuracy then depends on the batch size and on which
    examples the attack happens to batch together).

    Returns ``{n, alone, changed, max_logit_diff, logit_scale}``: ``changed`` examples whose
    prediction differs between (a) and (b) or (c), the largest absolute logit difference and the
    largest absolute logit of (a) (to judge the difference against).
    """
    with frozen_eval(model):
        ref = torch.cat([model(xb) for xb in x.split(PROBE_BATCH)])  # (N, classes)
        k = min(ALONE_EXAMPLES, x.shape[0])
        alone = torch.cat([model(x[i : i + 1]) for i in range(k)]) if k else ref[:0]  # (k, classes)
        half = max(1, min(PROBE_BATCH, x.shape[0]) // 2)
        rev = torch.cat([model(xb) for xb in x.flip(0).split(half)]).flip(0)  # (N, classes)
    diff_alone = (alone - ref[:k]).abs()
    diff_rev = (rev - ref).abs()
    worst = max(
        _finite_max(diff_alone),
        _finite_max(diff_rev),
    )
    changed = ref.argmax(1) != rev.argmax(1)  # (N,)
    changed[:k] |= ref[:k].argmax(1) != alone.argmax(1)
    return {
        "n": int(x.shape[0]),
        "alone": k,
        "changed": int(changed.sum()),
        "max_logit_diff": worst,
        "logit_scale": _finite_max(ref.abs()),
    }


def _finite_max(t: Tensor) -> float:
    """Largest value of ``t``; NaN counts as infinitely large; 0 for an empty tensor."""
    if t.numel() == 0:
        return 0.0
    t = torch.where(torch.isnan(t), torch.full_like(t, math.inf), t)
    return float(t.max())


def _for_norm(name: str, norm: str) -> str:
    """The registry name of attack ``name`` for ``norm``: ``apgd-ce``, ``apgd-ce-l2``, ..."""
    return name if norm == "linf" else f"{name}-{norm}"


def _strongest_white_box(norm: str) -> str:
    available = set(list_attacks("native"))
    for name in ("apgd-ce", "pgd"):
        full = _for_norm(name, norm)
        if full in available:
            return full
    raise AttackConfigError(f"no white-box {norm} attack registered")


def probe_unbounded(model: nn.Module, x: Tensor, y: Tensor, norm: str) -> dict[str, Any]:
    """Run the strongest white-box attack at the unbounded budget.

    Returns ``{attack, epsilon, n, robust, grad_evals}`` (``grad_evals``: the work it cost).
    """
    name = _strongest_white_box(norm)
    eps = unbounded_budget(norm, tuple(x.shape[1:]))
    result = get_attack(name)(model, x, y, epsilons=[eps], warn_units=False)  # deliberate
    return {
        "attack": name,
        "epsilon": eps,
        "n": int(x.shape[0]),
        "robust": int((~result.success[0]).sum()),
        "grad_evals": int(result.grad_evals),
    }


#: the white-box stages of AutoAttack that confirm a black-box break (untargeted CE, then
#: targeted DLR): a weak white-box protocol (e.g. quick's PGD-20 or C&W) is not gradient masking
_CONFIRM = ("apgd-ce", "apgd-t")


def white_box_survivors(model: nn.Module, x: Tensor, y: Tensor, eps: float, norm: str) -> int:
    """How many of ``x`` (n, ...) every confirming white-box attack leaves robust at ``eps``."""
    available = set(list_attacks("native"))
    names = [_for_norm(n, norm) for n in _CONFIRM]
    names = [n for n in names if n in available] or [_strongest_white_box(norm)]
    for name in names:
        if x.shape[0] == 0:
            break
        result = get_attack(name)(model, x, y, epsilons=[eps], warn_units=False)
        keep = ~result.success[0]
        x, y = x[keep], y[keep]
    return int(x.shape[0])


def black_box_attack(probes: MaskingProbes, norm: str) -> Any | None:
    """The probe's gradient-free attack for ``norm`` (None: not registered, or not fixed-budget)."""
    name = _for_norm(probes.black_box, norm)
    if name not in list_attacks("native"):
        return None

    cls = attack_class(name)
    valid = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    params = {k: v for k, v in probes.black_box_params if k in valid}
    attack = get_attack(name, **params)
    if attack.kind is not AttackKind.FIXED_BUDGET:
        return None
    return attack


def probe_black_box(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cells: Sequence[CellRecord],
    probes: MaskingProbes,
) -> list[dict[str, Any]]:
    """Run the gradient-free probe on the white-box survivors among ``x`` (the first m examples).

    ``cells``: the grid cells of one checkpoint (one or both norms); at each positive epsilon the
    probe attacks only the examples every white-box attack of that norm left robust. Examples it
    breaks are attacked once more by APGD-CE and then APGD-T (AutoAttack's white-box stages):
    ``broken`` counts those both leave robust (``broken_by_black_box`` counts all), so a weak
    white-box protocol alone does not raise the flag.
    """
    rows: list[dict[str, Any]] = []
    m = int(x.shape[0])
    for norm in sorted({c.norm for c in cells}):
        group = [c for c in cells if c.norm == norm]
        white = white_box_robust(group)
        attack = black_box_attack(probes, norm)
        if white is None or attack is None:
            continue
        eps = group[0].outcome.epsilons
        for k, e in enumerate(eps):
            survivors = np.flatnonzero(white[k, :m])
            if e <= 0:
                continue
            broken = confirmed = 0
            if survivors.size:
                idx = torch.as_tensor(survivors, device=x.device)
                result = attack(model, x[idx], y[idx], epsilons=[float(e)])
                hit = idx[result.success[0].to(idx.device)]
                broken = int(hit.numel())
                if broken:
                    confirmed = white_box_survivors(model, x[hit], y[hit], float(e), norm)
            rows.append(
                {
                    "checkpoint": group[0].checkpoint,
                    "norm": norm,
                    "attack": attack.name,
                    "epsilon": float(e),
                    "n": m,
                    "survivors": int(survivors.size),
                    "broken_by_black_box": broken,
                    "broken": confirmed,
                }
            )
    return rows
