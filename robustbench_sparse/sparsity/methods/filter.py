"""``filter``: structured output-filter pruning while training, with BatchNorm masked.

Roy, Panda, Roy et al., "Pruning Filters while Training for Efficiently Optimizing Deep Learning
Networks", IJCNN 2020 (arXiv 2003.02800); the filter ranking by norm follows Li et al.,
"Pruning Filters for Efficient ConvNets", ICLR 2017.

Every selected ``Conv2d`` keeps the ``kept_per_group(K, s_t)`` output filters ``W[k]`` with the
largest L2 (or L1, ``filter_norm``) norm, where ``s_t`` follows the same cubic schedule as
Campfire (``start``/``end``/``update_every``); pruned filters never return and the masks freeze
at ``end``. ``Linear`` layers are not filter-pruned (they are left out of the selection).

So that a pruned filter's channel is *exactly zero* after normalisation, the BatchNorm consuming
the conv output is masked too: its ``weight[k]`` and ``bias[k]`` are kept at 0 (with gradient
hooks and optimizer-state masking like the conv weight), and so is the conv's own ``bias[k]``.
Then ``BN(0) = 0 · x̂ + 0 = 0`` in train and eval mode. The consuming BatchNorm is found
structurally (:func:`conv_bn_pairs`): a ``BatchNorm2d`` right after the conv in an
``nn.Sequential`` (``small_cnn``'s conv-bn blocks, ResNet ``downsample``), or a sibling named
``bnX`` for a conv named ``convX`` (CIFAR and torchvision ResNets). Limitations: other wirings
(a BN reached through a functional call, a norm other than ``BatchNorm2d``, grouped or depthwise
convs feeding one another) are not detected; such a conv is still filter-pruned but only its
weight and bias are masked (a warning says so). In a residual block, zeroing ``conv2``'s channel
zeroes the residual branch only; the skip connection still carries that channel.

The comparison is at equal *weight* sparsity: the report counts the zeroed filter weights. The
input channels of the next layer that read a dead channel are not counted, although they are
dead too; :func:`export_thin` removes them physically (``rbs export --format thin``), and
:func:`filter_sparsity_figures` reports both figures, named: the filter sparsity (masked filters /
filters) and the weights thinning removes (of all conv/linear weights).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.base import PrunedLayer
from robustbench_sparse.sparsity.config import FilterNorm, PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.masks import _keep_top, kept_per_group
from robustbench_sparse.sparsity.sparsifier import GradualSparsifier
from robustbench_sparse.thin import thin_model

logger = logging.getLogger(__name__)

_NEG_INF = float("-inf")


def conv_bn_pairs(model: nn.Module) -> dict[str, str]:
    """Conv module name -> the ``BatchNorm2d`` module name that normalises its output.

    Found structurally: a ``BatchNorm2d`` directly after a ``Conv2d`` inside an ``nn.Sequential``,
    or siblings ``convX`` / ``bnX`` of the same parent; the BN must have ``out_channels`` features.
    """
    pairs: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        children = list(parent.named_children())
        if isinstance(parent, nn.Sequential):
            for (n1, m1), (n2, m2) in itertools.pairwise(children):
                if (
                    isinstance(m1, nn.Conv2d)
                    and isinstance(m2, nn.BatchNorm2d)
                    and m2.num_features == m1.out_channels
                ):
                    pairs[prefix + n1] = prefix + n2
        siblings = dict(children)
        for n, m in children:
            if not isinstance(m, nn.Conv2d) or not n.startswith("conv"):
                continue
            bn_name = "bn" + n[len("conv") :]
            bn = siblings.get(bn_name)
            if isinstance(bn, nn.BatchNorm2d) and bn.num_features == m.out_channels:
                pairs.setdefault(prefix + n, prefix + bn_name)
    return pairs


def output_channel_params(
    model: nn.Module, name: str, *, warn: bool = True
) -> tuple[list[Tensor], str | None]:
    """Parameters that die with an output filter of weight ``name``, and the BatchNorm's name.

    A conv: its bias and the affine parameters of the ``BatchNorm2d`` reading its output
    (:func:`conv_bn_pairs`); a Linear: its bias. ``warn``: log when a conv has no such BN.
    """
    modules = dict(model.named_modules())
    module_name = name.rsplit(".", 1)[0]
    layer = modules[module_name]
    assert isinstance(layer, nn.Conv2d | nn.Linear)
    extras: list[Tensor] = [] if layer.bias is None else [layer.bias]
    if not isinstance(layer, nn.Conv2d):
        return extras, None
    bn_name = conv_bn_pairs(model).get(module_name)
    if bn_name is None:
        if warn:
            logger.warning(
                "filter pruning %s: no BatchNorm2d found after it; only the conv weight "
                "(and bias) are masked",
                module_name,
            )
    else:
        bn = modules[bn_name]
        assert isinstance(bn, nn.BatchNorm2d)
        extras += [p for p in (bn.weight, bn.bias) if p is not None]
    return extras, bn_name


def filter_mask(
    weight: Tensor, sparsity: float, norm: FilterNorm, previous: Tensor | None = None
) -> Tensor:
    """Bool mask (same shape) keeping ``kept_per_group(K, sparsity)`` whole filters by norm.

    ``weight``: ``(K, C, kh, kw)``. Filters dead in ``previous`` score ``-inf`` and never return;
    ties resolve to the lower filter index.
    """
    n_filters = weight.shape[0]
    w = weight.detach().float().reshape(n_filters, -1)  # (K, C*kh*kw)
    if previous is not None:
        w = w * previous.reshape(n_filters, -1)
    norms = w.abs().sum(dim=1) if norm is FilterNorm.L1 else w.norm(dim=1)  # (K,)
    if previous is not None:
        alive = previous.reshape(n_filters, -1).any(dim=1)  # (K,)
        norms = norms.masked_fill(~alive, _NEG_INF)
    keep = _keep_top(norms.reshape(1, -1), kept_per_group(n_filters, sparsity))  # (1, K)
    return keep.reshape(n_filters, 1, 1, 1).expand(weight.shape).clone()


class FilterSparsifier(GradualSparsifier):
    """Gradual whole-filter pruning of the selected convs; the consuming BatchNorm is masked too."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        if config.method is not PruningMethod.FILTER:
            raise ValueError(f"FilterSparsifier needs method 'filter', got {config.method.value!r}")
        super().__init__(config, steps_per_epoch)
        self.bn_of: dict[str, str | None] = {}  # conv weight name -> BN module name (or None)

    def select_layers(self, model: nn.Module) -> list[str]:
        """The configured selection narrowed to ``Conv2d`` weights (Linear layers stay dense)."""
        modules = dict(model.named_modules())
        names = super().select_layers(model)
        convs = [n for n in names if isinstance(modules.get(n.rsplit(".", 1)[0]), nn.Conv2d)]
        skipped = sorted(set(names) - set(convs))
        if skipped:
            logger.info("filter pruning skips non-conv layers: %s", ", ".join(skipped))
        return convs

    def channel_params(self, model: nn.Module, name: str) -> list[Tensor]:
        """The conv's bias and the affine parameters of the BatchNorm that reads its output."""
        extras, bn_name = output_channel_params(model, name)
        self.bn_of[name] = bn_name
        return extras

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        """Keep the ``kept_per_group(K, sparsity)`` filters of largest norm; dead ones stay dead."""
        return filter_mask(layer.param, sparsity, self.config.filter_norm, previous=layer.mask)


def export_thin(model: nn.Module, input_shape: Sequence[int]) -> nn.Module:
    """A physically thinner dense copy of a filter-pruned model (same logits, eval mode).

    ``input_shape``: one example ``(C, H, W)``. Any chain or residual network of the registry:
    :func:`robustbench_sparse.thin.thin_model` removes every channel that is exactly zero in its
    whole coupled group (a residual-stream channel only if it is dead in every block).
    """
    return thin_model(model, input_shape).model


def filter_sparsity_figures(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any] | None:
    """The two sparsity figures of a filter-pruned model, each named by its denominator.

    ``input_shape``: one example ``(C, H, W)`` (to thin the model). Returns ``None`` when no
    Conv2d has an all-zero filter. Otherwise a dict with

    - ``filters_masked``, ``filters``, ``filter_sparsity`` = masked / filters: all-zero filters
      ``W[k]`` over the filters of the convs holding at least one (what filter pruning targets);
    - ``thinned_removed``: the fraction of *all* Conv2d/Linear weights that :func:`export_thin`
      removes: more than the filter sparsity, since every layer's input channels that read a dead
      channel go too (50 % of the filters of small_cnn's convs 2-5 remove 71.5 % of its weights);
      ``None`` where the model cannot be thinned (the reason is logged).
    """
    masked = total = 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            rows = module.weight.detach().reshape(module.out_channels, -1)  # (K, C*kh*kw)
            dead = int((rows == 0).all(dim=1).sum())
            if dead:
                masked += dead
                total += module.out_channels
    if not total:
        return None

    def weights(m: nn.Module) -> int:
        return sum(x.weight.numel() for x in m.modules() if isinstance(x, nn.Conv2d | nn.Linear))

    removed: float | None = None
    try:
        removed = 1.0 - weights(export_thin(model, input_shape)) / weights(model)
    except UserError as exc:
        logger.info("weights removed by thinning: not computed (%s)", exc)
    return {
        "filters_masked": masked,
        "filters": total,
        "filter_sparsity": masked / total,
        "thinned_removed": removed,
    }
