"""``rbs attack`` / ``rbs run``: the request's transfer settings -> one :class:`TransferPlan`.

``--save-adversarials`` writes every white-box cell's verified adversarials under
``<results>/adversarials/``; ``--transfer-from CKPT`` crafts on CKPT (added to the checkpoints when
it is not one of them) and scores every other checkpoint on its adversarials; ``--adversarials
DIR`` scores the checkpoints on adversarials saved by an earlier run (checked against the data
before the output directory is touched); ``--transfer-in-worst-case`` lets transfer cells join
the per-example worst case. See :mod:`evaluations.engine.transfer`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset, Subset

from evaluations.engine.transfer import TransferPlan, TransferSource, source_from_saved
from evaluations.record.adversarials import find_adversarial_files, load_adversarials
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.errors import UserError

#: the request fields of the transfer settings and their defaults (left out of fingerprints
#: when default, so earlier runs keep theirs)
TRANSFER_DEFAULTS: dict[str, Any] = {
    "save_adversarials": False,
    "adversarials": [],
    "transfer_from": None,
    "transfer_in_worst_case": False,
}


def drop_default_transfer_keys(payload: dict[str, Any]) -> None:
    """Remove the transfer settings left at their defaults from a fingerprint payload."""
    for key, default in TRANSFER_DEFAULTS.items():
        if key in payload and payload[key] in (default, None, ()):
            payload.pop(key)


def checkpoints_with_source(
    checkpoints: Sequence[Path], source: Path | None
) -> tuple[tuple[Path, ...], int | None]:
    """The checkpoints to load and the index of the transfer source among them.

    The source is put first when it is not one of ``checkpoints`` (same resolved path).
    """
    paths = tuple(Path(p) for p in checkpoints)
    if source is None:
        return paths, None
    resolved = [p.resolve() for p in paths]
    if Path(source).resolve() in resolved:
        return paths, resolved.index(Path(source).resolve())
    return (Path(source), *paths), 0


def _split_root(test: Dataset[Any]) -> Dataset[Any]:
    """The whole split a (limited) evaluation split was taken from: saved example indices point
    into it (:func:`evaluations.engine.transfer.example_indices`)."""
    while isinstance(test, Subset):
        test = test.dataset
    return test


def saved_sources(
    roots: Sequence[Path], data: Mapping[str, Dataset[Any]]
) -> tuple[TransferSource, ...]:
    """Every saved-adversarials file under ``roots``, checked against ``data`` (dataset name ->
    the test split as evaluated).

    Raises:
        UserError: no files, a file for a dataset no checkpoint is evaluated on, or a file that
            does not match the data (:func:`evaluations.engine.transfer.check_saved`).
    """
    sources = []
    for root in roots:
        for path in find_adversarial_files(root):
            saved = load_adversarials(path)
            if saved.dataset not in data:
                have = ", ".join(sorted(data))
                raise UserError(
                    f"--adversarials {path}: made on {saved.dataset!r}, but the checkpoints are "
                    f"evaluated on {have}"
                )
            sources.append(source_from_saved(saved, _split_root(data[saved.dataset])))
    return tuple(sources)


def transfer_plan(
    *,
    save: bool,
    source_index: int | None,
    checkpoints: Sequence[LoadedCheckpoint],
    adversarials: Sequence[Path],
    data: Mapping[str, Dataset[Any]],
    in_worst_case: bool,
) -> TransferPlan:
    """The plan of one ``rbs attack`` (everything checked; nothing written yet)."""
    source = checkpoints[source_index].name if source_index is not None else None
    if in_worst_case and source is None and not adversarials:
        raise UserError("--transfer-in-worst-case needs --transfer-from CKPT or --adversarials DIR")
    if source is not None and len(checkpoints) < 2:
        raise UserError(
            "--transfer-from CKPT scores the other checkpoints on CKPT's adversarials; "
            "give at least one --checkpoint besides it"
        )
    return TransferPlan(
        save=save,
        source=source,
        in_worst_case=in_worst_case,
        sources=saved_sources(adversarials, data),
    )


#: ``rbs run``'s ``[attack]`` keys of the transfer settings (an experiment's models are its own:
#: no saved files are read there)
RUN_TRANSFER_KEYS = ("save_adversarials", "transfer_from", "transfer_in_worst_case")


def experiment_transfer(attack_cfg: Mapping[str, Any], models: Sequence[str]) -> TransferPlan:
    """``[attack] save_adversarials / transfer_from / transfer_in_worst_case`` of an experiment.

    ``transfer_from`` names one of the experiment's models (``"dense"``: craft on the dense
    model, score each sparse one).

    Raises:
        UserError: a value of the wrong type, an unknown model, or the worst-case key without a
            source.
    """
    for key in ("save_adversarials", "transfer_in_worst_case"):
        if not isinstance(attack_cfg.get(key, False), bool):
            raise UserError(f"[attack] {key} must be true or false, got {attack_cfg[key]!r}")
    source = attack_cfg.get("transfer_from")
    if source is not None and (not isinstance(source, str) or source not in models):
        raise UserError(
            f"[attack] transfer_from {source!r} is not a model of this experiment; "
            f"valid: {', '.join(models)}"
        )
    if source is not None and len(models) < 2:
        raise UserError("[attack] transfer_from needs at least one other model to score")
    in_worst_case = bool(attack_cfg.get("transfer_in_worst_case", False))
    if in_worst_case and source is None:
        raise UserError("[attack] transfer_in_worst_case needs [attack] transfer_from")
    return TransferPlan(
        save=bool(attack_cfg.get("save_adversarials", False)),
        source=source,
        in_worst_case=in_worst_case,
    )


def transfer_settings(attack_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The transfer keys an experiment set (for its resolved config; ``{}`` when none, so the
    fingerprints of earlier experiments stay as they were)."""
    return {k: attack_cfg[k] for k in RUN_TRANSFER_KEYS if k in attack_cfg}
