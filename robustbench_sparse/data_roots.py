"""Where a checkpoint's data came from, and which data root its evaluation reads.

Training records the absolute data root it read (:func:`recorded_data_root`, the checkpoint's
``data_root`` key). Evaluating checkpoints (:func:`load_evaluation_split`) reads, in this order:
an explicit root (``--data-root``); else the root the checkpoints recorded, while it exists; else
the default root (:func:`~robustbench_sparse.datasets.default_data_root`) -- except for an
``imagefolder``, whose images are the user's own: a recorded folder that is gone is never replaced
by whatever the default root holds. Each choice is logged, and a root that cannot be found names
what was recorded and the ``--data-root`` flag.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from robustbench_sparse.datasets import default_data_root, load_split
from robustbench_sparse.errors import UserError

__all__ = ["RootChoice", "choose_root", "load_evaluation_split", "recorded_data_root"]

logger = logging.getLogger(__name__)

#: datasets that read no files (bundled with a library): nothing to record
BUNDLED = ("digits",)


def recorded_data_root(dataset: str, root: str | Path | None) -> str | None:
    """The absolute data root a job reads ``dataset`` from (``None`` for bundled data)."""
    if dataset in BUNDLED:
        return None
    return str((Path(root) if root is not None else default_data_root()).resolve())


def _names(checkpoints: list[str]) -> str:
    return ", ".join(checkpoints)


@dataclass(frozen=True)
class RootChoice:
    """The root to read (``None``: the default root) and, when a recorded root is gone, which."""

    root: Path | None
    gone: tuple[str, str] | None = None  # (checkpoint names, recorded root) no longer on disk


def choose_root(
    dataset: str, recorded: Mapping[str, str | None], explicit: str | Path | None
) -> RootChoice:
    """Pick the root for ``dataset`` from ``explicit`` and the checkpoints' ``recorded`` roots.

    ``recorded`` maps a checkpoint's name to the root it recorded (``None``: nothing recorded,
    e.g. a checkpoint written before roots were recorded, or a plain state dict).

    Raises:
        UserError: several recorded roots that all exist (which one?), or a recorded
            ``imagefolder`` root that no longer exists, both without ``explicit``.
    """
    by_root: dict[str, list[str]] = {}
    for name, root in recorded.items():
        if root is not None:
            by_root.setdefault(str(root), []).append(name)
    if dataset in BUNDLED:
        return RootChoice(Path(explicit) if explicit is not None else None)
    if explicit is not None:
        chosen = Path(explicit)
        other = {r: n for r, n in by_root.items() if Path(r) != chosen.resolve()}
        for root, names in other.items():
            logger.info(
                "%s: reading --data-root %s (checkpoint %s recorded %s)",
                dataset,
                chosen,
                _names(names),
                root,
            )
        return RootChoice(chosen)
    existing = {r: n for r, n in by_root.items() if Path(r).is_dir()}
    if len(existing) > 1:
        listed = "; ".join(f"{_names(n)}: {r}" for r, n in existing.items())
        raise UserError(
            f"the checkpoints were trained on {dataset} data at different roots ({listed}); "
            "pass --data-root DIR to choose one"
        )
    if existing:
        root, names = next(iter(existing.items()))
        logger.info(
            "%s: reading the data root recorded in checkpoint %s: %s (pass --data-root to "
            "choose another)",
            dataset,
            _names(names),
            root,
        )
        return RootChoice(Path(root))
    if not by_root:
        return RootChoice(None)  # nothing recorded: the default root, as before
    root, names = next(iter(by_root.items()))
    if dataset == "imagefolder":
        raise UserError(
            f"checkpoint {_names(names)} was trained on the imagefolder at {root}, which no longer "
            "exists; pass --data-root DIR pointing at that data (DIR/train and DIR/val or DIR/test)"
        )
    logger.warning(
        "%s: the data root recorded in checkpoint %s (%s) no longer exists; reading %s",
        dataset,
        _names(names),
        root,
        default_data_root(),
    )
    return RootChoice(None, gone=(_names(names), root))


def load_evaluation_split(
    dataset: str,
    recorded: Mapping[str, str | None],
    explicit: str | Path | None,
    **load_kwargs: Any,
) -> Dataset[Any]:
    """The test split of ``dataset`` from the root :func:`choose_root` picks.

    ``load_kwargs`` go to :func:`~robustbench_sparse.datasets.load_split` (``download``,
    ``limit``, ``augment``, ``image_size``).

    Raises:
        UserError: as :func:`choose_root`; or the data is missing, the message naming the
            recorded root that is gone and the ``--data-root`` flag.
    """
    choice = choose_root(dataset, recorded, explicit)
    try:
        return load_split(dataset, "test", choice.root, **load_kwargs)
    except UserError as exc:
        if choice.gone is None:
            raise
        names, root = choice.gone
        raise UserError(
            f"checkpoint {names} was trained on {dataset} data at {root}, which no longer exists, "
            f"and the default data root {default_data_root()} does not hold it either; pass "
            "--data-root DIR pointing at a copy"
        ) from exc
