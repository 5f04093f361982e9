"""packed_codes: combinatorial-number-system ranks of balanced groups, bit-packed and back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustbench_sparse.errors import UserError
from robustbench_sparse.packed_codes import code_bits, decode_groups, encode_groups


@pytest.mark.parametrize(("n", "k"), [(9, 1), (9, 4), (9, 9), (32, 3), (40, 10), (300, 40), (5, 0)])
def test_group_codes_round_trip(n: int, k: int) -> None:
    rng = np.random.default_rng(n * 100 + k)
    groups = 37
    masks = np.zeros((groups, n), dtype=bool)
    for g in range(groups):
        masks[g, rng.choice(n, size=k, replace=False)] = True
    data, bits = encode_groups(masks, k)
    assert bits == groups * code_bits(n, k)
    assert len(data) == math.ceil(bits / 8)
    assert np.array_equal(decode_groups(data, groups, n, k), masks)


def test_code_bits() -> None:
    assert code_bits(9, 1) == 4 and code_bits(9, 4) == 7 and code_bits(9, 9) == 0
    assert code_bits(64, 6) == math.ceil(math.log2(math.comb(64, 6)))


def test_ranks_are_colex_and_dense() -> None:
    # Every one of the C(5, 2) = 10 combinations gets its own rank in 0..9, in colex order.
    combos = [(a, b) for b in range(5) for a in range(b)]  # colex: by the largest element first
    masks = np.zeros((len(combos), 5), dtype=bool)
    for g, (a, b) in enumerate(combos):
        masks[g, [a, b]] = True
    data, bits = encode_groups(masks, 2)
    width = code_bits(5, 2)
    assert width == 4 and bits == len(combos) * width
    values = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    ranks = [
        int(sum(int(v) << i for i, v in enumerate(values[g * 4 : g * 4 + 4]))) for g in range(10)
    ]
    assert ranks == list(range(10))


def test_truncated_or_out_of_range_codes_are_user_errors() -> None:
    masks = np.zeros((3, 9), dtype=bool)
    masks[:, :2] = True
    data, _ = encode_groups(masks, 2)
    with pytest.raises(UserError, match="too short"):
        decode_groups(data[:1], 3, 9, 2)
    with pytest.raises(UserError, match="out of range"):
        decode_groups(b"\xff" * len(data), 3, 9, 2)  # rank 63 > C(9, 2) - 1 = 35
