"""Parameter values of the attacks: validators, the epsilon parser and the epsilon formatter.

The lowest layer of :mod:`attacks` (standard library only), so the parameter classes of every
attack and backend, the project core and the evaluations can all use it:

* validators (:func:`check`, :func:`check_positive_int`, :func:`check_seed`, ...) raise
  :class:`AttackConfigError` with the message the attack's parameter class has always used;
* :func:`parse_epsilon` reads a budget written as ``"0.1"``, ``"8/255"`` or ``"1e-3"`` (or given
  as a number) and :func:`parse_epsilon_list` a comma-separated grid of them;
* :func:`format_epsilon` writes a budget back, in one of the four styles the project prints
  (``k/255`` where that is how the number was written, a decimal otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = [
    "AttackConfigError",
    "EpsilonError",
    "EpsilonStyle",
    "check",
    "check_apgd",
    "check_int_seed",
    "check_n_target_classes",
    "check_positive_int",
    "check_seed",
    "format_epsilon",
    "in_255ths",
    "is_int",
    "is_number",
    "parse_epsilon",
    "parse_epsilon_list",
]


class AttackConfigError(ValueError):
    """An attack name, backend or parameter is unknown or invalid (a user mistake)."""


# -- validators ----------------------------------------------------------------------------------


def is_int(v: object) -> bool:
    """True for an ``int`` that is not a ``bool``."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: object) -> bool:
    """True for an ``int`` or ``float`` that is not a ``bool``."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check(cond: bool, message: str) -> None:
    """Refuse a parameter value.

    Raises:
        AttackConfigError: ``cond`` is false; ``message`` is the error's text.
    """
    if not cond:
        raise AttackConfigError(message)


def check_positive_int(name: str, value: object) -> None:
    """Refuse a parameter ``name`` that is not an int >= 1 (steps, restarts, iterations, ...).

    Raises:
        AttackConfigError: ``"<name> must be an int >= 1 (got <value>)"``.
    """
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
    check(ok, f"{name} must be an int >= 1 (got {value!r})")


def check_seed(seed: object) -> None:
    """Refuse a ``seed`` that is neither an int nor ``None``.

    Raises:
        AttackConfigError: ``"seed must be an int or None (got <seed>)"``.
    """
    check(seed is None or is_int(seed), f"seed must be an int or None (got {seed!r})")


def check_int_seed(seed: object, backend: str | None = None) -> None:
    """Refuse a ``seed`` that is not an int (libraries that seed from the clock on ``None``).

    Raises:
        AttackConfigError: ``"seed must be an int for backend <backend> (got <seed>)"``, or
            ``"seed must be an int (got <seed>)"`` without ``backend``.
    """
    where = f" for backend {backend}" if backend else ""
    check(is_int(seed), f"seed must be an int{where} (got {seed!r})")


def check_apgd(steps: int, restarts: int, rho: float) -> None:
    """Validate the APGD parameters every backend shares (native, adv-lib, autoattack).

    Raises:
        AttackConfigError: ``steps`` or ``restarts`` is not an int >= 1, or ``rho`` is not a
            number in ``(0, 1)``.
    """
    check_positive_int("steps", steps)
    check_positive_int("restarts", restarts)
    check(is_number(rho) and 0 < rho < 1, f"rho must be a number in (0, 1) (got {rho!r})")


def check_n_target_classes(n_target_classes: int) -> None:
    """Validate ``n_target_classes`` of a targeted attack (APGD-T, FAB-T, any backend).

    Raises:
        AttackConfigError: it is not an int >= 1.
    """
    check_positive_int("n_target_classes", n_target_classes)


# -- epsilon parser ------------------------------------------------------------------------------

_USE = "use e.g. 0.1 or 8/255"


class EpsilonError(AttackConfigError):
    """A budget that :func:`parse_epsilon` cannot read (a ``ValueError``).

    ``problem`` says what is wrong, so a caller can word its own message: ``"type"`` (neither a
    string nor a number), ``"syntax"`` (not a number or fraction, or a division by zero) or
    ``"finite"`` (NaN or infinite). ``value`` is what was given.
    """

    def __init__(
        self, message: str, *, problem: Literal["type", "syntax", "finite"], value: object
    ) -> None:
        super().__init__(message)
        self.problem = problem
        self.value = value


def parse_epsilon(value: str | float, *, what: str | None = None) -> float:
    """A finite budget from a number or a string such as ``"0.1"``, ``"8/255"`` or ``"1e-3"``.

    Strings are stripped; one ``/`` makes a fraction ``float(num) / float(den)`` (spaces around
    the numbers allowed), anything else goes through ``float``. ``int`` and ``float`` values
    (not ``bool``) are taken as they are. The sign is not checked (that is the grid's rule).
    ``what`` (a flag or setting name, e.g. ``"--eps"``) prefixes the error messages.

    Raises:
        EpsilonError: ``problem="type"``: ``"<what> must be a number (got <value>)"``;
            ``problem="syntax"``: ``"<what>: '<text>' is not a number (use e.g. 0.1 or 8/255)"``
            (also for ``8/0``); ``problem="finite"``: ``"<what>: '<text>' is not a finite
            number"`` (NaN, inf).
    """
    prefix = f"{what}: " if what else ""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise EpsilonError(
            f"{what or 'epsilon'} must be a number (got {value!r})", problem="type", value=value
        )
    shown: object = value
    if isinstance(value, str):
        text = shown = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise EpsilonError(
                f"{prefix}{text!r} is not a number ({_USE})", problem="syntax", value=value
            ) from None
    else:
        out = float(value)
    if not math.isfinite(out):
        raise EpsilonError(
            f"{prefix}{shown!r} is not a finite number", problem="finite", value=value
        )
    return out


def parse_epsilon_list(text: str, *, what: str | None = None) -> list[float]:
    """A comma-separated grid ``"0,2/255,8/255"`` -> ``[0.0, 0.00784..., 0.0313...]``.

    Empty items are skipped (``"0,,0.1,"`` is ``[0.0, 0.1]``); order and sign are not checked.

    Raises:
        EpsilonError: an item is not a finite number (see :func:`parse_epsilon`), or there is no
            item at all (``problem="syntax"``: ``"<what>: empty epsilon list"``).
    """
    values = [parse_epsilon(v, what=what) for v in text.split(",") if v.strip()]
    if not values:
        prefix = f"{what}: " if what else ""
        raise EpsilonError(f"{prefix}empty epsilon list", problem="syntax", value=text)
    return values


# -- epsilon formatter ---------------------------------------------------------------------------

#: ``"grid"``: ``k/255`` when the whole grid is in 1/255 steps (:func:`in_255ths`), else ``%.4g``;
#: ``"report"``: ``k/255`` for an Linf budget whose decimal is long (> 6 characters) and that is a
#: whole number of 255ths, else ``%.4g``; ``"training"``: ``k/255`` for any budget in ``(0, 1)``
#: that is a whole number of 255ths, else ``%g``; ``"decimal"``: always ``%.6g``.
EpsilonStyle = Literal["grid", "report", "training", "decimal"]


def _whole_255ths(eps: float) -> bool:
    k = eps * 255.0
    return abs(k - round(k)) < 1e-6


def in_255ths(grid: Sequence[float]) -> bool:
    """True when every nonzero budget is a whole number of 1/255 steps and not a short decimal.

    ``[0, 2/255, 8/255]`` -> True; ``[0, 0.05, 0.1]`` -> False (0.1 * 255 = 25.5). A grid whose
    values are all short decimals (``0, 1, 2``) stays decimal even when 255ths would also fit.
    """
    nonzero = [float(e) for e in grid if float(e) > 0]
    if not nonzero:
        return False
    whole = all(_whole_255ths(e) for e in nonzero)
    short = all(len(f"{e:g}") <= 5 for e in nonzero)
    return whole and not short


def format_epsilon(
    eps: float,
    *,
    style: EpsilonStyle = "grid",
    grid: Sequence[float] = (),
    norm: str = "linf",
) -> str:
    """``eps`` as the project prints budgets: ``"8/255"``, ``"0.1"``, ``"0"``, ...

    ``eps`` is read as a Python float. The styles (:data:`EpsilonStyle`) reproduce the four
    formatters the project had:

    * ``"grid"`` (tables and axes; ``grid`` defaults to ``[eps]``): ``"0"`` for 0, ``k/255``
      when :func:`in_255ths` holds for ``grid``, else ``%.4g``: 8/255 -> ``"8/255"``, 0.1 ->
      ``"0.1"``, 0.2 -> ``"0.2"``;
    * ``"report"`` (the report's threat-model lines; uses ``norm``): ``k/255`` when ``norm`` is
      ``"linf"``, ``eps > 0``, its ``%g`` has more than 6 characters and it is a whole number of
      255ths, else ``%.4g``: 8/255 -> ``"8/255"``, 0.2 -> ``"0.2"``, 8/255 in L2 -> ``"0.03137"``;
    * ``"training"`` (training-method labels): ``k/255`` for ``eps > 0`` that is a whole number
      ``k < 255`` of 255ths, else ``%g``: 8/255 -> ``"8/255"``, 0.2 -> ``"51/255"``, 1 -> ``"1"``;
    * ``"decimal"`` (check messages): ``%.6g``: 8/255 -> ``"0.0313725"``.

    Raises:
        ValueError: ``style`` is not one of the four.
    """
    e = float(eps)
    if style == "grid":
        if e == 0.0:
            return "0"
        if in_255ths(list(grid) or [e]):
            return f"{round(e * 255.0)}/255"
        return f"{e:.4g}"
    if style == "report":
        if norm == "linf" and e > 0 and len(f"{e:g}") > 6 and _whole_255ths(e):
            return f"{round(e * 255.0)}/255"
        return f"{e:.4g}"
    if style == "training":
        k = e * 255
        if e > 0 and abs(k - round(k)) < 1e-6 and round(k) < 255:
            return f"{round(k)}/255"
        return f"{e:g}"
    if style == "decimal":
        return f"{e:.6g}"
    raise ValueError(f"unknown epsilon style {style!r}; valid: grid, report, training, decimal")
