"""Atomic file writes for the evaluation package (re-exported from :mod:`robustbench_sparse.atomic`)."""

from robustbench_sparse.atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text"]
