"""compute_time: total compute accumulates over resumed runs; a no-op re-run does not erase it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from evaluations.present.report import write_report
from evaluations.record.compute_time import (
    accumulated_time,
    attack_seconds,
    masking_seconds,
    training_seconds,
)
from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_sidecar
from rbs.attack_job import AttackRunRequest, run_attack_command
from tests.eval_helpers import CW_PARAMS, LINF_EPS, build_checkpoints, single_thread


def _results(seconds: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "attack": ["fgsm", "pgd", WORST_CASE],
            "seconds": [*seconds, 0.0],
        }
    )


def test_training_seconds_sum_finished_epochs() -> None:
    meta = {"history": [{"seconds": 1.5}, {"seconds": 2.5}], "train_seconds": 2.5}
    assert training_seconds(meta) == 4.0  # a resumed run's train_seconds covers its part only
    assert training_seconds({"train_seconds": 3.0}) == 3.0
    assert training_seconds({}) == 0.0


def test_attack_seconds_skip_worst_case_rows() -> None:
    assert attack_seconds(_results([2.0, 3.0])) == 5.0


def test_no_op_rerun_keeps_the_total_and_appends_an_invocation() -> None:
    metas = [{"history": [{"seconds": 60.0}]}, {"train_seconds": 30.0}]
    kw = dict(device="cpu (1 threads)", threads=1, command="rbs run")
    first = accumulated_time(
        {}, metas, _results([100.0, 200.0]), wall_seconds=400.0, cells_computed=2,
        cells_reused=0, **kw,
    )  # fmt: skip
    assert first["total_seconds"] == 390.0
    assert first["compute_seconds"] == {"training": 90.0, "attacks": 300.0, "masking": 0.0}
    again = accumulated_time(
        json.loads(json.dumps(first)), metas, _results([100.0, 200.0]), wall_seconds=5.8,
        cells_computed=0, cells_reused=2, **kw,
    )  # fmt: skip
    assert again["total_seconds"] == first["total_seconds"]  # not "5.8 s"
    assert [i["wall_seconds"] for i in again["invocations"]] == [400.0, 5.8]


@pytest.mark.parametrize("seconds", [47.5, 0.0, float("nan"), -1.0])
def test_masking_probes_count_in_the_total(seconds: float) -> None:
    out = accumulated_time(
        {}, [{"train_seconds": 10.0}], _results([1.0, 2.0]), wall_seconds=70.0, device="cpu",
        threads=1, cells_computed=2, cells_reused=0, command=None, masking_seconds=seconds,
    )  # fmt: skip
    counted = seconds if seconds > 0 else 0.0  # NaN and negative values count as nothing
    assert out["compute_seconds"]["masking"] == counted
    assert out["total_seconds"] == 13.0 + counted


@pytest.mark.parametrize(
    ("evidence", "expected"),
    [
        ({"masking": {"seconds": 12.5}}, 12.5),
        ({"masking": {"flags": []}}, 0.0),
        ({"masking": {"seconds": "n/a"}}, 0.0),
        ({"masking": None}, 0.0),
        ({}, 0.0),
    ],
)
def test_masking_seconds_reads_the_record(evidence: dict[str, object], expected: float) -> None:
    assert masking_seconds(evidence) == expected


def test_old_sidecar_contributes_its_wall_time() -> None:
    out = accumulated_time(
        {"total_seconds": 2592.0}, [], _results([1.0, 1.0]), wall_seconds=5.8, device="cpu",
        threads=2, cells_computed=0, cells_reused=2, command=None,
    )  # fmt: skip
    assert [i["wall_seconds"] for i in out["invocations"]] == [2592.0, 5.8]


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    with single_thread():
        yield build_checkpoints(tmp_path_factory.mktemp("ckpts"))


def test_interrupted_then_resumed_then_no_op_run_accumulates(
    ckpt_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import evaluations.engine.cell_attack as cell_attack_mod
    import evaluations.engine.masking as masking_mod

    request = AttackRunRequest(
        checkpoints=tuple(ckpt_dirs.values()),
        attacks=("fgsm", "cw"),
        params={"cw": dict(CW_PARAMS)},
        linf_epsilons=list(LINF_EPS),
        l2_epsilons=[0.0, 1.0],
        limit=20,
        batch_size=20,
        report=True,
    )
    out = tmp_path / "results"
    real = cell_attack_mod.attack_cell
    calls = {"n": 0}

    def interrupt_third(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    with single_thread():
        monkeypatch.setattr(cell_attack_mod, "attack_cell", interrupt_third)
        with pytest.raises(KeyboardInterrupt):
            run_attack_command(request, out, progress=False)
        cells_before = sorted(p.name for p in (out / "cells").rglob("*.json"))
        assert len(cells_before) == 2
        monkeypatch.setattr(cell_attack_mod, "attack_cell", real)
        resumed = run_attack_command(request, out, progress=False)
        assert resumed.grid.cells_reused == 2
        side = read_sidecar(out)
        stored = sum(json.loads(p.read_text())["seconds"] for p in (out / "cells").rglob("*.json"))
        # every finished cell counts, those of the interrupted run included
        assert math.isclose(side["compute_seconds"]["attacks"], stored, rel_tol=1e-9)
        assert side["masking"]["seconds"] > 0
        assert math.isclose(
            side["total_seconds"],
            sum(side["compute_seconds"].values()),
            rel_tol=1e-9,
        )

        def no_probing(*args: object, **kwargs: object) -> object:
            raise AssertionError("a no-op re-run probed the checkpoints again")

        monkeypatch.setattr(masking_mod, "run_checks", no_probing)
        run_attack_command(request, out, progress=False)  # a no-op re-run
    again = read_sidecar(out)
    assert again["masking"] == side["masking"]  # reused, with the time it took
    assert again["total_seconds"] == side["total_seconds"]
    assert len(again["invocations"]) == len(side["invocations"]) + 1
    md = write_report(out)[0].read_text(encoding="utf-8")
    assert "Compute time" in md and "invocation" in md
