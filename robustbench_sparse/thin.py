"""Thin export: physically remove the channels a pruned model computes as exactly zero.

A channel can leave the model only if its activation is zero for every input, so every module
coupled to it can drop it together: the conv (or Linear) producing it drops the output filter,
the BatchNorm drops the feature, every consumer drops the input channel. In a residual network a
channel of the residual stream is shared by the stem, every block's last conv-BN and every
block's input: it is removable only if it is dead in *all* of them (the coupled group). The
coupling is found by the dependency graph of Torch-Pruning (Fang et al., "DepGraph: Towards Any
Structural Pruning", CVPR 2023; ``torch-pruning`` on PyPI), which traces the forward once.

A channel of a group is *dead* when every member that produces it is zero there: a ``Conv2d`` /
``Linear`` output row with zero weights and zero bias, a ``BatchNorm`` feature with zero
``weight`` and ``bias`` (``BN(x) = 0·x̂ + 0 = 0`` whatever its statistics; this is how ``filter``
pruning and ``nm`` beyond ``1 - N/M`` leave a removed filter). Members of any other type with
parameters make the group non-removable. A group never loses its last channel.

Campfire's window / channel / combined masks keep at least one weight in every filter and every
kernel, so they leave nothing to remove: their thin model equals the masked one (``removed`` is
empty); only whole-filter structure (``filter``, ``nm`` above ``1 - N/M``) thins.

The result is checked twice before it is returned: it is rebuilt from the architecture and the
recorded widths (:func:`~robustbench_sparse.models.widths.apply_widths`, what loading a thin
checkpoint does) and loads the thinned weights, and its logits on a seeded probe batch are
``allclose`` to the masked model's. Either failing raises ``UserError``; nothing half-right is
returned.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models.widths import Widths, apply_widths, changed_widths, module_widths

logger = logging.getLogger(__name__)

__all__ = ["ThinResult", "count_macs", "count_params", "thin_model"]

_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


@dataclass
class ThinResult:
    """A thinned model and what was removed.

    ``widths``: the modules whose widths changed (what a thin checkpoint records);
    ``removed``: root module of each coupled group -> channels removed from it;
    ``params_*``: parameter counts; ``macs_*``: multiply-accumulates per example
    (:func:`count_macs`); ``max_abs_diff``: largest |logit| difference on the probe batch.
    """

    model: nn.Module
    widths: Widths
    removed: dict[str, int]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    max_abs_diff: float
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary (no model)."""
        return {
            "widths": self.widths,
            "channels_removed": self.removed,
            "params_masked": self.params_before,
            "params_thin": self.params_after,
            "macs_masked": self.macs_before,
            "macs_thin": self.macs_after,
            "max_abs_logit_diff": self.max_abs_diff,
        }


def count_params(model: nn.Module) -> int:
    """Number of parameters (all of them, zeros included)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one example ``(C, H, W)`` in ``Conv2d`` and ``Linear`` layers.

    Conv: ``out_elements · C_in/groups · kh · kw``; Linear: ``in · out`` per row. Counts every
    weight (zeros too): the dense-engine cost. Equals ``torch.utils.flop_counter`` / 2 on
    conv/linear models (tested).
    """
    total = 0

    def hook(module: nn.Module, _inputs: Any, output: Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_out = module.in_channels // module.groups * kh * kw
            total += output[0].numel() * per_out  # (K, Ho, Wo) of one example
        elif isinstance(module, nn.Linear):
            total += output[0].numel() * module.in_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    try:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
    return total


def _member_dead(module: Any, handler: str, idxs: list[int]) -> Tensor | None:
    """(len(idxs),) True where this group member keeps the channel at exactly zero.

    None: the member does not constrain it (a consumer's input channel, a parameter-free op).
    """
    if not isinstance(module, nn.Module):
        return None  # element-wise ops, reshapes, ... in the graph
    index = torch.as_tensor(idxs, dtype=torch.long)
    if isinstance(module, nn.Conv2d | nn.Linear):
        if "out" not in handler:
            return None  # a consumer: an input channel that is zero can go
        rows = module.weight.detach()[index].reshape(len(idxs), -1) == 0  # (n, fan_in)
        dead = rows.all(dim=1)
        if module.bias is not None:
            dead &= module.bias.detach()[index] == 0
        return dead
    if isinstance(module, _BN):
        if module.weight is None or module.bias is None:
            return torch.zeros(len(idxs), dtype=torch.bool)  # BN(0) = -mean/std != 0
        return (module.weight.detach()[index] == 0) & (module.bias.detach()[index] == 0)
    if any(True for _ in module.parameters(recurse=False)):
        return torch.zeros(len(idxs), dtype=torch.bool)  # unknown layer with weights: keep
    return None


def _dead_root_channels(group: Any) -> list[int]:
    """Root channel indices of ``group`` that are dead in every member (at most all but one)."""
    dead: dict[int, bool] = {}
    for item in group.items:
        dep, idxs, root_idxs = item.dep, list(item.idxs), list(item.root_idxs)
        handler = getattr(dep.handler, "__name__", "")
        member = _member_dead(dep.target.module, handler, idxs)
        for pos, root in enumerate(root_idxs):
            flag = True if member is None else bool(member[pos])
            dead[root] = dead.get(root, True) and flag
    out = sorted(r for r, d in dead.items() if d)
    if out and len(out) == len(dead):
        out = out[:-1]  # a layer keeps one (zero) channel
    return out


def _module_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


def _prune_dead(model: nn.Module, example: Tensor, keep: Sequence[str]) -> dict[str, int]:
    """Remove every dead coupled channel group of ``model`` in place; root name -> count."""
    try:
        import torch_pruning as tp
    except ImportError:  # pragma: no cover - a dependency; the message says how to get it
        raise UserError(
            "thin export needs the torch-pruning package: pip install torch-pruning"
        ) from None
    names = _module_names(model)
    ignored = [model.get_submodule(n) for n in keep]
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    removed: dict[str, int] = {}
    for group in graph.get_all_groups(
        ignored_layers=ignored, root_module_types=(nn.Conv2d, nn.Linear)
    ):
        dead = _dead_root_channels(group)
        if not dead:
            continue
        root = group.items[0].dep.target.module
        graph.get_pruning_group(root, group.items[0].dep.handler, idxs=dead).prune()
        removed[names.get(id(root), type(root).__name__)] = len(dead)
    return removed


def thin_model(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    keep_outputs: Sequence[str] = (),
    probe: int = 8,
    seed: int = 0,
    atol: float = 1e-5,
    rtol: float = 1e-4,
) -> ThinResult:
    """A physically thinner dense copy of ``model`` (eval mode) with the same logits.

    ``input_shape``: one example ``(C, H, W)``, pixels in [0, 1]. ``keep_outputs``: module names
    whose output channels must stay (the classifier, always protected when it is the last
    ``Linear``). ``model`` itself is not changed.

    Raises:
        UserError: torch-pruning missing, the thinned model cannot be rebuilt from widths, or
            its logits differ from the masked model's beyond ``atol`` / ``rtol``.
    """
    source = copy.deepcopy(model).eval()
    linears = [n for n, m in source.named_modules() if isinstance(m, nn.Linear)]
    keep = list(dict.fromkeys([*keep_outputs, *linears[-1:]]))
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(probe, *input_shape, generator=gen)  # (probe, C, H, W) in [0, 1]
    work = copy.deepcopy(source)
    removed = _prune_dead(work, x[:1], keep)
    widths = changed_widths(module_widths(source), module_widths(work))
    rebuilt = copy.deepcopy(source)
    apply_widths(rebuilt, widths)
    try:
        rebuilt.load_state_dict(work.state_dict())
    except RuntimeError as exc:
        raise UserError(
            f"the thinned model cannot be rebuilt from its recorded widths: {str(exc)[:200]}"
        ) from None
    rebuilt.eval()
    with torch.no_grad():
        want, got = source(x), rebuilt(x)  # (probe, classes)
    diff = float((want - got).abs().max())
    if not torch.allclose(want, got, atol=atol, rtol=rtol):
        raise UserError(
            f"the thinned model's logits differ from the masked model's by up to {diff:.3g}; "
            "refusing to export it (a layer maps a zero channel to a nonzero value)"
        )
    logger.info(
        "thin: removed %d channels in %d groups; parameters %d -> %d",
        sum(removed.values()),
        len(removed),
        count_params(source),
        count_params(rebuilt),
    )
    return ThinResult(
        model=rebuilt,
        widths=widths,
        removed=removed,
        params_before=count_params(source),
        params_after=count_params(rebuilt),
        macs_before=count_macs(source, input_shape),
        macs_after=count_macs(rebuilt, input_shape),
        max_abs_diff=diff,
    )
