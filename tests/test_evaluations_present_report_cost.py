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
