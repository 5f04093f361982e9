"""The Campfire pruning granularities (which group keeps the same number of weights)."""

from __future__ import annotations

from enum import Enum

from robustbench_sparse.errors import UserError, unknown_name

#: The N:M pattern of ``Granularity.NM`` unless configured: NVIDIA's 2:4 sparse tensor cores.
DEFAULT_NM = "2:4"


class Granularity(str, Enum):
    """Which group of a conv weight ``W[K, C, kh, kw]`` keeps the same number of weights.

    - ``WINDOW``: every k×k kernel ``W[k, c]`` keeps the same number ``n_w`` of weights.
    - ``CHANNEL``: every filter ``W[k]`` keeps the same number ``n_c`` of whole kernels.
    - ``COMBINED``: ``n_c`` kernels per filter, then ``n_w`` weights inside each kept kernel.
    - ``UNSTRUCTURED``: layer-wise magnitude pruning (the Zhu & Gupta baseline).
    - ``NM``: N:M along the input channels (default 2:4, NVIDIA's sparse tensor-core layout as in
      apex ASP / ModelOpt): at every kernel position ``(k, r, s)`` every group of ``M``
      consecutive input channels ``W[k, M·j : M·(j+1), r, s]`` keeps the same ``N`` weights.
      Campfire's balanced-count idea with the group along the reduction axis instead of the
      k×k window; sparsity beyond ``1 - N/M`` removes whole filters.
    """

    WINDOW = "window"
    CHANNEL = "channel"
    COMBINED = "combined"
    UNSTRUCTURED = "unstructured"
    NM = "nm"

    @classmethod
    def parse(cls, value: str | Granularity) -> Granularity:
        """Return the member for ``value``; raise ``UserError`` listing the valid names otherwise."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            for member in cls:
                if member.value == key:
                    return member
        raise unknown_name("granularity", str(value), [m.value for m in cls])

    @property
    def structured(self) -> bool:
        """True for the granularities that balance counts per group (all but ``UNSTRUCTURED``)."""
        return self is not Granularity.UNSTRUCTURED


def parse_nm(value: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``: keep ``N`` of every ``M`` (``1 <= N < M <= 32``).

    Raises:
        UserError: anything but two integers ``N:M`` in that range.
    """
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) == 2 and all(p.strip().isdigit() for p in parts):
        n, m = int(parts[0]), int(parts[1])
        if 1 <= n < m <= 32:
            return n, m
    raise UserError(
        f"nm must be N:M with integers 1 <= N < M <= 32 (keep N of every M), got {value!r}; "
        f"e.g. {DEFAULT_NM}"
    )
