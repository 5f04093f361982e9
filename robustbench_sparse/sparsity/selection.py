"""Which layers Campfire prunes: Conv2d/Linear weights, minus first conv/classifier, then patterns."""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase

from torch import nn

from robustbench_sparse.models.registry import first_conv_and_classifier
from robustbench_sparse.sparsity.config import SparsityConfig

__all__ = ["first_conv_and_classifier", "select_layers", "weight_layers"]

logger = logging.getLogger(__name__)


def weight_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """All ``nn.Conv2d`` and ``nn.Linear`` modules as ``(module_name, module)``, in registration order."""
    return [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    ]


def select_layers(model: nn.Module, config: SparsityConfig) -> list[str]:
    """Parameter names (``"<module>.weight"``) that ``config`` prunes, in registration order.

    Every Conv2d/Linear weight is eligible except, unless ``prune_first_conv`` /
    ``prune_classifier``, the first Conv2d and the last Linear. Then, if ``include`` is
    non-empty, only modules matching one of its fnmatch patterns stay, and modules matching an
    ``exclude`` pattern are dropped. A dense config (``target == 0``) selects nothing.
    """
    if config.dense:
        return []
    first_conv, classifier = first_conv_and_classifier(model)
    layers = weight_layers(model)
    names = [n for n, _ in layers]
    for pattern in config.include + config.exclude:
        if not any(fnmatchcase(n, pattern) for n in names):
            logger.warning("sparsity pattern %r matches no Conv2d/Linear module", pattern)
    selected = []
    for name, _ in layers:
        if name == first_conv and not config.prune_first_conv:
            continue
        if name == classifier and not config.prune_classifier:
            continue
        if config.include and not any(fnmatchcase(name, p) for p in config.include):
            continue
        if any(fnmatchcase(name, p) for p in config.exclude):
            continue
        selected.append(f"{name}.weight" if name else "weight")
    if not selected:
        logger.warning("sparsity target %.3f but no layer is selected for pruning", config.target)
    return selected
