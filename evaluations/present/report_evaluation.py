"""Report sections of the evaluation itself: protocol + gradient-masking checks (at the top),
attack parameters that differ from the papers' defaults, and the minimum-norm security curves.

Read from ``results.json`` (keys ``protocol``, ``masking``, ``paper_deviations``, ``security``)
and ``min_norms.parquet``; a results directory of an older run without them gets a one-line note.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evaluations.present.document import Block, Bullets, Heading, Paragraph, Table
from evaluations.present.ordering import norm_label
from evaluations.record.security import read_min_norm_table, security_summary

__all__ = [
    "attack_blocks",
    "deviation_blocks",
    "masking_blocks",
    "masking_off_blocks",
    "security_blocks",
]

_CHECK_TITLES = {
    "unbounded_budget": "1. unbounded budget leaves ~0 robust (white-box)",
    "black_box_beats_white_box": "2. black-box never beats every white-box attack",
    "zero_gradients": "3. input gradients finite and non-zero",
    "randomness": "4. deterministic forward pass",
    "not_converged": "5. stronger protocol within the interval",
    "batch_dependence": "6. predictions independent of the batch",
}


def _result(flag: Any) -> str:
    if flag is None:
        return "not checked"
    return "FLAG" if flag else "ok"


def masking_blocks(side: dict[str, Any]) -> list[Block]:
    """Protocol and the gradient-masking checks: what every number below was produced by."""
    blocks: list[Block] = [Heading(2, "Evaluation protocol and gradient-masking checks")]
    protocol = side.get("protocol")
    if isinstance(protocol, dict):
        blocks.append(
            Paragraph(
                f"Protocol {protocol.get('label')}: {protocol.get('summary')}. Known to be "
                f"equivalent to: {protocol.get('equivalent_to')}."
            )
        )
    else:
        blocks.append(Paragraph("No protocol recorded (results of an older version)."))
    masking = side.get("masking")
    if not isinstance(masking, dict) or not isinstance(masking.get("checks"), dict):
        blocks.append(Paragraph("No gradient-masking checks recorded."))
        return blocks
    flags = masking.get("flags") or []
    blocks.append(
        Paragraph(
            "No check raised a flag."
            if not flags
            else f"WARNING: {len(flags)} check(s) raised a flag ({', '.join(flags)}): the robust "
            "accuracies below may overestimate the truth (gradient masking or a too-weak attack)."
        )
    )
    blocks += _probe_blocks(masking)
    rows = [
        [_CHECK_TITLES.get(name, name), _result(c.get("flagged")), str(c.get("detail", ""))]
        for name, c in masking["checks"].items()
        if isinstance(c, dict)
    ]
    blocks.append(
        Table(
            ["check", "result", "detail"],
            rows,
            caption=f"Probes on the first {masking.get('probe_examples')} test examples per "
            f"checkpoint; checks 1-3 flag above {100 * float(masking.get('tolerance', 0.01)):g} % "
            "of the examples. Flags never change a number.",
        )
    )
    return blocks


def _probe_blocks(masking: dict[str, Any]) -> list[Block]:
    """How check 2's black-box evidence was obtained (``--masking``), and the sample's power."""
    mode = masking.get("mode")
    if mode is None:  # a record made before --masking existed: the full probe
        return []
    evidence = masking.get("evidence") or []
    by = "; ".join(
        f"{e.get('checkpoint')}/{e.get('norm')}: {e.get('evidence')}"
        for e in evidence
        if isinstance(e, dict)
    )
    text = f"Black-box evidence (--masking {mode}): {by or 'none'}."
    sample = masking.get("sample")
    if isinstance(sample, dict):
        spent = [c for c in sample.get("checkpoints", []) if isinstance(c, dict)]
        text += f" Sampled probe: {sample.get('summary')}. Its {sample.get('rule')}"
        if spent:
            text += "; forwards spent / allowed: " + ", ".join(
                f"{c.get('checkpoint')} {c.get('spent_forwards')} / {c.get('budget_forwards')}"
                for c in spent
            )
        text += "."
    return [Paragraph(text)]


def masking_off_blocks(side: dict[str, Any]) -> list[Block]:
    """A warning for the top of the report when the black-box probe was turned off."""
    masking = side.get("masking")
    if not isinstance(masking, dict) or masking.get("mode") != "off":
        return []
    return [
        Paragraph(
            "Gradient-masking black-box probe OFF (--masking off): check 2 (a black-box attack "
            "breaks what every white-box attack missed) only reads gradient-free attacks the grid "
            "ran itself; the cheap checks still ran."
        )
    ]


def deviation_blocks(side: dict[str, Any]) -> list[Block]:
    """The attack parameters that differ from the papers' defaults."""
    rows = side.get("paper_deviations")
    if not isinstance(rows, list):
        return []
    blocks: list[Block] = [Heading(2, "Attack parameters that differ from the papers' defaults")]
    if not rows:
        blocks.append(Paragraph("Every compared parameter equals its paper's default."))
        return blocks
    blocks.append(
        Table(
            ["attack", "parameter", "used", "paper", "paper source"],
            [
                [
                    str(r["attack"]),
                    str(r["parameter"]),
                    str(r["used"]),
                    str(r["paper"]),
                    r["source"],
                ]
                for r in rows
            ],
        )
    )
    return blocks


def _restarts(record: dict[str, Any]) -> tuple[str, str]:
    """(restarts, targets) of one ``attacks`` record: per stage for a cascade, "–" for none."""
    stages = record.get("stages")
    if isinstance(stages, list):
        restarts = " · ".join(f"{s.get('stage')} {s.get('restarts', 1)}" for s in stages)
        targets = " · ".join(f"{s['stage']} {s['targets']}" for s in stages if "targets" in s)
        return restarts, targets or "–"
    params = record.get("params") or {}
    return str(params.get("restarts", "–")), str(record.get("targets", "–"))


def attack_blocks(side: dict[str, Any]) -> list[Block]:
    """What every attack ran: restarts and targets next to each number, few-class substitutions.

    Read from the sidecar's ``attacks`` record (:mod:`evaluations.engine.attack_settings`); an
    older results directory without it gives no table.
    """
    records = side.get("attacks")
    if not isinstance(records, list) or not records:
        return []
    rows = []
    for r in records:
        restarts, targets = _restarts(r)
        subs = r.get("substitutions") or []
        rows.append(
            [
                str(r.get("attack")),
                str(r.get("backend")),
                norm_label(str(r.get("norm"))),
                str(r.get("classes")),
                restarts,
                targets,
                "; ".join(f"{s['stage']} → {s['ran']}: {s['reason']}" for s in subs) or "–",
            ]
        )
    return [
        Heading(2, "Attacks"),
        Table(
            ["attack", "backend", "norm", "classes", "restarts", "targets", "substituted"],
            rows,
            caption="Restarts: independent random starts per example and epsilon (per stage for "
            "AutoAttack). pyautoattack's AutoAttack(version='custom') keeps its constructor's 5 "
            "APGD restarts where 'standard' and this product run 1: docs/attacks.md says which "
            "flags reproduce each. On fewer than 4 classes the DLR-loss stages are substituted.",
        ),
    ]


def _norm_text(value: float, digits: int = 4) -> str:
    return "> found" if math.isinf(value) else f"{value:.{digits}g}"


def security_blocks(root: Path, side: dict[str, Any], eps_max: dict[str, float]) -> list[Block]:
    """Median minimal norm (bootstrap 95 % interval) and AUC per checkpoint and norm."""
    table = read_min_norm_table(root)
    if table.empty:
        return []
    recorded = side.get("security")
    recorded = recorded if isinstance(recorded, dict) else {}
    summary = security_summary(table, recorded.get("eps_max") or eps_max)
    records: list[dict[Any, Any]] = summary.to_dict("records")
    rows = [
        [
            str(r["checkpoint"]),
            norm_label(str(r["norm"])),
            f"{_norm_text(float(r['median_norm']))} [{_norm_text(float(r['median_low']))}, "
            f"{_norm_text(float(r['median_high']))}]",
            f"{100 * float(r['auc']):.1f} %" if math.isfinite(float(r["auc"])) else "–",
            f"{float(r['eps_max']):g}",
            f"{int(r['found'])}/{int(r['clean_correct'])}",
        ]
        for r in records
    ]
    return [
        Heading(2, "Minimum-norm security curves"),
        Paragraph(
            "Per example the smallest perturbation any attack found (minimum-norm attacks: exact "
            "distance; fixed-budget attacks: the smallest grid ε they broke it at), in "
            "min_norms.parquet / .csv. The step curve at every ε is drawn in the security_curves "
            "figures; at each grid ε it equals the worst case."
        ),
        Table(
            ["checkpoint", "norm", "median minimal norm [95 % CI]", "AUC", "AUC up to ε", "broken"],
            rows,
            align=["l", "l", "r", "r", "r", "r"],
            caption="Median over all examples (0 for clean-misclassified; '> found' when fewer "
            "than half were broken), 1,000-resample bootstrap (seed 0); AUC = mean robust "
            "accuracy over [0, ε] of the step curve; broken = clean-correct examples broken by "
            "any attack.",
        ),
        Bullets(
            [
                "A larger median minimal norm and AUC mean a more robust checkpoint; compare "
                "checkpoints within one protocol only."
            ]
        ),
    ]
