"""Tasks with fewer than 4 classes: APGD-T on the targeted cross-entropy, and the stage rule.

The DLR losses of AutoAttack (Croce & Hein, ICML 2020) read the 3rd (``apgd-dlr``, eq. 6) and 4th
(``apgd-t``, eq. 7) largest logit, so they are undefined on 2- and 3-class tasks: the authors'
code warns (``checks.check_n_classes``: "with only 3 classes it is not possible to use the
targeted DLR loss!") and then fails with an ``IndexError`` (fra31/auto-attack issue #70, open).
Its APGD-T carries one alternative loss, the targeted cross-entropy ``-CE(z, t)``
(``APGDAttack_targeted.ce_loss_targeted``, loss ``"ce-targeted"``), defined for any number of
classes. This module provides it as an attack of its own, ``apgd-t-ce`` (+ ``-l2``), and the rule
the AutoAttack cascades follow on few classes (:func:`stage_for_classes`):

* ``apgd-t`` (< 4 classes) and ``apgd-dlr`` (< 3 classes) run as ``apgd-t-ce`` with the same
  steps, restarts and seed; the targets are the ``min(n_target_classes, C - 1)`` most likely
  other classes at ``x``, as for APGD-T;
* every other stage (APGD-CE, FAB-T, FAB, Square) is defined for 2 classes and runs unchanged
  (FAB-T with ``C - 1`` targets).

On 2 classes the targeted cross-entropy toward the one other class is a monotone function of the
same margin ``z_t - z_y`` as the cross-entropy, so APGD-T-CE is then APGD-CE from another random
start (it can only add broken examples). Every substitution is recorded (``details`` of the
cascade, the results rows' ``params``, the sidecar's ``attacks`` and the report's attack table).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar

from attacks.apgd import _APGDTargetedBase
from attacks.norms import Norm
from attacks.registry import attack_class, list_attacks

__all__ = ["SUBSTITUTES", "APGDTargetedCE", "APGDTargetedCEL2", "stage_for_classes"]

#: stage (base name, no ``-l2``) -> the stage run instead below its ``min_classes``
SUBSTITUTES: dict[str, str] = {"apgd-t": "apgd-t-ce", "apgd-dlr": "apgd-t-ce"}


class _APGDTargetedCEBase(_APGDTargetedBase):
    loss_name: ClassVar[str] = "ce-targeted"
    min_classes: ClassVar[int] = 2
    few_classes_hint: ClassVar[str] = ""


@dataclass(frozen=True, repr=False)
class APGDTargetedCE(_APGDTargetedCEBase):
    """APGD-T on the targeted cross-entropy ``-CE(z, t)``, Linf; any number of classes >= 2."""

    name: ClassVar[str] = "apgd-t-ce"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class APGDTargetedCEL2(_APGDTargetedCEBase):
    """APGD-T on the targeted cross-entropy ``-CE(z, t)``, L2; any number of classes >= 2."""

    name: ClassVar[str] = "apgd-t-ce-l2"
    norm: ClassVar[Norm] = Norm.L2


def stage_for_classes(
    name: str, params: dict[str, Any], num_classes: int | None
) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """The native stage a cascade runs for ``name`` on a model of ``num_classes`` classes.

    Returns ``(name, params, substitution)``: unchanged with ``None`` where the stage is defined
    for ``num_classes`` (or the count is unknown, ``None``), else the substitute of
    :data:`SUBSTITUTES` with the parameters it shares and a record ``{"stage", "ran",
    "classes", "reason"}``. A stage with no substitute is returned unchanged (it refuses the model
    itself, in one line).
    """
    cls = attack_class(name, backend="native")
    if num_classes is None or num_classes >= cls.min_classes:
        return name, params, None
    suffix = next((s for s in ("-l2", "-l1") if name.endswith(s)), "")
    base = name[: len(name) - len(suffix)]
    sub = SUBSTITUTES.get(base, "") + suffix
    if base not in SUBSTITUTES or sub not in list_attacks("native"):
        return name, params, None
    keep = {f.name for f in fields(attack_class(sub, backend="native"))}  # type: ignore[arg-type]
    kept = {k: v for k, v in params.items() if k in keep}
    loss = "targeted DLR" if base == "apgd-t" else "DLR"
    record = {
        "stage": name,
        "ran": sub,
        "classes": num_classes,
        "reason": f"the {loss} loss needs {cls.min_classes} classes; targeted cross-entropy "
        "(the authors' alternative APGD-T loss) instead",
    }
    return sub, kept, record
