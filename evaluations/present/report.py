"""The report of a results directory: ``report.md`` and a self-contained ``report.html``.

Both are rendered from one small document model (headings, paragraphs, lists, tables, code blocks,
figures), so they always say the same thing. The HTML embeds its figures as base64 PNG data URIs and
its CSS inline: it can be mailed or archived as a single file. Every piece of text that comes from
the results is escaped (HTML entities in the HTML, Markdown punctuation in the Markdown).

Sections: sparsity cost in robustness (the headline: difference to dense at the discriminating
budget, see :mod:`evaluations.record.budgets`), summary, clean accuracy and sparsity, relative to dense
(why these budgets, and the difference with its interval at each), worst-case robust accuracy per
norm (with 95 % Wilson intervals), robust accuracy per attack, robustness AUC, figures, consistency checks
(invariants from ``results.json`` or recomputed, PGD vs FGSM), provenance, how to reproduce.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from evaluations.record.budgets import (
    BudgetChoice,
    choose_budgets,
    epsilon_label,
    relative_to_dense,
)
from evaluations.record.metrics import (
    WORST_CASE,
    check_invariants,
    pgd_vs_fgsm,
    robustness_auc,
    wilson_interval,
)
from evaluations.record.results import (
    RESULTS_CSV,
    RESULTS_PARQUET,
    read_results,
    read_sidecar,
)
from robustbench_sparse.atomic import atomic_write_text

__all__ = ["REPORT_HTML", "REPORT_MD", "markdown_table", "write_report"]

logger = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
_FIGURES_DIR = (
    "figures"  # same as evaluations.present.plots.FIGURES_DIR (not imported: matplotlib is lazy)
)

_NORM_LABEL = {"linf": "L∞", "l2": "L2"}
_ATTACK_ORDER = ("fgsm", "fgm", "pgd", "apgd", "cw", WORST_CASE)
_GRANULARITY_ORDER = ("dense", "window", "channel", "combined", "unstructured")
_FIGURE_ORDER = (
    "robustness_curves",
    "security_curves",
    "accuracy_vs_sparsity",
    "clean_vs_robust",
    "cw_ecdf",
)


#: The denominator of every "achieved" sparsity in the report (LoadedCheckpoint.sparsity_achieved).
_ACHIEVED_NOTE = (
    "Achieved sparsity = zero weights / all weights of the pruned layers (the first convolution and "
    "the classifier count only when pruned), measured on the checkpoint's weights, next to the "
    "target."
)


def _rows(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as namedtuples, typed loosely (pandas types cell values as a broad scalar union)."""
    return iter(frame.itertuples(index=False))


# --------------------------------------------------------------------------- document model


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: list[str] = field(default_factory=list)  # "l" / "r" per column (default "l")
    caption: str = ""
    collapsed: str = ""  # HTML: a collapsed <details> block with this summary line


@dataclass(frozen=True)
class Code:
    text: str
    lang: str = ""


@dataclass(frozen=True)
class Figure:
    path: Path
    caption: str
    rel: str  # path relative to the report, for Markdown


Block = Heading | Paragraph | Bullets | Table | Code | Figure

_PASS, _FAIL = "PASS", "FAIL"


# --------------------------------------------------------------------------- Markdown rendering

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|#])")


def _md(text: str) -> str:
    """Escape Markdown punctuation so names like ``window_70`` render literally."""
    return _MD_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def markdown_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], align: Sequence[str] = ()
) -> str:
    """A GitHub-flavoured Markdown table with padded columns (cells are escaped)."""
    head = [_md(h) for h in headers]
    body = [[_md(c) for c in row] for row in rows]
    widths = [max([len(head[i]), 3, *(len(r[i]) for r in body)]) for i in range(len(head))]
    aligns = [align[i] if i < len(align) else "l" for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if a == "r" else c.ljust(w)
            for c, w, a in zip(cells, widths, aligns, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    sep = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if a == "r" else "-" * w
            for w, a in zip(widths, aligns, strict=True)
        )
        + " |"
    )
    return "\n".join([line(head), sep, *(line(r) for r in body)])


def render_markdown(blocks: Sequence[Block]) -> str:
    """Render the document model as Markdown."""
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append("#" * b.level + " " + _md(b.text))
        elif isinstance(b, Paragraph):
            parts.append(_md(b.text))
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {_md(item)}" for item in b.items))
        elif isinstance(b, Table):
            table = markdown_table(b.headers, b.rows, b.align)
            parts.append(table + (f"\n\n*{_md(b.caption)}*" if b.caption else ""))
        elif isinstance(b, Code):
            fence = "````" if "```" in b.text else "```"
            parts.append(f"{fence}{b.lang}\n{b.text}\n{fence}")
        else:
            parts.append(f"![{_md(b.path.stem)}]({b.rel})\n\n*{_md(b.caption)}*")
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- HTML rendering

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2rem auto; padding: 0 1.5rem; line-height: 1.5; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin-top: 2.2rem; }
table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; vertical-align: top; }
th { background: #f6f8fa; text-align: left; }
td.r, th.r { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
caption { caption-side: bottom; text-align: left; color: #57606a; font-size: .85rem;
          padding-top: .3rem; }
pre { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 6px; padding: .8rem;
      overflow-x: auto; font-size: .85rem; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
figure { margin: 1.2rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .85rem; }
.pass { color: #1a7f37; font-weight: 600; }
details summary { cursor: pointer; color: #0969da; }
.fail { color: #cf222e; font-weight: 600; }
"""


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _cell_html(text: str, tag: str, align: str) -> str:
    cls = ' class="r"' if align == "r" else ""
    content = _h(text)
    if text in (_PASS, _FAIL):
        content = f'<span class="{text.lower()}">{content}</span>'
    return f"<{tag}{cls}>{content}</{tag}>"


def render_html(blocks: Sequence[Block], title: str) -> str:
    """Render the document model as a self-contained HTML page (inline CSS, embedded PNGs)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{_h(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            out.append(f"<p>{_h(b.text)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            aligns = [b.align[i] if i < len(b.align) else "l" for i in range(len(b.headers))]
            rows = [f"<details><summary>{_h(b.collapsed)}</summary>"] if b.collapsed else []
            rows.append("<table>")
            if b.caption:
                rows.append(f"<caption>{_h(b.caption)}</caption>")
            rows.append(
                "<thead><tr>"
                + "".join(_cell_html(h, "th", a) for h, a in zip(b.headers, aligns, strict=True))
                + "</tr></thead><tbody>"
            )
            for r in b.rows:
                rows.append(
                    "<tr>"
                    + "".join(_cell_html(c, "td", a) for c, a in zip(r, aligns, strict=True))
                    + "</tr>"
                )
            rows.append("</tbody></table>")
            if b.collapsed:
                rows.append("</details>")
            out.append("\n".join(rows))
        elif isinstance(b, Code):
            out.append(f"<pre><code>{_h(b.text)}</code></pre>")
        else:
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{_h(b.path.stem)}">'
                f"<figcaption>{_h(b.caption)}</figcaption></figure>"
            )
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- formatting helpers


def _pct(value: Any, digits: int = 1) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return f"{100.0 * v:.{digits}f}" if math.isfinite(v) else "–"


def _fmt_eps(eps: float, norm: str) -> str:
    short = f"{eps:g}"
    if norm == "linf" and eps > 0 and len(short) > 6:
        k = eps * 255.0
        if abs(k - round(k)) < 1e-6:
            return f"{round(k)}/255"
    return f"{eps:.4g}"


def _fmt_seconds(seconds: Any) -> str:
    try:
        s = float(seconds)
    except (TypeError, ValueError):
        return str(seconds)
    if not math.isfinite(s):
        return "–"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def _norm_label(norm: str) -> str:
    return _NORM_LABEL.get(norm, norm)


def _norms(df: pd.DataFrame) -> list[str]:
    """Norms present, L∞ first."""
    order = list(_NORM_LABEL)
    return sorted(
        {str(n) for n in df["norm"].unique()},
        key=lambda n: (order.index(n) if n in order else len(order), n),
    )


def _attack_key(a: str) -> tuple[int, str]:
    return (_ATTACK_ORDER.index(a) if a in _ATTACK_ORDER else len(_ATTACK_ORDER) - 1, a)


def _joined(values: Any) -> str:
    return ", ".join(sorted({str(v) for v in values}))


def _checkpoints(df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint, dense first, then by granularity and sparsity."""
    table = (
        df.groupby("checkpoint", sort=False)
        .agg(
            granularity=("granularity", "first"),
            sparsity_target=("sparsity_target", "first"),
            sparsity_achieved=("sparsity_achieved", "first"),
            n=("n", "max"),
            clean_correct=("clean_correct", "first"),
            clean_accuracy=("clean_accuracy", "first"),
        )
        .reset_index()
    )
    rank = {g: i for i, g in enumerate(_GRANULARITY_ORDER)}
    table["_rank"] = table["granularity"].map(lambda g: rank.get(str(g), len(rank)))
    return (
        table.sort_values(["_rank", "sparsity_target", "checkpoint"])
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


# --------------------------------------------------------------------------- sections


def _summary(df: pd.DataFrame, side: dict[str, Any], checks: dict[str, Any]) -> list[Block]:
    ns = sorted({int(v) for v in df["n"].unique()})
    n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]} (varies by checkpoint)"
    single = df[df["attack"] != WORST_CASE]
    attacks = []
    for attack in sorted({str(a) for a in single["attack"].unique()}, key=_attack_key):
        sub = single[single["attack"] == attack]
        norms = ", ".join(_norm_label(n) for n in _norms(sub))
        attacks.append(f"{attack} ({norms}; backend {_joined(sub['backend'].unique())})")
    grids = []
    for norm in _norms(df):
        eps = sorted({float(e) for e in df.loc[df["norm"] == norm, "epsilon"]})
        grids.append(f"{_norm_label(str(norm))}: " + ", ".join(_fmt_eps(e, str(norm)) for e in eps))
    failed = [name for name, c in checks.items() if not c.get("passed", False)]
    items = [
        f"Dataset: {_joined(df['dataset'])}",
        f"Architecture: {_joined(df['arch'])}",
        f"Examples evaluated (n): {n_text}",
        f"Checkpoints: {df['checkpoint'].nunique()} ({', '.join(_checkpoints(df)['checkpoint'])})",
        f"Attacks: {'; '.join(attacks) if attacks else 'none'}",
        f"Backends: {_joined(single['backend']) if not single.empty else 'none'}",
        f"Epsilon grids: {'; '.join(grids)}",
    ]
    if (df["attack"] == WORST_CASE).any():
        items.append(
            f"'{WORST_CASE}' is the per-example worst case over all attacks of the same norm "
            "(an example counts as robust only if every attack failed)."
        )
    if "total_seconds" in side:
        items.append(_time_text(side))
    items.append(
        "Invariant checks: all passed"
        if not failed
        else f"Invariant checks: {len(failed)} FAILED ({', '.join(failed)}); see Checks"
    )
    # The data may not fit a checkpoint (see evaluations.engine.data_checks): said up front, never hidden.
    for check in side.get("clean_checks") or []:
        if isinstance(check, dict) and check.get("warning"):
            items.append(f"WARNING: {check['warning']}")
    # Epsilons that look like the 0..255 scale, and cells whose attack returned many points that
    # failed verification (their robust accuracy overestimates the truth): never hidden either.
    for message in side.get("epsilon_warnings") or []:
        items.append(f"WARNING: {message}")
    if "unreliable" in df.columns:
        bad = df[df["unreliable"].astype(bool) & (df["attack"] != WORST_CASE)]
        cells = sorted({f"{r.checkpoint} / {r.attack} ({r.backend})" for r in bad.itertuples()})
        if cells:
            items.append(
                f"WARNING: {len(cells)} cell(s) UNRELIABLE (more than 1 % of the attack's points "
                f"failed verification; robust accuracy is overestimated): {', '.join(cells)}"
            )
    return [Heading(2, "Summary"), Bullets(items)]


def _points(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100.0 * value:+.1f}"


def _diff_cell(r: Any) -> str:
    return f"{_points(float(r.difference))} [{_points(float(r.low))}, {_points(float(r.high))}]"


def _interval_note(rel: pd.DataFrame) -> str:
    kinds = sorted({str(k) for k in rel["interval"]})
    paired = any(k.startswith("paired") for k in kinds)
    unpaired = any(k.startswith("unpaired") for k in kinds)
    note = "95% interval of the difference in brackets: "
    if paired:
        note += (
            "Newcombe's score interval for paired proportions (the same test examples are attacked "
            "for every checkpoint; computed from the per-example outcomes in cells/)"
        )
    if unpaired:
        note += ("; where per-example outcomes were missing, " if paired else "") + (
            "Newcombe's hybrid score interval for independent proportions (from the counts; wider)"
        )
    return note + ". An interval excluding 0 is a difference beyond sampling noise of the test set."


def _headline(df: pd.DataFrame, budgets: dict[str, BudgetChoice], rel: pd.DataFrame) -> list[Block]:
    """The table a reader wants first: what sparsity costs relative to dense at the anchor budget."""
    blocks: list[Block] = [Heading(2, "Sparsity cost in robustness")]
    if rel.empty:
        blocks.append(
            Paragraph(
                "No dense baseline and sparse checkpoints with worst-case results side by side: "
                "there is no difference to dense to report."
            )
        )
        return blocks
    ckpts = _checkpoints(df)
    dense = ckpts[ckpts["granularity"] == "dense"]
    dense_clean = float(dense["clean_accuracy"].iloc[0]) if not dense.empty else math.nan
    norms = [n for n in _norms(df) if n in budgets and (rel["norm"] == n).any()]
    facts = []
    for norm in norms:
        c = budgets[norm]
        facts.append(
            f"{_norm_label(norm)} at ε = {epsilon_label(c.anchor, c.grid)}: dense worst case "
            f"{_pct(c.reference_accuracy)} %"
        )
    blocks.append(
        Paragraph(
            f"Difference to the dense baseline in points of accuracy (negative = sparsity costs "
            f"robustness). Dense clean accuracy {_pct(dense_clean)} %; "
            + "; ".join(facts)
            + ". Budgets are chosen from the data (see 'Relative to dense')."
        )
    )
    headers = ["checkpoint", "granularity", "sparsity target (%)", "achieved (%)", "clean Δ"]
    headers += [
        f"{_norm_label(n)} worst case Δ at ε={epsilon_label(budgets[n].anchor, budgets[n].grid)}"
        for n in norms
    ]
    rows = []
    for r in _rows(ckpts):
        if str(r.granularity) == "dense" or float(r.sparsity_target) == 0.0:
            continue
        cells = [
            str(r.checkpoint),
            str(r.granularity),
            _pct(r.sparsity_target),
            _pct(r.sparsity_achieved, 1),
            _points(float(r.clean_accuracy) - dense_clean),
        ]
        for norm in norms:
            at = rel[
                (rel["norm"] == norm)
                & (rel["checkpoint"] == r.checkpoint)
                & rel["anchor"].astype(bool)
            ]
            cells.append(_diff_cell(next(_rows(at))) if not at.empty else "–")
        rows.append(cells)
    blocks.append(
        Table(
            headers,
            rows,
            ["l", "l", "r", "r", "r", *("r" for _ in norms)],
            "Δ = checkpoint minus dense, points of accuracy. "
            + _ACHIEVED_NOTE
            + " "
            + _interval_note(rel),
        )
    )
    return blocks


def _relative(budgets: dict[str, BudgetChoice], rel: pd.DataFrame) -> list[Block]:
    """Per norm: why these budgets, and the difference to dense at each of them."""
    blocks: list[Block] = [Heading(2, "Relative to dense")]
    if not budgets:
        blocks.append(Paragraph("No worst-case results with a nonzero budget."))
        return blocks
    for norm, choice in sorted(budgets.items(), key=lambda kv: (kv[0] != "linf", kv[0])):
        label = _norm_label(norm)
        blocks.append(Heading(3, f"{label}: discriminating budgets"))
        blocks.append(Paragraph(choice.reason))
        sub = rel[rel["norm"] == norm]
        if sub.empty:
            continue
        eps_list = sorted({float(e) for e in sub["epsilon"]})
        headers = ["checkpoint", "granularity", "sparsity target (%)"] + [
            f"Δ at ε={epsilon_label(e, choice.grid)}" + (" (anchor)" if e == choice.anchor else "")
            for e in eps_list
        ]
        rows = []
        for name in dict.fromkeys(str(c) for c in sub["checkpoint"]):
            cur = sub[sub["checkpoint"] == name]
            first = next(_rows(cur))
            cells = [name, str(first.granularity), _pct(first.sparsity_target)]
            by_eps = {float(r.epsilon): r for r in _rows(cur)}
            for e in eps_list:
                r = by_eps.get(e)
                cells.append(
                    "–"
                    if r is None
                    else f"{_diff_cell(r)} ({_pct(r.robust_accuracy)} vs {_pct(r.dense_accuracy)})"
                )
            rows.append(cells)
        blocks.append(
            Table(
                headers,
                rows,
                ["l", "l", "r", *("r" for _ in eps_list)],
                f"Worst-case robust accuracy ({label}) minus dense, points; the checkpoint's and "
                "the dense model's accuracy (%) in parentheses. " + _interval_note(sub),
            )
        )
    return blocks


def _training_methods(df: pd.DataFrame) -> list[Block]:
    """Training method x sparsity matrix at each training budget, and below-budget warnings."""
    from evaluations.record.training_methods import (
        below_budget_warnings,
        has_training_methods,
        robust_overfitting,
        training_budgets,
        training_matrix,
    )

    if not has_training_methods(df):
        return []
    blocks: list[Block] = [
        Heading(2, "Training method x sparsity"),
        Paragraph(
            "Clean / worst-case robust accuracy of every model at the budget it was adversarially "
            "trained for (standard-trained models at the same budget). Rows: training method "
            "(threat model as recorded in the checkpoint); columns: sparsity structure and target."
        ),
    ]
    for norm, eps in training_budgets(df):
        matrix = training_matrix(df, norm, eps)
        if matrix is None:
            continue
        rows = []
        for training, cells in matrix.iterrows():
            row = [str(training)]
            for cell in cells:
                if not isinstance(cell, dict):
                    row.append("–")
                elif cell["robust"] is None:
                    row.append(f"{_pct(cell['clean'])} / not evaluated")
                else:
                    row.append(f"{_pct(cell['clean'])} / {_pct(cell['robust'])}")
            rows.append(row)
        blocks.append(
            Table(
                ["training"] + [str(c) for c in matrix.columns],
                rows,
                ["l"] + ["r"] * len(matrix.columns),
                caption=f"clean / robust accuracy at {_NORM_LABEL.get(norm, norm)} ε = "
                f"{_fmt_eps(eps, norm)} (worst case over the attacks)",
            )
        )
    overfit = robust_overfitting(df)
    if not overfit.empty:
        blocks.append(
            Table(
                ["checkpoint", "training", "best epoch", "best", "last", "best - last"],
                [
                    [
                        str(r.checkpoint),
                        str(r.training),
                        str(r.best_epoch),
                        _pct(r.best),
                        _pct(r.last),
                        _pct(r.gap),
                    ]
                    for r in _rows(overfit)
                ],
                ["l", "l", "r", "r", "r", "r"],
                caption="robust overfitting (Rice et al. 2020): PGD robust accuracy on the held-out "
                "validation split at the training budget, best epoch (saved as best-robust/) vs "
                "the last epoch (the evaluated checkpoint)",
            )
        )
    warnings = below_budget_warnings(df)
    if warnings:
        blocks.append(Paragraph("Warning: evaluated only below the training budget:"))
        blocks.append(Bullets(warnings))
    return blocks


def _clean_table(df: pd.DataFrame) -> list[Block]:
    rows = []
    for r in _rows(_checkpoints(df)):
        low, high = wilson_interval(int(r.clean_correct), int(r.n))
        rows.append(
            [
                str(r.checkpoint),
                str(r.granularity),
                _pct(r.sparsity_target),
                _pct(r.sparsity_achieved, 2),
                f"{_pct(r.clean_accuracy)} [{_pct(low)}, {_pct(high)}]",
                f"{int(r.clean_correct)}/{int(r.n)}",
            ]
        )
    return [
        Heading(2, "Clean accuracy and sparsity"),
        Table(
            [
                "checkpoint",
                "granularity",
                "sparsity target (%)",
                "sparsity achieved (%)",
                "clean accuracy (%) [95% CI]",
                "correct/n",
            ],
            rows,
            ["l", "l", "r", "r", "r", "r"],
            _ACHIEVED_NOTE,
        ),
    ]


def _eps_table(
    df: pd.DataFrame, norm: str, attack: str, *, with_ci: bool, order: list[str]
) -> Table:
    sub = df[(df["norm"] == norm) & (df["attack"] == attack)]
    eps_grid = sorted({float(e) for e in sub["epsilon"]})
    headers = ["checkpoint", "backend", *(f"ε={_fmt_eps(e, norm)}" for e in eps_grid)]
    rows = []
    for name in order:
        for backend in sorted({str(b) for b in sub.loc[sub["checkpoint"] == name, "backend"]}):
            cur = sub[(sub["checkpoint"] == name) & (sub["backend"] == backend)]
            by_eps = {float(r.epsilon): r for r in _rows(cur)}
            cells = [name, backend]
            for e in eps_grid:
                r = by_eps.get(e)
                if r is None:
                    cells.append("–")
                elif with_ci:
                    cells.append(
                        f"{_pct(r.robust_accuracy)} "
                        f"[{_pct(r.robust_accuracy_low)}, {_pct(r.robust_accuracy_high)}]"
                    )
                else:
                    cells.append(_pct(r.robust_accuracy))
            rows.append(cells)
    return Table(headers, rows, ["l", "l", *("r" for _ in eps_grid)])


def _robust_tables(df: pd.DataFrame) -> list[Block]:
    order = list(_checkpoints(df)["checkpoint"])
    blocks: list[Block] = []
    for norm in _norms(df):
        label = _norm_label(norm)
        data = df[df["norm"] == norm]
        attacks = sorted({str(a) for a in data["attack"].unique()}, key=_attack_key)
        singles = [a for a in attacks if a != WORST_CASE]
        blocks.append(Heading(2, f"Robust accuracy, {label}"))
        if WORST_CASE in attacks:
            t = _eps_table(data, norm, WORST_CASE, with_ci=True, order=order)
            blocks.append(
                Table(
                    t.headers,
                    t.rows,
                    t.align,
                    f"Worst-case robust accuracy (%) over {', '.join(singles)} at each ε ({label}); "
                    "95% Wilson interval in brackets.",
                )
            )
        for attack in singles:
            t = _eps_table(data, norm, attack, with_ci=False, order=order)
            blocks.append(Heading(3, f"{attack} ({label})"))
            blocks.append(
                Table(t.headers, t.rows, t.align, f"Robust accuracy (%) under {attack} ({label}).")
            )
    return blocks


def _auc_table(df: pd.DataFrame) -> list[Block]:
    keys: list[tuple[str, str]] = []
    for norm in _norms(df):
        attacks = sorted({str(a) for a in df.loc[df["norm"] == norm, "attack"]}, key=_attack_key)
        # worst case first: it is the headline number
        attacks = sorted(attacks, key=lambda a: a != WORST_CASE)
        keys += [(norm, a) for a in attacks]
    headers = ["checkpoint", "granularity", "sparsity target (%)"]
    headers += [f"{_norm_label(n)} {'worst case' if a == WORST_CASE else a}" for n, a in keys]
    rows = []
    for r in _rows(_checkpoints(df)):
        cells = [str(r.checkpoint), str(r.granularity), _pct(r.sparsity_target)]
        for norm, attack in keys:
            sub = df[
                (df["checkpoint"] == r.checkpoint) & (df["norm"] == norm) & (df["attack"] == attack)
            ]
            if sub.empty:
                cells.append("–")
                continue
            # several backends: report the weakest model view (lowest AUC)
            aucs = [
                robustness_auc(g["epsilon"], g["robust_accuracy"])
                for _, g in sub.groupby("backend", sort=False)
            ]
            cells.append(_pct(min(aucs)))
        rows.append(cells)
    return [
        Heading(2, "Robustness AUC"),
        Table(
            headers,
            rows,
            ["l", "l", "r", *("r" for _ in keys)],
            "Area under robust accuracy vs ε divided by the ε range (trapezoid rule), in %: the "
            "mean robust accuracy over the grid. Several backends: the lowest is shown.",
        ),
    ]


def _figure_caption(stem: str) -> str:
    norm = stem.rsplit("_", 1)[-1]
    label = _norm_label(norm)
    if stem.startswith("robustness_curves"):
        return (
            f"Robust accuracy vs ε ({label}): one row per attack and, with several granularities, "
            "one column per granularity (dense baseline in black in every panel); colour = "
            "sparsity target; bands are 95% Wilson intervals. Each row's ε axis stops at the first "
            "budget from which every model stays at or below 1% (the tables list every budget)."
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
    norms = list(_NORM_LABEL)
    suffix = path.stem.rsplit("_", 1)[-1]
    norm_rank = norms.index(suffix) if suffix in norms else len(norms)
    for i, prefix in enumerate(_FIGURE_ORDER):
        if path.stem.startswith(prefix):
            return (i, norm_rank, path.stem)
    return (len(_FIGURE_ORDER), norm_rank, path.stem)


def _figures(root: Path) -> list[Block]:
    fig_dir = root / _FIGURES_DIR
    pngs = sorted(fig_dir.glob("*.png"), key=_figure_rank) if fig_dir.is_dir() else []
    if not pngs:
        return [Heading(2, "Figures"), Paragraph("No figures were produced.")]
    blocks: list[Block] = [Heading(2, "Figures")]
    for p in pngs:
        blocks.append(Figure(p, _figure_caption(p.stem), f"{_FIGURES_DIR}/{p.name}"))
    return blocks


def _checks(
    checks: dict[str, Any], source: str, pvf: dict[str, Any], pvf_source: str
) -> list[Block]:
    rows = [
        [name, _PASS if c.get("passed") else _FAIL, str(c.get("detail", ""))]
        for name, c in checks.items()
    ]
    blocks: list[Block] = [
        Heading(2, "Checks"),
        Table(["invariant", "result", "detail"], rows, caption=f"Invariants {source}."),
        Heading(3, "PGD vs FGSM"),
        Paragraph(
            f"{_PASS if pvf.get('passed') else _FAIL}: {pvf.get('detail', '')} (reported, not "
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
                        _fmt_eps(float(v.get("epsilon", math.nan)), str(v.get("norm"))),
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


def _provenance(side: dict[str, Any]) -> list[Block]:
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
            facts.append([label, _time_text(side).split(": ", 1)[1]])
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


def _time_text(side: dict[str, Any]) -> str:
    """``Compute time: 43.2 min (training 5.1 min + attacks 38.1 min; 3 invocations, ...)``."""
    total = _fmt_seconds(side.get("total_seconds"))
    parts = side.get("compute_seconds")
    runs = side.get("invocations")
    if not isinstance(parts, dict):  # an older sidecar: the wall time of one invocation
        return f"Total time: {total}"
    masking = parts.get("masking")
    text = (
        f"Compute time: {total} (training {_fmt_seconds(parts.get('training'))} + attacks "
        f"{_fmt_seconds(parts.get('attacks'))}"
        + (f" + gradient-masking checks {_fmt_seconds(masking)}" if masking else "")
        + ", summed over every finished epoch and attack cell"
    )
    if isinstance(runs, list) and runs:
        last = runs[-1] if isinstance(runs[-1], dict) else {}
        text += (
            f"; {len(runs)} invocation(s), the last took {_fmt_seconds(last.get('wall_seconds'))} "
            f"with {last.get('threads', '?')} thread(s)"
        )
    return text + ")"


def _reproduce(command: str | None) -> list[Block]:
    blocks: list[Block] = [Heading(2, "How to reproduce")]
    if command:
        blocks.append(Paragraph("Run from the repository root (same versions as in Provenance):"))
        blocks.append(Code(command, "bash"))
    else:
        blocks.append(Paragraph("No command was recorded with these results."))
    return blocks


def _figures_stale(root: Path) -> bool:
    fig_dir = root / _FIGURES_DIR
    pngs = list(fig_dir.glob("*.png")) if fig_dir.is_dir() else []
    if not pngs:
        return True
    sources = [root / f for f in (RESULTS_PARQUET, RESULTS_CSV, "min_norms.parquet")]
    newest = max((s.stat().st_mtime for s in sources if s.is_file()), default=0.0)
    return min(p.stat().st_mtime for p in pngs) < newest


# --------------------------------------------------------------------------- entry point


def write_report(
    results_dir: str | os.PathLike[str], *, command: str | None = None
) -> tuple[Path, Path]:
    """Write ``report.md`` and a self-contained ``report.html`` into ``results_dir``.

    Reads the results and the ``results.json`` sidecar (optional), draws the figures with
    :func:`evaluations.present.plots.plot_all` when they are missing or older than the results, and takes the
    invariant checks from the sidecar (key ``invariants``; recomputed when absent). ``command``
    overrides the sidecar's ``command`` in "How to reproduce". Returns ``(md_path, html_path)``.
    """
    root = Path(results_dir)
    df = read_results(root)
    side = read_sidecar(root, missing_ok=True)

    if _figures_stale(root):
        from evaluations.present.plots import plot_all  # matplotlib only when figures are needed

        plot_all(root)

    checks = side.get("invariants")
    source = "as recorded in results.json"
    if not isinstance(checks, dict) or not checks:
        checks = check_invariants(df)
        source = "recomputed from the results (results.json has none)"
    pvf = side.get("pgd_vs_fgsm")
    pvf_source = "as recorded in results.json"
    if not isinstance(pvf, dict):
        pvf = pgd_vs_fgsm(df)
        pvf_source = "computed from the results"
    cmd = command if command is not None else side.get("command")

    title = f"Robustness report: {_joined(df['dataset'])} · {_joined(df['arch'])}"
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(
            "Does Campfire structured sparsity cost adversarial robustness? Robust accuracy of each "
            "checkpoint under each attack over the ε grid, with counts, 95% Wilson intervals and "
            "the evidence needed to reproduce it."
        ),
    ]
    budgets = choose_budgets(df)
    rel = relative_to_dense(df, budgets, root)
    blocks += _headline(df, budgets, rel)
    from evaluations.present import report_evaluation as ev  # imports this module's document model

    blocks += ev.masking_blocks(side)
    blocks += _summary(df, side, checks)
    blocks += _clean_table(df)
    blocks += _relative(budgets, rel)
    blocks += _training_methods(df)
    blocks += _robust_tables(df)
    blocks += _auc_table(df)
    eps_max = {str(n): float(g["epsilon"].max()) for n, g in df.groupby("norm", sort=False)}
    blocks += ev.security_blocks(root, side, eps_max)
    blocks += ev.deviation_blocks(side)
    blocks += _figures(root)
    blocks += _checks(checks, source, pvf, pvf_source)
    blocks += _provenance(side)
    blocks += _reproduce(str(cmd) if cmd else None)

    md_path = atomic_write_text(root / REPORT_MD, render_markdown(blocks))
    html_path = atomic_write_text(root / REPORT_HTML, render_html(blocks, title))
    logger.info("wrote %s and %s", md_path, html_path)
    return md_path, html_path
