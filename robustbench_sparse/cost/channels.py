"""Which filters and input channels a dense engine could physically remove (compaction).

A channel group (:mod:`robustbench_sparse.cost.trace`: the channel ``c`` of every tensor tied by
per-channel ops and skip connections) is *removable* when it is not pinned and no consumer needs
it: every conv/linear that reads a channel of the group either reads a structural zero there, or
has only zero weights on that input channel among the filters it keeps. Removing it removes the
filter that produces it in every conv of the group (and its BatchNorm channel) and the matching
input channel of every conv that reads it.

Removing filters can leave further input channels unread, so the rule is applied until nothing
changes. In a chain (``small_cnn``, VGG) a dead filter removes itself and the next layer's input
channel; in a ResNet a residual-stream channel is removable only where it is dead (or unread) in
its whole coupled group, block-internal channels as in a chain. What stays is an ordinary dense
model: :func:`compact_channels` gives its shape, ``rbs export --format thin`` builds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from robustbench_sparse.cost.trace import ChannelTrace

__all__ = ["CompactShape", "compact_channels"]


@dataclass(frozen=True)
class CompactShape:
    """The kept filters ``(K,)`` and kept input channels (or Linear features) of one layer call."""

    kept_out: np.ndarray
    kept_in: np.ndarray

    @property
    def filters(self) -> int:
        """Filters left."""
        return int(self.kept_out.sum())

    @property
    def inputs(self) -> int:
        """Input channels (Linear: features) left."""
        return int(self.kept_in.sum())


def compact_channels(trace: ChannelTrace, nonzero: Mapping[str, np.ndarray]) -> list[CompactShape]:
    """The compact shape of every layer call of ``trace`` (same order as ``trace.layers``).

    ``nonzero`` maps a weight parameter name to its bool ``(K, C, kh*kw)`` (Linear ``(K, F, 1)``)
    array of weights that are nonzero and kept by the mask.
    """
    layers = trace.layers
    roots_in = [np.array([trace.find(int(g)) for g in c.in_groups], dtype=np.int64) for c in layers]
    roots_out = [
        np.array([trace.find(int(g)) for g in c.out_groups], dtype=np.int64) for c in layers
    ]
    # (K, C): filter k reads input c (grouped convs: all inputs, their groups are pinned anyway)
    reads: list[np.ndarray] = [
        np.asarray(np.asarray(nonzero[c.param], dtype=bool).any(axis=2))
        if c.groups == 1
        else np.ones((len(c.out_groups), len(c.in_groups)), dtype=bool)
        for c in layers
    ]
    kept_out = [np.ones(len(c.out_groups), dtype=bool) for c in layers]
    pinned = {trace.find(g) for g in trace.pinned}

    def removable(roots: np.ndarray, live: set[int]) -> np.ndarray:
        return np.array([r not in pinned and r not in live for r in roots.tolist()], dtype=bool)

    while True:
        live: set[int] = set()
        for call, r_in, read, k_out in zip(layers, roots_in, reads, kept_out, strict=True):
            used = read[k_out].any(axis=0) & ~call.in_zero  # (C,) read live by a kept filter
            live.update(r_in[used].tolist())
        new = [~removable(r_out, live) for r_out in roots_out]
        if all(np.array_equal(a, b) for a, b in zip(new, kept_out, strict=True)):
            break
        kept_out = new
    return [
        CompactShape(k_out, ~removable(r_in, live))
        for k_out, r_in in zip(kept_out, roots_in, strict=True)
    ]
