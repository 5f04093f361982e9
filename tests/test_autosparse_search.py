"""Bisection of AutoSparse's threshold init to a target (robustbench_sparse.autosparse_search).

Invariants: on a monotone response the bisection stops at the first probe inside the tolerance,
its probes stay inside the bracket that holds the answer, and when the runs run out it returns
the closest probe flagged ``within_tolerance = False``; end to end, a tiny digits job with
``autosparse_search_runs`` lands within the tolerance of its target and records every probe,
and its final checkpoint is the run with the accepted init.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.autosparse_search import (
    bisect_threshold_init,
    needs_search,
    upper_threshold_init,
)
from robustbench_sparse.sparsity import SparsityConfig
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import single_thread, tiny_job


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _response(s: float) -> float:
    """A monotone stand-in for 'achieved sparsity after training with s_init = s'."""
    return 1.0 / (1.0 + math.exp(-(s + 4.0) * 1.5))


def test_bisection_stops_inside_the_tolerance() -> None:
    calls: list[float] = []

    def achieved(s: float) -> float:
        calls.append(s)
        return _response(s)

    found = bisect_threshold_init(achieved, target=0.7, tolerance=0.02, runs=12, start=-5.0)
    assert found.within_tolerance
    assert abs(_response(found.threshold_init) - 0.7) <= 0.02
    assert [p.threshold_init for p in found.probes] == calls and calls[0] == -5.0
    assert found.probes[-1].threshold_init == found.threshold_init
    # every probe after the first is the middle of a bracket holding the answer
    lo, hi = -10.0, 0.0
    for p in found.probes:
        assert lo <= p.threshold_init <= hi
        if p.achieved < 0.7:
            lo = p.threshold_init
        else:
            hi = p.threshold_init


def test_out_of_runs_returns_the_closest_probe() -> None:
    found = bisect_threshold_init(_response, target=0.7, tolerance=1e-6, runs=3, start=-5.0)
    assert not found.within_tolerance and len(found.probes) == 3
    best = min(found.probes, key=lambda p: abs(p.achieved - 0.7))
    assert found.threshold_init == best.threshold_init
    assert found.record()["probes"][0] == {"threshold_init": -5.0, "achieved": _response(-5.0)}
    with pytest.raises(ValueError, match="runs"):
        bisect_threshold_init(_response, target=0.7, tolerance=0.02, runs=0, start=-5.0)


def test_only_autosparse_with_runs_searches() -> None:
    assert needs_search(SparsityConfig(target=0.7, method="autosparse", autosparse_search_runs=3))  # type: ignore[arg-type]
    assert not needs_search(SparsityConfig(target=0.7, method="autosparse"))  # type: ignore[arg-type]
    assert not needs_search(SparsityConfig(target=0.7, autosparse_search_runs=3))


def test_upper_end_is_the_logit_of_the_largest_pruned_weight() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.01)
        model.get_parameter("1.weight")[0, 0, 0, 0] = 0.2  # the only pruned layer
        model.get_parameter("0.weight")[0, 0, 0, 0] = 0.4  # first conv: dense by default
    sparsity = SparsityConfig(target=0.5, method="autosparse")  # type: ignore[arg-type]
    assert upper_threshold_init(model, sparsity) == pytest.approx(math.log(0.2 / 0.8))


@pytest.mark.slow
def test_job_search_lands_on_the_target_and_records_the_probes(tmp_path: Path) -> None:
    job = tiny_job(0.45, "unstructured", epochs=2, start=0.0, end=2.0)
    sparsity = dataclasses.replace(
        job.sparsity,
        method="autosparse",  # type: ignore[arg-type]
        autosparse_search_runs=8,
        autosparse_tolerance=0.02,
    )
    ck = run_train_job(dataclasses.replace(job, sparsity=sparsity), tmp_path / "s", progress=False)
    search = ck.meta["autosparse_search"]
    achieved = ck.meta["sparsity_report"]["achieved_pruned"]
    assert search["within_tolerance"] and abs(achieved - 0.45) <= 0.02
    assert ck.meta["sparsity"]["autosparse_threshold_init"] == search["threshold_init"]
    assert search["probes"][-1]["achieved"] == pytest.approx(achieved, abs=1e-12)
    assert len(search["probes"]) >= 2  # the default init (-5) is far from 45 % here
