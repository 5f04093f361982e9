"""Atomic file writes: write to a temporary file in the target directory, fsync, then ``os.replace``.

A reader never sees a half-written file, and a writer that fails leaves the previous file untouched.
Every file the project writes (checkpoints, results, sidecars, figures, reports) goes through here.

Example::

    with atomic_path(out_dir / "results.parquet") as tmp:
        df.to_parquet(tmp)          # any library that writes to a path
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]

logger = logging.getLogger(__name__)


def _current_umask() -> int:
    """The process umask (read once; setting it back immediately)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_file(path: Path) -> None:
    """Flush a file's contents to stable storage (best effort on platforms without fsync)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist the rename itself (POSIX only; silently skipped where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    The temporary file keeps the suffix of ``path`` (so writers that infer the format from the
    extension, such as matplotlib's ``savefig``, still work). The parent directory is created if
    needed. If the body raises, the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files, and some writers (safetensors) replace the file they are given
    # with a 0600 one of their own: the result gets the permissions a plain open() would give
    # (or keeps those of the file being replaced), set after the writer is done.
    try:
        mode = target.stat().st_mode & 0o777 if target.exists() else 0o666 & ~_UMASK
    except OSError:
        mode = 0o666 & ~_UMASK
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"atomic write of {target}: the writer did not create {tmp}")
        with contextlib.suppress(OSError):
            os.chmod(tmp, mode)
        _fsync_file(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    logger.debug("wrote %s", target)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8 by default, ``\\n`` newlines) and return the path."""
    return atomic_write_bytes(path, text.encode(encoding))
