"""User-facing errors.

A :class:`UserError` is a problem with what the user asked for (bad flag, missing file, corrupt
checkpoint). The CLI prints its one-line message and exits with status 2, without a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input: one line saying what is wrong and what to do."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> UserError:
    """Build the error for an unknown registry name, listing the valid ones (and the nearest)."""
    valid_list = sorted(valid)
    same_case = [v for v in valid_list if v.lower() == name.lower()]
    lowered = {v.lower(): v for v in valid_list}
    close = same_case or [
        lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=1)
    ]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return UserError(f"unknown {kind} {name!r}; valid: {', '.join(valid_list)}.{hint}")
