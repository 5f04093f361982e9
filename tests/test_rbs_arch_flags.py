"""rbs.arch_flags: ``--arch-kwargs KEY=VALUE,...`` read without evaluating anything."""

from __future__ import annotations

import pytest

from rbs.arch_flags import parse_arch_kwargs, parse_scalar
from robustbench_sparse.errors import UserError


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3", 3),
        ("-2", -2),
        ("0.5", 0.5),
        ("1e-3", 1e-3),
        (".5", 0.5),
        ("true", True),
        ("False", False),
        ("lenet", "lenet"),
        ("'3'", "3"),
        ('"true"', "true"),
        ("nan", "nan"),  # not a number a constructor wants: kept as text
        ("inf", "inf"),
        ("1e999", "1e999"),  # overflows to inf: kept as text
        ("__import__('os')", "__import__('os')"),  # never evaluated
        (" 4 ", 4),
    ],
)
def test_scalars(text: str, value: object) -> None:
    got = parse_scalar(text)
    assert got == value and type(got) is type(value)


def test_several_keywords() -> None:
    assert parse_arch_kwargs("width=0.5,depth=2,bn=true,name=lenet") == {
        "width": 0.5,
        "depth": 2,
        "bn": True,
        "name": "lenet",
    }
    assert parse_arch_kwargs(" width = 3 ") == {"width": 3}
    assert parse_arch_kwargs(None) is None and parse_arch_kwargs("") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("width", "expected KEY=VALUE"),
        ("2x=3", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("width=1,width=2", "'width' is given twice"),
        ("width=", "'width' has no value"),
        ("width=1,", "expected KEY=VALUE"),
    ],
)
def test_malformed(text: str, expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        parse_arch_kwargs(text)
