"""Predicted speed-up of a thinned model from the masked model's own per-layer times (Amdahl).

The whole-model MAC ratio (masked / thin) predicts the speed-up only where convolutions and
Linear layers are all the time. They are not: layers that are never thinned (the first conv,
which keeps its 3 input channels and every filter) and the work between layers (BatchNorm,
ReLU, pooling, which scale with the activations, not with MACs) keep their time. On the
project's ``small_cnn`` at width 2, batch 16, one CPU thread, the dense first conv and the
max-pool after it are about 30 % of the masked model's time, so at 75 % filter sparsity the MAC
ratio (6.2x) overstates what any engine can give.

This prediction times every leaf module of the masked model (forward hooks, medians over
``repeats`` passes) and scales each one's time by its work ratio thin / masked:

* ``Conv2d`` / ``Linear``: MACs (``out elements x in_channels / groups x kernel area`` or
  ``out elements x in_features``);
* every other leaf: output elements (memory-bound work);

and leaves the rest of the forward (Python between modules) unchanged::

    predicted = T_masked / (T_masked - sum_l t_l (1 - r_l))

so it asks one question: does each thinned layer run at the masked layer's speed per unit of
work? Narrow convolutions use the hardware less well, which is what measured / predicted below
1 shows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from math import prod
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["layer_time_prediction", "leaf_work"]


def _leaves(model: nn.Module) -> dict[str, nn.Module]:
    return {name: m for name, m in model.named_modules() if not list(m.children())}


def _work(module: nn.Module, out: Tensor) -> float:
    """MACs of a conv / Linear producing ``out``; output elements of anything else."""
    if isinstance(module, nn.Conv2d):
        k = prod(module.kernel_size)
        return float(out.numel() * (module.in_channels // module.groups) * k)
    if isinstance(module, nn.Linear):
        return float(out.numel() * module.in_features)
    return float(out.numel())


def leaf_work(model: nn.Module, x: Tensor) -> dict[str, float]:
    """Work of every leaf module in one forward of ``x`` (N, C, H, W): MACs or elements."""
    work: dict[str, float] = {}
    handles = []
    for name, m in _leaves(model).items():

        def hook(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
            if isinstance(out, Tensor):
                work[name] = work.get(name, 0.0) + _work(mod, out)

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return work


def _leaf_times(
    model: nn.Module, x: Tensor, repeats: int, sync: Callable[[], None]
) -> tuple[dict[str, float], float]:
    """Median seconds per leaf module and per whole forward over ``repeats`` passes."""
    per: dict[str, list[float]] = {}
    totals: list[float] = []
    starts: dict[str, float] = {}
    current: dict[str, float] = {}
    handles = []
    for name, m in _leaves(model).items():

        def pre(mod: nn.Module, inp: Any, name: str = name) -> None:
            sync()
            starts[name] = time.perf_counter()

        def post(mod: nn.Module, inp: Any, out: Any, name: str = name) -> None:
            sync()
            current[name] = current.get(name, 0.0) + time.perf_counter() - starts[name]

        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(repeats):
                current.clear()
                sync()
                t0 = time.perf_counter()
                model(x)
                sync()
                totals.append(time.perf_counter() - t0)
                for name, t in current.items():
                    per.setdefault(name, []).append(t)
    finally:
        for h in handles:
            h.remove()
    return {k: statistics.median(v) for k, v in per.items()}, statistics.median(totals)


def layer_time_prediction(
    masked: nn.Module, thin: nn.Module, x: Tensor, *, repeats: int = 7
) -> dict[str, Any]:
    """Predicted speed-up of ``thin`` over ``masked`` on ``x`` (N, C, H, W) from per-layer times.

    Both models must have the same module names (as :func:`robustbench_sparse.thin.thin_model`
    keeps them). Returns ``predicted_speedup``, ``masked_s`` (median seconds per forward with the
    timing hooks on), ``leaves`` (per leaf: seconds, work ratio thin / masked) and
    ``unchanged_share`` (the share of the masked time whose work does not shrink).
    """
    device = x.device

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times, total = _leaf_times(masked, x, repeats, sync)
    work_masked, work_thin = leaf_work(masked, x), leaf_work(thin, x)
    saved = 0.0
    unchanged = total - sum(times.values())  # between modules: not scaled
    leaves: dict[str, dict[str, float]] = {}
    for name, t in times.items():
        ratio = work_thin.get(name, 0.0) / work_masked[name] if work_masked.get(name) else 1.0
        saved += t * (1.0 - ratio)
        unchanged += t if ratio >= 1.0 else 0.0
        leaves[name] = {"seconds": t, "work_ratio": ratio}
    return {
        "predicted_speedup": total / max(total - saved, 1e-12),
        "masked_s": total,
        "unchanged_share": unchanged / total,
        "leaves": leaves,
    }
