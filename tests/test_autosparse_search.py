"""The AutoSparse target search over the thresholds' weight decay (robustbench_sparse.autosparse_search).

Invariants: on a monotone response the search stops at the first probe inside the tolerance,
every probe lies inside the bracket that holds the answer (in log10 of the decay), the first
probe is the configured decay; when the runs run out it returns the closest probe flagged
``within_tolerance = False``; end to end, a tiny digits job with ``autosparse_search_runs`` lands
within the tolerance of its target, records every probe, and its final checkpoint is the run
with the accepted decay.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustbench_sparse.autosparse_search import needs_search, search_decay
from robustbench_sparse.sparsity import SparsityConfig
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import single_thread, tiny_job


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _response(decay: float) -> float:
    """A monotone stand-in for 'achieved sparsity after training with this decay'."""
    return 1.0 / (1.0 + math.exp(-(math.log10(decay) + 1.8) * 3.0))


def test_search_stops_inside_the_tolerance_and_stays_in_the_bracket() -> None:
    calls: list[float] = []

    def achieved(decay: float) -> float:
        calls.append(decay)
        return _response(decay)

    found = search_decay(achieved, target=0.7, tolerance=0.02, runs=12, start=5e-4)
    assert found.within_tolerance
    assert abs(_response(found.threshold_decay) - 0.7) <= 0.02
    assert [p.threshold_decay for p in found.probes] == calls
    assert calls[0] == pytest.approx(5e-4)
    assert found.probes[-1].threshold_decay == found.threshold_decay
    lo, hi = -6.0, 0.0
    for p in found.probes:  # each probe inside the bracket known before it
        x = math.log10(p.threshold_decay)
        assert lo - 1e-12 <= x <= hi + 1e-12
        if p.achieved < 0.7:
            lo = x
        else:
            hi = x
    assert len(found.probes) == 5  # 5e-4, two bracket middles, then two secant steps


def test_out_of_runs_returns_the_closest_probe() -> None:
    found = search_decay(_response, target=0.7, tolerance=1e-9, runs=3, start=5e-4)
    assert not found.within_tolerance and len(found.probes) == 3
    best = min(found.probes, key=lambda p: abs(p.achieved - 0.7))
    assert found.threshold_decay == best.threshold_decay
    record = found.record()
    assert record["knob"] == "autosparse_threshold_decay"
    assert record["probes"][0]["achieved"] == _response(record["probes"][0]["threshold_decay"])
    with pytest.raises(ValueError, match="runs"):
        search_decay(_response, target=0.7, tolerance=0.02, runs=0, start=5e-4)


def test_a_zero_start_is_clamped_into_the_bracket() -> None:
    found = search_decay(_response, target=0.7, tolerance=0.5, runs=1, start=0.0)
    assert found.probes[0].threshold_decay == pytest.approx(1e-6)


def test_only_autosparse_with_runs_searches() -> None:
    assert needs_search(SparsityConfig(target=0.7, method="autosparse", autosparse_search_runs=3))  # type: ignore[arg-type]
    assert not needs_search(SparsityConfig(target=0.7, method="autosparse"))  # type: ignore[arg-type]
    assert not needs_search(SparsityConfig(target=0.7, autosparse_search_runs=3))


@pytest.mark.slow
def test_job_search_lands_on_the_target_and_records_the_probes(tmp_path: Path) -> None:
    job = tiny_job(0.5, "unstructured", epochs=2, start=0.0, end=2.0)
    sparsity = dataclasses.replace(
        job.sparsity,
        method="autosparse",  # type: ignore[arg-type]
        autosparse_search_runs=8,
        autosparse_tolerance=0.02,
    )
    ck = run_train_job(dataclasses.replace(job, sparsity=sparsity), tmp_path / "s", progress=False)
    search = ck.meta["autosparse_search"]
    achieved = ck.meta["sparsity_report"]["achieved_pruned"]
    assert search["within_tolerance"] and abs(achieved - 0.5) <= 0.02
    assert ck.meta["sparsity"]["autosparse_threshold_decay"] == search["threshold_decay"]
    assert search["probes"][-1]["achieved"] == pytest.approx(achieved, abs=1e-12)
    assert len(search["probes"]) >= 2  # the run's own weight decay is far from 50 % here
