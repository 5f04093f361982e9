"""The budget of the sampled black-box probe (``--masking sample``): how many white-box survivors,
how many queries, and how likely the sample is to catch masking.

The gradient-masking probe of :mod:`evaluations.engine.masking_probes` runs a gradient-free attack
(Square; Andriushchenko et al., ECCV 2020) on the examples every white-box attack left robust
(check 2, "black box beats white box"; Carlini et al. 2019, "On Evaluating Adversarial
Robustness", section 4). Run on every survivor at every epsilon with 1,000 queries it cost five
times the attack grid it checks (issue 30). Under ``sample`` it is sized to a stated budget:

* **Budget** (forward passes of one example): :data:`SHARE` of the grid's own work on that
  checkpoint in the norms the probe covers, counted as :data:`FORWARDS_PER_GRAD` forward passes per gradient evaluation the
  grid's cells recorded, minus what the cheap probes (unbounded budget, gradients, randomness,
  batch dependence) spent; never below :data:`FLOOR_ROWS` x :data:`MIN_QUERIES` per norm. A
  deterministic formula of the recorded work (not of wall time), so the same run draws the same
  sample on every machine and backend.
* **Allocation** (:func:`allocate`): queries per example ``q`` in [:data:`MIN_QUERIES`,
  :data:`MAX_QUERIES`] aiming at :data:`TARGET_PER_EPS` examples per epsilon, then the affordable
  rows ``budget // q`` water-filled over the epsilons (an epsilon with fewer survivors takes them
  all, the rest is shared).
* **Sample** (:func:`class_balanced_sample`): seeded, class-balanced (round-robin over the labels
  of a seeded permutation of the survivors).
* **Flag and power**: the sampled probe estimates the count of breakable survivors as
  ``broken * survivors / sample``; it flags when that estimate exceeds ``tolerance * n`` (the
  full probe's rule: more than 1 % of the ``n`` examples), i.e. at ``broken >=``
  :func:`detection_threshold`. :func:`detection_power` is the binomial probability that a sample of
  that size reaches the threshold when a share ``p`` (default :data:`DETECT_SHARE` = 10 %) of the
  survivors is breakable (sampling with replacement: a slight underestimate of the power of the
  sample drawn without replacement).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "DETECT_SHARE",
    "FLOOR_ROWS",
    "FORWARDS_PER_GRAD",
    "MAX_QUERIES",
    "MIN_QUERIES",
    "SHARE",
    "TARGET_PER_EPS",
    "allocate",
    "cheap_forwards",
    "class_balanced_sample",
    "detection_power",
    "detection_threshold",
    "probe_budget",
]

#: the probes may cost at most this share of the attack grid's own work (issue 30's goal)
SHARE = 0.25
#: forward passes one gradient evaluation (forward + backward) costs; measured 2.4 on the digits
#: small_cnn on one CPU thread, 2 is the conservative side of the textbook 2-3
FORWARDS_PER_GRAD = 2.0
#: queries per example of the sampled probe: at least / at most (the full probe's 1,000)
MIN_QUERIES = 100
MAX_QUERIES = 1000
#: examples per epsilon the allocation aims at before it raises the queries (power 0.96 at 10 %)
TARGET_PER_EPS = 30
#: the smallest black-box sample per norm (rows x MIN_QUERIES), even on a tiny grid
FLOOR_ROWS = 20
#: the share of breakable survivors the reported power refers to
DETECT_SHARE = 0.10


def cheap_forwards(examples: int, unbounded_grad_evals: int, alone: int = 32) -> int:
    """Forward-pass equivalents of the cheap probes on ``examples`` probe examples: the unbounded
    attack's recorded gradient evaluations and one gradient per example (zero-gradient probe) at
    :data:`FORWARDS_PER_GRAD` each, two forwards (randomness), two plus ``alone`` single-example
    forwards (batch dependence)."""
    grads = unbounded_grad_evals + examples
    return int(FORWARDS_PER_GRAD * grads) + 4 * examples + alone


def probe_budget(grid_grad_evals: int, cheap_forwards: int, norms: int) -> int:
    """Forward passes (of one example) the sampled black-box probe of one checkpoint may spend.

    ``grid_grad_evals``: gradient evaluations the grid's cells of the checkpoint recorded;
    ``cheap_forwards``: forward-pass equivalents the cheap probes spent; ``norms``: how many norms
    need the probe (each gets at least ``FLOOR_ROWS * MIN_QUERIES``).
    """
    if grid_grad_evals < 0 or cheap_forwards < 0 or norms < 0:
        raise ValueError("work counts must be >= 0")
    budget = int(SHARE * FORWARDS_PER_GRAD * grid_grad_evals) - int(cheap_forwards)
    return max(budget, norms * FLOOR_ROWS * MIN_QUERIES)


def allocate(survivors: Sequence[int], budget: int) -> tuple[int, list[int]]:
    """(queries per example, sample size per epsilon) for ``survivors`` (count per epsilon).

    The queries ``q = budget / (epsilons with survivors * TARGET_PER_EPS)`` clipped to
    [:data:`MIN_QUERIES`, :data:`MAX_QUERIES`]; then ``budget // q`` rows are water-filled over the
    epsilons (each at most its survivors). ``sum(sizes) * (q + 1) <= budget`` unless the budget is below
    ``MIN_QUERIES`` per epsilon with survivors (then one row each at ``MIN_QUERIES``).
    """
    if budget < 0 or any(s < 0 for s in survivors):
        raise ValueError("budget and survivor counts must be >= 0")
    live = [k for k, s in enumerate(survivors) if s > 0]
    sizes = [0] * len(survivors)
    if not live:
        return MIN_QUERIES, sizes
    q = budget // (len(live) * TARGET_PER_EPS)
    q = int(min(MAX_QUERIES, max(MIN_QUERIES, q)))
    rows = max(budget // (q + 1), len(live))  # + 1: Square's first query (the initial margin)
    todo = sorted(live, key=lambda k: (survivors[k], k))  # smallest first: they take all
    while todo:
        share = rows // len(todo)
        k = todo.pop(0)
        sizes[k] = int(min(survivors[k], max(share, 1)))
        rows -= sizes[k]
    return q, sizes


def class_balanced_sample(
    indices: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` of ``indices`` (M,), class-balanced: round-robin over the labels (M,), each
    class's indices in a seeded random order. Returns the chosen indices, sorted (size,)."""
    if size >= indices.size:
        return np.sort(indices)
    order = rng.permutation(indices.size)
    idx, lab = indices[order], labels[order]
    # rank of each example within its class, in the permuted order: round r takes every class's
    # r-th example, so classes are drawn evenly until one runs out
    rank = np.zeros(idx.size, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, c in enumerate(lab.tolist()):
        rank[i] = seen.get(c, 0)
        seen[c] = rank[i] + 1
    take = np.lexsort((np.arange(idx.size), rank))[:size]
    return np.sort(idx[take])


def detection_threshold(n: int, survivors: int, sample: int, tolerance: float) -> int:
    """Confirmed breaks in the sample at which the probe flags: the smallest ``b`` with
    ``b * survivors / sample > tolerance * n`` (the full probe's rule on the estimated count)."""
    if sample <= 0 or survivors <= 0:
        return 1
    return max(1, math.floor(tolerance * n * sample / survivors + 1e-12) + 1)


def detection_power(sample: int, threshold: int, share: float = DETECT_SHARE) -> float:
    """P(Binomial(sample, share) >= threshold): the chance the sample flags when ``share`` of
    the survivors are breakable by the black-box attack."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1] (got {share})")
    if threshold <= 0:
        return 1.0
    below = sum(
        math.comb(sample, b) * share**b * (1.0 - share) ** (sample - b)
        for b in range(min(threshold, sample + 1))
    )
    return float(min(1.0, max(0.0, 1.0 - below)))
