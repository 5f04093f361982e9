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
    return "\n".join(lines) + "\n"


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
