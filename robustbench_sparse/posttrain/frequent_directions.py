"""Frequent Directions (Liberty 2013; Ghashami, Liberty, Phillips & Woodruff 2016): a small
matrix ``B`` whose Gram matrix ``BᵀB`` approximates ``AᵀA``.

FilterSketch (Lin et al., "Filter Sketch for Network Pruning", TNNLS 2021, arXiv 2001.08514;
reference code lmbxmu/FilterSketch, ``sketch.py`` ``sketch_matrix``) sketches the filters of a
layer with it. The variant implemented here is the one of Ghashami et al. (2016, Algorithm 3.1,
"shrink by the ℓ-th singular value"): the rows of ``A`` are inserted one by one into a buffer of
``ℓ`` rows; whenever a row arrives and the buffer is full, ``B = U Σ Vᵀ`` is replaced by
``sqrt(max(Σ² - σ_ℓ² I, 0)) Vᵀ``, which empties at least one row. Every row of ``A`` is inserted.
Guarantees (tested):

* ``0 ≼ AᵀA - BᵀB`` (the sketch never over-estimates any direction), and
* ``‖AᵀA - BᵀB‖₂ ≤ (‖A‖_F² - ‖B‖_F²) / ℓ ≤ ‖A‖_F² / ℓ``.

Two deliberate departures from the reference ``sketch_matrix``:

* it shrinks by the ``(ℓ/2 + 1)``-th squared singular value (Liberty 2013's "fast" variant,
  bound ``2‖A‖_F²/ℓ``); here the ℓ-th, which gives the tighter bound above and leaves a full
  buffer (``ℓ`` nonzero filters) at the end;
* once the buffer is full it *stops* when fewer than ``ℓ/2`` rows remain (``if n - i < l // 2:
  break``), so those filters never enter the sketch and the bound fails for ``A``; here none are
  dropped.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["frequent_directions"]


def frequent_directions(a: Tensor, ell: int) -> Tensor:
    """The Frequent-Directions sketch ``B`` ``(ell, d)`` of ``a`` ``(n, d)``, rows in order.

    Computed in float64 and returned in ``a``'s dtype. ``ell >= n`` returns ``a`` padded with zero
    rows (no shrink is needed, ``BᵀB = AᵀA``). Rows of ``B`` are ordered by decreasing norm among
    the shrunk directions, the last inserted row of ``a`` after them.

    Raises:
        ValueError: ``a`` is not 2-D, or ``ell < 1``.
    """
    if a.dim() != 2:
        raise ValueError(f"frequent_directions needs a 2-D matrix, got shape {tuple(a.shape)}")
    if ell < 1:
        raise ValueError(f"the sketch needs at least one row, got ell = {ell}")
    rows = a.detach().to(torch.float64)
    n, d = rows.shape
    b = torch.zeros(ell, d, dtype=torch.float64, device=rows.device)
    filled = 0
    for i in range(n):
        if filled == ell:  # no zero-valued row left: shrink by the ℓ-th squared singular value
            _, sigma, vh = torch.linalg.svd(b, full_matrices=False)  # (r,), (r, d), r = min(ℓ, d)
            squared = torch.zeros(ell, dtype=torch.float64, device=rows.device)
            squared[: sigma.numel()] = sigma.square()
            shrunk = (squared[: sigma.numel()] - squared[ell - 1]).clamp_min(0).sqrt()  # (r,)
            filled = int((shrunk > 0).sum())
            b = torch.zeros_like(b)
            b[:filled] = shrunk[:filled, None] * vh[:filled]  # (filled, d)
        b[filled] = rows[i]
        filled += 1
    return b.to(a.dtype)
