"""Tests for evaluations.present.report: Markdown + self-contained HTML with tables, checks and provenance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from evaluations.present.report import markdown_table, write_report
from evaluations.record.results import read_sidecar, write_results, write_sidecar
from tests.test_evaluations_results import synthetic_results, write_synthetic_dir


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A complete results directory (both norms, C&W distances, sidecar) and its report texts."""
    root = tmp_path_factory.mktemp("full")
    write_synthetic_dir(root)
    md_path, html_path = write_report(root)
    assert md_path == root / "report.md" and html_path == root / "report.html"
    return root, md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")


def _fake_figure(root: Path) -> None:
    """A present (and fresh) figure, so write_report embeds it instead of plotting."""
    fig_dir = root / "figures"
    fig_dir.mkdir()
    (fig_dir / "robustness_curves_linf.png").write_bytes(b"\x89PNG\r\n\x1a\nnot-a-real-image")


def test_report_is_self_contained(full_report: tuple[Path, str, str]) -> None:
    root, md, page = full_report
    assert (root / "figures" / "robustness_curves_linf.png").is_file()  # plot_all was called
    assert "data:image/png;base64," in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script" not in page and "<style>" in page
    assert len(re.findall(r"<img ", page)) == 7
    assert page.count("![") == 0 and md.count("![") == 7
    assert "figures/robustness_curves_linf.png" in md
    assert md.index("robustness_curves_linf.png") < md.index("robustness_curves_l2.png")


def test_report_contains_tables_checks_and_provenance(full_report: tuple[Path, str, str]) -> None:
    _, md, page = full_report
    for text in (md, page):
        assert "Clean accuracy and sparsity" in text
        assert "Robust accuracy, L∞" in text and "Robust accuracy, L2" in text
        assert text.index("Robust accuracy, L∞") < text.index("Robust accuracy, L2")
        assert "Robustness AUC" in text
        assert "window70" in text and "digits" in text and "small" in text
        assert "ε=0.1" in text and "ε=0.5" in text
        assert "PGD vs FGSM" in text
        assert "abc123" in text and "2 threads" in text and "12.5 s" in text
        assert "rbs run --recipe digits-smoke --out runs/smoke" in text
    assert page.count("<table>") >= 8
    assert 'class="pass">PASS' in page and "FAIL" not in page
    assert "worst_case_monotone" in page and "worst\\_case\\_monotone" in md
    assert "recomputed" in md  # the sidecar holds no invariants
    # the worst-case table carries Wilson intervals: "acc [low, high]"
    assert re.search(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", page)


def test_report_uses_sidecar_invariants_and_escapes_html(tmp_path: Path) -> None:
    df, _ = synthetic_results(with_l2=False)
    df["checkpoint"] = df["checkpoint"].replace({"window70": "<b>evil</b>"})
    write_results(df, tmp_path)
    write_sidecar(
        tmp_path,
        {"invariants": {"planted": {"passed": False, "detail": "robust > clean at eps 0"}}},
    )
    _fake_figure(tmp_path)
    md_path, html_path = write_report(tmp_path, command="rbs report runs/x")
    page = html_path.read_text(encoding="utf-8")
    assert "<b>evil</b>" not in page and "&lt;b&gt;evil&lt;/b&gt;" in page
    assert "<b>evil</b>" not in md_path.read_text(encoding="utf-8")
    assert 'class="fail">FAIL' in page and "robust &gt; clean at eps 0" in page
    assert "rbs report runs/x" in page
    assert "not recorded" in page  # no provenance in this sidecar
    assert page.count("<img ") == 1
    assert read_sidecar(tmp_path)["invariants"]["planted"]["passed"] is False  # sidecar untouched


def test_report_without_sidecar(tmp_path: Path) -> None:
    df, _ = synthetic_results(with_l2=False)
    write_results(df, tmp_path)
    _fake_figure(tmp_path)
    md_path, html_path = write_report(tmp_path)
    md = md_path.read_text(encoding="utf-8")
    assert "recomputed" in md and "No command was recorded" in md
    assert "FAIL" not in md and "Robust accuracy, L2" not in md
    assert html_path.is_file()


def test_markdown_table_escapes_and_aligns() -> None:
    table = markdown_table(["name", "acc"], [["a|b", "1.0"], ["x_y", "10.5"]], ["l", "r"])
    lines = table.splitlines()
    assert lines[0].startswith("| name") and lines[1].endswith("---: |")
    assert "a\\|b" in lines[2] and "x\\_y" in lines[3]
    assert len({len(line) for line in lines}) == 1  # padded to equal width


def test_report_leads_with_sparsity_cost_at_discriminating_budget(
    full_report: tuple[Path, str, str],
) -> None:
    _, md, page = full_report
    for text in (md, page):
        # the headline table comes first, before the summary
        assert text.index("Sparsity cost in robustness") < text.index("Summary")
        assert "Relative to dense" in text and "discriminating budgets" in text
        assert "nearest 50 %" in text
        assert "Newcombe" in text  # the interval used is named
        # every achieved sparsity states its denominator: in the headline and the clean table
        headline = text[text.index("Sparsity cost in robustness") : text.index("Summary")]
        clean = text[text.index("Clean accuracy and sparsity") :]
        for part in (headline, clean):
            assert "zero weights / all weights of the pruned layers" in part
    # window70 minus dense with an interval: "+1.2 [-3.4, +5.6]"
    assert re.search(r"[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]", page)
    # configuration: a collapsed table, not one JSON value per line
    assert "<details><summary>" in page and "attacks" in page
    assert '"n": 40' not in page
