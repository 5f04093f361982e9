"""Compute time that accumulates over resumed runs.

A results directory is often produced by several invocations: an interrupted first run, a resumed
one, a no-op re-run that only rewrites the report. Timing one invocation (``perf_counter`` around
the command) then reports whatever the *last* invocation did ("43.2 min" became "5.8 s" after a
no-op re-run). Instead the sidecar's ``total_seconds`` is the sum of the stored pieces of work:

* training: the per-epoch ``seconds`` in each checkpoint's ``history`` (every finished epoch,
  including epochs of interrupted runs that a resume kept), else its ``train_seconds``;
* attacks: the stored ``seconds`` of every (checkpoint, attack) cell, computed or reused;
* masking: the gradient-masking checks' probes (``masking.seconds`` of the sidecar; a re-run that
  reuses the record keeps its time).

A reused piece keeps the time it took when it was computed, so re-running never changes the total;
work lost to an interruption (an unfinished epoch or cell) is not counted. Each invocation's wall
time, device and thread count are kept in ``invocations`` (appended to the previous sidecar's list).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_sidecar
from robustbench_sparse.errors import UserError

__all__ = [
    "accumulated_time",
    "attack_seconds",
    "masking_seconds",
    "previous_sidecar",
    "run_timing",
    "training_seconds",
]


def training_seconds(meta: Mapping[str, Any]) -> float:
    """Seconds of training stored in one checkpoint's metadata (sum over finished epochs)."""
    history = meta.get("history")
    if isinstance(history, list) and history:
        total = 0.0
        for h in history:
            try:
                total += float(h.get("seconds", 0.0)) if isinstance(h, Mapping) else 0.0
            except (TypeError, ValueError):
                continue
        if total > 0:
            return total
    try:
        value = float(meta.get("train_seconds", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) else 0.0


def attack_seconds(results: pd.DataFrame) -> float:
    """Seconds of attack cells in a results table (worst-case rows carry no time of their own)."""
    if results.empty or "seconds" not in results:
        return 0.0
    single = results[results["attack"] != WORST_CASE]
    return float(pd.to_numeric(single["seconds"], errors="coerce").fillna(0.0).sum())


def masking_seconds(evidence: Mapping[str, Any]) -> float:
    """Seconds of the gradient-masking probes in a sidecar (or its evidence); 0 when absent."""
    record = evidence.get("masking")
    try:
        value = float(record.get("seconds", 0.0) or 0.0) if isinstance(record, Mapping) else 0.0
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def accumulated_time(
    previous: Mapping[str, Any],
    checkpoint_metas: Iterable[Mapping[str, Any]],
    results: pd.DataFrame,
    *,
    wall_seconds: float,
    device: str,
    threads: int,
    cells_computed: int,
    cells_reused: int,
    command: str | None,
    masking_seconds: float = 0.0,
    thread_policy: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The sidecar's timing keys: ``total_seconds``, ``compute_seconds``, ``invocations``.

    ``previous`` is the sidecar of the last invocation on this directory (``{}`` if none); an old
    sidecar without ``invocations`` contributes one entry with its ``total_seconds`` as wall time.
    ``thread_policy`` (:func:`robustbench_sparse.threads.threads_record`: how the thread count was
    chosen and every count used) goes into the invocation as ``thread_policy``.
    """
    train = sum(training_seconds(m) for m in checkpoint_metas)
    attack = attack_seconds(results)
    invocations = list(previous.get("invocations") or [])
    if not invocations and "total_seconds" in previous:
        invocations.append(
            {"wall_seconds": previous.get("total_seconds"), "note": "recorded before invocations"}
        )
    invocations.append(
        {
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "wall_seconds": wall_seconds,
            "device": device,
            "threads": threads,
            **({"thread_policy": thread_policy} if thread_policy else {}),
            "cells_computed": cells_computed,
            "cells_reused": cells_reused,
            "command": command,
        }
    )
    masking = masking_seconds if math.isfinite(masking_seconds) and masking_seconds > 0 else 0.0
    return {
        "total_seconds": train + attack + masking,
        "compute_seconds": {"training": train, "attacks": attack, "masking": masking},
        "invocations": invocations,
    }


def run_timing(
    previous: Mapping[str, Any],
    grid_run: Any,
    checkpoints: Iterable[Any],
    wall_seconds: float,
    command: str | None,
    evidence: Mapping[str, Any],
) -> dict[str, Any]:
    """:func:`accumulated_time` for a finished grid run (``evaluations.engine.grid.GridRun``); ``previous``
    is the sidecar already in its results directory (:func:`previous_sidecar`).

    ``evidence`` is the sidecar's evidence so far: its ``device`` and the ``masking`` record
    (whose probe time counts, see :func:`masking_seconds`).
    """
    from robustbench_sparse.threads import threads_record

    record = threads_record()
    return accumulated_time(
        previous,
        [c.meta for c in checkpoints],
        grid_run.results,
        wall_seconds=wall_seconds,
        device=str(evidence.get("device")),
        threads=max(record["counts"]),
        cells_computed=int(grid_run.cells_computed),
        cells_reused=int(grid_run.cells_reused),
        command=command,
        masking_seconds=masking_seconds(evidence),
        thread_policy=record,
    )


def previous_sidecar(results_dir: Any) -> dict[str, Any]:
    """The sidecar already in ``results_dir`` (``{}`` when there is none or it is unreadable:
    an unreadable old sidecar is replaced, as before)."""

    try:
        return dict(read_sidecar(results_dir, missing_ok=True))
    except UserError:
        return {}
