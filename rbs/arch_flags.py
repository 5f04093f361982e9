"""The flags that name an architecture: ``--arch``, ``--arch-kwargs`` and ``--trust-arch``.

``--arch`` takes a registered name, ``tv:<name>`` or the user's own ``package.module:ClassName``
(imported from ``PYTHONPATH``); ``--arch-kwargs KEY=VALUE,...`` gives its constructor keywords
(the ``[model] kwargs`` table); ``--trust-arch`` lets a checkpoint of a user class be rebuilt
without naming the class again (rebuilding imports and runs its module).
"""

from __future__ import annotations

import math
import re
from typing import Any

from robustbench_sparse.errors import UserError

__all__ = ["ARCH_KWARGS_HELP", "TRUST_ARCH_HELP", "parse_arch_kwargs", "parse_scalar"]

ARCH_KWARGS_HELP = (
    "constructor keywords of --arch: KEY=VALUE,... (VALUE: an int, a float, true/false or a "
    "string; e.g. width=0.5,dropout=0.1)"
)
TRUST_ARCH_HELP = (
    "rebuild checkpoints of your own package.module:Class without naming it again with --arch "
    "(imports and runs that module: only for checkpoints you trust)"
)

_KEY = re.compile(r"[A-Za-z_]\w*")
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?")


def parse_scalar(text: str) -> int | float | bool | str:
    """``"3"`` -> 3, ``"0.5"`` / ``"1e-3"`` -> float, ``"true"`` / ``"false"`` -> bool, else the text.

    Nothing is evaluated; a quoted value (``'3'`` or ``"3"``) stays a string without its quotes.
    """
    value = text.strip()
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    if _INT.fullmatch(value):
        return int(value)
    if _FLOAT.fullmatch(value):
        number = float(value)
        if math.isfinite(number):
            return number
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_arch_kwargs(text: str | None, flag: str = "--arch-kwargs") -> dict[str, Any] | None:
    """``"width=0.5,name=lenet,bn=true"`` -> ``{"width": 0.5, "name": "lenet", "bn": True}``.

    ``None`` or an empty text: unset. Values are read by :func:`parse_scalar` (no ``eval``);
    strings cannot hold commas (use ``[model] kwargs`` in a TOML config for those).

    Raises:
        UserError: an item without ``=``, a key that is not an identifier or comes twice, an
            empty value.
    """
    if not text:
        return None
    out: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise UserError(
                f"{flag} {text!r}: expected KEY=VALUE,... with identifier keys, e.g. width=0.5,depth=2"
            )
        if key in out:
            raise UserError(f"{flag} {text!r}: {key!r} is given twice")
        if not raw.strip():
            raise UserError(f"{flag} {text!r}: {key!r} has no value")
        out[key] = parse_scalar(raw)
    return out
