"""Tests for :mod:`rbs.attack_job` (``rbs attack`` as a library call).

Checks the files of a results directory, the sidecar's evidence, the output-directory rules (resume
the same request, refuse a different one unless ``overwrite``) and the request's validation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pandas.testing import assert_frame_equal

from attacks import AttackConfigError
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_results, read_sidecar
from rbs.attack_job import (
    REQUEST_FILE,
    AttackRunOutcome,
    AttackRunRequest,
    prepare_results_dir,
    run_attack_command,
)
from robustbench_sparse.errors import UserError
from tests.eval_helpers import (
    CW_PARAMS,
    L2_EPS,
    LINF_EPS,
    PGD_PARAMS,
    build_checkpoints,
    single_thread,
    without_timing,
)

LIMIT = 40
COMMAND = "rbs attack --checkpoint dense --checkpoint window-70 --out results"


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpts"))


def _request(ckpt_dirs: dict[str, Path], **changes: Any) -> AttackRunRequest:
    fields: dict[str, Any] = {
        "checkpoints": tuple(ckpt_dirs.values()),
        "attacks": ("fgsm", "pgd", "cw"),
        "params": {"pgd": dict(PGD_PARAMS), "cw": dict(CW_PARAMS)},
        "linf_epsilons": list(LINF_EPS),
        "l2_epsilons": list(L2_EPS),
        "limit": LIMIT,
        "batch_size": 25,
    }
    fields.update(changes)
    return AttackRunRequest(**fields)


@pytest.fixture(scope="module")
def first(ckpt_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> AttackRunOutcome:
    out = tmp_path_factory.mktemp("runner") / "results"
    return run_attack_command(_request(ckpt_dirs), out, progress=False, command=COMMAND)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): _digest(p) for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- outputs


def test_writes_results_sidecar_figures_and_report(first: AttackRunOutcome) -> None:
    out = first.results_dir
    for name in (
        "results.csv",
        "results.parquet",
        "results.json",
        "min_norms.parquet",
        "report.html",
        "report.md",
        REQUEST_FILE,
    ):
        assert (out / name).is_file(), name
    assert first.report_html == out / "report.html"
    html = first.report_html.read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html") or "<html" in html
    assert (out / "figures" / "robustness_curves_linf.png").is_file()
    assert (out / "figures" / "robustness_curves_l2.png").is_file()
    df = read_results(out)
    assert set(df["checkpoint"]) == {"dense", "window-70"}
    assert set(df["attack"]) == {"fgsm", "pgd", "cw", WORST_CASE}
    assert (df["n"] == LIMIT).all()
    assert_frame_equal(without_timing(df), without_timing(first.grid.results))


def test_sidecar_carries_the_evidence(first: AttackRunOutcome) -> None:
    side = read_sidecar(first.results_dir)
    assert side["command"] == COMMAND
    checks = side["invariants"]
    assert set(checks) == {
        "eps0_robust_equals_clean",
        "worst_case_monotone",
        "worst_case_le_each_attack",
    }
    assert all(c["passed"] is True for c in checks.values()), checks
    assert isinstance(side["versions"], dict) and "torch" in side["versions"]
    assert side["device"].startswith("cpu")
    assert "git_revision" in side
    assert side["total_seconds"] > 0
    work = side["work"]
    assert work["cells_computed"] == 6 and work["cells_reused"] == 0
    assert 0 < work["grad_evals"] <= work["naive_grad_evals"]
    assert [c["name"] for c in side["checkpoints"]] == ["dense", "window-70"]
    assert all(len(c["weights_sha256"]) == 64 for c in side["checkpoints"])
    assert side["config"]["limit"] == LIMIT
    assert {c["checkpoint"] for c in side["clean_checks"]} == {"dense", "window-70"}
    assert side["request"]["attacks"] == ["fgsm", "pgd", "cw"]
    assert json.loads((first.results_dir / REQUEST_FILE).read_text())["fingerprint"]


def test_same_request_resumes(first: AttackRunOutcome, ckpt_dirs: dict[str, Path]) -> None:
    again = run_attack_command(
        _request(ckpt_dirs), first.results_dir, progress=False, command=COMMAND
    )
    assert again.grid.cells_reused == 6 and again.grid.cells_computed == 0
    assert_frame_equal(
        without_timing(read_results(first.results_dir)), without_timing(first.grid.results)
    )
    work = read_sidecar(first.results_dir)["work"]
    assert work["cells_reused"] == 6 and work["cells_computed"] == 0


def test_different_request_is_refused_and_leaves_files_alone(
    first: AttackRunOutcome, ckpt_dirs: dict[str, Path]
) -> None:
    before = _snapshot(first.results_dir)
    with pytest.raises(UserError, match="--overwrite"):
        run_attack_command(
            _request(ckpt_dirs, attacks=("fgsm",), params={}), first.results_dir, progress=False
        )
    assert _snapshot(first.results_dir) == before


def test_resume_flag_reuses_matching_cells_of_another_request(
    first: AttackRunOutcome, ckpt_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first.results_dir, out)
    request = _request(ckpt_dirs, attacks=("fgsm",), params={})
    outcome = run_attack_command(request, out, resume=True, progress=False)
    assert outcome.grid.cells_reused == 2 and outcome.grid.cells_computed == 0
    df = read_results(out)
    assert set(df["attack"]) == {"fgsm", WORST_CASE}
    marker = json.loads((out / REQUEST_FILE).read_text())
    assert marker["fingerprint"] == request.fingerprint()


def test_overwrite_replaces_the_run(
    first: AttackRunOutcome, ckpt_dirs: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(first.results_dir, out)
    (out / "stray.txt").write_text("from the old run")
    request = _request(
        ckpt_dirs,
        checkpoints=(ckpt_dirs["dense"],),
        attacks=("fgsm",),
        params={},
        limit=10,
        report=False,
    )
    outcome = run_attack_command(request, out, overwrite=True, progress=False)
    assert outcome.report_html is None and not (out / "report.html").exists()
    assert not (out / "stray.txt").exists()
    assert outcome.grid.cells_computed == 1 and outcome.grid.cells_reused == 0
    df = read_results(out)
    assert set(df["checkpoint"]) == {"dense"} and (df["n"] == 10).all()


# ----------------------------------------------------------------------------- the request


def test_request_fingerprint(ckpt_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a = _request(ckpt_dirs)
    assert a.fingerprint() == _request(ckpt_dirs).fingerprint()
    assert a.fingerprint() == _request(ckpt_dirs, report=False).fingerprint()
    assert a.fingerprint() != _request(ckpt_dirs, limit=LIMIT + 1).fingerprint()
    assert a.fingerprint() != _request(ckpt_dirs, attacks=("fgsm", "pgd")).fingerprint()
    dense = ckpt_dirs["dense"]
    monkeypatch.chdir(dense.parent)
    relative = AttackRunRequest(checkpoints=(Path(dense.name),))
    assert relative.fingerprint() == AttackRunRequest(checkpoints=(dense,)).fingerprint()


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"params": {"cw": {"steps": 3}}, "attacks": ("fgsm",)}, UserError, "not among"),
        ({"limit": 0}, UserError, "--limit"),
        ({"batch_size": 0}, UserError, "--batch-size"),
        ({"linf_epsilons": [0.0, -0.1]}, UserError, "invalid"),
        ({"l2_epsilons": [0.5, 0.5]}, UserError, "duplicates"),
        ({"attacks": ("nope",), "params": {}}, AttackConfigError, "fgsm"),
        ({"backend": "nope"}, AttackConfigError, "native"),
        ({"params": {"pgd": {"steps": 0}}}, AttackConfigError, "steps"),
    ],
)
def test_request_validation(
    ckpt_dirs: dict[str, Path], changes: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        _request(ckpt_dirs, **changes).grid()


def test_request_grid_sorts_and_deduplicates_attacks(ckpt_dirs: dict[str, Path]) -> None:
    request = _request(
        ckpt_dirs,
        attacks=("pgd", "fgsm", "pgd"),
        params={"pgd": dict(PGD_PARAMS)},
        linf_epsilons=[0.1, 0.0],
    )
    grid = request.grid()
    assert [s.name for s in grid.attacks] == ["pgd", "fgsm"]
    assert grid.linf_epsilons == (0.0, 0.1)
    assert dict(grid.attacks[0].params) == PGD_PARAMS


def test_invalid_request_writes_nothing(ckpt_dirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "never"
    with pytest.raises(UserError):
        run_attack_command(_request(ckpt_dirs, limit=0), out, progress=False)
    with pytest.raises(UserError):
        run_attack_command(
            _request(ckpt_dirs, checkpoints=(tmp_path / "missing",)), out, progress=False
        )
    assert not out.exists()


# ----------------------------------------------------------------------------- directory rules


def test_prepare_results_dir_rules(tmp_path: Path) -> None:
    new = tmp_path / "new"
    prepare_results_dir(new, "abc", overwrite=False, resume=False)
    assert json.loads((new / REQUEST_FILE).read_text()) == {"fingerprint": "abc"}
    prepare_results_dir(new, "abc", overwrite=False, resume=False)  # same request: resume
    with pytest.raises(UserError, match="different run"):
        prepare_results_dir(new, "xyz", overwrite=False, resume=False)
    prepare_results_dir(new, "xyz", overwrite=False, resume=True)  # explicit resume
    assert json.loads((new / REQUEST_FILE).read_text()) == {"fingerprint": "xyz"}

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    for resume in (False, True):
        with pytest.raises(UserError):
            prepare_results_dir(foreign, "abc", overwrite=False, resume=resume)
    assert (foreign / "notes.txt").read_text() == "mine"
    prepare_results_dir(foreign, "abc", overwrite=True, resume=False)
    assert sorted(p.name for p in foreign.iterdir()) == [REQUEST_FILE]

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / REQUEST_FILE).write_text("{not json")
    with pytest.raises(UserError):
        prepare_results_dir(corrupt, "abc", overwrite=False, resume=False)

    empty = tmp_path / "empty"
    empty.mkdir()
    prepare_results_dir(empty, "abc", overwrite=False, resume=False)
    assert (empty / REQUEST_FILE).is_file()
