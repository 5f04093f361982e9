"""Report sections about the run: figures with captions, invariant checks, provenance, compute time
and how to reproduce.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from attacks.params import format_epsilon
from evaluations.present.document import FAIL, PASS, Block, Code, Figure, Heading, Paragraph, Table
from evaluations.present.ordering import NORM_LABEL, norm_label
from evaluations.present.report_format import FIGURE_ORDER, fmt_seconds
from evaluations.record.results import (
    FIGURES_DIR,
    RESULTS_CSV,
    RESULTS_PARQUET,
)


def _figure_caption(stem: str) -> str:
    norm = stem.rsplit("_", 1)[-1]
    label = norm_label(norm)
    if stem.startswith("robustness_curves"):
        return (
            f"Robust accuracy vs ε ({label}): one row per attack and, with several granularities, "
            "one column per granularity (dense baseline in black in every panel); colour = "
            "sparsity target; bands are 95% Wilson intervals. Each row's ε axis stops at the first "
            "budget from which every model stays at or below 1% (the tables list every budget)."
        )
    if stem.startswith("robustness_vs_cost"):
        return (
            f"Robustness vs modelled hardware cost ({label}): worst-case robust accuracy at the "
            "anchor budget (top) and the AUC (bottom) against the MAC speed-up with zero weights "
            "skipped, with dead filters removed, and the weight bytes (values + position codes); "
            "MODELLED from exact MAC counts, not measured. Dashed: the Pareto front."
        )
    if stem.startswith("accuracy_vs_sparsity"):
        return (
            f"Worst-case robust accuracy vs achieved sparsity ({label}) at the discriminating "
            "budgets (the anchor, where dense is nearest 50%, and its grid neighbours), per "
            "granularity; the dense baseline is the black star and dotted line."
        )
    if stem.startswith("clean_vs_robust"):
        return (
            f"Clean vs worst-case robust accuracy at the anchor ε ({label}); labels give "
            "granularity and sparsity target (wi70 = window 70%)."
        )
    if stem.startswith("security_curves"):
        return (
            f"Security curves ({label}): robust accuracy at every ε from the smallest perturbation "
            "any attack found per example (minimum-norm attacks between grid points); markers are "
            "the grid's worst case, which the curve meets at every grid ε."
        )
    if stem.startswith("cw_ecdf"):
        return (
            "Fraction of clean-correct examples with a minimum-norm (C&W) adversarial within L2 "
            "distance r; 'never found' examples are excluded from the curve and counted in the legend."
        )
    return stem.replace("_", " ")


def _figure_rank(path: Path) -> tuple[int, int, str]:
    """Figure kinds in a fixed order, L∞ before L2 within a kind."""
    norms = list(NORM_LABEL)
    suffix = path.stem.rsplit("_", 1)[-1]
    norm_rank = norms.index(suffix) if suffix in norms else len(norms)
    for i, prefix in enumerate(FIGURE_ORDER):
        if path.stem.startswith(prefix):
            return (i, norm_rank, path.stem)
    return (len(FIGURE_ORDER), norm_rank, path.stem)


def figure_blocks(root: Path) -> list[Block]:
    fig_dir = root / FIGURES_DIR
    pngs = sorted(fig_dir.glob("*.png"), key=_figure_rank) if fig_dir.is_dir() else []
    if not pngs:
        return [Heading(2, "Figures"), Paragraph("No figures were produced.")]
    blocks: list[Block] = [Heading(2, "Figures")]
    for p in pngs:
        blocks.append(Figure(p, _figure_caption(p.stem), f"{FIGURES_DIR}/{p.name}"))
    return blocks


def check_blocks(
    checks: dict[str, Any], source: str, pvf: dict[str, Any], pvf_source: str
) -> list[Block]:
    rows = [
        [name, PASS if c.get("passed") else FAIL, str(c.get("detail", ""))]
        for name, c in checks.items()
    ]
    blocks: list[Block] = [
        Heading(2, "Checks"),
        Table(["invariant", "result", "detail"], rows, caption=f"Invariants {source}."),
        Heading(3, "PGD vs FGSM"),
        Paragraph(
            f"{PASS if pvf.get('passed') else FAIL}: {pvf.get('detail', '')} (reported, not "
            f"enforced; {pvf_source}). A PGD weaker than FGSM usually means too few steps or a "
            "step size that does not scale with ε."
        ),
    ]
    violations = pvf.get("violations") or []
    if violations:
        blocks.append(
            Table(
                ["checkpoint", "norm", "ε", "PGD (%)", "FGSM (%)", "excess (points)"],
                [
                    [
                        str(v.get("checkpoint")),
                        str(v.get("norm")),
                        format_epsilon(
                            float(v.get("epsilon", math.nan)),
                            style="report",
                            norm=str(v.get("norm")),
                        ),
                        f"{float(v.get('pgd_robust_accuracy_points', math.nan)):.1f}",
                        f"{float(v.get('fgsm_robust_accuracy_points', math.nan)):.1f}",
                        f"{float(v.get('excess_points', math.nan)):.1f}",
                    ]
                    for v in violations
                ],
                ["l", "l", "r", "r", "r", "r"],
            )
        )
    return blocks


def provenance_blocks(side: dict[str, Any]) -> list[Block]:
    blocks: list[Block] = [Heading(2, "Provenance")]
    facts = []
    for key, label in (
        ("git_revision", "git revision"),
        ("device", "device"),
        ("total_seconds", "total time"),
        ("seeds", "seeds"),
    ):
        if key not in side or side[key] is None:
            facts.append([label, "not recorded"])
        elif key == "total_seconds":
            facts.append([label, time_text(side).split(": ", 1)[1]])
        elif isinstance(side[key], dict | list):
            facts.append([label, json.dumps(side[key], sort_keys=True)])
        else:
            facts.append([label, str(side[key])])
    blocks.append(Table(["fact", "value"], facts))
    versions = side.get("versions")
    if isinstance(versions, dict) and versions:
        blocks.append(Heading(3, "Versions"))
        blocks.append(
            Table(["package", "version"], [[str(k), str(v)] for k, v in versions.items()])
        )
    if side.get("config") is not None:
        rows = _flatten_config(side["config"])
        blocks.append(Heading(3, "Configuration"))
        blocks.append(
            Table(
                ["setting", "value"],
                rows,
                caption="The full configuration these results were produced with (results.json).",
                collapsed=f"{len(rows)} settings (click to expand)",
            )
        )
    return blocks


def _flatten_config(config: Any, prefix: str = "") -> list[list[str]]:
    """``{"a": {"b": 1}}`` -> ``[["a.b", "1"]]``; lists of scalars stay on one line."""
    if isinstance(config, dict):
        if not config and prefix:
            return [[prefix, "{}"]]
        out: list[list[str]] = []
        for key in sorted(config, key=str):
            out += _flatten_config(config[key], f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(config, list) and any(isinstance(v, dict | list) for v in config):
        out = []
        for i, v in enumerate(config):
            out += _flatten_config(v, f"{prefix}[{i}]")
        return out
    return [[prefix or "(value)", json.dumps(config, sort_keys=True, default=str)]]


def time_text(side: dict[str, Any]) -> str:
    """``Compute time: 43.2 min (training 5.1 min + attacks 38.1 min; 3 invocations, ...)``."""
    total = fmt_seconds(side.get("total_seconds"))
    parts = side.get("compute_seconds")
    runs = side.get("invocations")
    if not isinstance(parts, dict):  # an older sidecar: the wall time of one invocation
        return f"Total time: {total}"
    masking = parts.get("masking")
    text = (
        f"Compute time: {total} (training {fmt_seconds(parts.get('training'))} + attacks "
        f"{fmt_seconds(parts.get('attacks'))}"
        + (f" + gradient-masking checks {fmt_seconds(masking)}" if masking else "")
        + ", summed over every finished epoch and attack cell"
    )
    if isinstance(runs, list) and runs:
        last = runs[-1] if isinstance(runs[-1], dict) else {}
        text += (
            f"; {len(runs)} invocation(s), the last took {fmt_seconds(last.get('wall_seconds'))} "
            f"with {last.get('threads', '?')} thread(s)"
        )
    return text + ")"


def reproduce_blocks(command: str | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "How to reproduce")]
    if command:
        blocks.append(Paragraph("Run from the repository root (same versions as in Provenance):"))
        blocks.append(Code(command, "bash"))
    else:
        blocks.append(Paragraph("No command was recorded with these results."))
    return blocks


def figures_stale(root: Path) -> bool:
    fig_dir = root / FIGURES_DIR
    pngs = list(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    if not pngs:
        return True
    sources = [root / f for f in (RESULTS_PARQUET, RESULTS_CSV, "min_norms.parquet")]
    newest = max((s.stat().st_mtime for s in sources if s.is_file()), default=0.0)
    return min(p.stat().st_mtime for p in pngs) < newest
