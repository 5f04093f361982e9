"""TOML configuration: load a file into a plain dict and build frozen dataclasses from sections.

Every config dataclass is owned by its module; this module only knows how to read TOML, which keys
a config may hold (:class:`ConfigSchema`), how to layer plain nested dicts (:func:`deep_merge`) and
how to turn a mapping into a dataclass with a clear error for unknown keys (naming the nearest
valid key). Nothing here knows a command-line flag: the CLI turns its argv into the same nested
dict a TOML file gives.
"""

from __future__ import annotations

import dataclasses
import difflib
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


def nearest_key(key: str, valid: Sequence[str]) -> str | None:
    """The valid key ``key`` was probably meant to be (``None``: nothing close)."""
    close = (
        difflib.get_close_matches(key, valid, n=1)
        or [
            # e.g. "lr_rate" -> "lr": the longest valid key it starts with (or that starts it)
            v
            for v in sorted(valid, key=len, reverse=True)
            if len(v) >= 2 and (key.startswith(v) or v.startswith(key))
        ][:1]
    )
    return close[0] if close else None


def unknown_key_message(key: str, where: str, valid: Sequence[str]) -> str:
    """``unknown key 'x' in [where]; did you mean 'y'? (valid: ...)``: one line."""
    close = nearest_key(key, valid)
    hint = f"; did you mean {close!r}?" if close else ""
    return f"unknown key {key!r} in [{where}]{hint} (valid: {', '.join(sorted(valid))})"


def check_keys(section: str, data: Mapping[str, Any], valid: Sequence[str]) -> None:
    """Raise a :class:`UserError` naming the first unknown key and the nearest valid one."""
    for key in data:
        if key not in valid:
            raise UserError(unknown_key_message(key, section, valid))


def dataclass_keys(cls: type) -> tuple[str, ...]:
    """The field names of dataclass ``cls``: the keys its config section may hold."""
    return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class ConfigSchema:
    """Which keys a config may hold: tables (section -> keys; ``None``: any key) and top-level values.

    A config is a plain nested dict, as TOML gives it; the CLI checks ``--set SECTION.KEY=VALUE``
    against this before anything runs, and the library checks the same keys when it builds its
    dataclasses.
    """

    sections: Mapping[str, tuple[str, ...] | None]
    scalars: tuple[str, ...] = ()

    def top_keys(self) -> list[str]:
        """Every key allowed at the top level (sections and scalars)."""
        return [*self.sections, *self.scalars]

    def check(self, config: Mapping[str, Any], where: str = "config") -> None:
        """Unknown top-level keys and unknown keys of fixed sections are user errors."""
        check_keys(where, config, self.top_keys())
        for section, keys in self.sections.items():
            table = config.get(section)
            if keys is not None and isinstance(table, Mapping):
                check_keys(section, table, keys)


def deep_merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``patch`` laid over it: tables merge key by key, anything else is replaced.

    Neither input is changed; ``None`` values in ``patch`` mean "not set" and are skipped.
    """
    out = {k: (deep_merge(v, {}) if isinstance(v, Mapping) else v) for k, v in base.items()}
    for key, value in patch.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            current = out.get(key)
            out[key] = deep_merge(current if isinstance(current, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as type ``annotation`` (enums, tuples, int -> float); a mismatch is a user error."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return coerce(value, non_none[0], where)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        try:
            return annotation(value)
        except ValueError:
            valid = ", ".join(str(m.value) for m in annotation)
            raise UserError(f"{where}: invalid value {value!r}; valid: {valid}") from None
    if origin is dict and not isinstance(value, Mapping):
        raise UserError(f"{where}: expected a table, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(coerce(v, inner, where) for v in value)
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
    kwargs = {k: coerce(v, hints[k], f"[{section}] {k}") for k, v in data.items()}
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
