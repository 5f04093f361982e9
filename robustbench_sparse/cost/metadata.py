"""Bits a sparse format spends on *where* the kept weights are (position metadata), per layer.

For a layer's mask ``M`` of shape ``(K, C, kh, kw)`` (Linear ``(K, F)``) with ``nnz`` kept:

* ``bitmap``: one bit per weight, ``K · C · kh · kw``.
* ``csr``: compressed sparse rows over the filters (rows ``W[k]`` flattened to ``C · kh · kw``):
  ``nnz · ceil(log2(C · kh · kw))`` column-index bits plus ``32 · (K + 1)`` row-pointer bits.
* ``rank``: the packed export's fixed-width combinatorial rank codes (``rbs export --format
  packed``; :func:`robustbench_sparse.packed_format.position_code_bits`, bit for bit what the
  export stores): ``ceil(log2 C(group, kept))`` bits per balanced group, or its one-bit-per-weight
  fallback for an unbalanced mask.
* ``2to4``: NVIDIA's compressed 2:4 layout: 2 index bits per stored value, 2 values stored per
  group of 4 (a zero where a group keeps fewer), i.e. ``numel`` bits; ``None`` when the mask is
  not 2:4-compliant (:func:`robustbench_sparse.cost.macs.nm_compliant`).
* ``bound``: the information bound the export is held to: ``sum ceil(log2 C(group, kept))`` over
  the balanced groups, or ``ceil(log2 C(numel, nnz))`` for an unbalanced mask.
"""

from __future__ import annotations

import numpy as np

from robustbench_sparse.cost.macs import nm_compliant
from robustbench_sparse.packed_format import position_code_bits

__all__ = ["FORMATS", "metadata_bits"]

#: format name -> one-line definition
FORMATS: dict[str, str] = {
    "bitmap": "1 bit per weight",
    "csr": "nnz column indices of ceil(log2(C*kh*kw)) bits + 32-bit row pointers per filter",
    "rank": "the packed export's combinatorial rank codes (its bitmap fallback if unbalanced)",
    "2to4": "2 bits per stored value, 2 stored per group of 4 (null if not 2:4-compliant)",
    "bound": "information bound: sum over groups of ceil(log2 C(group, kept))",
}


def metadata_bits(mask: np.ndarray) -> dict[str, int | None]:
    """Position-metadata bits of one layer's bool mask per format (see the module docstring)."""
    m = np.asarray(mask, dtype=bool)
    k = m.shape[0]
    row = m[0].size if k else 0
    nnz = int(np.count_nonzero(m))
    _, rank, bound = position_code_bits(m)
    return {
        "bitmap": int(m.size),
        "csr": nnz * (row - 1).bit_length() + 32 * (k + 1),
        "rank": rank,
        "2to4": int(m.size) if nm_compliant(m) else None,
        "bound": bound,
    }
