"""evaluations.present.report_cost: the robustness-vs-cost section of the report."""

from __future__ import annotations

import pandas as pd

from evaluations.present.document import Heading, Table, render_markdown
from evaluations.present.report_cost import cost_blocks
from evaluations.record.costs import COST_COLUMNS
from tests.test_evaluations_record_costs import costs_frame, results_frame


def test_section_rows_columns_and_labels() -> None:
    blocks = cost_blocks(results_frame(), costs_frame())
    assert isinstance(blocks[0], Heading) and "modelled cost" in blocks[0].text
    table = next(b for b in blocks if isinstance(b, Table))
    assert [r[0] for r in table.rows] == ["dense", "window-70", "channel-70"]
    window = table.rows[1]
    assert "3.00×" in window and "50.0" in window  # speed-up and robust accuracy at the anchor
    assert table.rows[2][-2] == ""  # channel-70 is dominated by window-70 on speed-up
    assert "MODELLED" in render_markdown(blocks)


def test_no_section_without_costs() -> None:
    assert cost_blocks(results_frame(), pd.DataFrame(columns=COST_COLUMNS)) == []


def test_training_column_when_several_training_methods() -> None:
    std = results_frame().assign(training="standard")
    at = results_frame().assign(training="AT (linf 0.1, PGD-5)")
    at["checkpoint"] = "pgd-" + at["checkpoint"]
    costs = costs_frame()
    blocks = cost_blocks(
        pd.concat([std, at], ignore_index=True),
        pd.concat([costs, costs.assign(checkpoint="pgd-" + costs["checkpoint"])]),
    )
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.headers[1] == "training"
    assert len(table.align) == len(table.headers) == len(table.rows[0])
    assert {r[1] for r in table.rows} == {"standard", "AT (linf 0.1, PGD-5)"}
    # one training only: no training column
    single = next(b for b in cost_blocks(std, costs) if isinstance(b, Table))
    assert "training" not in single.headers and len(single.align) == len(single.headers)
