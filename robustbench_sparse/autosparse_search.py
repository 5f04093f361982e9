"""Hit a target sparsity with AutoSparse by searching its thresholds' weight decay over whole runs.

AutoSparse (:mod:`robustbench_sparse.sparsity.methods.autosparse`) *learns* its sparsity, so rows
of a comparison at "70 %" need a knob turned until the achieved sparsity is there. The knob is
STR's: the thresholds' weight decay ``autosparse_threshold_decay`` (it pulls ``s`` toward 0, so
the thresholds rise during training). With ``autosparse_search_runs = n > 0`` the training job
first runs up to ``n`` complete trainings (same data, seed, schedule; no checkpoints written) and
searches ``log10(decay)`` in ``[-6, 0]``, starting at the configured decay (default the run's
``weight_decay``), until ``|achieved - target| <= autosparse_tolerance``; the real run then trains
with that decay (on CPU it reproduces the accepted probe bit for bit). Until both sides of the
target are seen, each probe is the middle of the bracket; then a safeguarded regula falsi (the
secant in ``log10(decay)``, kept inside the middle 80 % of the bracket). If no probe lands inside
the tolerance, the closest one is used and a warning says so; the checkpoint's metadata records
every probe (``autosparse_search``). The cost is up to ``n`` extra trainings; a resumed job
searches again (deterministic on CPU).

Why the decay and not the threshold init: measured on digits ``small_cnn`` (10 epochs, alpha
horizon 8), the achieved sparsity rises monotonically with the decay (5e-4: 0.14, 5e-3: 0.28,
1e-2: 0.52, 1.4e-2: 0.66, 1.7e-2: 0.73, 2e-2: 0.77, 3e-2: 0.86, 5e-2: 0.92, 1e-1: 0.96; test
accuracy 98.7-99.3 % throughout), whereas over the init it is not monotone (30 epochs: s_init
-2.5: 0.53, -1.875: 0.35, -1.5625: 0.99, -1.25: 1.00): a high initial threshold masks most
weights at once and GA's gradient on the thresholds then pulls some layers' thresholds down.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from robustbench_sparse.adversarial import AdversarialConfig
from robustbench_sparse.datasets import DatasetSplits
from robustbench_sparse.sparsity import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.report import sparsity_report
from robustbench_sparse.training import TrainConfig, fit

logger = logging.getLogger(__name__)

__all__ = ["Probe", "SearchResult", "needs_search", "search_decay", "search_threshold_decay"]

#: the search's bracket of log10(threshold weight decay): 1e-6 .. 1
LOW, HIGH = -6.0, 0.0


@dataclass(frozen=True)
class Probe:
    """One training of the search: its thresholds' weight decay and the sparsity it achieved."""

    threshold_decay: float
    achieved: float


@dataclass(frozen=True)
class SearchResult:
    """The accepted decay, whether it met the tolerance, and every probe in order."""

    threshold_decay: float
    within_tolerance: bool
    probes: tuple[Probe, ...]

    def record(self) -> dict[str, Any]:
        """JSON-safe record for checkpoint metadata."""
        return {
            "knob": "autosparse_threshold_decay",
            "threshold_decay": self.threshold_decay,
            "within_tolerance": self.within_tolerance,
            "probes": [
                {"threshold_decay": p.threshold_decay, "achieved": p.achieved} for p in self.probes
            ],
        }


def needs_search(sparsity: SparsityConfig) -> bool:
    """True for an ``autosparse`` config with ``autosparse_search_runs > 0`` and a target."""
    return (
        sparsity.method is PruningMethod.AUTOSPARSE
        and sparsity.autosparse_search_runs > 0
        and sparsity.target > 0
    )


def search_decay(
    achieved_at: Callable[[float], float],
    *,
    target: float,
    tolerance: float,
    runs: int,
    start: float,
    low: float = LOW,
    high: float = HIGH,
) -> SearchResult:
    """Find a decay whose ``achieved_at(decay)`` (sparsity in [0, 1]) is near ``target``.

    Works in ``x = log10(decay)`` over ``[low, high]`` (exponents), assuming the achieved
    sparsity does not decrease with ``x``. The first probe is ``start`` (a decay, clamped into
    the bracket); then bisection until the target is bracketed, then a regula-falsi step kept
    within the bracket's middle 80 %. Stops at the first probe with ``|achieved - target| <=
    tolerance`` or after ``runs`` probes (the closest then, ``within_tolerance`` False).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    lo: tuple[float, float] | None = None  # (x, achieved) below the target
    hi: tuple[float, float] | None = None  # (x, achieved) above it
    probes: list[Probe] = []
    x = min(max(math.log10(max(start, 10.0**low)), low), high)
    for _ in range(runs):
        decay = 10.0**x
        achieved = float(achieved_at(decay))
        probes.append(Probe(decay, achieved))
        logger.info(
            "autosparse search: threshold decay %.3g -> achieved %.4f (target %.4f)",
            decay,
            achieved,
            target,
        )
        if abs(achieved - target) <= tolerance:
            return SearchResult(decay, True, tuple(probes))
        if achieved < target:
            lo = (x, achieved)
        else:
            hi = (x, achieved)
        x = _next_x(lo, hi, target, low, high)
    best = min(probes, key=lambda p: abs(p.achieved - target))
    return SearchResult(best.threshold_decay, False, tuple(probes))


def _next_x(
    lo: tuple[float, float] | None,
    hi: tuple[float, float] | None,
    target: float,
    low: float,
    high: float,
) -> float:
    """The next exponent: a bracket's middle, or its safeguarded secant once bracketed."""
    if lo is None:
        assert hi is not None
        return (low + hi[0]) / 2.0
    if hi is None:
        return (lo[0] + high) / 2.0
    (x0, a0), (x1, a1) = lo, hi
    width = x1 - x0
    x = x0 + (target - a0) * width / (a1 - a0) if a1 > a0 else (x0 + x1) / 2.0
    return min(max(x, x0 + 0.1 * width), x1 - 0.1 * width)


def search_threshold_decay(
    new_model: Callable[[], nn.Module],
    data: DatasetSplits,
    train: TrainConfig,
    sparsity: SparsityConfig,
    adversarial: AdversarialConfig | None,
    plain_train: Dataset[Any] | None,
) -> SearchResult:
    """Run :func:`search_decay` with whole trainings (``fit``, no checkpoints); log the outcome.

    ``new_model()`` builds the untrained model (called after seeding with ``train.seed``, as the
    training job does). Returns the :class:`SearchResult`; warns when the tolerance was missed.
    """

    def achieved_at(decay: float) -> float:
        torch.manual_seed(train.seed)
        config = replace(sparsity, autosparse_threshold_decay=decay)
        result = fit(
            new_model(),
            data,
            train,
            config,
            progress=False,
            adversarial=adversarial,
            plain_train=plain_train,
        )
        pruned = result.sparsifier.pruned_names if result.sparsifier is not None else []
        return float(sparsity_report(result.model, config, pruned).achieved_pruned)

    configured = sparsity.autosparse_threshold_decay
    found = search_decay(
        achieved_at,
        target=sparsity.target,
        tolerance=sparsity.autosparse_tolerance,
        runs=sparsity.autosparse_search_runs,
        start=train.weight_decay if configured is None else configured,
    )
    if not found.within_tolerance:
        closest = min(found.probes, key=lambda p: abs(p.achieved - sparsity.target))
        logger.warning(
            "autosparse search: no threshold decay within %.3f of target %.3f after %d runs; "
            "using %.3g (achieved %.4f); raise autosparse_search_runs",
            sparsity.autosparse_tolerance,
            sparsity.target,
            len(found.probes),
            closest.threshold_decay,
            closest.achieved,
        )
    return found
