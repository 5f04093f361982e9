"""Multiply-accumulates (MACs) of one conv / linear layer per input example, four ways.

For a layer call with weight ``W`` of shape ``(K, C/g, kh, kw)`` (``g`` groups) and output
``(K, Ho, Wo)`` (Linear ``W (K, F)``: ``Ho = Wo = 1``, ``kh = kw = 1``):

* ``dense``: ``K · C/g · kh · kw · Ho · Wo``, what a dense engine computes (the count
  :class:`torch.utils.flop_counter.FlopCounterMode` reports, divided by 2).
* ``effective``: ``nnz(W ∧ mask) · Ho · Wo``: every multiplication by a zero (or pruned) weight is
  skipped; the ideal of a zero-skipping engine. Activation zeros are not skipped (weight sparsity
  only).
* ``compact``: ``K' · C' · kh · kw · Ho · Wo`` with the filters ``K'`` and input channels ``C'``
  left after compaction (:mod:`robustbench_sparse.cost.channels`): what a dense engine computes on
  the physically thinner model.
* ``2to4``: MACs of NVIDIA's 2:4 sparse tensor cores: ``dense / 2`` when the layer's weights
  satisfy 2:4 along the reduction axis the hardware groups (:func:`nm_compliant`: at every
  kernel position ``(k, r, s)`` each aligned group of 4 consecutive input channels holds at most 2
  nonzeros, with ``C % 4 == 0``; Linear: along the input features), else ``dense`` (the layer runs
  densely on the same GPU). Masks of the ``nm`` granularity at 2:4 are compliant by construction;
  1:4 is compliant too (stored with a zero in each group). It is a math bound: measured 2:4 GEMMs
  are well below 2x on small shapes (``rbs speed``).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LayerMacs", "layer_macs", "nm_compliant"]


def nm_compliant(nonzero: np.ndarray, n: int = 2, m: int = 4) -> bool:
    """Whether a weight's nonzero pattern fits N:M along its input channels.

    ``nonzero``: bool ``(K, C, kh, kw)`` or ``(K, C)``. True iff ``C % m == 0`` and every group
    ``W[k, m·j : m·(j+1), r, s]`` has at most ``n`` nonzeros (NVIDIA's sparse tensor-core layout,
    the grouping of apex ASP and ModelOpt: for a conv the reduction axis is ``(r, s, c)`` with ``c``
    fastest, so groups run along ``c``).
    """
    nz = np.asarray(nonzero, dtype=bool)
    if nz.ndim == 2:
        nz = nz[:, :, None, None]  # (K, F, 1, 1)
    k, c = nz.shape[:2]
    if c % m:
        return False
    groups = nz.transpose(0, 2, 3, 1).reshape(k, nz.shape[2], nz.shape[3], c // m, m)
    return bool((groups.sum(axis=-1) <= n).all())


class LayerMacs:
    """The four MAC counts of one layer call (per input example)."""

    __slots__ = ("compact", "dense", "effective", "nm")

    def __init__(self, dense: int, effective: int, compact: int, nm: int) -> None:
        self.dense = dense
        self.effective = effective
        self.compact = compact
        self.nm = nm

    def as_dict(self) -> dict[str, int]:
        """``{"macs_dense", "macs_effective", "macs_compact", "macs_2to4"}``."""
        return {
            "macs_dense": self.dense,
            "macs_effective": self.effective,
            "macs_compact": self.compact,
            "macs_2to4": self.nm,
        }


def layer_macs(
    weight_shape: tuple[int, ...],
    out_hw: tuple[int, int],
    nonzero: np.ndarray,
    kept_filters: int,
    kept_inputs: int,
    groups: int = 1,
) -> LayerMacs:
    """MACs of one conv / linear call (see the module docstring).

    ``weight_shape``: ``(K, C/g, kh, kw)`` or ``(K, F)``; ``out_hw``: ``(Ho, Wo)``; ``nonzero``:
    bool array of the weight's shape (kept by the mask and nonzero); ``kept_filters`` /
    ``kept_inputs``: the compact ``K'`` and ``C'`` (input channels, or Linear features).
    """
    positions = out_hw[0] * out_hw[1]
    window = math.prod(weight_shape[2:]) if len(weight_shape) == 4 else 1
    dense = math.prod(weight_shape) * positions
    effective = int(np.count_nonzero(nonzero)) * positions
    # grouped convs are never thinned (the channel analysis pins them)
    compact = kept_filters * kept_inputs * window * positions if groups == 1 else dense
    nm = dense // 2 if groups == 1 and nm_compliant(nonzero) else dense
    return LayerMacs(dense, effective, compact, nm)
