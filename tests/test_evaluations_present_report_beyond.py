"""The report section "Beyond the attack" from synthetic certified.csv / corruptions.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from evaluations.present.document import Figure, Heading, Table
from evaluations.present.report_beyond import beyond_blocks, stated_radius, write_beyond_report
from evaluations.record.corruptions import with_intervals, write_corruptions
from tests.test_evaluations_record_corruptions import DENSE, SPARSE, _rows


def _certified(root: Path) -> None:
    rows = []
    for name, g, t in (("dense", "dense", 0.0), ("window-70", "window", 0.7)):
        for method, norm, radii in (("smoothing", "l2", [0.0, 0.25, 0.5]), ("ibp", "linf", [0.1])):
            for r in radii:
                acc = 0.8 - r if g == "dense" else 0.7 - r
                rows.append({
                    "checkpoint": name, "arch": "small_cnn", "dataset": "digits",
                    "granularity": g, "sparsity_target": t, "sparsity_achieved": t,
                    "training": "standard", "method": method, "norm": norm, "radius": r, "n": 50,
                    "certified_correct": round(acc * 50), "certified_accuracy": acc,
                    "certified_accuracy_low": acc - 0.1, "certified_accuracy_high": acc + 0.1,
                    "abstained": 0, "sigma": 0.25, "n0": 100, "n_samples": 1000, "alpha": 0.001,
                    "seconds": 1.0,
                })  # fmt: skip
    pd.DataFrame(rows).to_csv(root / "certified.csv", index=False)


def test_absent_files_add_nothing(tmp_path: Path) -> None:
    assert beyond_blocks(tmp_path) == []


def test_section_has_headline_table_and_both_figures(tmp_path: Path) -> None:
    _certified(tmp_path)
    rows = _rows("dense", "dense", 95, DENSE) + _rows("window-70", "window", 90, SPARSE)
    write_corruptions(with_intervals(pd.DataFrame(rows)), tmp_path)
    blocks = beyond_blocks(tmp_path)
    assert isinstance(blocks[0], Heading) and blocks[0].text == "Beyond the attack"
    table = next(b for b in blocks if isinstance(b, Table))
    assert table.headers[1:3] == ["ibp @ 0.1", "smoothing @ 0.25"]
    dense_row = next(r for r in table.rows if r[0] == "dense")
    assert dense_row[2].startswith("55.0 % [45.0, 65.0] (n=50)")
    assert "(n=100)" in dense_row[3] and dense_row[4] == "100.0 %"
    stems = {b.path.stem for b in blocks if isinstance(b, Figure)}
    assert stems == {"certified_smoothing", "certified_ibp", "corruptions_heatmap"}
    assert beyond_blocks(tmp_path, figures=False) and not any(
        isinstance(b, Figure) for b in beyond_blocks(tmp_path, figures=False)
    )
    md, html = write_beyond_report(tmp_path, command="rbs attack --protocol corruptions")
    assert "not the published CIFAR-10-C files" in md.read_text() and html.is_file()


def test_only_certified_gives_no_corruption_columns(tmp_path: Path) -> None:
    _certified(tmp_path)
    table = next(b for b in beyond_blocks(tmp_path, figures=False) if isinstance(b, Table))
    assert "mean corruption accuracy" not in table.headers


def test_stated_radius_is_the_smallest_positive() -> None:
    assert stated_radius(pd.Series([0.0, 0.5, 0.25])) == 0.25
    assert stated_radius(pd.Series([0.0])) == 0.0
