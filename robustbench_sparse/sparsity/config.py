"""The sparsity configuration: a frozen, validated dataclass that round-trips through dicts/TOML."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustbench_sparse.errors import UserError, unknown_name
from robustbench_sparse.sparsity.granularity import Granularity


@dataclass(frozen=True)
class SparsityConfig:
    """How Campfire prunes a model.

    Attributes:
        target: final sparsity ``s_f`` in ``[0, 1)``; ``0`` means dense (the sparsifier is a no-op).
        granularity: which group keeps the same number of weights (see :class:`Granularity`).
        initial: sparsity ``s_i`` applied at ``start`` (``0 <= initial <= target``).
        start: epoch (may be fractional) where the cubic ramp starts (``t0``).
        end: epoch where the final target is reached and masks freeze (``t1``).
        update_every: optimizer steps between mask updates during the ramp.
        include: fnmatch patterns on module names (e.g. ``"net.layer1.*"``); empty = all eligible.
        exclude: fnmatch patterns on module names removed from the selection.
        prune_first_conv: also prune the first ``Conv2d`` (dense by default).
        prune_classifier: also prune the last ``Linear`` (dense by default).
    """

    target: float = 0.0
    granularity: Granularity = Granularity.WINDOW
    initial: float = 0.0
    start: float = 0.0
    end: float = 1.0
    update_every: int = 50
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    prune_first_conv: bool = False
    prune_classifier: bool = False

    def __post_init__(self) -> None:
        # Normalise the types that TOML/JSON produce (str granularity, lists, ints for floats).
        object.__setattr__(self, "granularity", Granularity.parse(self.granularity))
        for name in ("target", "initial", "start", "end"):
            object.__setattr__(self, name, _as_float(name, getattr(self, name)))
        for name in ("include", "exclude"):
            object.__setattr__(self, name, _as_patterns(name, getattr(self, name)))
        for name in ("prune_first_conv", "prune_classifier"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(
                    f"sparsity {name} must be true or false, got {getattr(self, name)!r}"
                )
        if isinstance(self.update_every, bool) or not isinstance(self.update_every, int):
            raise UserError(f"sparsity update_every must be an integer, got {self.update_every!r}")

        if not 0.0 <= self.target < 1.0:
            raise UserError(f"sparsity target must be in [0, 1), got {self.target}")
        if not 0.0 <= self.initial <= self.target:
            raise UserError(
                f"sparsity initial must be in [0, target={self.target}], got {self.initial}"
            )
        if self.start < 0.0:
            raise UserError(f"sparsity start must be >= 0 epochs, got {self.start}")
        if self.end < self.start:
            raise UserError(f"sparsity end ({self.end}) must be >= start ({self.start}) (epochs)")
        if self.update_every < 1:
            raise UserError(f"sparsity update_every must be >= 1, got {self.update_every}")

    @property
    def dense(self) -> bool:
        """True when nothing is pruned (``target == 0``)."""
        return self.target == 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-safe dict (granularity as its string value, patterns as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Granularity):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SparsityConfig:
        """Build from a dict such as a TOML table; unknown keys raise ``UserError`` with a hint."""
        if not isinstance(d, Mapping):
            raise UserError(f"sparsity config must be a table/dict, got {type(d).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in valid:
                raise unknown_name("sparsity option", str(key), valid)
        return cls(**dict(d))


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"sparsity {name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise UserError(f"sparsity {name} must be finite, got {value!r}")
    return float(value)


def _as_patterns(name: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        raise UserError(f"sparsity {name} must be a list of patterns, got the string {value!r}")
    try:
        items = tuple(value)
    except TypeError:
        raise UserError(f"sparsity {name} must be a list of patterns, got {value!r}") from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise UserError(f"sparsity {name} patterns must be non-empty strings, got {item!r}")
    return items
