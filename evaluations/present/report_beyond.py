"""The report section "Beyond the attack": certified accuracy and common corruptions.

Reads ``certified.csv`` (randomized smoothing, Cohen et al. 2019; interval bound propagation, Gowal
et al. 2018; one row per checkpoint, method and radius) and ``corruptions.csv``
(:mod:`evaluations.record.corruptions`) from the results directory; a file that is absent adds
nothing, both absent: no section. The section gives the headline additions (per checkpoint:
certified accuracy at a stated radius per method, and the mean corruption accuracy, each with its
95 % interval and n), the corruption errors against the dense model, and the figures of
:mod:`evaluations.present.plots_beyond`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from evaluations.present.document import Block, Figure, Heading, Paragraph, Table
from evaluations.present.plots_beyond import plot_beyond
from evaluations.record.corruptions import corruption_summary, read_corruptions

__all__ = [
    "CERTIFIED_CSV",
    "beyond_blocks",
    "read_certified_table",
    "stated_radius",
    "write_beyond_report",
]

CERTIFIED_CSV = "certified.csv"
_FIGURES = "figures"
_WHAT = {
    "smoothing": "randomized smoothing (Cohen et al. 2019), L2",
    "ibp": "interval bound propagation (Gowal et al. 2018), L∞",
}


def read_certified_table(root: Path) -> pd.DataFrame | None:
    """``certified.csv`` of a results directory (columns of the issue-28 contract), or ``None``."""
    path = root / CERTIFIED_CSV
    return pd.read_csv(path) if path.is_file() else None


def stated_radius(radii: pd.Series) -> float:
    """The radius the headline quotes: the smallest positive radius of the grid (0 if none)."""
    positive = sorted({float(r) for r in radii if float(r) > 0})
    return positive[0] if positive else 0.0


def _pct(v: Any) -> str:
    return "–" if v != v else f"{100 * v:.1f} %"


def _interval(v: float, lo: float, hi: float, n: int) -> str:
    if v != v:
        return "–"
    return f"{100 * v:.1f} % [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"


def _certified_columns(cert: pd.DataFrame) -> dict[str, dict[str, str]]:
    """method -> checkpoint -> 'acc [lo, hi] (n)' at the stated radius."""
    out: dict[str, dict[str, str]] = {}
    for method, rows in cert.groupby("method", sort=True):
        r = stated_radius(rows["radius"])
        at = rows[(rows["radius"].astype(float) - r).abs() < 1e-12]
        out[f"{method} @ {r:g}"] = {
            str(x["checkpoint"]): _interval(
                float(x["certified_accuracy"]),
                float(x["certified_accuracy_low"]),
                float(x["certified_accuracy_high"]),
                int(x["n"]),
            )
            for x in at.to_dict("records")
        }
    return out


def _headline(cert: pd.DataFrame | None, summary: pd.DataFrame | None) -> list[Block]:
    cert_cols = _certified_columns(cert) if cert is not None else {}
    names: list[str] = []
    for frame in (summary, cert):
        if frame is not None:
            names += [str(c) for c in frame["checkpoint"]]
    names = list(dict.fromkeys(names))
    by_name = (
        {str(r["checkpoint"]): r for r in summary.to_dict("records")} if summary is not None else {}
    )
    headers = ["checkpoint", *cert_cols]
    if summary is not None:
        headers += ["mean corruption accuracy", "relative mCE"]
    rows = []
    for name in names:
        row = [name, *(col.get(name, "–") for col in cert_cols.values())]
        if summary is not None:
            s = by_name.get(name)
            row += (
                [
                    _interval(s["mean_accuracy"], s["mean_low"], s["mean_high"], int(s["n"])),
                    _pct(s["relative_mce"]),
                ]
                if s is not None
                else ["–", "–"]
            )
        rows.append(row)
    caption = (
        "Certified accuracy at the smallest positive radius of each method's grid (95 % "
        "Clopper-Pearson interval over examples); mean accuracy over the 15 corruptions x the "
        "severities run (95 % Wilson interval at the per-image n, conservative); relative mCE "
        "against the dense model of the same dataset, architecture and training (dense = 100 %)."
    )
    return [Table(headers, rows, align=["l"] + ["r"] * (len(headers) - 1), caption=caption)]


def _corruption_table(summary: pd.DataFrame) -> Table:
    rows = [
        [
            str(s["checkpoint"]),
            str(s["training"]),
            _pct(s["clean_accuracy"]),
            _pct(s["mean_accuracy"]),
            _pct(s["mce"]),
            _pct(s["relative_mce"]),
            str(s["reference"] or "–"),
            str(int(s["cells"])),
        ]
        for s in summary.to_dict("records")
    ]
    return Table(
        [
            "checkpoint",
            "training",
            "clean",
            "mean corruption",
            "mCE",
            "relative mCE",
            "reference",
            "cells",
        ],
        rows,
        align=["l", "l", "r", "r", "r", "r", "l", "r"],
        caption="CE_c = Σ_s E_s,c / Σ_s E^dense_s,c; relative CE_c subtracts each model's clean "
        "error (Hendrycks & Dietterich 2019, the dense model in AlexNet's place).",
    )


def beyond_blocks(root: Path, *, figures: bool = True) -> list[Block]:
    """The section for the results directory ``root`` (empty list: neither file present).

    Draws its figures into ``root/figures`` (``certified_<method>``, ``corruptions_heatmap``);
    ``figures=False`` leaves them to the report's Figures section.
    """
    cert = read_certified_table(root)
    corr = read_corruptions(root)
    if cert is None and corr is None:
        return []
    summary = corruption_summary(corr) if corr is not None and len(corr) else None
    blocks: list[Block] = [
        Heading(2, "Beyond the attack"),
        Paragraph(
            "An attack's robust accuracy is an upper bound: a stronger attack could lower it. A "
            "certified accuracy is a lower bound that no attack within the radius can break "
            "(for randomized smoothing: of the smoothed classifier, with probability 1 − α). "
            "Corruption accuracy measures something else: robustness to natural shifts."
        ),
    ]
    blocks += _headline(cert, summary)
    if cert is not None:
        methods = ", ".join(_WHAT.get(str(m), str(m)) for m in sorted(set(cert["method"])))
        blocks.append(Paragraph(f"Certification methods: {methods}."))
    if summary is not None:
        blocks += [
            Heading(3, "Common corruptions"),
            Paragraph(
                "Corrupted images are generated (the imagecorruptions package's formulas with "
                "the CIFAR-10-C parameters; snow, frost, elastic_transform and spatter with the "
                "package's ImageNet-C ones; images under 32 px are corrupted at 32 px and "
                "reduced), not the published CIFAR-10-C files: these numbers are not "
                "RobustBench corruptions-track figures."
            ),
            _corruption_table(summary),
        ]
    fig_dir = root / _FIGURES
    for path in plot_beyond(cert, corr, fig_dir):
        if figures and path.suffix == ".png":
            blocks.append(Figure(path, path.stem.replace("_", " "), f"{_FIGURES}/{path.name}"))
    return blocks


def write_beyond_report(root: Path, *, command: str | None = None) -> tuple[Path, Path]:
    """``report.md`` / ``report.html`` of a run with no attack results (``rbs attack --protocol
    corruptions``): the section alone, then how to reproduce. Returns ``(md, html)``."""
    from evaluations.present.document import Code, render_html, render_markdown
    from robustbench_sparse.atomic import atomic_write_text

    title = "Beyond the attack"
    blocks = beyond_blocks(root)
    if command:
        blocks += [Heading(2, "How to reproduce"), Code(command, "bash")]
    md = atomic_write_text(root / "report.md", render_markdown(blocks))
    html = atomic_write_text(root / "report.html", render_html(blocks, title))
    return md, html
