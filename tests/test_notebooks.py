"""Tests for notebooks/: committed clean, and every notebook executes end to end (slow).

Execution runs each notebook with nbclient in a copy under ``tmp_path`` (the kernel's working
directory) with ``RBS_WORK_DIR=tmp_path``, so everything the notebook writes lands there, and
``RBS_CHECKPOINT_DIR`` / ``RBS_RESULTS_DIR`` unset, so the notebooks build their own tiny inputs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
CELL_TIMEOUT_S = 300

#: notebook -> (minimum number of PNG outputs, minimum number of HTML tables)
EXPECTED: dict[str, tuple[int, int]] = {
    "01_quickstart.ipynb": (2, 5),  # robustness curves (linf, l2); sparsity, results, pivots, AUC
    "02_inspect_sparsity.ipynb": (2, 2),  # nnz histogram, mask heatmaps; totals, per-layer table
    "03_compare_sparsity_levels.ipynb": (4, 5),  # acc-vs-sparsity x2, box plot, ECDF; tables
}


def _notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _execute(path: Path, tmp_path: Path) -> Any:
    """Execute a copy of ``path`` in ``tmp_path``; returns the executed notebook."""
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _outputs(nb: Any) -> list[dict[str, Any]]:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def test_expected_notebooks_exist() -> None:
    assert sorted(p.name for p in _notebooks()) == sorted(EXPECTED)


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [], f"committed with outputs: {cell.source[:60]!r}"
        assert cell.execution_count is None


@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_uses_public_api_only(path: Path) -> None:
    """Notebooks call library functions; they define no functions or classes of their own."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            stripped = line.lstrip()
            assert not stripped.startswith(("def ", "class ", "lambda")), line
            assert "import _" not in stripped and "._" not in stripped.split("#")[0], line


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("path", _notebooks(), ids=lambda p: p.stem)
def test_notebook_executes(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RBS_WORK_DIR", str(tmp_path))
    for var in ("RBS_CHECKPOINT_DIR", "RBS_RESULTS_DIR"):
        monkeypatch.delenv(var, raising=False)
    before = sorted(p.name for p in NOTEBOOK_DIR.iterdir())
    nb = _execute(path, tmp_path)

    outputs = _outputs(nb)
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    tables = [o for o in outputs if "<table" in str(o.get("data", {}).get("text/html", ""))]
    min_png, min_tables = EXPECTED[path.name]
    assert len(pngs) >= min_png, f"{len(pngs)} figures displayed, expected >= {min_png}"
    assert len(tables) >= min_tables, f"{len(tables)} tables displayed, expected >= {min_tables}"
    for o in pngs:
        assert len(o["data"]["image/png"]) > 1000  # base64 of a real image, not a placeholder
    assert not [
        o
        for o in outputs
        if "<Figure size" in str(o.get("data", {}).get("text/plain"))
        and "image/png" not in o.get("data", {})
    ], "a figure was not rendered"
    # Everything was written under tmp_path; nothing into the repository's notebooks/.
    assert sorted(p.name for p in NOTEBOOK_DIR.iterdir()) == before
    assert [p for p in tmp_path.iterdir() if p.is_dir() and p.name.startswith("rbs-")]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_inspect_sparsity_reads_rbs_checkpoint_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With RBS_CHECKPOINT_DIR set, notebook 02 inspects those checkpoints and trains none."""
    from robustbench_sparse.train_job import run_train_job
    from tests.eval_helpers import single_thread, train_job

    ckpt_dir = tmp_path / "given"
    with single_thread():
        run_train_job(train_job("mine-w", 0.5, "window"), ckpt_dir / "a", progress=False)
        run_train_job(train_job("mine-c", 0.5, "channel"), ckpt_dir / "b", progress=False)
    monkeypatch.setenv("RBS_CHECKPOINT_DIR", str(ckpt_dir))
    monkeypatch.setenv("RBS_WORK_DIR", str(tmp_path))
    nb = _execute(NOTEBOOK_DIR / "02_inspect_sparsity.ipynb", tmp_path)
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in _outputs(nb))
    assert "mine-w" in text and "mine-c" in text
    assert not list(tmp_path.glob("rbs-sparsity-*/checkpoints"))  # nothing trained


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compare_reads_rbs_results_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With RBS_RESULTS_DIR set, notebook 03 explores that directory and runs no experiment."""
    from tests.test_evaluations_results import write_synthetic_dir

    results_dir = tmp_path / "given"
    results_dir.mkdir()
    write_synthetic_dir(results_dir)
    before = sorted(p.name for p in results_dir.iterdir())
    monkeypatch.setenv("RBS_RESULTS_DIR", str(results_dir))
    monkeypatch.setenv("RBS_WORK_DIR", str(tmp_path))
    nb = _execute(NOTEBOOK_DIR / "03_compare_sparsity_levels.ipynb", tmp_path)
    outputs = _outputs(nb)
    assert len([o for o in outputs if "image/png" in o.get("data", {})]) >= 4
    assert "window70" in "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert not list(tmp_path.glob("rbs-compare-*/experiment"))  # no experiment was run
    assert sorted(p.name for p in results_dir.iterdir()) == before  # the input is left alone
