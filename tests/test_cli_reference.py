"""docs/cli.md, the CLI reference, is ``rbs --help`` and ``rbs <command> --help`` for every subcommand.

The text is generated from the argparse parser itself (:func:`rbs.cli.build_parser`),
iterating its subparsers so that a new subcommand is picked up without touching this file. argparse
wraps help at the terminal width, so generation pins ``COLUMNS=100`` (and ``NO_COLOR``: Python 3.14
colours help on a terminal). Regenerate with ``python -m tests.test_cli_reference --write``.

argparse's layout changes between Python minor versions (e.g. 3.10 says "optional arguments:",
3.13 prints ``-v, --verbose`` differently), so the comparison runs on the Python minor version that
wrote the doc (recorded in it) and is skipped, with that reason, on others.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbs.cli import build_parser

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
COLUMNS = "100"
WRITE_HINT = "docs/cli.md is stale; run `python -m tests.test_cli_reference --write`"
PY_RE = re.compile(r"Python (\d+\.\d+)'s argparse")


@contextlib.contextmanager
def fixed_terminal() -> Iterator[None]:
    """``COLUMNS=100`` and no colour while help is formatted (restored afterwards)."""
    saved = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    os.environ["COLUMNS"] = COLUMNS
    os.environ["NO_COLOR"] = "1"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every subcommand parser, in registration order."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def render() -> str:
    """The whole of docs/cli.md."""
    with fixed_terminal():
        parser = build_parser()
        sections = [("rbs", parser.format_help())]
        sections += [
            (f"rbs {name}", sub.format_help()) for name, sub in subcommands(parser).items()
        ]
    lines = [
        "# `rbs` command-line reference",
        "",
        "<!-- Generated from the argparse parser; do not edit by hand. Regenerate with",
        "     `python -m tests.test_cli_reference --write` (tests/test_cli_reference.py keeps it",
        "     current). -->",
        "",
        f"The output of `rbs --help` and `rbs COMMAND --help` ({COLUMNS} columns, Python "
        f"{python_version()}'s argparse).",
        "User errors print one line, `rbs COMMAND: error: MESSAGE`, and exit with status 2;",
        "[bad-inputs.md](bad-inputs.md) lists every bad input with its message.",
        "",
        *(f"- [`{title}`](#{title.replace(' ', '-')})" for title, _ in sections[1:]),
    ]
    for title, text in sections:
        lines += ["", f"## {title}", "", "```text", text.rstrip("\n"), "```"]
    lines += config_keys()
    return "\n".join(lines) + "\n"


def config_keys() -> list[str]:
    """The ``--config`` / ``--set`` section: each command's sections and its flag -> key table."""
    from rbs.attack_job import ATTACK_SCHEMA
    from rbs.commands import attack, run, train
    from rbs.run_job import RUN_SCHEMA
    from robustbench_sparse.train_job import TRAIN_SCHEMA

    lines = [
        "",
        "## Configuration keys: `--config` and `--set`",
        "",
        "`rbs train`, `rbs attack` and `rbs run` read one nested TOML table: the defaults <",
        "`--config FILE.toml` (`rbs run`: CONFIG, `--config` or `--recipe`; `rbs train`: or",
        "`--recipe`) < the command line. There `--set SECTION.KEY=VALUE` (repeatable) sets any key;",
        'VALUE is a TOML value (`3`, `0.7`, `true`, `[0.1, "8/255"]`) and a bare word that is not',
        "TOML is a string (`--set data.dataset=mnist`); deeper keys name nested tables",
        "(`--set attack.params.pgd.steps=40`). Every flag below is an alias of one key; a flag and",
        "`--set` may not set the same key. Unknown sections and keys are refused in one line that",
        "lists the valid ones. A protocol (or attack list) given on the command line replaces the",
        "config's attack list (or protocol).",
    ]
    for command, schema, aliases in (
        ("train", TRAIN_SCHEMA, train.ALIASES),
        ("attack", ATTACK_SCHEMA, attack.ALIASES),
        ("run", RUN_SCHEMA, run.ALIASES),
    ):
        lines += ["", f"### rbs {command}", "", "| section | keys |", "|---|---|"]
        for section, keys in schema.sections.items():
            shown = ", ".join(f"`{k}`" for k in keys) if keys is not None else "any key"
            lines.append(f"| `[{section}]` | {shown} |")
        lines += [f"| (top level) | {', '.join(f'`{k}`' for k in schema.scalars)} |"] * bool(
            schema.scalars
        )
        lines += ["", "| flag | key |", "|---|---|"]
        lines += [f"| `{a.flag}` | `{a.key}` |" for a in aliases]
    return lines


def _doc_python(text: str) -> str | None:
    match = PY_RE.search(text)
    return match.group(1) if match else None


def test_every_subcommand_is_in_the_reference() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in subcommands(build_parser()):
        assert f"\n## rbs {name}\n" in text, f"`rbs {name}` is missing; {WRITE_HINT}"


def test_cli_reference_is_current() -> None:
    text = DOC.read_text(encoding="utf-8")
    written_with = _doc_python(text)
    if written_with != python_version():
        pytest.skip(
            f"docs/cli.md was generated with Python {written_with}'s argparse, whose help layout "
            f"differs from Python {python_version()}'s"
        )
    assert text == render(), WRITE_HINT


def test_generation_does_not_leak_the_terminal_settings() -> None:
    before = {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")}
    render()
    assert {k: os.environ.get(k) for k in ("COLUMNS", "NO_COLOR")} == before


if __name__ == "__main__":  # pragma: no cover - the doc generator
    rendered = render()
    if "--write" in sys.argv:
        DOC.write_text(rendered, encoding="utf-8")
        print(f"wrote {DOC}")
    else:
        print(rendered, end="")
