"""TOML configuration: load a file into a plain dict and build frozen dataclasses from sections.

Every config dataclass is owned by its module; this module only knows how to read TOML and how to
turn a mapping into a dataclass with a clear error for unknown keys (naming the nearest valid key).
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from robustbench_sparse.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

T = TypeVar("T")


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; missing or malformed files are user errors."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {str(p)!r} does not exist")
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {str(p)!r} is not valid TOML: {exc}") from None


def check_keys(section: str, data: Mapping[str, Any], valid: list[str]) -> None:
    """Raise a :class:`UserError` naming the first unknown key and the nearest valid one."""
    for key in data:
        if key not in valid:
            close = (
                difflib.get_close_matches(key, valid, n=1)
                or [
                    # e.g. "lr_rate" -> "lr": the longest valid key it starts with (or that starts it)
                    v
                    for v in sorted(valid, key=len, reverse=True)
                    if len(v) >= 2 and (key.startswith(v) or v.startswith(key))
                ][:1]
            )
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"unknown key {key!r} in [{section}]{hint} (valid: {', '.join(sorted(valid))})"
            )


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _coerce(value, non_none[0], where)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        try:
            return annotation(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in annotation)
            raise UserError(f"{where}: invalid value {value!r}; valid: {valid}") from None
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float) and isinstance(value, bool):
        raise UserError(f"{where}: expected {annotation.__name__}, got {value!r}")
    if annotation in (int, float, str, bool) and not isinstance(value, annotation):
        raise UserError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def dataclass_from_dict(cls: type[T], data: Mapping[str, Any], section: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and coercing enums/tuples."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(section, data, list(fields))
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], f"[{section}] {k}") for k, v in data.items()}
    return cls(**kwargs)


def merge_dataclass(base: T, overrides: Mapping[str, Any], section: str) -> T:
    """Return ``base`` with ``overrides`` applied (``None`` values are ignored)."""
    current = dataclasses.asdict(base)  # type: ignore[call-overload]
    current.update({k: v for k, v in overrides.items() if v is not None})
    return dataclass_from_dict(type(base), current, section)


def to_jsonable(obj: Any) -> Any:
    """Convert dataclasses / enums / tuples / paths into JSON-safe values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj
