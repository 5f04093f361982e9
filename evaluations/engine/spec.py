"""What the grid runs: attack specs, the grid configuration and the one epsilon-grid validator."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from attacks import Attack, Norm, get_attack
from robustbench_sparse.datasets import default_eps_grid
from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: registry name, backend and parameters."""

    name: str
    backend: str = "native"
    params: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Attack:
        """Instantiate the attack through the registry (validates name, backend, params)."""
        return get_attack(self.name, backend=self.backend, **dict(self.params))

    @property
    def label(self) -> str:
        """File-system-safe cell label."""
        return f"{self.name}@{self.backend}"


@dataclass(frozen=True)
class GridConfig:
    """What to run: attacks, epsilon grids per norm (``None`` = dataset default), batching.

    Raises:
        UserError: a bad limit or batch size, or an epsilon grid that is empty, has a negative or
            non-finite value or a duplicate (:func:`validate_epsilons`; grids are stored sorted).
    """

    attacks: tuple[AttackSpec, ...] = (AttackSpec("fgsm"), AttackSpec("pgd"), AttackSpec("cw"))
    linf_epsilons: tuple[float, ...] | None = None
    l2_epsilons: tuple[float, ...] | None = None
    l1_epsilons: tuple[float, ...] | None = None
    batch_size: int = 500
    limit: int | None = None
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        # A negative limit would silently slice examples off the end (x[:-k]).
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise UserError(f"the attack limit must be an integer >= 1 (got {self.limit!r})")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise UserError(f"the attack batch size must be an integer (got {self.batch_size!r})")
        if self.batch_size < 1:
            raise UserError(f"the attack batch size must be >= 1 (got {self.batch_size})")
        # The one place a configured grid is validated (and sorted): here, at construction.
        for name in ("linf_epsilons", "l2_epsilons", "l1_epsilons"):
            given = getattr(self, name)
            if given is not None:
                norm = name.partition("_")[0]
                object.__setattr__(self, name, tuple(validate_epsilons(given, norm)))

    def epsilons(self, norm: Norm, dataset: str) -> list[float]:
        """The sorted epsilon grid for ``norm`` (dataset default where not configured)."""
        given = {
            Norm.LINF: self.linf_epsilons,
            Norm.L2: self.l2_epsilons,
            Norm.L1: self.l1_epsilons,
        }[norm]
        return list(given) if given is not None else default_eps_grid(dataset, norm.value)


def validate_epsilons(values: Sequence[float], norm: str) -> list[float]:
    """Check an epsilon grid: finite, >= 0, no duplicates; returns it sorted (logged if changed)."""
    eps = [float(e) for e in values]
    if not eps:
        raise UserError(f"the {norm} epsilon grid is empty")
    for e in eps:
        if not math.isfinite(e) or e < 0:
            raise UserError(f"epsilon {e} is invalid: epsilons must be finite and >= 0")
    if len(set(eps)) != len(eps):
        dup = sorted({e for e in eps if eps.count(e) > 1})
        raise UserError(f"the {norm} epsilon grid has duplicates {dup}; list each value once")
    ordered = sorted(eps)
    if ordered != eps:
        logger.info("sorted the %s epsilon grid to %s", norm, ordered)
    return ordered
