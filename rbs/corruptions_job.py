"""Common corruptions for ``rbs attack --protocol corruptions`` and ``rbs run``'s ``[corruptions]``.

:func:`run_corruptions_job` corrupts each checkpoint's test split (:mod:`evaluations.engine.corruptions`:
the 15 corruptions of Hendrycks & Dietterich 2019, severities 1-5, generated and seeded, not the
published CIFAR-10-C files) and writes ``corruptions.csv`` (:mod:`evaluations.record.corruptions`)
into the results directory; :func:`run_corruptions_command` is the whole ``rbs attack`` run
(output directory rules, ``corruptions.json`` sidecar, report).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from evaluations.engine.corruptions import SEVERITIES, corruption_names, evaluate_corruptions
from evaluations.record.corruptions import CLEAN, with_intervals, write_corruptions
from evaluations.record.training_methods import checkpoint_training
from robustbench_sparse.atomic import atomic_write_text
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.config import to_jsonable
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError

__all__ = [
    "CORRUPTIONS_JSON",
    "CORRUPTIONS_KEYS",
    "PROTOCOL",
    "CorruptionSettings",
    "corruption_settings",
    "run_corruptions_job",
    "write_corruptions_sidecar",
]

logger = logging.getLogger(__name__)

#: the ``--protocol`` value that runs the corruptions instead of attacks
PROTOCOL = "corruptions"
CORRUPTIONS_JSON = "corruptions.json"
#: the keys of a ``[corruptions]`` section
CORRUPTIONS_KEYS = ("names", "severities", "extra", "seed", "batch_size", "limit", "device")


@dataclass(frozen=True)
class CorruptionSettings:
    """What to corrupt: ``names`` (empty: the 15 test corruptions, plus the 4 held-out ones with
    ``extra``), ``severities`` (1..5), the ``seed`` of the per-image noise, the evaluation batch
    size, the test-example ``limit`` (class-balanced, as ``rbs attack``) and the device."""

    names: tuple[str, ...] = ()
    severities: tuple[int, ...] = SEVERITIES
    extra: bool = False
    seed: int = 0
    batch_size: int = 500
    limit: int | None = None
    device: str = "cpu"

    def corruptions(self) -> list[str]:
        """The corruption names to run (checked: UserError naming the valid ones)."""
        return corruption_names(self.names, extra=self.extra)


def corruption_settings(
    table: Mapping[str, Any], where: str = "[corruptions]"
) -> CorruptionSettings:
    """A ``[corruptions]`` table -> :class:`CorruptionSettings` (UserError in one line)."""
    unknown = sorted(set(table) - set(CORRUPTIONS_KEYS))
    if unknown:
        raise UserError(
            f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(CORRUPTIONS_KEYS)}"
        )
    names = table.get("names", [])
    names = [names] if isinstance(names, str) else list(names)
    severities = tuple(int(s) for s in table.get("severities", SEVERITIES))
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise UserError(f"{where} severities must be among 1..5 (got {list(severities)})")
    limit = table.get("limit")
    if limit is not None and int(limit) < 1:
        raise UserError(f"{where} limit must be >= 1 (got {limit})")
    settings = CorruptionSettings(
        names=tuple(str(n) for n in names),
        severities=severities,
        extra=bool(table.get("extra", False)),
        seed=int(table.get("seed", 0)),
        batch_size=int(table.get("batch_size", 500)),
        limit=None if limit is None else int(limit),
        device=str(table.get("device", "cpu")),
    )
    if settings.batch_size < 1:
        raise UserError(f"{where} batch_size must be >= 1 (got {settings.batch_size})")
    settings.corruptions()  # unknown names fail here, before anything runs
    return settings


def _tensors(split: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A test split of (image, label) pairs -> (N, C, H, W) images, (N,) labels."""
    xs, ys = zip(*(split[i] for i in range(len(split))), strict=True)
    return torch.stack(list(xs)), torch.as_tensor([int(y) for y in ys])


def _ident(ckpt: LoadedCheckpoint) -> dict[str, Any]:
    return {
        "checkpoint": ckpt.name,
        "arch": str(ckpt.meta.get("arch")),
        "dataset": ckpt.info.name,
        "granularity": ckpt.granularity,
        "sparsity_target": ckpt.sparsity_target,
        "sparsity_achieved": ckpt.sparsity_achieved,
        "training": checkpoint_training(ckpt.meta)["training"],
    }


def run_corruptions_job(
    checkpoints: Sequence[LoadedCheckpoint],
    data: Mapping[str, Any],
    settings: CorruptionSettings,
    out_dir: str | Path,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Evaluate every checkpoint under the corruptions; write ``out_dir/corruptions.csv``.

    ``data`` maps a dataset name to its test split (already limited). Returns the rows and a
    record for the sidecar (settings, per-checkpoint skipped corruptions with their reason).
    """
    device = resolve_device(settings.device)
    names = settings.corruptions()
    rows: list[dict[str, Any]] = []
    skipped: dict[str, dict[str, str]] = {}
    for ckpt in checkpoints:
        x, y = _tensors(data[ckpt.info.name])
        t0 = time.perf_counter()
        logger.info("corruptions: %s (%d images, %d corruptions)", ckpt.name, len(y), len(names))
        model = ckpt.model.to(device)
        outcome = evaluate_corruptions(
            model,
            x,
            y,
            names,
            severities=settings.severities,
            seed=settings.seed,
            batch_size=settings.batch_size,
            device=device,
        )
        ident = _ident(ckpt)
        clean = {
            "corruption": CLEAN,
            "severity": 0,
            "n": outcome.n,
            "correct": outcome.clean_correct,
            "seconds": time.perf_counter()
            - t0
            - sum(float(str(r["seconds"])) for r in outcome.rows),
            "parameters": "",
        }
        rows += [{**ident, **r} for r in (clean, *outcome.rows)]
        if outcome.skipped:
            skipped[ckpt.name] = outcome.skipped
    df = with_intervals(pd.DataFrame(rows))
    write_corruptions(df, out_dir)
    record = {
        "settings": to_jsonable(settings),
        "corruptions": names,
        "skipped": skipped,
        "images": "generated (imagecorruptions formulas, CIFAR-10-C parameters except snow, "
        "frost, elastic_transform, spatter); not the published CIFAR-10-C files",
    }
    return df, record


def write_corruptions_sidecar(out_dir: str | Path, record: Mapping[str, Any]) -> Path:
    """Write ``corruptions.json`` (what was run, what was skipped) next to ``corruptions.csv``."""
    text = json.dumps(to_jsonable(dict(record)), indent=2, default=str) + "\n"
    return atomic_write_text(Path(out_dir) / CORRUPTIONS_JSON, text)
