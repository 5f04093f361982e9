"""Load imbalance of a sparse layer on a zero-skipping engine: max work / mean work per lane.

A layer's work is split over processing elements (PEs) or lanes by a *mapping*; each lane does
the multiplications of its nonzero weights, and all lanes wait for the slowest, so the layer takes
``max`` (not ``mean``) lane time: utilisation is ``1 / imbalance``. Per output position the work
of a lane is the number of nonzero weights it holds (the factor ``Ho · Wo`` cancels). Mappings:

* ``filter-per-pe``: one filter ``W[k]`` per PE (output-stationary over the filters); work =
  nonzeros of the filter, over all ``K`` filters (an empty filter is an idle PE).
* ``kernel-per-lane``: one kernel ``W[k, c]`` per lane (a window engine, the unit of Campfire's
  ``window`` pattern); work = nonzeros of the kernel, over the non-empty kernels (an engine
  dispatches only the kernels the position codes list).
* ``nm-group-per-lane``: one group of ``m`` consecutive input channels at one kernel position,
  ``W[k, m·j : m·(j+1), r, s]``, per lane (an N:M engine, ``m = 4``); work = nonzeros of the
  group, over all groups (``C`` padded to a multiple of ``m``).

Campfire's balanced masks score exactly 1.00 in their own mapping by construction (``window`` in
both ``kernel-per-lane`` and ``filter-per-pe``, ``channel`` / ``combined`` / balanced 1×1 and Linear
rows in ``filter-per-pe``, ``nm`` in ``nm-group-per-lane``); unstructured masks score more. The
mapping vocabulary follows load-balance-aware pruning (ESE, Han et al., FPGA 2017); it is a model
of an accelerator, not a measurement.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAPPINGS", "imbalance", "lane_work"]

#: mapping name -> what one lane holds
MAPPINGS: dict[str, str] = {
    "filter-per-pe": "one filter W[k] per processing element",
    "kernel-per-lane": "one non-empty kernel W[k, c] per lane (window engine)",
    "nm-group-per-lane": "one group of 4 consecutive input channels at one (k, r, s) per lane "
    "(N:M engine)",
}

_NM_M = 4


def lane_work(nonzero: np.ndarray, mapping: str) -> np.ndarray:
    """Nonzero weights per lane (int64, 1-D) of a bool ``(K, C, kh, kw)`` / ``(K, C)`` pattern.

    Raises:
        KeyError: an unknown mapping name (valid: :data:`MAPPINGS`).
    """
    nz = np.asarray(nonzero, dtype=bool)
    k, c = nz.shape[:2]
    nz3 = nz.reshape(k, c, -1)  # (K, C, kh*kw)
    if mapping == "filter-per-pe":
        return nz3.sum(axis=(1, 2), dtype=np.int64)  # (K,)
    if mapping == "kernel-per-lane":
        per_kernel = nz3.sum(axis=2, dtype=np.int64)  # (K, C)
        return per_kernel[per_kernel > 0]  # (non-empty kernels,)
    if mapping == "nm-group-per-lane":
        pad = (-c) % _NM_M
        by_pos = np.pad(nz3.transpose(0, 2, 1), ((0, 0), (0, 0), (0, pad)))  # (K, kh*kw, C+pad)
        groups = by_pos.reshape(k, nz3.shape[2], (c + pad) // _NM_M, _NM_M)
        return groups.sum(axis=-1, dtype=np.int64).reshape(-1)  # (K*kh*kw*C/m,)
    raise KeyError(f"unknown mapping {mapping!r}; valid: {', '.join(MAPPINGS)}")


def imbalance(nonzero: np.ndarray, mapping: str) -> float:
    """``max / mean`` of :func:`lane_work`; NaN when the layer has no nonzero weight."""
    work = lane_work(nonzero, mapping)
    total = int(work.sum())
    if work.size == 0 or total == 0:
        return math.nan
    return float(work.max()) * work.size / total
