"""attacks.params: the validators, the one epsilon parser and the one epsilon formatter.

The parser and formatter replace copies that lived in the core, the CLI and the evaluations; the
``_legacy_*`` functions below are those copies, verbatim except for the error type, and the tests
check that the shared versions accept the same inputs and give the same results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest

import attacks
from attacks import AttackConfigError, get_attack
from attacks.params import (
    EpsilonError,
    check,
    check_apgd,
    check_int_seed,
    check_n_target_classes,
    check_positive_int,
    check_seed,
    format_epsilon,
    in_255ths,
    is_int,
    is_number,
    parse_epsilon,
    parse_epsilon_list,
)

# -- validators ----------------------------------------------------------------------------------


def test_attack_config_error_is_one_class() -> None:
    assert attacks.AttackConfigError is AttackConfigError
    from attacks.base import AttackConfigError as from_base

    assert from_base is AttackConfigError
    assert issubclass(EpsilonError, AttackConfigError)
    assert issubclass(EpsilonError, ValueError)


def test_type_predicates() -> None:
    assert is_int(3) and not is_int(True) and not is_int(3.0)
    assert is_number(3) and is_number(2.5) and not is_number(False) and not is_number("1")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check(False, "boom"), "boom"),
        (lambda: check_positive_int("steps", 0), "steps must be an int >= 1 (got 0)"),
        (lambda: check_positive_int("n_iter", 2.5), "n_iter must be an int >= 1 (got 2.5)"),
        (lambda: check_positive_int("restarts", True), "restarts must be an int >= 1 (got True)"),
        (lambda: check_seed(1.5), "seed must be an int or None (got 1.5)"),
        (lambda: check_int_seed(None), "seed must be an int (got None)"),
        (
            lambda: check_int_seed(None, "adv-lib"),
            "seed must be an int for backend adv-lib (got None)",
        ),
        (lambda: check_apgd(0, 1, 0.75), "steps must be an int >= 1 (got 0)"),
        (lambda: check_apgd(10, 0, 0.75), "restarts must be an int >= 1 (got 0)"),
        (lambda: check_apgd(10, 1, 1.0), "rho must be a number in (0, 1) (got 1.0)"),
        (lambda: check_n_target_classes(0), "n_target_classes must be an int >= 1 (got 0)"),
    ],
)
def test_validators_raise_config_errors_with_their_messages(call: Any, message: str) -> None:
    with pytest.raises(AttackConfigError) as info:
        call()
    assert str(info.value) == message


def test_validators_accept_valid_values() -> None:
    check(True, "unused")
    check_positive_int("steps", 1)
    check_seed(None)
    check_seed(0)
    check_int_seed(7, "adv-lib")
    check_apgd(100, 5, 0.75)
    check_n_target_classes(9)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("pgd", {"steps": 0}, "steps must be an int >= 1 (got 0)"),
        ("pgd", {"seed": 1.5}, "seed must be an int or None (got 1.5)"),
        ("cw", {"binary_search_steps": 0}, "binary_search_steps must be an int >= 1 (got 0)"),
        ("apgd-ce", {"rho": 2.0}, "rho must be a number in (0, 1) (got 2.0)"),
        ("apgd-t", {"n_target_classes": 0}, "n_target_classes must be an int >= 1 (got 0)"),
        ("fab", {"n_iter": 0}, "n_iter must be an int >= 1 (got 0)"),
        ("square", {"n_queries": 0}, "n_queries must be an int >= 1 (got 0)"),
        ("fmn", {"steps": 0}, "steps must be an int >= 1 (got 0)"),
        ("autoattack", {"seed": "x"}, "seed must be an int or None (got 'x')"),
    ],
)
def test_parameter_classes_use_the_shared_validators(
    name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(AttackConfigError) as info:
        get_attack(name, **params)
    assert str(info.value) == message


# -- parser --------------------------------------------------------------------------------------


class _Legacy(Exception):
    pass


def _legacy_parse_fraction(value: Any, what: str) -> float:
    """robustbench_sparse.adversarial.parse_fraction (UserError -> _Legacy)."""
    if isinstance(value, bool):
        raise _Legacy(f"{what} must be a number (got {value!r})")
    if isinstance(value, int | float):
        out = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                out = float(num) / float(den)
            else:
                out = float(text)
        except (ValueError, ZeroDivisionError):
            raise _Legacy(f"{what}: {value!r} is not a number (use e.g. 0.1 or 8/255)") from None
    else:
        raise _Legacy(f"{what} must be a number (got {value!r})")
    if not math.isfinite(out):
        raise _Legacy(f"{what} must be finite (got {value!r})")
    return out


def _legacy_parse_float(text: str, flag: str) -> float:
    """The CLI's ``_parse_float`` (UserError -> _Legacy)."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise _Legacy(f"{flag}: {text!r} is not a number (use e.g. 0.1 or 8/255)") from None
    if not math.isfinite(value):
        raise _Legacy(f"{flag}: {text!r} is not a finite number")
    return value


def _legacy_parse_eps(text: str, flag: str) -> list[float]:
    """The CLI's ``_parse_eps`` (UserError -> _Legacy)."""
    values = [_legacy_parse_float(v, flag) for v in text.split(",") if v.strip()]
    if not values:
        raise _Legacy(f"{flag}: empty epsilon list")
    return values


TEXTS = [
    "0.1", "8/255", " 8/255 ", "8 / 255", "1e-3", "0", "-0.5", "3", ".5", "2/3", "1/3e2",
    "+4", "1_000", "  7  ", "abc", "8/O", "8/0", "0/0", "8/255/2", "", " ", "/", "1/", "nan",
    "inf", "-inf", "1/inf", "inf/2", "1e400", "0x10", "½",
]  # fmt: skip
NUMBERS: list[Any] = [0, 1, 0.1, 8 / 255, -2, 1e-3, math.inf, -math.inf, math.nan, True, False]
OTHERS: list[Any] = [None, [0.1], b"0.1", {"eps": 0.1}]


def _outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except (_Legacy, EpsilonError) as err:
        return "error", str(err)


@pytest.mark.parametrize("text", TEXTS)
def test_parse_epsilon_matches_the_cli_parser_on_strings(text: str) -> None:
    kind, new = _outcome(lambda t: parse_epsilon(t, what="--eps"), text)
    assert (kind, new) == _outcome(_legacy_parse_float, text, "--eps")


@pytest.mark.parametrize("value", TEXTS + NUMBERS + OTHERS)
def test_parse_epsilon_accepts_what_the_core_parser_accepts(value: Any) -> None:
    old_kind, old = _outcome(_legacy_parse_fraction, value, "adversarial eps")
    new_kind, new = _outcome(lambda v: parse_epsilon(v, what="adversarial eps"), value)
    assert new_kind == old_kind
    if old_kind == "ok":
        assert new == old and type(new) is float
        if isinstance(value, str):
            assert new == _legacy_parse_float(value, "x")


def test_parse_epsilon_values_and_problems() -> None:
    assert parse_epsilon("8/255") == 8 / 255
    assert parse_epsilon("0.1") == 0.1
    assert parse_epsilon("1e-3") == 1e-3
    assert parse_epsilon(2) == 2.0
    problems = {
        "abc": "syntax",
        "8/0": "syntax",
        "nan": "finite",
        math.inf: "finite",
        True: "type",
        None: "type",
    }
    for value, problem in problems.items():
        with pytest.raises(EpsilonError) as info:
            parse_epsilon(value)  # type: ignore[arg-type]
        assert info.value.problem == problem
        assert info.value.value is value or info.value.value == value
    with pytest.raises(ValueError, match=r"^'abc' is not a number \(use e.g. 0.1 or 8/255\)$"):
        parse_epsilon(" abc ")
    with pytest.raises(ValueError, match=r"^epsilon must be a number \(got None\)$"):
        parse_epsilon(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text", ["0,2/255,8/255", "0, 0.1 ,0.2", "0,,0.1,", "", " , ", "0,abc", "0,nan", "8/255"]
)
def test_parse_epsilon_list_matches_the_cli(text: str) -> None:
    new = _outcome(lambda t: parse_epsilon_list(t, what="--eps"), text)
    assert new == _outcome(_legacy_parse_eps, text, "--eps")


# -- formatter -----------------------------------------------------------------------------------


def _legacy_in_255ths(grid: Sequence[float]) -> bool:
    """evaluations' ``budgets.in_255ths``."""
    nonzero = [float(e) for e in grid if float(e) > 0]
    if not nonzero:
        return False
    whole = all(abs(e * 255.0 - round(e * 255.0)) < 1e-6 for e in nonzero)
    short = all(len(f"{e:g}") <= 5 for e in nonzero)
    return whole and not short


def _legacy_epsilon_label(eps: float, grid: Sequence[float] = ()) -> str:
    """evaluations' ``budgets.epsilon_label``."""
    if float(eps) == 0.0:
        return "0"
    if _legacy_in_255ths(list(grid) or [eps]):
        return f"{round(float(eps) * 255.0)}/255"
    return f"{float(eps):.4g}"


def _legacy_report(eps: float, norm: str) -> str:
    """evaluations' ``report._fmt_eps``."""
    short = f"{eps:g}"
    if norm == "linf" and eps > 0 and len(short) > 6:
        k = eps * 255.0
        if abs(k - round(k)) < 1e-6:
            return f"{round(k)}/255"
    return f"{eps:.4g}"


def _legacy_training(eps: float) -> str:
    """robustbench_sparse.adversarial's ``_fmt_eps``."""
    k = eps * 255
    if eps > 0 and abs(k - round(k)) < 1e-6 and round(k) < 255:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _legacy_decimal(eps: float) -> str:
    """evaluations' ``metrics._fmt_eps``."""
    return f"{eps:.6g}"


VALUES = sorted(
    {0.0, 1e-4, 0.001, 0.01, 0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 1.0, 1.5, 2.0, 3.0, 8.0, 255.0}
    | {k / 255 for k in (0.5, 1, 2, 3, 4, 8, 12, 16, 32, 51, 64, 128, 254, 255, 256, 510)}
    | {1 / 3, 2 / 3, 0.1 + 0.2, 1e-7, 123456.789}
)
GRIDS: list[list[float]] = [
    [],
    [0.0, 2 / 255, 8 / 255],
    [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255],
    [0.0, 0.05, 0.1],
    [0.0, 1.0, 2.0],
    [0.0, 0.5, 1.0, 2.0],
    [0.0],
    [0.0, 0.2, 8 / 255],
]


@pytest.mark.parametrize("grid", GRIDS)
def test_grid_style_is_budgets_epsilon_label(grid: list[float]) -> None:
    assert in_255ths(grid) == _legacy_in_255ths(grid)
    for e in [*VALUES, *grid]:
        assert format_epsilon(e, grid=grid) == _legacy_epsilon_label(e, grid), (e, grid)
        assert format_epsilon(e, style="grid", grid=grid) == _legacy_epsilon_label(e, grid)


@pytest.mark.parametrize("eps", VALUES)
def test_other_styles_are_the_old_formatters(eps: float) -> None:
    for norm in ("linf", "l2"):
        assert format_epsilon(eps, style="report", norm=norm) == _legacy_report(eps, norm)
    assert format_epsilon(eps, style="training") == _legacy_training(eps)
    assert format_epsilon(eps, style="decimal") == _legacy_decimal(eps)


def test_format_epsilon_examples() -> None:
    assert format_epsilon(8 / 255) == "8/255"
    assert format_epsilon(0.1) == "0.1"
    assert format_epsilon(0) == "0"
    assert format_epsilon(0.2, style="training") == "51/255"
    assert format_epsilon(0.2, style="report") == "0.2"
    assert format_epsilon(8 / 255, style="report", norm="l2") == "0.03137"
    assert format_epsilon(8 / 255, style="decimal") == "0.0313725"
    with pytest.raises(ValueError, match="unknown epsilon style 'short'"):
        format_epsilon(0.1, style="short")  # type: ignore[arg-type]


def test_parse_then_format_round_trips_255ths() -> None:
    for k in (1, 2, 4, 8, 16):
        text = f"{k}/255"
        assert format_epsilon(parse_epsilon(text)) == text
        assert format_epsilon(parse_epsilon(text), style="training") == text
