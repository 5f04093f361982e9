"""``[[models.posttrain]]`` of ``rbs run``: post-training models made from the run's dense models.

Each table names a post-training method (:data:`~robustbench_sparse.posttrain.POST_TRAINING_METHODS`)
and is applied, after every model of the run has trained, to the planned *dense* models it names
(``from``; default: every dense model, e.g. ``dense`` and ``pgd-dense`` under ``trainings``)::

    [[models.posttrain]]
    method = "calibrated"
    target = 0.7
    granularity = "unstructured"   # default: the method's first
    from = ["dense"]               # default: every dense model of the plan
    calibration = 300              # calibration images; calibration_data = "fractal": data-free
    options = { iterations = 30 }  # the method's options (rbs prune --option)

A model made from ``dense`` is named like a trained one (``calibrated-70``,
``calibrated-window-70``); from ``pgd-dense`` it keeps the training prefix (``pgd-calibrated-70``).
Its checkpoint lies beside the trained ones (``checkpoints/<name>``) and is written once: a
re-run of the same experiment reuses it. Every one is planned (keys, method, granularity, names)
before anything trains.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint, load_checkpoint
from robustbench_sparse.checkpoint_files import META_FILE
from robustbench_sparse.config import check_keys
from robustbench_sparse.errors import UserError
from robustbench_sparse.posttrain import PostTrainConfig, get_post_training_method
from robustbench_sparse.posttrain.data import CALIBRATION_SOURCES, DEFAULT_CALIBRATION_IMAGES
from robustbench_sparse.posttrain.job import PruneJob, run_prune_job
from robustbench_sparse.sparsity.config import SparsityConfig

__all__ = [
    "POSTTRAIN_KEYS",
    "PostTrainPlan",
    "posttrain_plans",
    "refuse_post_training",
    "run_posttrain_plans",
]

logger = logging.getLogger(__name__)

POSTTRAIN_KEYS = [
    "method",
    "target",
    "granularity",
    "from",
    "calibration",
    "calibration_data",
    "seed",
    "options",
]
_TABLES = "[models] posttrain must be a list of tables {method, target, ...}"


@dataclass(frozen=True)
class PostTrainPlan:
    """One post-training model: its name, the planned dense model it starts from, the settings."""

    name: str
    source: str
    config: PostTrainConfig
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    calibration_data: str = "train"

    def record(self) -> dict[str, Any]:
        """JSON-safe (part of the experiment's fingerprint)."""
        return {
            "name": self.name,
            "from": self.source,
            "config": self.config.to_dict(),
            "calibration": self.calibration,
            "calibration_data": self.calibration_data,
        }


def refuse_post_training(method: str, where: str) -> None:
    """A post-training method listed where models are trained: one line pointing at posttrain.

    Raises:
        UserError: ``method`` is a post-training method.
    """
    from robustbench_sparse.posttrain import POST_TRAINING_METHODS

    if method in POST_TRAINING_METHODS:
        raise UserError(
            f"{where}: {method} is a post-training method; list it as "
            f'[[models.posttrain]] method = "{method}" (made from the run\'s dense models)'
        )


def posttrain_plans(
    entries: Any, dense: Sequence[tuple[str, str]], taken: Sequence[str], seed: int, device: str
) -> list[PostTrainPlan]:
    """The ``[[models.posttrain]]`` tables resolved against the planned models.

    Args:
        entries: the tables (``None``: none).
        dense: ``(name, training prefix)`` of every planned dense model (``("pgd-dense", "pgd-")``).
        taken: every planned model's name (a post-training name must be new).
        seed: the default seed (``[train] seed``).
        device: the device the method computes on (``[train] device``).

    Raises:
        UserError: not a list of tables, an unknown key / method / granularity, a target outside
            (0, 1), a ``from`` that is not a planned dense model, a name given twice.
    """
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise UserError(_TABLES)
    plans: list[PostTrainPlan] = []
    names = set(taken)
    prefixes = dict(dense)
    for item in entries:
        if not isinstance(item, dict):
            raise UserError(_TABLES)
        check_keys("models.posttrain", item, POSTTRAIN_KEYS)
        for plan in _table_plans(item, prefixes, seed, device):
            if plan.name in names:
                raise UserError(f"[models.posttrain] model {plan.name!r} is planned twice")
            names.add(plan.name)
            plans.append(plan)
    return plans


def _table_plans(
    item: dict[str, Any], prefixes: dict[str, str], seed: int, device: str
) -> list[PostTrainPlan]:
    method = get_post_training_method(str(item.get("method", "")))
    granularity = str(item.get("granularity", method.granularities[0])).lower()
    if granularity not in method.granularities:
        raise UserError(
            f"[models.posttrain] {method.name} supports granularity "
            f"{', '.join(method.granularities)}; got {granularity!r}"
        )
    target = item.get("target", 0.7)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise UserError(f"[models.posttrain] target must be in (0, 1); got {target!r}")
    options = item.get("options", {})
    if not isinstance(options, dict):
        raise UserError("[models.posttrain] options must be a table, e.g. { iterations = 30 }")
    data = str(item.get("calibration_data", "train"))
    if data not in CALIBRATION_SOURCES:
        raise UserError(
            f"[models.posttrain] calibration_data must be one of {', '.join(CALIBRATION_SOURCES)}"
        )
    count = item.get("calibration", DEFAULT_CALIBRATION_IMAGES)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise UserError(f"[models.posttrain] calibration must be a positive integer; got {count!r}")
    config = PostTrainConfig(
        method.name, float(target), granularity, int(item.get("seed", seed)), device, options
    ).with_defaults(method.default_options)  # unknown options fail here
    sources = item.get("from", list(prefixes))
    sources = [sources] if isinstance(sources, str) else sources
    if not isinstance(sources, list) or not sources:
        raise UserError("[models.posttrain] from must name planned dense models, e.g. ['dense']")
    label = _label(method.name, granularity, float(target))
    plans = []
    for source in sources:
        if source not in prefixes:
            raise UserError(
                f"[models.posttrain] from {source!r} is not a dense model of this run; "
                f"planned dense models: {', '.join(prefixes) or 'none'}"
            )
        name = f"{prefixes[source]}{label}"
        plans.append(PostTrainPlan(name, str(source), config, count, data))
    return plans


def _label(method: str, granularity: str, target: float) -> str:
    """``calibrated-70`` / ``calibrated-window-70`` (a method without a sparsity section: as is)."""
    try:
        label = SparsityConfig(target, granularity, method=method).label  # type: ignore[arg-type]
    except UserError:  # a granularity only the method knows (filtersketch: filter)
        label = method if granularity == "unstructured" else f"{method}-{granularity}"
    return f"{label}-{round(target * 100):02d}"


def run_posttrain_plans(
    plans: Sequence[PostTrainPlan], checkpoints_dir: Path, data_root: str | None
) -> list[LoadedCheckpoint]:
    """Make every planned post-training checkpoint (rank 0; reused when already written) and load
    them all."""
    out: list[LoadedCheckpoint] = []
    for i, plan in enumerate(plans, 1):
        where = checkpoints_dir / plan.name
        if not (where / META_FILE).is_file():
            logger.info("[post-training %d/%d] %s from %s", i, len(plans), plan.name, plan.source)
            job = PruneJob(
                source=checkpoints_dir / plan.source,
                out=where,
                config=plan.config,
                calibration=plan.calibration,
                calibration_data=plan.calibration_data,
                data_root=data_root,
                overwrite=True,
                name=plan.name,
            )
            rdist.on_main(partial(run_prune_job, job))  # the others wait for it
        out.append(load_checkpoint(where))
    return out
