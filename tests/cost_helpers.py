"""Shared builders for the cost-model tests: masked models without training (tiny, CPU)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity.config import FilterNorm
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.methods import conv_bn_pairs, filter_mask

#: small_cnn's prunable convs (the first conv and the classifier stay dense)
SMALL_CNN_PRUNED = [f"net.conv{i}.0.weight" for i in range(2, 6)]


def small_cnn(width: float = 0.5, in_channels: int = 1, seed: int = 0) -> Any:
    """A fresh ``small_cnn`` (eval mode) with seeded random weights."""
    torch.manual_seed(seed)
    return create_model("small_cnn", num_classes=10, in_channels=in_channels, width=width).eval()


def apply_masks(
    model: nn.Module, granularity: Granularity, sparsity: float, names: list[str]
) -> dict[str, Tensor]:
    """Prune ``names`` in place with ``compute_mask``; returns the masks."""
    params = dict(model.named_parameters())
    masks = {}
    with torch.no_grad():
        for name in names:
            mask = compute_mask(params[name], sparsity, granularity)
            params[name].mul_(mask)
            masks[name] = mask
    return masks


def random_masks(
    model: nn.Module, density: float, names: list[str], seed: int = 0
) -> dict[str, Tensor]:
    """Unstructured random masks (each weight kept with probability ``density``), applied in place."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    masks = {}
    with torch.no_grad():
        for name in names:
            mask = torch.rand(params[name].shape, generator=gen) < density
            params[name].mul_(mask)
            masks[name] = mask
    return masks


def filter_prune(model: nn.Module, sparsity: float, names: list[str]) -> dict[str, Tensor]:
    """Whole-filter pruning as ``FilterSparsifier`` leaves it: filter and its BatchNorm affine 0."""
    modules = dict(model.named_modules())
    pairs = conv_bn_pairs(model)
    masks = {}
    with torch.no_grad():
        for name in names:
            module = name.rsplit(".", 1)[0]
            conv = modules[module]
            assert isinstance(conv, nn.Conv2d)
            mask = filter_mask(conv.weight, sparsity, FilterNorm.L2)
            conv.weight.mul_(mask)
            dead = ~mask.reshape(mask.shape[0], -1).any(dim=1)  # (K,)
            bn = modules[pairs[module]]
            assert isinstance(bn, nn.BatchNorm2d)
            bn.weight[dead] = 0
            bn.bias[dead] = 0
            masks[name] = mask
    return masks


def flop_counter_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """``FlopCounterMode`` flops of one ``(1, *input_shape)`` forward pass, divided by 2."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, *input_shape))
    return int(counter.get_total_flops()) // 2
