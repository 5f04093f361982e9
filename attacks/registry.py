"""Attacks by name and backend: ``get_attack("pgd", backend="foolbox", steps=40)``.

Backend modules import their library (torchattacks, foolbox, pyautoattack) only when first used.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import fields
from enum import Enum
from typing import Any

from attacks.base import Attack, AttackConfigError

__all__ = ["Backend", "get_attack", "list_attacks", "list_backends"]


class Backend(str, Enum):
    """Where an attack's implementation comes from."""

    NATIVE = "native"
    TORCHATTACKS = "torchattacks"
    FOOLBOX = "foolbox"
    AUTOATTACK = "autoattack"  # PyPI pyautoattack (the authors' AutoAttack code)
    ADV_LIB = "adv-lib"  # PyPI adv-lib (Rony's Adversarial Library)


# backend -> attack name -> "module:Class"
_REGISTRY: dict[Backend, dict[str, str]] = {
    Backend.NATIVE: {
        "fgsm": "attacks.fgsm:NativeFGSM",
        "pgd": "attacks.pgd:NativePGD",
        "pgd-l2": "attacks.pgd:NativePGDL2",
        "cw": "attacks.cw:NativeCW",
        "apgd-ce": "attacks.apgd:APGDCE",
        "apgd-ce-l2": "attacks.apgd:APGDCEL2",
        "apgd-dlr": "attacks.apgd:APGDDLR",
        "apgd-dlr-l2": "attacks.apgd:APGDDLRL2",
        "apgd-t": "attacks.apgd:APGDTargeted",
        "apgd-t-l2": "attacks.apgd:APGDTargetedL2",
        "apgd-t-ce": "attacks.few_classes:APGDTargetedCE",
        "apgd-t-ce-l2": "attacks.few_classes:APGDTargetedCEL2",
        "apgd-ce-l1": "attacks.apgd_l1:APGDCEL1",
        "apgd-t-l1": "attacks.apgd_l1:APGDTargetedL1",
        "apgd-t-ce-l1": "attacks.apgd_l1:APGDTargetedCEL1",
        "autoattack": "attacks.autoattack:AutoAttack",
        "autoattack-l2": "attacks.autoattack:AutoAttackL2",
        "autoattack-l1": "attacks.autoattack:AutoAttackL1",
        "autoattack-plus": "attacks.autoattack:AutoAttackPlus",
        "autoattack-plus-l2": "attacks.autoattack:AutoAttackPlusL2",
        "fab": "attacks.fab:NativeFAB",
        "fab-l2": "attacks.fab:NativeFABL2",
        "fab-t": "attacks.fab:NativeFABT",
        "fab-t-l2": "attacks.fab:NativeFABTL2",
        "square": "attacks.square:NativeSquare",
        "square-l2": "attacks.square:NativeSquareL2",
        "fmn": "attacks.fmn:NativeFMN",
        "fmn-l2": "attacks.fmn:NativeFMNL2",
    },
    Backend.TORCHATTACKS: {
        "fgsm": "attacks.backends.torchattacks_backend:TorchattacksFGSM",
        "pgd": "attacks.backends.torchattacks_backend:TorchattacksPGD",
        "pgd-l2": "attacks.backends.torchattacks_backend:TorchattacksPGDL2",
        "cw-fixed-c": "attacks.backends.torchattacks_backend:TorchattacksCWFixedC",
    },
    Backend.FOOLBOX: {
        "fgsm": "attacks.backends.foolbox_backend:FoolboxFGSM",
        "pgd": "attacks.backends.foolbox_backend:FoolboxPGD",
        "pgd-l2": "attacks.backends.foolbox_backend:FoolboxPGDL2",
        "cw": "attacks.backends.foolbox_backend:FoolboxCW",
    },
    Backend.AUTOATTACK: {
        "autoattack": "attacks.backends.autoattack_backend:PyAutoAttack",
        "autoattack-l2": "attacks.backends.autoattack_backend:PyAutoAttackL2",
        "apgd-ce": "attacks.backends.autoattack_backend:PyAutoAttackAPGDCE",
        "apgd-ce-l2": "attacks.backends.autoattack_backend:PyAutoAttackAPGDCEL2",
        "apgd-t": "attacks.backends.autoattack_backend:PyAutoAttackAPGDT",
        "apgd-t-l2": "attacks.backends.autoattack_backend:PyAutoAttackAPGDTL2",
    },
    Backend.ADV_LIB: {
        "apgd-ce": "attacks.backends.advlib_backend:AdvlibAPGDCE",
        "apgd-ce-l2": "attacks.backends.advlib_backend:AdvlibAPGDCEL2",
        "apgd-dlr": "attacks.backends.advlib_backend:AdvlibAPGDDLR",
        "apgd-dlr-l2": "attacks.backends.advlib_backend:AdvlibAPGDDLRL2",
        "apgd-t": "attacks.backends.advlib_backend:AdvlibAPGDT",
        "apgd-t-l2": "attacks.backends.advlib_backend:AdvlibAPGDTL2",
        "fmn": "attacks.backends.advlib_backend:AdvlibFMN",
        "fmn-l2": "attacks.backends.advlib_backend:AdvlibFMNL2",
        "fab": "attacks.backends.advlib_backend:AdvlibFAB",
        "fab-l2": "attacks.backends.advlib_backend:AdvlibFABL2",
        "fab-t": "attacks.backends.advlib_backend:AdvlibFABT",
        "fab-t-l2": "attacks.backends.advlib_backend:AdvlibFABTL2",
        "ddn": "attacks.backends.advlib_backend:AdvlibDDN",
    },
}


def list_backends() -> list[str]:
    """Names of the available backends."""
    return [b.value for b in Backend]


def _parse_backend(backend: str | Backend) -> Backend:
    try:
        return Backend(backend)
    except ValueError:
        raise AttackConfigError(
            f"unknown attack backend {backend!r}; valid: {', '.join(list_backends())}"
        ) from None


def list_attacks(backend: str | None = None) -> list[str]:
    """Sorted attack names of one backend, or of all backends (deduplicated) if ``None``."""
    if backend is None:
        return sorted({name for table in _REGISTRY.values() for name in table})
    return sorted(_REGISTRY[_parse_backend(backend)])


def attack_class(name: str, *, backend: str = "native") -> type[Attack]:
    """The class implementing ``name`` in ``backend`` (imports the backend module)."""
    b = _parse_backend(backend)
    table = _REGISTRY[b]
    if name not in table:
        lowered = {k.lower(): k for k in table}
        close = difflib.get_close_matches(name.lower(), list(lowered), n=1)
        hint = f"; did you mean {lowered[close[0]]!r}?" if close else ""
        raise AttackConfigError(
            f"unknown attack {name!r} for backend {b.value!r}; valid: "
            f"{', '.join(sorted(table))}{hint}"
        )
    module_name, class_name = table[name].split(":")
    cls: type[Attack] = getattr(importlib.import_module(module_name), class_name)
    return cls


def get_attack(name: str, *, backend: str = "native", **params: Any) -> Attack:
    """Build attack ``name`` of ``backend`` with ``params`` (validated; unknown ones rejected)."""
    cls = attack_class(name, backend=backend)
    valid = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise AttackConfigError(
            f"unknown parameter(s) {', '.join(unknown)} for attack {name!r} ({backend}); "
            f"valid: {', '.join(valid) or '(none)'}"
        )
    return cls(**params)
