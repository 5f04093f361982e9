"""One override path for configuration (minGPT style): ``--config FILE.toml`` plus ``--set``.

A command's configuration is a plain nested dict, the shape of its TOML file. Three layers make
it, each over the one before: the library's defaults < ``--config FILE`` (or a recipe) < the
command line. On the command line ``--set SECTION.KEY=VALUE`` (repeatable) sets any key; the value
is read as a TOML value (``3``, ``0.7``, ``true``, ``[0.1, "8/255"]``, ``"text"``) and anything
that is not valid TOML is kept as the bare string (``--set data.dataset=mnist``). Deeper keys name
nested tables: ``--set attack.params.pgd.steps=40``.

Every other flag is an :class:`Alias`: a documented name for one key (``--epochs`` is
``train.epochs``), so README commands keep working; a flag and ``--set`` may not both set one key.
The library never sees a flag name: it gets the nested dict.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustbench_sparse.config import ConfigSchema, deep_merge, nearest_key
from robustbench_sparse.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

SET_METAVAR = "SECTION.KEY=VALUE"

#: (value as parsed by argparse, the flag) -> the value of the config key
Convert = Callable[[Any, str], Any]


def parse_value(text: str) -> Any:
    """A TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"s"``); not TOML: the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


@dataclass(frozen=True)
class Alias:
    """A flag that sets one config key: ``Alias("--epochs", "train.epochs", type=int)``."""

    flag: str
    key: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: Sequence[str] | None = None
    action: Any = None  # "store_true", "append", argparse.BooleanOptionalAction, ...
    metavar: str | None = None
    convert: Convert | None = None  # applied after argparse (e.g. "8/255" -> a float)
    extra: Mapping[str, Any] = field(default_factory=dict)  # more add_argument keywords

    @property
    def dest(self) -> str:
        """Where argparse stores the value: argparse's own name for the flag (``batch_size``)."""
        return self.flag.lstrip("-").replace("-", "_")

    def add_to(self, parser: Any) -> None:
        """Add the flag to ``parser`` (or an argument group); its help names the key."""
        kwargs: dict[str, Any] = {"dest": self.dest, "default": None, **self.extra}
        kwargs["help"] = f"[{self.key}] {self.help}".rstrip()
        if self.action is not None:
            kwargs["action"] = self.action
        if self.type is not None:
            kwargs["type"] = self.type
        if self.choices is not None:
            kwargs["choices"] = list(self.choices)
        if self.metavar is not None:
            kwargs["metavar"] = self.metavar
        parser.add_argument(self.flag, **kwargs)


def add_aliases(parser: Any, aliases: Iterable[Alias]) -> None:
    """Add every alias's flag to ``parser`` (an ``ArgumentParser`` or an argument group)."""
    for alias in aliases:
        alias.add_to(parser)


def add_config_flags(parser: Any, config_help: str, example: str, *, config: bool = True) -> None:
    """``--config FILE`` (unless ``config`` is False) and the repeatable ``--set``."""
    if config:
        parser.add_argument("--config", metavar="CONFIG", help=config_help)
    parser.add_argument(
        "--set",
        dest="set_values",
        action="append",
        default=[],
        metavar=SET_METAVAR,
        help=f'set any config key, e.g. {example} (VALUE is TOML: 3, 0.7, true, [0.1, "8/255"]; '
        "a bare word is a string); repeatable; flags and --set override the config, which "
        "overrides the defaults",
    )


# ------------------------------------------------------------------------------------ --set
def parse_set(text: str, schema: ConfigSchema) -> tuple[tuple[str, ...], Any]:
    """``"train.epochs=3"`` -> ``(("train", "epochs"), 3)``, the key checked against ``schema``."""
    key, sep, raw = text.partition("=")
    path = tuple(part.strip() for part in key.split("."))
    if not sep or not all(path) or (len(path) == 1 and path[0] not in schema.scalars):
        raise UserError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.epochs=3")
    check_path(path, schema, f"--set {key}")
    return path, parse_value(raw.strip())


def check_path(path: Sequence[str], schema: ConfigSchema, what: str) -> None:
    """An unknown section or key of ``path`` is a one-line user error listing the valid ones."""
    top = path[0]
    if top not in schema.sections and top not in schema.scalars:
        raise UserError(_unknown(what, "section", top, schema.top_keys(), None))
    if top in schema.scalars:
        if len(path) > 1:
            raise UserError(f"{what}: {top!r} is a value, not a table; use --set {top}=VALUE")
        return
    keys = schema.sections[top]
    if keys is not None and len(path) > 1 and path[1] not in keys:
        raise UserError(_unknown(what, "key", path[1], keys, top))


def _unknown(what: str, kind: str, name: str, valid: Sequence[str], section: str | None) -> str:
    close = nearest_key(name, list(valid))
    hint = f"; did you mean {close!r}?" if close else ""
    where = f" in [{section}]" if section else ""
    return f"{what}: unknown {kind} {name!r}{where}{hint} (valid: {', '.join(sorted(valid))})"


def nested(path: Sequence[str], value: Any) -> dict[str, Any]:
    """``("a", "b"), 1`` -> ``{"a": {"b": 1}}``."""
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return dict(out)


# ------------------------------------------------------------------------------ the layers
def command_line_layer(
    args: argparse.Namespace, aliases: Iterable[Alias], schema: ConfigSchema
) -> dict[str, Any]:
    """The command line's layer: ``--set`` values and the aliases' flags, as one nested dict.

    A flag and a ``--set`` that set the same key are a user error (which one was meant?).
    """
    layer: dict[str, Any] = {}
    set_paths: dict[tuple[str, ...], str] = {}
    for text in getattr(args, "set_values", None) or []:
        path, value = parse_set(text, schema)
        set_paths[path] = text.partition("=")[0].strip()
        layer = deep_merge(layer, nested(path, value))
    for alias in aliases:
        value = getattr(args, alias.dest, None)
        if value is not None and alias.convert is not None:
            value = alias.convert(value, alias.flag)
        if value is None:
            continue
        path = tuple(alias.key.split("."))
        for leaf in _leaves(path, value):
            for set_path, key in set_paths.items():
                n = min(len(leaf), len(set_path))
                if leaf[:n] == set_path[:n]:
                    raise UserError(f"{alias.flag} and --set {key} both set {key}; give one")
        layer = deep_merge(layer, nested(path, value))
    return layer


def _leaves(path: tuple[str, ...], value: Any) -> list[tuple[str, ...]]:
    """The key paths a value sets under ``path`` (a table sets each of its keys)."""
    if isinstance(value, Mapping) and value:
        return [leaf for k, v in value.items() for leaf in _leaves((*path, str(k)), v)]
    return [path]


def alias_table(aliases: Iterable[Alias]) -> list[tuple[str, str]]:
    """``[(flag, key), ...]`` for the documentation."""
    return [(a.flag, a.key) for a in aliases]
