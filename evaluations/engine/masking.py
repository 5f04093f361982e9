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
2. ``black_box_beats_white_box``: a gradient-free attack (class attribute ``gradient_free``)
   breaks examples that every white-box attack left robust at the same epsilon (flag above
   :data:`TOLERANCE` of the examples, with the count). Its evidence depends on ``--masking``
   (:data:`MASKING_MODES`): ``sample`` (the default) reuses a cascade's own Square stage where the
   grid ran one (AutoAttack under ``standard`` / ``thorough``: no second Square pass) and
   otherwise runs Square on a budgeted, seeded, class-balanced sample of the survivors
   (:mod:`evaluations.engine.masking_sample`, sized by :mod:`evaluations.engine.masking_budget`:
   at most a quarter of the grid's own work, with the sample's power stated); ``full`` runs the
   probe on every survivor of the first probe examples at every epsilon; ``off`` runs no probe.
3. ``zero_gradients``: zero or non-finite input gradients of the loss for more than
   :data:`TOLERANCE` of the examples.
4. ``randomness``: two forward passes of the same inputs (eval mode) disagree: the evaluation then
   needs EOT (Athalye et al. 2018).
5. ``not_converged``: where a stronger run (``thorough``) is lower than the ``standard`` attacks by
   more than the 95 % Wilson interval.
6. ``batch_dependence``: an example's eval-mode logits change when it is evaluated alone or in a
   differently composed batch (batch statistics at test time, TRADES#3): its robust accuracy then
   depends on the batch size and company. Probed once per checkpoint.

The cheap probes (checks 1, 3, 4, 6) and the full probe use the first ``Protocol.probes.examples``
test examples of each checkpoint, once per checkpoint; the sampled probe draws from all of them.
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

from attacks import AttackConfigError
from attacks.registry import attack_class
from evaluations.engine.cell_attack import evaluation_tensors
from evaluations.engine.grid import GridRun
from evaluations.engine.masking_budget import (
    DETECT_SHARE,
    FLOOR_ROWS,
    FORWARDS_PER_GRAD,
    MIN_QUERIES,
    SHARE,
    cheap_forwards,
    probe_budget,
)
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
    black_box_attack,
    probe_batch_dependence,
    probe_black_box,
    probe_gradients,
    probe_randomness,
    probe_unbounded,
)
from evaluations.engine.masking_sample import probe_black_box_sample
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
from robustbench_sparse.errors import UserError

__all__ = [
    "CHECKS",
    "DEFAULT_MASKING",
    "MASKING_MODES",
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
    "masking_mode",
    "probe_batch_dependence",
    "probe_black_box",
    "probe_black_box_sample",
    "probe_gradients",
    "probe_randomness",
    "probe_unbounded",
    "randomness_check",
    "run_checks",
    "square_stage",
    "unbounded_budget",
    "unbounded_check",
]

logger = logging.getLogger(__name__)


#: ``--masking`` / ``[attack] masking``: the black-box probe of check 2 in full (every survivor
#: of the first ``Protocol.probes.examples`` examples, every epsilon: the probe before issue 30),
#: sampled to a budget (a cascade's own Square stage is reused where the grid ran one, the sampled
#: probe of :mod:`evaluations.engine.masking_sample` covers the rest), or off (no black-box probe;
#: the cheap checks 1, 3, 4, 6 and the grid's own gradient-free attacks still count)
MASKING_MODES = ("full", "sample", "off")
#: the mode when none is given (every protocol: under standard / thorough it reuses AutoAttack's
#: Square stage, under quick it samples)
DEFAULT_MASKING = "sample"


def masking_mode(mode: str | None) -> str:
    """``mode`` checked (``None``: :data:`DEFAULT_MASKING`); a :class:`UserError` otherwise."""
    if mode is None:
        return DEFAULT_MASKING
    if mode not in MASKING_MODES:
        raise UserError(
            f"--masking {mode!r} ([attack] masking): expected one of {', '.join(MASKING_MODES)}"
        )
    return mode


def square_stage(cell: CellRecord) -> bool:
    """Whether ``cell`` is a cascade whose gradient-free stage (AutoAttack's Square) recorded its
    per-example breaks (``outcome.black_box_broken``): then that stage is check 2's evidence."""
    if cell.gradient_free or cell.outcome.black_box_broken is None:
        return False
    try:
        specs = getattr(attack_class(cell.attack, backend=cell.backend), "stage_specs", ())
    except (KeyError, ValueError, AttackConfigError):
        return False
    return any(_gradient_free(name) for name, _ in specs)


def _gradient_free(name: str) -> bool:
    try:
        return bool(getattr(attack_class(name), "gradient_free", False))
    except (KeyError, ValueError, AttackConfigError):
        return False


@dataclass
class MaskingInputs:
    """One checkpoint's probe inputs: its model and the grid's examples in the grid's order (the
    cheap probes and the full probe use the first ``probes.examples`` of them; on one device)."""

    name: str
    model: nn.Module
    x: Tensor  # (N, C, H, W)
    y: Tensor  # (N,)


def run_checks(
    inputs: Sequence[MaskingInputs],
    cells: Sequence[CellRecord],
    protocol: Protocol | None,
    probes: MaskingProbes,
    *,
    mode: str = "full",
    seed: int = 0,
) -> dict[str, Any]:
    """Probe every checkpoint (once each) and evaluate the six checks; the sidecar's record.

    ``mode``: one of :data:`MASKING_MODES`; ``seed``: the sampled probe's draw.
    """
    t0 = time.perf_counter()
    unbounded: list[dict[str, Any]] = []
    grads: list[dict[str, Any]] = []
    rand: list[dict[str, Any]] = []
    batch: list[dict[str, Any]] = []
    black: list[dict[str, Any]] = []
    evidence: list[dict[str, Any]] = []
    budgets: list[dict[str, Any]] = []
    for item in inputs:
        mine = [c for c in cells if c.checkpoint == item.name]
        x, y = item.x[: probes.examples], item.y[: probes.examples]  # (m, ...), (m,)
        grads.append({"checkpoint": item.name, **probe_gradients(item.model, x, y)})
        rand.append({"checkpoint": item.name, **probe_randomness(item.model, x)})
        batch.append({"checkpoint": item.name, **probe_batch_dependence(item.model, x)})
        norms = sorted({c.norm for c in mine})
        for norm in norms:
            unbounded.append(
                {"checkpoint": item.name, "norm": norm, **probe_unbounded(item.model, x, y, norm)}
            )
        reused = {c.norm: c.attack for c in mine if square_stage(c)}
        for norm in norms:
            how = "none (--masking off)" if mode == "off" else f"probe ({mode})"
            if mode == "sample" and norm in reused:
                how = f"{reused[norm]} square stage"
            elif mode != "off" and black_box_attack(probes, norm) is None:
                how = f"none (no gradient-free {norm} attack registered)"
            evidence.append({"checkpoint": item.name, "norm": norm, "evidence": how})
        if mode == "full":
            black += probe_black_box(item.model, x, y, mine, probes)
        elif mode == "sample":
            need = [n for n in norms if n not in reused and black_box_attack(probes, n)]
            cheap = cheap_forwards(
                int(x.shape[0]),
                sum(int(r["grad_evals"]) for r in unbounded if r["checkpoint"] == item.name),
            )
            # the work of the norms the probe covers (a norm AutoAttack covered is paid for)
            work = sum(int(c.outcome.grad_evals) for c in mine if c.norm in need)
            budget = probe_budget(work, cheap, len(need))
            spent = 0
            for norm in need:
                group = [c for c in mine if c.norm == norm]
                rows, used = probe_black_box_sample(
                    item.model, item.x, item.y, group, probes, budget=budget // len(need), seed=seed
                )
                black += rows
                spent += used
            budgets.append(
                {
                    "checkpoint": item.name,
                    "grid_grad_evals": work,
                    "cheap_forwards": cheap,
                    "budget_forwards": budget if need else 0,
                    "spent_forwards": spent,
                    "norms_probed": need,
                }
            )
    checks = {
        "unbounded_budget": unbounded_check(unbounded),
        "black_box_beats_white_box": black_box_check(cells, black),
        "zero_gradients": gradient_check(grads),
        "randomness": randomness_check(rand),
        "not_converged": convergence_from_cells(cells),
        "batch_dependence": batch_dependence_check(batch),
    }
    if mode == "off" and checks["black_box_beats_white_box"]["flagged"] is None:
        checks["black_box_beats_white_box"]["detail"] = (
            "not checked: --masking off (no black-box probe) and no gradient-free attack in the grid"
        )
    names = flagged(checks)
    for name in names:
        logger.warning("gradient-masking check %s: %s", name, checks[name]["detail"])
    return {
        "flags": names,
        "checks": checks,
        "tolerance": TOLERANCE,
        "probe_examples": max((min(int(i.x.shape[0]), probes.examples) for i in inputs), default=0),
        "protocol": protocol.label if protocol is not None else None,
        "mode": mode,
        "evidence": evidence,
        **({"sample": sample_record(black, budgets)} if mode == "sample" else {}),
        "seconds": time.perf_counter() - t0,
    }


def sample_record(
    rows: Sequence[dict[str, Any]], budgets: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The ``masking.sample`` record: the budget rule, per checkpoint what it allowed and spent,
    and a one-line summary of sample sizes and power (the report prints it)."""
    sampled = [r for r in rows if "sample" in r and r["survivors"] > 0]
    sampled = [r for r in sampled if r["sample"] > 0]
    powers = [float(r["power"]) for r in sampled if r.get("power") is not None]
    power = (
        f"if >= {DETECT_SHARE:.0%} of the survivors are black-box breakable, each epsilon's "
        f"sample flags it with probability {min(powers):.2f}-{max(powers):.2f}"
        if powers
        else f"at no epsilon would {DETECT_SHARE:.0%} of the survivors exceed the tolerance"
    )
    if sampled:
        summary = (
            f"sampled {sum(r['sample'] for r in sampled)} of {sum(r['survivors'] for r in sampled)}"
            f" white-box survivors over {len(sampled)} (checkpoint, norm, epsilon) at "
            f"{min(r['queries'] for r in sampled)}-{max(r['queries'] for r in sampled)} Square "
            f"queries each; {power}"
        )
    else:
        summary = (
            "nothing to sample: no epsilon had more white-box survivors than the tolerance (or "
            "every norm had a cascade's Square stage)"
        )
    return {
        "rule": f"budget = {SHARE:g} x {FORWARDS_PER_GRAD:g} forwards x the grid's gradient "
        f"evaluations - the cheap probes' forwards (at least {FLOOR_ROWS} x {MIN_QUERIES} per "
        "norm); seeded class-balanced sample of the survivors per epsilon",
        "share": SHARE,
        "forwards_per_grad": FORWARDS_PER_GRAD,
        "detect_share": DETECT_SHARE,
        "checkpoints": list(budgets),
        "summary": summary,
    }


def masking_fingerprint(
    grid_run: GridRun,
    checkpoints: Sequence[LoadedCheckpoint],
    grid: GridConfig,
    protocol: Protocol | None,
    probes: MaskingProbes,
    examples: int,
    mode: str = "full",
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
        "mode": mode,
        "seed": grid.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_masking(
    grid_run: GridRun,
    checkpoints: Sequence[LoadedCheckpoint],
    data: Dataset[Any] | Mapping[str, Dataset[Any]],
    grid: GridConfig,
    protocol: Protocol | None,
    previous: Mapping[str, Any] | None = None,
    mode: str | None = None,
) -> dict[str, Any]:
    """Run :func:`run_checks` for a finished grid (probes on the first examples of each dataset).

    ``mode``: ``--masking`` (:data:`MASKING_MODES`; ``None``: :data:`DEFAULT_MASKING`).

    ``previous`` is the ``masking`` record of the last sidecar in the same results directory: when
    its ``fingerprint`` (:func:`masking_fingerprint`) matches, it is returned as is (with its
    original ``seconds``, which the compute time adds up) instead of probing again.
    """
    mode = masking_mode(mode)
    probes = protocol.probes if protocol is not None else MaskingProbes()
    m = probes.examples if grid.limit is None else min(probes.examples, grid.limit)
    fingerprint = masking_fingerprint(grid_run, checkpoints, grid, protocol, probes, m, mode)
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
            # the cells); the cheap and the full probes use the first m of them.
            cache[key] = evaluation_tensors(
                data[key] if isinstance(data, Mapping) else data, grid.limit
            )
        x, y = cache[key]
        inputs.append(MaskingInputs(ckpt.name, ckpt.model.to(device), x.to(device), y.to(device)))
    try:
        record = run_checks(inputs, grid_run.cells, protocol, probes, mode=mode, seed=grid.seed)
        return {**record, "fingerprint": fingerprint}
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
    masking: str | None = None,
) -> dict[str, Any]:
    """The sidecar fields of issue 11: ``protocol``, ``paper_deviations``, ``masking``, ``security``.

    ``previous_masking``: the last sidecar's ``masking`` record in the same directory (reused when
    nothing it depends on changed, see :func:`evaluate_masking`); ``masking``: ``--masking``
    (:data:`MASKING_MODES`, ``None``: :data:`DEFAULT_MASKING`). Under ``torchrun`` only rank 0
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
            grid_run, checkpoints, data, grid, protocol, previous=previous_masking, mode=masking
        ),
        "security": {
            "eps_max": eps_max,
            "summary": summary.to_dict("records"),
            "definition": "median minimal norm over all examples (0 for clean-misclassified, "
            "inverted-CDF median) with a 1000-resample percentile bootstrap 95 % interval; auc = "
            "mean robust accuracy of the step curve over [0, eps_max]",
        },
    }
