"""The tail every evaluation run shares (``rbs attack``, ``rbs run``).

After the grid: the evidence (invariants, masking checks, per-attack seeds), the sidecar
``results.json`` (the command, what was asked, seeds, evaluation subset, evidence and the compute
time accumulated over resumed invocations), the modelled hardware cost of every checkpoint
(``costs.csv``, :mod:`evaluations.record.costs`), then the figures and the report. Under torchrun
rank 0 alone writes; every rank gets the report paths.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evaluations.engine.grid import GridRun, grid_evidence
from evaluations.engine.masking import evaluation_evidence
from evaluations.engine.protocols import Protocol
from evaluations.engine.spec import GridConfig
from evaluations.record.certified import read_certified
from evaluations.record.certified_checks import VERIFIED_LE_ATTACKED, check_verified_le_attacked
from evaluations.record.compute_time import previous_sidecar, run_timing
from evaluations.record.costs import cost_table, write_costs
from evaluations.record.results import write_sidecar
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint


@dataclass(frozen=True)
class FinishedRun:
    """What :func:`finish_run` wrote: the report (``None`` without one) and the invariant checks."""

    report_md: Path | None
    report_html: Path | None
    invariants: dict[str, Any]


def finish_run(
    out: Path,
    grid_run: GridRun,
    checkpoints: list[LoadedCheckpoint],
    data: Any,
    grid: GridConfig,
    protocol: Protocol | None,
    *,
    header: Mapping[str, Any],
    seeds: Mapping[str, Any],
    evaluation_subset: Mapping[str, Any],
    t0: float,
    command: str | None,
    report: bool = True,
    masking: str | None = None,
) -> FinishedRun:
    """Evidence -> sidecar -> figures -> report for the grid run written to ``out``.

    ``data`` is what the grid ran on (one test split, or one per dataset); ``header`` the
    sidecar's leading keys after ``command`` (what was asked); ``seeds`` the seeds besides the
    attacks' own; ``t0`` when this invocation started (``time.perf_counter``).
    """
    previous = previous_sidecar(out)  # the last invocation's, for reuse and accumulated time
    evidence = grid_evidence(grid_run, checkpoints, grid)
    evidence.update(
        evaluation_evidence(
            grid_run,
            checkpoints,
            data,
            grid,
            protocol,
            [s.name for s in grid.attacks],
            previous_masking=previous.get("masking"),
            masking=masking,
        )
    )
    invariants = evidence["invariants"]
    certified = read_certified(out)  # rbs run's [certify] writes it before finishing
    if certified is not None:
        invariants[VERIFIED_LE_ATTACKED] = check_verified_le_attacked(grid_run.results, certified)
    sidecar = {
        "command": command,
        **header,
        "seeds": {**seeds, "attack": evidence.pop("attack_seeds")},
        "evaluation_subset": dict(evaluation_subset),
        **evidence,
        # accumulated over resumed runs (evaluations.record.compute_time), not this invocation only
        **run_timing(previous, grid_run, checkpoints, time.perf_counter() - t0, command, evidence),
    }
    paths: tuple[Path | None, Path | None] = (None, None)
    if rdist.is_main():  # under torchrun rank 0 alone writes
        sidecar["distributed"] = rdist.run_description()
        write_sidecar(out, sidecar)
        write_costs(out, cost_table(checkpoints))  # the modelled hardware cost of each checkpoint
        if report:
            # imported here: seaborn / matplotlib cost about a second of start-up that a
            # --no-report run (benchmarks, scripted grids) does not need
            from evaluations.present.plots import plot_all
            from evaluations.present.report import write_report

            plot_all(out)
            paths = write_report(out, command=command)  # (md, html)
    md, html = rdist.broadcast_object(paths)
    return FinishedRun(md, html, invariants)
