"""Output-directory rules of ``rbs train``, ``rbs attack`` and ``rbs run``: one function, three rule sets.

Every command writes into ``--out``. A missing or empty directory is created. A non-empty one is

- replaced with ``overwrite`` (everything in it is deleted first);
- continued when its marker file records the same job (the fingerprint of the request or the
  experiment plan): re-running the same command picks up where it stopped;
- continued or refused under ``resume`` as the command's rules say;
- otherwise refused, with one line saying what to pass.

=========  ===============  ===================  ==========================  =====================
command    marker file      same job, no flag    ``resume``, another job     ``resume``, no marker
=========  ===============  ===================  ==========================  =====================
train      (none)           refused              continued (train state)     continued
attack     request.json     continued            continued; cells reused     refused
run        experiment.json  continued            refused: config changed     refused
=========  ===============  ===================  ==========================  =====================

``rbs train`` records no fingerprint, so without ``resume`` any non-empty directory is refused; with
it the training state in the directory is continued (a finished checkpoint is returned untouched).
``rbs attack`` under ``resume`` reuses the cells of another request that still match and records
the new fingerprint. ``rbs run`` never continues a changed experiment (its checkpoints would not
match the plan). Library code keeps these rules too: rank 0 alone applies them under torchrun.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustbench_sparse.atomic import atomic_write_text
from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutputRules:
    """How one command treats a non-empty output directory (see the module docstring)."""

    marker: str | None  # the file recording the job's fingerprint; None: no fingerprint
    resume_another_job: bool  # may ``resume`` continue a directory holding another job?
    refused: str  # a directory it may not continue; ``{out}`` is the quoted path
    changed: str = ""  # ``resume`` into another job when that is not allowed
    resuming: str = ""  # INFO line when an existing directory is continued (``%s``: the path)


TRAIN_RULES = OutputRules(
    marker=None,
    resume_another_job=True,
    refused="output directory {out} already exists and is not empty; "
    "pass --overwrite to replace it or --resume to continue it",
)
ATTACK_RULES = OutputRules(
    marker="request.json",
    resume_another_job=True,
    refused="output directory {out} already exists and holds a different run; "
    "pass --resume to continue it (finished cells are reused), --overwrite to replace it, "
    "or choose another --out",
    resuming="resuming the run in %s (finished cells are reused)",
)
RUN_RULES = OutputRules(
    marker="experiment.json",
    resume_another_job=False,
    refused="output directory {out} already exists and holds something else; "
    "pass --overwrite to replace it or choose another --out",
    changed="{out} holds a different experiment (config changed); "
    "use another --out or pass --overwrite",
    resuming="resuming the experiment in %s",
)


def prepare_output_dir(
    out: Path,
    rules: OutputRules,
    *,
    overwrite: bool,
    resume: bool,
    fingerprint: str | None = None,
    record: dict[str, Any] | None = None,
) -> bool:
    """Apply ``rules`` to ``out``; True when existing contents are continued.

    A new (or replaced) directory gets the marker ``{"fingerprint": ..., **record}``.
    """
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        else:
            same = _continue(out, rules, resume, fingerprint)
            if rules.resuming:
                logger.info(rules.resuming, out)
            if same or rules.marker is None:
                return True
            _write_marker(out / rules.marker, fingerprint, record)  # resumed another job
            return True
    out.mkdir(parents=True, exist_ok=True)
    if rules.marker is not None:
        _write_marker(out / rules.marker, fingerprint, record)
    return False


def _continue(out: Path, rules: OutputRules, resume: bool, fingerprint: str | None) -> bool:
    """May the non-empty ``out`` be continued? True: it holds the same job. Refusals raise."""
    quoted = repr(str(out))
    if rules.marker is None:
        if resume:
            return False
        raise UserError(rules.refused.format(out=quoted))
    marker = out / rules.marker
    if marker.is_file() and _recorded_fingerprint(marker) == fingerprint:
        return True
    if resume and marker.is_file():
        if rules.resume_another_job:
            return False
        raise UserError(rules.changed.format(out=quoted))
    raise UserError(rules.refused.format(out=quoted))


def _recorded_fingerprint(marker: Path) -> Any:
    try:
        return json.loads(marker.read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def _write_marker(marker: Path, fingerprint: str | None, record: dict[str, Any] | None) -> None:
    payload = {"fingerprint": fingerprint, **(record or {})}
    atomic_write_text(marker, json.dumps(payload, indent=2) + "\n")
