"""``rbs run``'s ``[corruptions]`` and ``[certify]`` sections (issue 28).

``[corruptions]``: the keys of :data:`rbs.corruptions_job.CORRUPTIONS_KEYS` (``names``,
``severities``, ``extra``, ``seed``, ``batch_size``, ``limit``, ``device``); an empty table runs the
15 corruptions at severities 1-5. ``[certify.<method>]``: one table per certification method
(``smoothing``, ``ibp``) with the keys of ``rbs certify``'s config (:func:`rbs.certify_job.
certify_settings`). Both run after the attack grid, on the trained checkpoints and the
experiment's test split (``limit``: a class-balanced subset, the same for every checkpoint), and
write ``corruptions.csv`` / ``certified.csv`` into the results directory before the report is
drawn. They are recomputed on a resumed run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rbs.corruptions_job import (
    CorruptionSettings,
    corruption_settings,
    run_corruptions_job,
    write_corruptions_sidecar,
)
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.datasets import balanced_subset
from robustbench_sparse.errors import UserError

__all__ = ["CERTIFY_METHODS", "BeyondPlan", "beyond_plan", "run_beyond"]

logger = logging.getLogger(__name__)

CERTIFY_METHODS = ("smoothing", "ibp")


@dataclass(frozen=True)
class BeyondPlan:
    """What runs after the attack grid: corruptions (``None``: none) and certification tables."""

    corruptions: CorruptionSettings | None = None
    certify: tuple[Any, ...] = ()  # rbs.certify_job.CertifySettings, one per method

    def __bool__(self) -> bool:
        return self.corruptions is not None or bool(self.certify)


def _certify_settings(table: Mapping[str, Any], method: str) -> Any:
    try:
        from rbs.certify_job import certify_settings
    except ImportError as exc:  # helper A's module not present in this checkout
        raise UserError(
            f"[certify.{method}] needs rbs certify, which this installation lacks ({exc})"
        ) from exc
    if "method" in table and table["method"] != method:
        raise UserError(
            f"[certify.{method}] method = {table['method']!r} contradicts the table name"
        )
    return certify_settings({**table, "method": method}, where=f"[certify.{method}]")


def beyond_plan(config: Mapping[str, Any]) -> BeyondPlan:
    """The ``[corruptions]`` / ``[certify]`` sections of an experiment config, checked (UserError
    in one line) before anything trains."""
    corr = config.get("corruptions")
    cert = config.get("certify")
    if corr is not None and not isinstance(corr, Mapping):
        raise UserError("[corruptions] must be a table of keys (an empty table runs all 15)")
    if cert is not None and not isinstance(cert, Mapping):
        raise UserError(
            "[certify] must hold one table per method: [certify.smoothing], [certify.ibp]"
        )
    tables = []
    for method, table in (cert or {}).items():
        if method not in CERTIFY_METHODS or not isinstance(table, Mapping):
            raise UserError(
                f"[certify] {method!r}: expected a table per method, [certify.smoothing] or "
                "[certify.ibp]"
            )
        tables.append(_certify_settings(table, method))
    return BeyondPlan(corruption_settings(corr) if corr is not None else None, tuple(tables))


def run_beyond(
    plan: BeyondPlan,
    checkpoints: Sequence[LoadedCheckpoint],
    test: Any,
    results_dir: Path,
    *,
    dataset: str,
) -> None:
    """Run the plan on ``checkpoints`` over the test split ``test`` of ``dataset``; write
    ``corruptions.csv`` (+ ``corruptions.json``) and ``certified.csv`` into ``results_dir``."""
    if plan.corruptions is not None:
        s = plan.corruptions
        split = balanced_subset(test, s.limit, what="[corruptions] limit")
        _, record = run_corruptions_job(checkpoints, {dataset: split}, s, results_dir)
        write_corruptions_sidecar(results_dir, record)
    if plan.certify:
        from evaluations.record.certified import write_certified
        from rbs.certify_job import run_certify_job

        frames = []
        for s in plan.certify:
            split = balanced_subset(test, s.limit, what="[certify] limit")
            frames.append(run_certify_job(checkpoints, split, s, results_dir))
        write_certified(pd.concat(frames, ignore_index=True), results_dir)  # every method's rows
