"""Hit a target sparsity with AutoSparse by bisecting its threshold init over whole runs.

AutoSparse (:mod:`robustbench_sparse.sparsity.methods.autosparse`) *learns* its sparsity, so rows
of a comparison at "70 %" need a knob turned until the achieved sparsity is there. The knob is
the initial threshold logit ``s_init`` (``autosparse_threshold_init``): ``sigmoid(s_init)`` is the
initial magnitude below which weights are masked, and the achieved sparsity grows with it. With
``autosparse_search_runs = n > 0`` the training job first runs up to ``n`` complete trainings
(same data, seed, schedule; no checkpoints written) and bisects ``s_init`` in ``[-10, h]``
(``sigmoid(-10) = 4.5e-5``; ``h = logit(max |W|)`` over the pruned layers at initialisation,
capped at 0: above it every weight is masked at the first step and training collapses; widened
to include the configured init), starting at the configured init, until
``|achieved - target| <= autosparse_tolerance``; the real run then trains
with that init (on CPU it reproduces the accepted probe bit for bit). If no probe lands inside the
tolerance, the closest one is used and a warning says so; the checkpoint's metadata records every
probe (``autosparse_search``). The cost is up to ``n`` extra trainings; a resumed job searches
again (deterministic on CPU). Bisection assumes the achieved sparsity grows with ``s_init``; it
does in the regime where the network still learns (measured on tiny digits runs), not where an
init near the weights' scale collapses training, hence the upper end ``h``.
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
from robustbench_sparse.sparsity import PruningMethod, SparsityConfig, select_layers
from robustbench_sparse.sparsity.report import sparsity_report
from robustbench_sparse.training import TrainConfig, fit

logger = logging.getLogger(__name__)

__all__ = [
    "Probe",
    "SearchResult",
    "bisect_threshold_init",
    "needs_search",
    "search_threshold_init",
]

#: the bisection's default bracket of threshold logits (sigmoid 4.5e-5 .. 0.5)
LOW, HIGH = -10.0, 0.0


@dataclass(frozen=True)
class Probe:
    """One training of the search: its threshold init and the sparsity it achieved."""

    threshold_init: float
    achieved: float


@dataclass(frozen=True)
class SearchResult:
    """The accepted threshold init, whether it met the tolerance, and every probe in order."""

    threshold_init: float
    within_tolerance: bool
    probes: tuple[Probe, ...]

    def record(self) -> dict[str, Any]:
        """JSON-safe record for checkpoint metadata."""
        return {
            "threshold_init": self.threshold_init,
            "within_tolerance": self.within_tolerance,
            "probes": [
                {"threshold_init": p.threshold_init, "achieved": p.achieved} for p in self.probes
            ],
        }


def needs_search(sparsity: SparsityConfig) -> bool:
    """True for an ``autosparse`` config with ``autosparse_search_runs > 0`` and a target."""
    return (
        sparsity.method is PruningMethod.AUTOSPARSE
        and sparsity.autosparse_search_runs > 0
        and sparsity.target > 0
    )


def bisect_threshold_init(
    achieved_at: Callable[[float], float],
    *,
    target: float,
    tolerance: float,
    runs: int,
    start: float,
    low: float = LOW,
    high: float = HIGH,
) -> SearchResult:
    """Bisect ``s_init`` so that ``achieved_at(s_init)`` (sparsity in [0, 1]) is near ``target``.

    Assumes the achieved sparsity does not decrease as ``s_init`` grows. The first probe is
    ``start``; each later one is the middle of the bracket that must hold the answer. Stops at
    the first probe with ``|achieved - target| <= tolerance`` or after ``runs`` probes
    (the closest then, ``within_tolerance`` False).
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    low, high = min(low, start), max(high, start)
    probes: list[Probe] = []
    s = start
    for _ in range(runs):
        achieved = float(achieved_at(s))
        probes.append(Probe(s, achieved))
        logger.info(
            "autosparse search: s_init %.4f -> achieved %.4f (target %.4f)", s, achieved, target
        )
        if abs(achieved - target) <= tolerance:
            return SearchResult(s, True, tuple(probes))
        if achieved < target:
            low = s
        else:
            high = s
        s = (low + high) / 2.0
    best = min(probes, key=lambda p: abs(p.achieved - target))
    return SearchResult(best.threshold_init, False, tuple(probes))


def upper_threshold_init(model: nn.Module, sparsity: SparsityConfig) -> float:
    """``min(0, logit(max |W|))`` over the layers ``sparsity`` prunes in ``model`` (untrained)."""
    params = dict(model.named_parameters())
    top = max(
        (float(params[n].detach().abs().max()) for n in select_layers(model, sparsity)), default=0.5
    )
    top = min(max(top, 1e-6), 0.5)
    return math.log(top / (1.0 - top))


def search_threshold_init(
    new_model: Callable[[], nn.Module],
    data: DatasetSplits,
    train: TrainConfig,
    sparsity: SparsityConfig,
    adversarial: AdversarialConfig | None,
    plain_train: Dataset[Any] | None,
) -> SearchResult:
    """Run the bisection with whole trainings (``fit``, no checkpoints); log the outcome.

    ``new_model()`` builds the untrained model (called after seeding with ``train.seed``, as the
    training job does). Returns the :class:`SearchResult`; warns when the tolerance was missed.
    """

    def achieved_at(s_init: float) -> float:
        torch.manual_seed(train.seed)
        config = replace(sparsity, autosparse_threshold_init=s_init)
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

    torch.manual_seed(train.seed)
    found = bisect_threshold_init(
        achieved_at,
        target=sparsity.target,
        tolerance=sparsity.autosparse_tolerance,
        runs=sparsity.autosparse_search_runs,
        start=sparsity.autosparse_threshold_init,
        high=upper_threshold_init(new_model(), sparsity),
    )
    if not found.within_tolerance:
        closest = min(found.probes, key=lambda p: abs(p.achieved - sparsity.target))
        logger.warning(
            "autosparse search: no threshold init within %.3f of target %.3f after %d runs; "
            "using s_init %.4f (achieved %.4f); raise autosparse_search_runs",
            sparsity.autosparse_tolerance,
            sparsity.target,
            len(found.probes),
            closest.threshold_init,
            closest.achieved,
        )
    return found
