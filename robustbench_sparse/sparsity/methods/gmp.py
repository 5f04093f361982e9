"""``gmp``: unstructured gradual magnitude pruning (Zhu & Gupta, "To prune, or not to prune:
exploring the efficacy of pruning for model compression", arXiv 1710.01878, 2017).

GMP is the baseline Campfire restricts: the same cubic schedule, the same mask updates every
``update_every`` steps, masks monotone and frozen after ``end``, but every layer keeps its
largest-magnitude weights *anywhere* in the tensor (one group per layer, layer-wise uniform
target). In this project ``method = "gmp"`` and ``method = "campfire"`` with
``granularity = "unstructured"`` are the same algorithm and give bit-identical masks (tested);
the distinction is only the name: ``gmp`` is the comparison baseline in the methods report
(label ``gmp``), ``campfire``/``unstructured`` is the unstructured end of Campfire's granularity
axis (label ``unstructured``).
"""

from __future__ import annotations

from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.sparsifier import CampfireSparsifier


class GMPSparsifier(CampfireSparsifier):
    """Zhu & Gupta gradual magnitude pruning, layer-wise and unstructured.

    ``config.granularity`` is ``unstructured`` by construction (:class:`SparsityConfig`
    normalises it for ``method = "gmp"``).
    """

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.GMP:
            raise ValueError(f"GMPSparsifier needs method 'gmp', got {config.method.value!r}")
        assert config.granularity is Granularity.UNSTRUCTURED  # normalised by SparsityConfig
        super().__init__(config, steps_per_epoch)
