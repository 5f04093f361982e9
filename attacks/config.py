"""Parameter sets shared by every backend of an attack (same names, same defaults).

Concrete attacks inherit one of these frozen dataclasses, so ``get_attack("pgd", backend=b, **p)``
accepts the same ``p`` for every backend ``b`` and :meth:`Attack.params` records them.

Default choices
---------------
PGD (Linf and L2): ``steps=20``, ``rel_stepsize=0.125`` (step = 0.125·eps), ``random_start=True``,
``restarts=1``. The iterate can travel ``steps · rel_stepsize = 2.5·eps``: enough to cross the
whole ball (diameter 2·eps) from a random start with margin, which Madry-style settings
(MNIST: 40 × eps/30 = 1.33·eps; CIFAR: 7 × eps/4 = 1.75·eps) only just allow. Because the step
scales with eps, PGD is never weaker than FGSM merely because a fixed absolute step is too small at
large eps (a known pitfall). Pass ``abs_stepsize`` to use one step for every eps.

C&W L2 (minimum norm): ``binary_search_steps=6``, ``steps=100``, ``stepsize=0.05`` (Adam lr in
tanh space), ``initial_const=1.0``, ``confidence=0``, ``abort_early=True``. Pixels at exactly 0 or 1
start at ``atanh(±0.999999) ≈ ±7.3`` where tanh is flat; Adam moves ``w`` by about ``lr`` per
step whatever the gradient scale, so with the textbook lr 0.01 such pixels need hundreds of steps
before they can move (100 steps at lr 0.01 left 27 % of digits unbroken at L2 = 1 where PGD-L2
leaves 3 %). Measured on 150 digits (tests' tiny CNN): these defaults give success within 1.3
points of a 9 × 1000-step, lr 0.01 reference at L2 ∈ {0.5, 1, 1.5, 2} and a median minimal norm
within 3 % of it, with about 1/13 of its gradient evaluations (450 digits: 6 × 100 × 443 = 265,800, ~15 s on 2 shared CPU
cores; native and foolbox give identical success curves with these parameters). Starting at c = 1
saves the wasted c = 0.01, 0.1 rounds; the search still grows c ×10 until an adversarial is found
and then bisects. Raise ``steps`` / ``binary_search_steps`` for final numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from attacks.params import check, check_positive_int, check_seed, is_number

__all__ = ["CWFixedCParams", "CWParams", "FGSMParams", "PGDParams"]


@dataclass(frozen=True)
class FGSMParams:
    """FGSM has no parameters: one gradient sign step of size eps."""

    def nominal_gradients(self) -> int:
        """One gradient per example (and epsilon)."""
        return 1

    def nominal_forwards(self) -> int:
        """No progress estimate: a single step."""
        return 0


@dataclass(frozen=True)
class PGDParams:
    """Projected gradient descent with a step size relative to eps (unless ``abs_stepsize``)."""

    steps: int = 20
    rel_stepsize: float = 0.125
    abs_stepsize: float | None = None
    random_start: bool = True
    restarts: int = 1
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps)
        check(
            is_number(self.rel_stepsize) and self.rel_stepsize > 0,
            f"rel_stepsize must be > 0 (got {self.rel_stepsize!r})",
        )
        check(
            self.abs_stepsize is None or (is_number(self.abs_stepsize) and self.abs_stepsize > 0),
            f"abs_stepsize must be None or > 0 (got {self.abs_stepsize!r})",
        )
        check(isinstance(self.random_start, bool), "random_start must be a bool")
        check_positive_int("restarts", self.restarts)
        check(
            self.restarts == 1 or self.random_start,
            "restarts > 1 needs random_start=True (a deterministic start repeats the same run)",
        )
        check_seed(self.seed)

    def nominal_gradients(self) -> int:
        """``steps × restarts`` per example and epsilon (no early stop, no nested grid)."""
        return self.steps * self.restarts

    def nominal_forwards(self) -> int:
        """``steps × restarts`` model calls per batch; 0 (no estimate) for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0

    def stepsize(self, eps: float) -> float:
        """Absolute step size used at budget ``eps``."""
        return (
            float(self.abs_stepsize) if self.abs_stepsize is not None else self.rel_stepsize * eps
        )


@dataclass(frozen=True)
class CWParams:
    """Carlini–Wagner L2 with a binary search over the constant c (minimum-norm)."""

    binary_search_steps: int = 6
    steps: int = 100
    stepsize: float = 0.05
    confidence: float = 0.0
    initial_const: float = 1.0
    abort_early: bool = True

    def __post_init__(self) -> None:
        check_positive_int("binary_search_steps", self.binary_search_steps)
        check_positive_int("steps", self.steps)
        check(
            is_number(self.stepsize) and self.stepsize > 0,
            f"stepsize must be > 0 (got {self.stepsize!r})",
        )
        check(
            is_number(self.confidence) and self.confidence >= 0,
            f"confidence must be >= 0 (got {self.confidence!r})",
        )
        check(
            is_number(self.initial_const) and self.initial_const > 0,
            f"initial_const must be > 0 (got {self.initial_const!r})",
        )
        check(isinstance(self.abort_early, bool), "abort_early must be a bool")

    def nominal_gradients(self) -> int:
        """``binary_search_steps × steps`` per example (no early abort)."""
        return self.binary_search_steps * self.steps

    def nominal_forwards(self) -> int:
        """``steps × binary_search_steps`` model calls per batch; 0 for a single step."""
        return self.nominal_gradients() if self.steps > 1 else 0


@dataclass(frozen=True)
class CWFixedCParams:
    """Carlini–Wagner L2 run once with a fixed constant ``c`` (torchattacks' ``CW``)."""

    c: float = 1.0
    confidence: float = 0.0
    steps: int = 100
    stepsize: float = 0.01

    def __post_init__(self) -> None:
        check(is_number(self.c) and self.c > 0, f"c must be > 0 (got {self.c!r})")
        check(
            is_number(self.confidence) and self.confidence >= 0,
            f"confidence must be >= 0 (got {self.confidence!r})",
        )
        check_positive_int("steps", self.steps)
        check(
            is_number(self.stepsize) and self.stepsize > 0,
            f"stepsize must be > 0 (got {self.stepsize!r})",
        )

    def nominal_gradients(self) -> int:
        """``steps`` per example (one run with a fixed ``c``)."""
        return self.steps

    def nominal_forwards(self) -> int:
        """``steps`` model calls per batch; 0 for a single step."""
        return self.steps if self.steps > 1 else 0
