"""The sidecar's ``attacks`` record: what every attack of a grid ran, per class count.

One entry per (attack spec, number of classes of the checkpoints it attacked): the registry name,
backend, norm, the parameters (:meth:`attacks.Attack.params`: steps, restarts, ...) and what the
attack decides from the class count (:meth:`attacks.Attack.settings_for`: the targets a targeted
attack can have, an AutoAttack cascade's stages with their restarts and targets, and the stages
substituted on fewer than 4 classes, :mod:`attacks.few_classes`). The report's attack table
(:func:`evaluations.present.report_evaluation.attack_blocks`) is drawn from it, so the restarts and
any substitution a number was made with stand next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evaluations.engine.spec import AttackSpec
from robustbench_sparse.checkpoint import LoadedCheckpoint

__all__ = ["attack_settings", "check_class_counts"]


def attack_settings(
    specs: Sequence[AttackSpec], checkpoints: Sequence[LoadedCheckpoint]
) -> list[dict[str, Any]]:
    """``[{"attack", "backend", "norm", "classes", "checkpoints", "params", **settings}, ...]``."""
    by_classes: dict[int, list[str]] = {}
    for ckpt in checkpoints:
        by_classes.setdefault(int(ckpt.info.num_classes), []).append(ckpt.name)
    records: list[dict[str, Any]] = []
    for spec in specs:
        attack = spec.build()
        for classes, names in sorted(by_classes.items()):
            records.append(
                {
                    "attack": spec.name,
                    "backend": spec.backend,
                    "norm": attack.norm.value,
                    "classes": classes,
                    "checkpoints": names,
                    "params": attack.params(),
                    **attack.settings_for(classes),
                }
            )
    return records


def check_class_counts(specs: Sequence[AttackSpec], class_counts: Sequence[int]) -> None:
    """Refuse, before anything runs or is written, an attack whose loss needs more classes.

    ``class_counts``: the class counts of the checkpoints (or the data set) to attack.

    Raises:
        attacks.AttackInputError: one line from :meth:`attacks.Attack.check_classes` (e.g.
            pyautoattack's ``apgd-t`` on a 3-class task); the native AutoAttack cascades never
            raise it (they substitute, :mod:`attacks.few_classes`).
    """
    for spec in specs:
        attack = spec.build()
        for classes in sorted(set(class_counts)):
            attack.check_classes(int(classes))
