"""Report sections about the results: summary, headline cost of sparsity, clean accuracy, cost
relative to dense with paired intervals, training methods, robust-accuracy tables and AUCs.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attacks.params import format_epsilon
from evaluations.present.document import Block, Bullets, Heading, Paragraph, Table
from evaluations.present.ordering import NORM_LABEL, attack_rank, iter_rows, norm_label, norms_of
from evaluations.present.report_format import ACHIEVED_NOTE, checkpoint_table, joined, pct
from evaluations.present.report_run import time_text
from evaluations.record.budgets import (
    BudgetChoice,
)
from evaluations.record.metrics import (
    WORST_CASE,
    robustness_auc,
    wilson_interval,
)
from evaluations.record.results import TRANSFER_INCLUDED, white_box
from evaluations.record.training_methods import (
    below_budget_warnings,
    has_training_methods,
    robust_overfitting,
    training_budgets,
    training_matrix,
)
from robustbench_sparse.state_dicts import describe_normalization

# --------------------------------------------------------------------------- sections


def summary_blocks(df: pd.DataFrame, side: dict[str, Any], checks: dict[str, Any]) -> list[Block]:
    ns = sorted({int(v) for v in df["n"].unique()})
    n_text = str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]} (varies by checkpoint)"
    single = df[df["attack"] != WORST_CASE]
    attacks = []
    for attack in sorted({str(a) for a in single["attack"].unique()}, key=attack_rank):
        sub = single[single["attack"] == attack]
        norms = ", ".join(norm_label(n) for n in norms_of(sub))
        attacks.append(f"{attack} ({norms}; backend {joined(sub['backend'].unique())})")
    grids = []
    for norm in norms_of(df):
        eps = sorted({float(e) for e in df.loc[df["norm"] == norm, "epsilon"]})
        grids.append(
            f"{norm_label(str(norm))}: "
            + ", ".join(format_epsilon(e, style="report", norm=str(norm)) for e in eps)
        )
    failed = [name for name, c in checks.items() if not c.get("passed", False)]
    items = [
        f"Dataset: {joined(df['dataset'])}",
        f"Architecture: {joined(df['arch'])}",
        f"Examples evaluated (n): {n_text}",
        f"Checkpoints: {df['checkpoint'].nunique()} ({', '.join(checkpoint_table(df)['checkpoint'])})",
        f"Attacks: {'; '.join(attacks) if attacks else 'none'}",
        f"Backends: {joined(single['backend']) if not single.empty else 'none'}",
        f"Epsilon grids: {'; '.join(grids)}",
    ]
    if (df["attack"] == WORST_CASE).any():
        items.append(
            f"'{WORST_CASE}' is the per-example worst case over all attacks of the same norm "
            "(an example counts as robust only if every attack failed)."
        )
    if "total_seconds" in side:
        items.append(time_text(side))
    items.append(
        "Invariant checks: all passed"
        if not failed
        else f"Invariant checks: {len(failed)} FAILED ({', '.join(failed)}); see Checks"
    )
    # A plain state dict records no normalization: what it was given is said, and how to change it.
    for entry in side.get("checkpoints") or []:
        if isinstance(entry, dict) and isinstance(entry.get("normalization"), dict):
            applied, how = describe_normalization(entry["normalization"])
            key = entry.get("state_dict_key")
            taken = f", weights from its entry '{key}'" if key else ""
            items.append(
                f"Checkpoint {entry.get('name')} is a plain state dict{taken}: inputs normalized "
                f"with {applied}; {how}."
            )
    # Filter pruning: the filter sparsity and the (larger) share of weights thinning removes.
    for entry in side.get("checkpoints") or []:
        figures = entry.get("filter_sparsity") if isinstance(entry, dict) else None
        if isinstance(figures, dict):
            removed = figures.get("thinned_removed")
            items.append(
                f"Checkpoint {entry.get('name')}: filter sparsity (masked filters / filters) "
                f"{pct(figures.get('filter_sparsity'))} % ({figures.get('filters_masked')}/"
                f"{figures.get('filters')}); weights removed by thinning (of conv/linear "
                f"weights) {'not computed' if removed is None else pct(removed) + ' %'}."
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


def headline_blocks(
    df: pd.DataFrame, budgets: dict[str, BudgetChoice], rel: pd.DataFrame
) -> list[Block]:
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
    ckpts = checkpoint_table(df)
    dense = ckpts[ckpts["granularity"] == "dense"]
    dense_clean = float(dense["clean_accuracy"].iloc[0]) if not dense.empty else math.nan
    norms = [n for n in norms_of(df) if n in budgets and (rel["norm"] == n).any()]
    facts = []
    for norm in norms:
        c = budgets[norm]
        facts.append(
            f"{norm_label(norm)} at ε = {format_epsilon(c.anchor, grid=c.grid)}: dense worst case "
            f"{pct(c.reference_accuracy)} %"
        )
    blocks.append(
        Paragraph(
            f"Difference to the dense baseline in points of accuracy (negative = sparsity costs "
            f"robustness). Dense clean accuracy {pct(dense_clean)} %; "
            + "; ".join(facts)
            + ". Budgets are chosen from the data (see 'Relative to dense')."
        )
    )
    headers = ["checkpoint", "granularity", "sparsity target (%)", "achieved (%)", "clean Δ"]
    headers += [
        f"{norm_label(n)} worst case Δ at ε={format_epsilon(budgets[n].anchor, grid=budgets[n].grid)}"
        for n in norms
    ]
    rows = []
    for r in iter_rows(ckpts):
        if str(r.granularity) == "dense" or float(r.sparsity_target) == 0.0:
            continue
        cells = [
            str(r.checkpoint),
            str(r.granularity),
            pct(r.sparsity_target),
            pct(r.sparsity_achieved, 1),
            _points(float(r.clean_accuracy) - dense_clean),
        ]
        for norm in norms:
            at = rel[
                (rel["norm"] == norm)
                & (rel["checkpoint"] == r.checkpoint)
                & rel["anchor"].astype(bool)
            ]
            cells.append(_diff_cell(next(iter_rows(at))) if not at.empty else "–")
        rows.append(cells)
    blocks.append(
        Table(
            headers,
            rows,
            ["l", "l", "r", "r", "r", *("r" for _ in norms)],
            "Δ = checkpoint minus dense, points of accuracy. "
            + ACHIEVED_NOTE
            + " "
            + _interval_note(rel),
        )
    )
    return blocks


def relative_blocks(budgets: dict[str, BudgetChoice], rel: pd.DataFrame) -> list[Block]:
    """Per norm: why these budgets, and the difference to dense at each of them."""
    blocks: list[Block] = [Heading(2, "Relative to dense")]
    if not budgets:
        blocks.append(Paragraph("No worst-case results with a nonzero budget."))
        return blocks
    for norm, choice in sorted(budgets.items(), key=lambda kv: (kv[0] != "linf", kv[0])):
        label = norm_label(norm)
        blocks.append(Heading(3, f"{label}: discriminating budgets"))
        blocks.append(Paragraph(choice.reason))
        sub = rel[rel["norm"] == norm]
        if sub.empty:
            continue
        eps_list = sorted({float(e) for e in sub["epsilon"]})
        headers = ["checkpoint", "granularity", "sparsity target (%)"] + [
            f"Δ at ε={format_epsilon(e, grid=choice.grid)}"
            + (" (anchor)" if e == choice.anchor else "")
            for e in eps_list
        ]
        rows = []
        for name in dict.fromkeys(str(c) for c in sub["checkpoint"]):
            cur = sub[sub["checkpoint"] == name]
            first = next(iter_rows(cur))
            cells = [name, str(first.granularity), pct(first.sparsity_target)]
            by_eps = {float(r.epsilon): r for r in iter_rows(cur)}
            for e in eps_list:
                r = by_eps.get(e)
                cells.append(
                    "–"
                    if r is None
                    else f"{_diff_cell(r)} ({pct(r.robust_accuracy)} vs {pct(r.dense_accuracy)})"
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


def training_method_blocks(df: pd.DataFrame) -> list[Block]:
    """Training method x sparsity matrix at each training budget, and below-budget warnings."""

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
                    row.append(f"{pct(cell['clean'])} / not evaluated")
                else:
                    row.append(f"{pct(cell['clean'])} / {pct(cell['robust'])}")
            rows.append(row)
        blocks.append(
            Table(
                ["training"] + [str(c) for c in matrix.columns],
                rows,
                ["l"] + ["r"] * len(matrix.columns),
                caption=f"clean / robust accuracy at {NORM_LABEL.get(norm, norm)} ε = "
                f"{format_epsilon(eps, style='report', norm=norm)} (worst case over the attacks)",
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
                        pct(r.best),
                        pct(r.last),
                        pct(r.gap),
                    ]
                    for r in iter_rows(overfit)
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


def clean_table_blocks(df: pd.DataFrame) -> list[Block]:
    rows = []
    for r in iter_rows(checkpoint_table(df)):
        low, high = wilson_interval(int(r.clean_correct), int(r.n))
        rows.append(
            [
                str(r.checkpoint),
                str(r.granularity),
                pct(r.sparsity_target),
                pct(r.sparsity_achieved, 2),
                f"{pct(r.clean_accuracy)} [{pct(low)}, {pct(high)}]",
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
            ACHIEVED_NOTE,
        ),
    ]


def _eps_table(
    df: pd.DataFrame, norm: str, attack: str, *, with_ci: bool, order: list[str]
) -> Table:
    sub = df[(df["norm"] == norm) & (df["attack"] == attack)]
    eps_grid = sorted({float(e) for e in sub["epsilon"]})
    headers = [
        "checkpoint",
        "backend",
        *(f"ε={format_epsilon(e, style='report', norm=norm)}" for e in eps_grid),
    ]
    rows = []
    for name in order:
        for backend in sorted({str(b) for b in sub.loc[sub["checkpoint"] == name, "backend"]}):
            cur = sub[(sub["checkpoint"] == name) & (sub["backend"] == backend)]
            by_eps = {float(r.epsilon): r for r in iter_rows(cur)}
            cells = [name, backend]
            for e in eps_grid:
                r = by_eps.get(e)
                if r is None:
                    cells.append("–")
                elif with_ci:
                    cells.append(
                        f"{pct(r.robust_accuracy)} "
                        f"[{pct(r.robust_accuracy_low)}, {pct(r.robust_accuracy_high)}]"
                    )
                else:
                    cells.append(pct(r.robust_accuracy))
            rows.append(cells)
    return Table(headers, rows, ["l", "l", *("r" for _ in eps_grid)])


def _worst_case_over(data: pd.DataFrame, singles: list[str]) -> str:
    """The attacks a worst case is over: transfer rows only when they joined it (said in the
    worst-case rows' params, ``--transfer-in-worst-case``)."""
    wc = data[data["attack"] == WORST_CASE]
    if wc["params"].astype(str).str.contains(TRANSFER_INCLUDED).any():
        return ", ".join(singles)
    white = set(white_box(data)["attack"].astype(str))
    over = ", ".join(a for a in singles if a in white)
    return over + ("; transfer rows not included" if any(a not in white for a in singles) else "")


def robust_table_blocks(df: pd.DataFrame) -> list[Block]:
    order = list(checkpoint_table(df)["checkpoint"])
    blocks: list[Block] = []
    for norm in norms_of(df):
        label = norm_label(norm)
        data = df[df["norm"] == norm]
        attacks = sorted({str(a) for a in data["attack"].unique()}, key=attack_rank)
        singles = [a for a in attacks if a != WORST_CASE]
        blocks.append(Heading(2, f"Robust accuracy, {label}"))
        if WORST_CASE in attacks:
            t = _eps_table(data, norm, WORST_CASE, with_ci=True, order=order)
            blocks.append(
                Table(
                    t.headers,
                    t.rows,
                    t.align,
                    f"Worst-case robust accuracy (%) over {_worst_case_over(data, singles)} at "
                    f"each ε ({label}); 95% Wilson interval in brackets.",
                )
            )
        for attack in singles:
            t = _eps_table(data, norm, attack, with_ci=False, order=order)
            blocks.append(Heading(3, f"{attack} ({label})"))
            blocks.append(
                Table(t.headers, t.rows, t.align, f"Robust accuracy (%) under {attack} ({label}).")
            )
    return blocks


def auc_table_blocks(df: pd.DataFrame) -> list[Block]:
    keys: list[tuple[str, str]] = []
    for norm in norms_of(df):
        attacks = sorted({str(a) for a in df.loc[df["norm"] == norm, "attack"]}, key=attack_rank)
        # worst case first: it is the headline number
        attacks = sorted(attacks, key=lambda a: a != WORST_CASE)
        keys += [(norm, a) for a in attacks]
    headers = ["checkpoint", "granularity", "sparsity target (%)"]
    headers += [f"{norm_label(n)} {'worst case' if a == WORST_CASE else a}" for n, a in keys]
    rows = []
    for r in iter_rows(checkpoint_table(df)):
        cells = [str(r.checkpoint), str(r.granularity), pct(r.sparsity_target)]
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
            cells.append(pct(min(aucs)))
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
