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

import logging
import os
from pathlib import Path

from evaluations.present import report_evaluation as ev
from evaluations.present.document import (
    Block,
    Heading,
    Paragraph,
    markdown_table,
    render_html,
    render_markdown,
)
from evaluations.present.plots import plot_all
from evaluations.present.report_beyond import beyond_blocks
from evaluations.present.report_cost import cost_blocks
from evaluations.present.report_format import joined
from evaluations.present.report_results import (
    auc_table_blocks,
    clean_table_blocks,
    headline_blocks,
    relative_blocks,
    robust_table_blocks,
    summary_blocks,
    training_method_blocks,
)
from evaluations.present.report_run import (
    check_blocks,
    figure_blocks,
    figures_stale,
    provenance_blocks,
    reproduce_blocks,
)
from evaluations.record.budgets import (
    choose_budgets,
    relative_to_dense,
)
from evaluations.record.costs import read_costs
from evaluations.record.metrics import (
    check_invariants,
    pgd_vs_fgsm,
)
from evaluations.record.results import (
    read_results,
    read_sidecar,
)
from robustbench_sparse.atomic import atomic_write_text

__all__ = ["REPORT_HTML", "REPORT_MD", "markdown_table", "write_report"]

logger = logging.getLogger(__name__)

REPORT_MD = "report.md"
REPORT_HTML = "report.html"


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

    if figures_stale(root):
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

    title = f"Robustness report: {joined(df['dataset'])} · {joined(df['arch'])}"
    blocks: list[Block] = [
        Heading(1, title),
        Paragraph(
            "Does Campfire structured sparsity cost adversarial robustness? Robust accuracy of each "
            "checkpoint under each attack over the ε grid, with counts, 95% Wilson intervals and "
            "the evidence needed to reproduce it."
        ),
    ]
    blocks += ev.masking_off_blocks(side)  # --masking off: said before any number
    budgets = choose_budgets(df)
    rel = relative_to_dense(df, budgets, root)
    blocks += headline_blocks(df, budgets, rel)
    blocks += beyond_blocks(root, figures=False)  # certified.csv / corruptions.csv, if present
    blocks += ev.masking_blocks(side)
    blocks += summary_blocks(df, side, checks)
    blocks += clean_table_blocks(df)
    blocks += relative_blocks(budgets, rel)
    blocks += cost_blocks(df, read_costs(root))  # robustness vs modelled hardware cost
    blocks += training_method_blocks(df)
    blocks += robust_table_blocks(df)
    blocks += auc_table_blocks(df)
    eps_max = {str(n): float(g["epsilon"].max()) for n, g in df.groupby("norm", sort=False)}
    blocks += ev.security_blocks(root, side, eps_max)
    blocks += ev.attack_blocks(side)
    blocks += ev.deviation_blocks(side)
    blocks += figure_blocks(root)
    blocks += check_blocks(checks, source, pvf, pvf_source)
    blocks += provenance_blocks(side)
    blocks += reproduce_blocks(str(cmd) if cmd else None)

    md_path = atomic_write_text(root / REPORT_MD, render_markdown(blocks))
    html_path = atomic_write_text(root / REPORT_HTML, render_html(blocks, title))
    logger.info("wrote %s and %s", md_path, html_path)
    return md_path, html_path
