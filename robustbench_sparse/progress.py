"""Progress bars that suit both a terminal and a log file.

On a terminal (stderr is a TTY) this is plain ``tqdm``: one line redrawn in place. When stderr is
redirected to a file or a pipe, a redrawn bar becomes thousands of carriage-return updates (a
fresh-clone run wrote 5,896 of them, 612 KB); here the bar instead writes whole lines, at most one
every :data:`LOG_INTERVAL_S` seconds per bar (none for a bar that ends sooner), without the
cursor-movement codes nested bars use,
and never the same line twice. ``RBS_PROGRESS_INTERVAL`` (seconds) overrides that interval.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, TextIO

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL_S", "LineWriter", "progress_bar"]

LOG_INTERVAL_S = 30.0
_ESCAPES = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class LineWriter:
    """A file-like target for tqdm that turns in-place redraws into whole, deduplicated lines."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._last = ""

    def write(self, text: str) -> int:
        for piece in _ESCAPES.sub("", text).replace("\r", "\n").split("\n"):
            line = piece.strip()
            if line and line != self._last:
                self.stream.write(line + "\n")
                self._last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


class _LogTqdm(tqdm):  # type: ignore[misc,type-arg]
    """tqdm whose postfix / description changes wait for the next timed refresh.

    tqdm's ``set_postfix`` redraws immediately by default, which in a log file is one line per
    training batch whatever ``mininterval`` says.
    """

    def set_postfix(
        self, ordered_dict: Any = None, refresh: bool | None = True, **kwargs: Any
    ) -> None:
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh=False)

    def set_description(self, desc: str | None = None, refresh: bool | None = True) -> None:
        super().set_description(desc, refresh=False)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def progress_bar(*args: Any, **kwargs: Any) -> Any:
    """``tqdm(*args, **kwargs)``, writing to stderr; line-based and sparse when stderr is not a TTY.

    In the non-TTY case ``mininterval`` becomes :data:`LOG_INTERVAL_S` (or
    ``RBS_PROGRESS_INTERVAL``) and ``maxinterval`` is lifted to match (tqdm would otherwise
    shorten the interval again), and a bar first appears after one interval (``delay``), so short
    bars (an epoch of a few seconds) write nothing; the erase a ``leave=False`` bar does on close
    writes nothing either.
    """
    stream = kwargs.pop("file", None) or sys.stderr
    if _is_tty(stream):
        kwargs["file"] = stream
        return tqdm(*args, **kwargs)
    try:
        interval = float(os.environ.get("RBS_PROGRESS_INTERVAL", LOG_INTERVAL_S))
    except ValueError:
        interval = LOG_INTERVAL_S
    kwargs.update(
        file=LineWriter(stream),
        mininterval=interval,
        maxinterval=max(interval, 10.0),
        delay=interval,  # a bar that finishes within one interval writes nothing
        dynamic_ncols=False,
        ncols=100,
        ascii=True,
        position=None,
    )
    return _LogTqdm(*args, **kwargs)
