"""The sampled black-box probe of ``--masking sample``: Square on a budgeted, seeded,
class-balanced sample of the white-box survivors (sizes from :mod:`evaluations.engine.masking_budget`).

Every sampled (example, epsilon) row runs in one Square Attack call with a budget per row
(:func:`attacks.square.square_attack`; Andriushchenko et al., ECCV 2020), so the probe costs one
batched forward per query instead of one Square run per epsilon. A row counts as broken only when
its point is re-classified wrong, lies in ``[0, 1]`` and in the row's ball; breaks are then
confirmed as in the full probe (APGD-CE, then APGD-T must both fail, see
:func:`evaluations.engine.masking_probes.probe_black_box`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from attacks import frozen_eval
from attacks.norms import perturbation_norm
from attacks.square import square_attack
from attacks.tensors import generator_or_global
from evaluations.engine.masking_budget import (
    DETECT_SHARE,
    allocate,
    class_balanced_sample,
    detection_power,
    detection_threshold,
)
from evaluations.engine.masking_checks import TOLERANCE, white_box_robust
from evaluations.engine.masking_probes import black_box_attack, white_box_survivors
from evaluations.engine.protocols import MaskingProbes
from evaluations.record.cells import CellRecord

__all__ = ["probe_black_box_sample", "sample_rows"]

#: relative slack of the ball check (float32 rounding of ``x + delta``)
_BALL_RTOL = 1e-5


def sample_rows(
    white: np.ndarray,
    labels: np.ndarray,
    epsilons: Sequence[float],
    budget: int,
    *,
    seed: int,
    key: str,
    tolerance: float = TOLERANCE,
) -> tuple[int, list[np.ndarray]]:
    """(queries, chosen example indices per epsilon) for the survivors ``white`` bool (K, N).

    ``labels`` (N,) for class balance; ``key`` (checkpoint/norm) and ``seed`` seed the draw, one
    generator per epsilon, so a sample does not change when another epsilon's does. Epsilons with
    at most ``tolerance * N`` survivors get no sample (check 2 could not flag there).
    """
    n = int(white.shape[1])
    # an epsilon whose survivors are within the tolerance could not flag even if all were
    # breakable: it is not sampled (its budget goes to the others)
    counts = [
        int(white[k].sum()) if e > 0 and white[k].sum() > tolerance * n else 0
        for k, e in enumerate(epsilons)
    ]
    queries, sizes = allocate(counts, budget)
    chosen = []
    for k, size in enumerate(sizes):
        rng = np.random.default_rng([int(seed), k, zlib.crc32(key.encode())])
        surv = np.flatnonzero(white[k])
        chosen.append(class_balanced_sample(surv, labels[surv], size, rng) if size else surv[:0])
    return queries, chosen


def probe_black_box_sample(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cells: Sequence[CellRecord],
    probes: MaskingProbes,
    *,
    budget: int,
    seed: int,
    tolerance: float = TOLERANCE,
) -> tuple[list[dict[str, Any]], int]:
    """Rows of check 2 from a sampled Square probe on one checkpoint's norm group, and the
    forward passes (of one example) it spent on Square's queries.

    ``x`` (N, C, H, W), ``y`` (N,): the grid's examples in the grid's order; ``cells``: that
    checkpoint's cells of one norm; ``budget``: forward passes of one example
    (:func:`evaluations.engine.masking_budget.probe_budget`). Each row: ``checkpoint, norm, attack,
    epsilon, n, survivors, sample, queries, broken_by_black_box, broken`` (confirmed, in the
    sample), ``estimated_broken`` (``broken * survivors / sample``), ``threshold`` and ``power``
    (:func:`evaluations.engine.masking_budget.detection_power` at 10 %; ``None`` where 10 % of the
    survivors would be within the tolerance, so even the full probe would not flag).
    """
    white = white_box_robust(cells)
    norm = cells[0].norm if cells else "linf"
    if white is None or black_box_attack(probes, norm) is None:
        return [], 0
    eps = list(cells[0].outcome.epsilons)
    n = int(white.shape[1])
    labels = y.detach().cpu().numpy()[:n]
    key = f"{cells[0].checkpoint}/{norm}"
    queries, chosen = sample_rows(
        white, labels, eps, budget, seed=seed, key=key, tolerance=tolerance
    )
    params = {**dict(probes.black_box_params), "n_queries": queries}
    attack = black_box_attack(
        MaskingProbes(probes.examples, probes.black_box, tuple(params.items())), norm
    )
    assert attack is not None  # the same attack as above, with the allocated queries
    idx = torch.as_tensor(np.concatenate(chosen), dtype=torch.long, device=x.device)  # (R,)
    row_eps = torch.as_tensor(
        np.concatenate([np.full(c.size, e) for c, e in zip(chosen, eps, strict=True)]),
        dtype=x.dtype,
        device=x.device,
    )  # (R,)
    broken = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)
    spent = 0
    if idx.numel():
        xs, ys = x[idx], y[idx]  # (R, C, H, W), (R,)
        with frozen_eval(model), torch.no_grad():
            run = square_attack(
                model,
                xs,
                ys,
                row_eps,
                norm=attack.norm,
                params=attack,
                gen=generator_or_global(attack.seed, x.device),
            )
            adv = run.adversarials
            wrong = model(adv).argmax(1) != ys
        dist = perturbation_norm(adv - xs, attack.norm)
        inside = (dist <= row_eps * (1 + _BALL_RTOL) + 1e-7) & (adv >= 0).flatten(1).all(1)
        inside &= (adv <= 1).flatten(1).all(1)
        broken = run.broken & wrong & inside  # (R,)
        spent = int(run.queries.sum()) + idx.numel()
    rows: list[dict[str, Any]] = []
    start = 0
    for k, e in enumerate(eps):
        size = int(chosen[k].size)
        part = slice(start, start + size)
        start += size
        if e <= 0:
            continue
        survivors = int(white[k].sum())
        hit = idx[part][broken[part]]
        confirmed = white_box_survivors(model, x[hit], y[hit], float(e), norm) if hit.numel() else 0
        threshold = detection_threshold(n, survivors, size, tolerance)
        rows.append(
            {
                "checkpoint": cells[0].checkpoint,
                "norm": norm,
                "attack": attack.name,
                "epsilon": float(e),
                "n": n,
                "survivors": survivors,
                "sample": size,
                "queries": queries,
                "broken_by_black_box": int(hit.numel()),
                "broken": confirmed,
                "estimated_broken": confirmed * survivors / size if size else 0.0,
                "threshold": threshold,
                # power where a DETECT_SHARE of the survivors is more than the tolerance
                "power": detection_power(size, threshold, DETECT_SHARE)
                if size and DETECT_SHARE * survivors > tolerance * n
                else None,
            }
        )
    return rows, spent
