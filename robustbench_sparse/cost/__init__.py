"""The hardware cost model: what a sparsity pattern buys (core, floor 2; imports core only).

Pure functions of a model, its masks and an input shape; nothing is timed (``rbs speed``
measures). Per conv / linear layer and in total: MACs (dense, effective, compact, 2:4), load
imbalance per named mapping, position-metadata bits per format, weight and activation bytes, and a
roofline estimate on a named, configurable accelerator. ``rbs cost CKPT`` prints it; docs/cost-model.md
defines every number.

Modules: :mod:`~.trace` (one recorded forward pass: layers and coupled channel groups),
:mod:`~.channels` (what compaction removes), :mod:`~.macs`, :mod:`~.imbalance`,
:mod:`~.metadata`, :mod:`~.roofline`, :mod:`~.model` (assembles it all), :mod:`~.table`.
"""

from __future__ import annotations

from robustbench_sparse.cost.imbalance import MAPPINGS, imbalance, lane_work
from robustbench_sparse.cost.macs import layer_macs, nm_compliant
from robustbench_sparse.cost.metadata import FORMATS, metadata_bits
from robustbench_sparse.cost.model import ENGINES, MAC_KEYS, LayerCost, ModelCost, model_cost
from robustbench_sparse.cost.roofline import AcceleratorSpec
from robustbench_sparse.cost.table import format_cost

__all__ = [
    "ENGINES",
    "FORMATS",
    "MAC_KEYS",
    "MAPPINGS",
    "AcceleratorSpec",
    "LayerCost",
    "ModelCost",
    "format_cost",
    "imbalance",
    "lane_work",
    "layer_macs",
    "metadata_bits",
    "model_cost",
    "nm_compliant",
]
