"""Gradient-masking checks: flags, never numbers.

A robust accuracy is only as good as its attacks; gradient masking (shattered, vanishing or
stochastic gradients) makes white-box attacks fail while the model is not robust (Athalye, Carlini
& Wagner, ICML 2018; Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Croce & Hein,
ICML 2020). Six checks run after every grid; each is a pure function of per-example outcomes or of
a probe's counts, and writes one entry ``{"flagged": bool | None, "detail": str, ...}``
(``None``: not checked, with the reason) into ``results.json["masking"]`` and the report's top:

1. ``unbounded_budget``: the strongest white-box attack of the protocol (APGD-CE when registered,
   else PGD) at a budget that allows any image (Linf 1.0; L2 = the input diameter ``sqrt(d)``)
   must leave ~0 robust accuracy (flag above :data:`TOLERANCE`).
2. ``black_box_beats_white_box``: a gradient-free attack (class attribute ``gradient_free``; the
   protocol's probe runs Square on the white-box survivors) breaks examples that every white-box
   attack left robust at the same epsilon (flag above :data:`TOLERANCE` of the examples, with the
   count).
3. ``zero_gradients``: zero or non-finite input gradients of the loss for more than
   :data:`TOLERANCE` of the examples.
4. ``randomness``: two forward passes of the same inputs (eval mode) disagree: the evaluation then
   needs EOT (Athalye et al. 2018).
5. ``not_converged``: where a stronger run (``thorough``) is lower than the ``standard`` attacks by
   more than the 95 % Wilson interval.
6. ``batch_dependence``: an example's eval-mode logits change when it is evaluated alone or in a
   differently composed batch (batch statistics at test time, TRADES#3): its robust accuracy then
   depends on the batch size and company. Probed once per checkpoint.

Probes use the first ``Protocol.probes.examples`` test examples of each checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn
from torch.utils.data import Dataset

from evaluations.engine.cell_attack import evaluation_tensors
from evaluations.engine.grid import GridRun
from evaluations.engine.masking_checks import (
    CHECKS,
    TOLERANCE,
    batch_dependence_check,
    black_box_check,
    convergence_check,
    convergence_from_cells,
    convergence_from_results,
    flagged,
    gradient_check,
    randomness_check,
    unbounded_budget,
    unbounded_check,
)
from evaluations.engine.masking_probes import (
    probe_batch_dependence,
    probe_black_box,
    probe_gradients,
    probe_randomness,
    probe_unbounded,
)
from evaluations.engine.protocols import (
    MaskingProbes,
    Protocol,
    describe,
    paper_deviations,
)
from evaluations.engine.spec import GridConfig
from evaluations.record.cells import CellRecord
from evaluations.record.security import security_summary
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.devices import resolve_device

__all__ = [
    "CHECKS",
    "TOLERANCE",
    "batch_dependence_check",
    "black_box_check",
    "convergence_check",
    "convergence_from_cells",
    "convergence_from_results",
    "evaluate_masking",
    "evaluation_evidence",
    "flagged",
    "gradient_check",
    "masking_fingerprint",
    "probe_batch_dependence",
    "probe_black_box",
    "probe_gradients",
    "probe_randomness",
    "probe_unbounded",
    "randomness_check",
    "unbounded_budget",
    "unbounded_check",
]

logger = logging.getLogger(__name__)


@dataclass
class MaskingInputs:
    """One checkpoint's probe inputs: its model and the first probe examples (on one device)."""

    name: str
    model: nn.Module
    x: Tensor  # (m, C, H, W)
    y: Tensor  # (m,)


def run_checks(
    inputs: Sequence[MaskingInputs],
    cells: Sequence[CellRecord],
    protocol: Protocol | None,
    probes: MaskingProbes,
) -> dict[str, Any]:
    """Probe every checkpoint and evaluate the six checks; the sidecar's ``masking`` record."""
    t0 = time.perf_counter()
    unbounded: list[dict[str, Any]] = []
    grads: list[dict[str, Any]] = []
    rand: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    black: list[dict[str, Any]] = []
    for item in inputs:
        mine = [c for c in cells if c.checkpoint == item.name]
        grads.append({"checkpoint": item.name, **probe_gradients(item.model, item.x, item.y)})
        rand.append({"checkpoint": item.name, **probe_randomness(item.model, item.x)})
        batch.append({"checkpoint": item.name, **probe_batch_dependence(item.model, item.x)})
        for norm in sorted({c.norm for c in mine}):
            unbounded.append(
                {
                    "checkpoint": item.name,
                    "norm": norm,
                    **probe_unbounded(item.model, item.x, item.y, norm),
                }
            )
        black += probe_black_box(item.model, item.x, item.y, mine, probes)
    checks = {
        "unbounded_budget": unbounded_check(unbounded),
        "black_box_beats_white_box": black_box_check(cells, black),
        "zero_gradients": gradient_check(grads),
        "randomness": randomness_check(rand),
        "not_converged": convergence_from_cells(cells),
        "batch_dependence": batch_dependence_check(batch),
    }
    names = flagged(checks)
    for name in names:
        logger.warning("gradient-masking check %s: %s", name, checks[name]["detail"])
    return {
        "flags": names,
        "checks": checks,
        "tolerance": TOLERANCE,
        "probe_examples": max((int(i.x.shape[0]) for i in inputs), default=0),
        "protocol": protocol.label if protocol is not None else None,
        "seconds": time.perf_counter() - t0,
    }


def masking_fingerprint(
    grid_run: GridRun,
    checkpoints: Sequence[LoadedCheckpoint],
    grid: GridConfig,
    protocol: Protocol | None,
    probes: MaskingProbes,
    examples: int,
) -> str:
    """What the masking record depends on: checkpoint weights, the cells' outcomes, the probes.

    Two runs with the same fingerprint get the same record (every probe is seeded), so a no-op
    re-run reuses the stored one instead of probing again.
    """
    cols = ["checkpoint", "attack", "backend", "norm", "epsilon", "n", "robust_correct", "params"]
    table = grid_run.results
    rows = (
        table[cols].sort_values(cols[:5]).astype(str).to_numpy().tolist()
        if not table.empty and set(cols) <= set(table.columns)
        else []
    )
    payload = {
        "checkpoints": [[c.name, c.meta.get("weights_sha256") or str(c.path)] for c in checkpoints],
        "cells": rows,
        "probes": [probes.examples, probes.black_box, [list(p) for p in probes.black_box_params]],
        "checks": list(CHECKS),  # a record made before a check existed is not reused
        "examples": examples,
        "limit": grid.limit,
        "protocol": protocol.label if protocol is not None else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_masking(
    grid_run: GridRun,
    checkpoints: Sequence[LoadedCheckpoint],
    data: Dataset[Any] | Mapping[str, Dataset[Any]],
    grid: GridConfig,
    protocol: Protocol | None,
    previous: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run :func:`run_checks` for a finished grid (probes on the first examples of each dataset).

    ``previous`` is the ``masking`` record of the last sidecar in the same results directory: when
    its ``fingerprint`` (:func:`masking_fingerprint`) matches, it is returned as is (with its
    original ``seconds``, which the compute time adds up) instead of probing again.
    """
    probes = protocol.probes if protocol is not None else MaskingProbes()
    m = probes.examples if grid.limit is None else min(probes.examples, grid.limit)
    fingerprint = masking_fingerprint(grid_run, checkpoints, grid, protocol, probes, m)
    if previous is not None and previous.get("fingerprint") == fingerprint:
        logger.info("gradient-masking checks reused (same checkpoints, attack cells and probes)")
        return dict(previous)
    device = resolve_device(grid.device)
    cache: dict[str, tuple[Tensor, Tensor]] = {}
    inputs: list[MaskingInputs] = []
    for ckpt in checkpoints:
        key = ckpt.info.name
        if key not in cache:
            # Exactly the grid's examples in the grid's order (the probes compare per example with
            # the cells), then the first m of them.
            xs, ys = evaluation_tensors(
                data[key] if isinstance(data, Mapping) else data, grid.limit
            )
            cache[key] = (xs[:m], ys[:m])
        x, y = cache[key]
        inputs.append(MaskingInputs(ckpt.name, ckpt.model.to(device), x.to(device), y.to(device)))
    try:
        return {**run_checks(inputs, grid_run.cells, protocol, probes), "fingerprint": fingerprint}
    finally:
        for ckpt in checkpoints:
            ckpt.model.to("cpu")


def evaluation_evidence(
    grid_run: GridRun,
    checkpoints: Sequence[LoadedCheckpoint],
    data: Dataset[Any] | Mapping[str, Dataset[Any]],
    grid: GridConfig,
    protocol: Protocol | None,
    attacks: Sequence[str],
    previous_masking: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar fields of issue 11: ``protocol``, ``paper_deviations``, ``masking``, ``security``.

    ``previous_masking``: the last sidecar's ``masking`` record in the same directory (reused when
    nothing it depends on changed, see :func:`evaluate_masking`). Under ``torchrun`` only rank 0
    probes (the other ranks return ``{}``: they write nothing).
    """
    if not rdist.is_main():
        return {}
    used = {s.name: s.build().params() for s in grid.attacks}
    eps_max = {
        str(norm): float(g["epsilon"].max())
        for norm, g in grid_run.results.groupby("norm", sort=False)
    }
    summary = security_summary(grid_run.security, eps_max, seed=grid.seed)
    return {
        "protocol": describe(protocol, attacks),
        "paper_deviations": paper_deviations(used),
        "masking": evaluate_masking(
            grid_run, checkpoints, data, grid, protocol, previous=previous_masking
        ),
        "security": {
            "eps_max": eps_max,
            "summary": summary.to_dict("records"),
            "definition": "median minimal norm over all examples (0 for clean-misclassified, "
            "inverted-CDF median) with a 1000-resample percentile bootstrap 95 % interval; auc = "
            "mean robust accuracy of the step curve over [0, eps_max]",
        },
    }
