"""The Campfire pruning granularities (which group keeps the same number of weights)."""

from __future__ import annotations

from enum import Enum

from robustbench_sparse.errors import unknown_name


class Granularity(str, Enum):
    """Which group of a conv weight ``W[K, C, kh, kw]`` keeps the same number of weights.

    - ``WINDOW``: every k×k kernel ``W[k, c]`` keeps the same number ``n_w`` of weights.
    - ``CHANNEL``: every filter ``W[k]`` keeps the same number ``n_c`` of whole kernels.
    - ``COMBINED``: ``n_c`` kernels per filter, then ``n_w`` weights inside each kept kernel.
    - ``UNSTRUCTURED``: layer-wise magnitude pruning (the Zhu & Gupta baseline).
    """

    WINDOW = "window"
    CHANNEL = "channel"
    COMBINED = "combined"
    UNSTRUCTURED = "unstructured"

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
