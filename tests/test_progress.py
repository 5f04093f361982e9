"""progress: tqdm on a terminal, sparse whole lines (no carriage returns) when redirected."""

from __future__ import annotations

import io
import os
import time

import pytest

from robustbench_sparse.progress import LineWriter, progress_bar

# These tests look at what bars draw; tqdm applies TQDM_* environment variables when it is
# imported, so a TQDM_DISABLE=1 in the caller's shell hides every bar.
pytestmark = pytest.mark.skipif(
    os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false"),
    reason="TQDM_DISABLE is set in this shell: tqdm draws no bars to look at",
)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_writer_turns_redraws_into_unique_lines() -> None:
    out = io.StringIO()
    w = LineWriter(out)
    w.write("\r  5%|#   | 1/20\r")
    w.write("\r  5%|#   | 1/20")  # the same status again: not repeated
    w.write("\x1b[A\r 10%|##  | 2/20\x1b[A")  # cursor movement of nested bars is dropped
    w.write("\r" + " " * 40 + "\r")  # the erase of a leave=False bar writes nothing
    assert out.getvalue() == "5%|#   | 1/20\n10%|##  | 2/20\n"


def test_redirected_bar_writes_few_lines_and_no_carriage_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RBS_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    bar = progress_bar(total=5000, desc="cell", file=out, unit="ex")
    for _ in range(5000):
        bar.update(1)
    bar.close()
    assert out.getvalue() == ""  # finished within one interval: nothing to report
    monkeypatch.setenv("RBS_PROGRESS_INTERVAL", "0.05")
    out = io.StringIO()
    bar = progress_bar(total=3, desc="cell", file=out, unit="ex")
    for _ in range(3):
        time.sleep(0.06)
        bar.update(1)
    bar.close()
    text = out.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert 1 <= len(lines) <= 4 and "3/3" in lines[-1]  # whole lines, the last one final


def test_terminal_bar_is_plain_tqdm() -> None:
    out = _Tty()
    bar = progress_bar(total=3, desc="cell", file=out, mininterval=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in out.getvalue()  # redrawn in place


def test_redirected_postfix_updates_wait_for_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    # the training loop sets a postfix every batch; in a log that must not be a line per batch
    monkeypatch.setenv("RBS_PROGRESS_INTERVAL", "3600")
    out = io.StringIO()
    bar = progress_bar(range(200), desc="epoch 1/1", file=out, leave=False)
    for i in bar:
        bar.set_postfix(loss=1.0 / (i + 1))
    assert len(out.getvalue().splitlines()) <= 2
