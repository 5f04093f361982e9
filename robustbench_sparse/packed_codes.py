"""Fixed-width combinatorial-number-system codes of balanced boolean groups (packed export).

A group of ``n`` positions keeping exactly ``k`` is one of ``C(n, k)`` combinations; its colex rank
``sum_i C(c_i, i)`` (sorted ``c_1 < ... < c_k``, 1-based ``i``) costs :func:`code_bits` bits.
:func:`encode_groups` bit-packs the ranks of many groups (least significant bit first) and
:func:`decode_groups` inverts it. Small ``C(n, k)`` use lookup tables; large ones exact integers.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np

from robustbench_sparse.errors import UserError

__all__ = ["code_bits", "decode_groups", "encode_groups"]

#: build a rank -> combination lookup table when C(n, k) is at most this
_TABLE_MAX = 1 << 16


def code_bits(n: int, k: int) -> int:
    """``ceil(log2 C(n, k))``: bits of one rank (0 when there is a single combination)."""
    count = math.comb(n, k)
    return 0 if count <= 1 else (count - 1).bit_length()


@cache
def _binom_table(n: int, k: int) -> np.ndarray:
    """(n+1, k+1) int64 table of C(a, b), saturated at 2**62.

    Only entries ``C(c_i, i)`` of actual combinations are ever summed, and each is at most the
    rank, which is below ``C(n, k) <= 2**62`` when this path is used, so saturation never bites.
    """
    t = np.zeros((n + 1, k + 1), dtype=np.int64)
    for a in range(n + 1):
        for b in range(min(a, k) + 1):
            t[a, b] = min(math.comb(a, b), 1 << 62)
    return t


@cache
def _combination_table(n: int, k: int) -> np.ndarray:
    """bool (C(n, k), n): row r is the combination of rank r."""
    count = math.comb(n, k)
    table = np.zeros((count, n), dtype=bool)
    masks = _all_combinations(n, k)  # (count, n)
    table[_ranks_small(masks, k)] = masks
    return table


def _all_combinations(n: int, k: int) -> np.ndarray:
    from itertools import combinations

    out = np.zeros((math.comb(n, k), n), dtype=bool)
    for i, combo in enumerate(combinations(range(n), k)):
        out[i, list(combo)] = True
    return out


def _ranks_small(masks: np.ndarray, k: int) -> np.ndarray:
    """Colex ranks of bool rows (G, n) with k True each, as int64 (needs C(n, k) < 2**63)."""
    n = masks.shape[1]
    order = np.cumsum(masks, axis=1)  # (G, n): 1-based index of each kept position
    binom = _binom_table(n, k)
    pos = np.broadcast_to(np.arange(n), masks.shape)
    terms = np.where(masks, binom[pos, np.minimum(order, k)], 0)  # C(c_i, i) at kept positions
    return terms.sum(axis=1).astype(np.int64)  # (G,)


def _rank_big(row: np.ndarray) -> int:
    """Colex rank of one bool row, as a Python int (any size)."""
    return sum(math.comb(int(c), i + 1) for i, c in enumerate(np.flatnonzero(row)))


def _unrank_big(rank: int, n: int, k: int) -> np.ndarray:
    row = np.zeros(n, dtype=bool)
    hi = n
    for i in range(k, 0, -1):
        lo_c, hi_c = i - 1, hi - 1  # largest c in [i-1, hi-1] with C(c, i) <= rank
        while lo_c < hi_c:
            mid = (lo_c + hi_c + 1) // 2
            if math.comb(mid, i) <= rank:
                lo_c = mid
            else:
                hi_c = mid - 1
        row[lo_c] = True
        rank -= math.comb(lo_c, i)
        hi = lo_c
    return row


def encode_groups(masks: np.ndarray, k: int) -> tuple[bytes, int]:
    """Bit-packed fixed-width ranks of bool groups (G, n) keeping ``k`` each -> (bytes, bits)."""
    groups, n = masks.shape
    width = code_bits(n, k)
    if width == 0 or groups == 0:
        return b"", 0
    if width <= 62:
        ranks = _ranks_small(masks, k).astype(np.uint64)  # (G,)
        bits = (ranks[:, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1)  # (G, width)
    else:
        nbytes = (width + 7) // 8
        rows = [
            np.unpackbits(
                np.frombuffer(_rank_big(m).to_bytes(nbytes, "little"), dtype=np.uint8),
                bitorder="little",
            )[:width]
            for m in masks
        ]
        bits = np.stack(rows)  # (G, width)
    flat = bits.astype(np.uint8).reshape(-1)
    return np.packbits(flat, bitorder="little").tobytes(), groups * width


def decode_groups(data: bytes, groups: int, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`encode_groups`: bool (G, n)."""
    width = code_bits(n, k)
    if width == 0:
        return np.ones((groups, n), dtype=bool) if k == n else _all_combinations(n, k)[[0] * groups]
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    if bits.size < groups * width:
        raise UserError("packed file is corrupt: a code blob is too short")
    grid = bits[: groups * width].reshape(groups, width)  # (G, width)
    if width <= 62:
        ranks = (grid.astype(np.uint64) << np.arange(width, dtype=np.uint64)).sum(axis=1)
        if math.comb(n, k) <= _TABLE_MAX:
            table = _combination_table(n, k)
            if int(ranks.max(initial=0)) >= table.shape[0]:
                raise UserError("packed file is corrupt: a position code is out of range")
            return table[ranks.astype(np.int64)]
        return np.stack([_unrank_big(int(r), n, k) for r in ranks])
    packed = np.packbits(grid, axis=1, bitorder="little")  # (G, ceil(width/8))
    return np.stack([_unrank_big(int.from_bytes(p.tobytes(), "little"), n, k) for p in packed])
