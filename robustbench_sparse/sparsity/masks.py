"""Mask math for Campfire pruning: per-group keep counts and boolean masks. No model, no state.

Terminology for a conv weight ``W[K, C, kh, kw]``: a *filter* is ``W[k]`` and a *kernel* (the
paper's *window*) is ``W[k, c]``. Every group of a structured granularity keeps exactly the same
number of weights (the hardware property), so the achieved sparsity is a rounded version of the
target; :func:`kept_per_group` documents the rounding rule.

Ties between equal scores are broken deterministically: scores are sorted with
``torch.sort(..., descending=True, stable=True)``, so among equal scores the lowest flat index in
the group is kept first. Two runs (and two ranks) therefore produce identical masks.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robustbench_sparse.sparsity.granularity import Granularity

NM_DEFAULT = (2, 4)  # keep 2 of every 4 input channels (NVIDIA 2:4)

_TIE_TOL = 1e-9
_NEG_INF = float("-inf")


def _nearest_count(group_size: int, density: float) -> int:
    """The integer ``k`` in ``[1, group_size]`` nearest to ``density * group_size``.

    Ties (exactly half-way, up to float noise) go to the smaller ``k`` (the sparser choice).
    ``density`` may exceed 1; the result is clamped to the group.
    """
    x = density * group_size
    lo = math.floor(x)
    hi = lo + 1
    k = lo if (x - lo) <= (hi - x) + _TIE_TOL else hi
    return max(1, min(group_size, k))


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")


def kept_per_group(group_size: int, sparsity: float) -> int:
    """Number of weights each group of ``group_size`` keeps at target ``sparsity``.

    Rounding rule: keep the integer ``k`` in ``[1, group_size]`` whose achieved sparsity
    ``1 - k / group_size`` is nearest the target; an exact tie goes to the sparser choice (fewer
    kept). Sparsity 0 keeps everything; no group is ever emptied by the rule (``k >= 1``).

    Examples for a 3×3 kernel (9 weights): 0.7 -> keep 3 (66.7 %, not 2 = 77.8 %);
    0.9 -> keep 1 (88.9 %); 0.5 -> 4.5 is a tie between 4 (55.6 %) and 5 (44.4 %) -> keep 4;
    0.95 -> keep 1 (88.9 %, the sparsest a non-empty kernel can be).
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    _check_sparsity(sparsity)
    return _nearest_count(group_size, 1.0 - sparsity)


def combined_counts(channels: int, window: int, sparsity: float) -> tuple[int, int]:
    """``(n_c, n_w)`` for COMBINED pruning of filters with ``channels`` kernels of ``window`` weights.

    Rule: the target keep fraction ``d = 1 - sparsity`` is split evenly in log space, so each
    factor aims at ``sqrt(d)``: ``n_c = kept_per_group(channels, 1 - sqrt(d))``. Then ``n_w`` is
    the integer in ``[1, window]`` making the overall density ``n_c * n_w / (channels * window)``
    nearest ``d`` (ties -> fewer kept), i.e. ``n_w`` absorbs the rounding of ``n_c``.

    Example: C=64, 3×3, sparsity 0.9: ``n_c = round(64 * 0.316) = 20``, then
    ``n_w = round(0.1 * 64 * 9 / 20 = 2.88) = 3`` -> density 60/576, achieved 89.6 %.
    """
    if channels < 1 or window < 1:
        raise ValueError(f"channels and window must be >= 1, got {channels}, {window}")
    _check_sparsity(sparsity)
    density = 1.0 - sparsity
    n_c = _nearest_count(channels, math.sqrt(density))
    n_w = _nearest_count(window, density * channels / n_c)
    return n_c, n_w


def _is_balanced_fallback(shape: tuple[int, ...] | torch.Size) -> bool:
    """Linear weights and 1×1 convs have no window: structured pruning is balanced per row."""
    return len(shape) == 2 or (len(shape) == 4 and shape[2] * shape[3] == 1)


def applied_granularity(shape: tuple[int, ...] | torch.Size, granularity: Granularity) -> str:
    """What :func:`compute_mask` actually does for a weight of ``shape``.

    ``"window"``, ``"channel"``, ``"combined"``, ``"unstructured"`` or ``"nm"``;
    ``"balanced-filter"`` for the 1×1-conv / Linear fallback of window / channel / combined
    (``nm`` groups along the input channels of every layer kind).
    """
    if granularity is Granularity.NM:
        return granularity.value
    if granularity is not Granularity.UNSTRUCTURED and _is_balanced_fallback(shape):
        return "balanced-filter"
    return granularity.value


def achievable_sparsity(
    shape: tuple[int, ...] | torch.Size,
    sparsity: float,
    granularity: Granularity,
    nm: tuple[int, int] = NM_DEFAULT,
) -> float:
    """Sparsity a fresh (dense) weight of ``shape`` gets from :func:`compute_mask` at ``sparsity``.

    This is the target after the rounding rule, reported beside the requested target. ``nm`` is
    the ``(N, M)`` of :attr:`Granularity.NM` (ignored by the others).
    """
    _check_shape(shape)
    _check_sparsity(sparsity)
    numel = math.prod(shape)
    if granularity is Granularity.NM:
        kept, filters = nm_counts(shape[0], sparsity, nm)
        return 1.0 - (kept / nm[1]) * (filters / shape[0])
    if granularity is Granularity.UNSTRUCTURED:
        return 1.0 - kept_per_group(numel, sparsity) / numel
    if _is_balanced_fallback(shape):
        row = numel // shape[0]
        return 1.0 - kept_per_group(row, sparsity) / row
    channels, window = shape[1], shape[2] * shape[3]
    if granularity is Granularity.WINDOW:
        return 1.0 - kept_per_group(window, sparsity) / window
    if granularity is Granularity.CHANNEL:
        return 1.0 - kept_per_group(channels, sparsity) / channels
    n_c, n_w = combined_counts(channels, window, sparsity)
    return 1.0 - (n_c * n_w) / (channels * window)


def _check_shape(shape: tuple[int, ...] | torch.Size) -> None:
    if len(shape) not in (2, 4) or math.prod(shape) == 0:
        raise ValueError(
            f"expected a non-empty Linear (2-D) or Conv2d (4-D) weight, got shape {tuple(shape)}"
        )


def _keep_top(scores: Tensor, keep: int) -> Tensor:
    """Keep the ``keep`` highest scores of each row; ``-inf`` entries are never kept.

    ``scores``: (G, S) float -> bool (G, S). Ties resolve to the lowest column index.
    """
    groups, size = scores.shape
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (G, S)
    keep_rank = (torch.arange(size, device=scores.device) < keep).expand(groups, size)  # (G, S)
    mask = torch.zeros(groups, size, dtype=torch.bool, device=scores.device)
    mask.scatter_(1, order, keep_rank)  # (G, S): True at the `keep` best positions of each row
    return mask & (scores != _NEG_INF)


def compute_mask(
    weight: Tensor,
    sparsity: float,
    granularity: Granularity,
    previous: Tensor | None = None,
    nm: tuple[int, int] = NM_DEFAULT,
) -> Tensor:
    """Boolean keep-mask (same shape as ``weight``) pruning ``weight`` to ``sparsity``.

    ``weight`` is a Conv2d weight ``(K, C, kh, kw)`` or a Linear weight ``(K, C)``.

    - ``WINDOW``: every kernel ``W[k, c]`` keeps ``n_w = kept_per_group(kh*kw, s)`` largest-|w|.
    - ``CHANNEL``: every filter ``W[k]`` keeps ``n_c = kept_per_group(C, s)`` whole kernels,
      ranked by the L2 norm of the kernel.
    - ``COMBINED``: ``(n_c, n_w) = combined_counts(C, kh*kw, s)``: ``n_c`` kernels per filter by
      L2 norm, then ``n_w`` largest-|w| inside each kept kernel; other kernels are all pruned.
    - ``UNSTRUCTURED``: layer-wise, keep ``kept_per_group(numel, s)`` largest-|w|.
    - 1×1 convs and Linear weights under a structured granularity: balanced per-filter pruning,
      every output row keeps ``kept_per_group(row_size, s)`` largest-|w| entries.
    - ``NM`` with ``nm = (N, M)``: :func:`nm_mask` (every group of ``M`` consecutive input
      channels at each kernel position keeps the same count, ``N`` from ``1 - N/M`` on; beyond
      that whole filters go). Raises ``ValueError`` if ``C`` (Linear: in-features) is not a
      multiple of ``M``.

    Monotone: positions that are False in ``previous`` stay False (scored ``-inf``); a group that
    already keeps fewer than requested keeps what it has (nothing is revived). For ``COMBINED``
    with ``previous``, ``n_c`` is capped by the most kernels any filter still has and ``n_w`` by
    the most weights any kernel still has; when the ``n_w`` cap binds, ``n_c`` is re-fitted (up to
    its cap) so the overall density stays as close to the target as the old mask allows.
    """
    _check_shape(weight.shape)
    _check_sparsity(sparsity)
    if previous is not None:
        if previous.shape != weight.shape or previous.dtype != torch.bool:
            raise ValueError(
                f"previous must be a bool tensor of shape {tuple(weight.shape)}, "
                f"got {previous.dtype} {tuple(previous.shape)}"
            )
        previous = previous.to(weight.device)
    w = weight.detach().float()

    if granularity is Granularity.NM:
        return nm_mask(w, sparsity, nm, previous)

    if granularity is Granularity.UNSTRUCTURED:
        scores = w.abs().reshape(1, -1)  # (1, numel)
        if previous is not None:
            scores = scores.masked_fill(~previous.reshape(1, -1), _NEG_INF)
        return _keep_top(scores, kept_per_group(w.numel(), sparsity)).reshape(weight.shape)

    if _is_balanced_fallback(weight.shape):
        rows = w.abs().reshape(w.shape[0], -1)  # (K, C*kh*kw)
        if previous is not None:
            rows = rows.masked_fill(~previous.reshape(rows.shape), _NEG_INF)
        keep = kept_per_group(rows.shape[1], sparsity)
        return _keep_top(rows, keep).reshape(weight.shape)

    n_filters, channels, kh, kw = w.shape
    window = kh * kw
    w3 = w.reshape(n_filters, channels, window)  # (K, C, kh*kw)
    prev3 = None if previous is None else previous.reshape(n_filters, channels, window)

    if granularity is Granularity.WINDOW:
        scores = w3.abs().reshape(n_filters * channels, window)  # (K*C, kh*kw)
        if prev3 is not None:
            scores = scores.masked_fill(~prev3.reshape(scores.shape), _NEG_INF)
        return _keep_top(scores, kept_per_group(window, sparsity)).reshape(weight.shape)

    if granularity is Granularity.CHANNEL:
        n_c = kept_per_group(channels, sparsity)
        kernels = _keep_kernels(w3, prev3, n_c)  # (K, C)
        mask3 = kernels.unsqueeze(-1).expand(n_filters, channels, window)  # (K, C, kh*kw)
        if prev3 is not None:
            mask3 = mask3 & prev3
        return mask3.reshape(weight.shape)

    # COMBINED
    n_c, n_w = combined_counts(channels, window, sparsity)
    if prev3 is not None:
        n_c, n_w = _capped_combined_counts(prev3, sparsity, n_c)
    kernels = _keep_kernels(w3, prev3, n_c)  # (K, C)
    alive = kernels.unsqueeze(-1).expand(n_filters, channels, window)  # (K, C, kh*kw)
    if prev3 is not None:
        alive = alive & prev3
    scores = w3.abs().masked_fill(~alive, _NEG_INF).reshape(n_filters * channels, window)
    return _keep_top(scores, n_w).reshape(weight.shape)  # (K*C, kh*kw) -> (K, C, kh, kw)


def _keep_kernels(w3: Tensor, prev3: Tensor | None, n_c: int) -> Tensor:
    """Keep ``n_c`` kernels per filter by L2 norm. ``w3``: (K, C, S) -> bool (K, C)."""
    if prev3 is None:
        norms = w3.norm(dim=-1)  # (K, C)
    else:
        norms = (w3 * prev3).norm(dim=-1)  # (K, C): norm of what is still alive
        norms = norms.masked_fill(~prev3.any(dim=-1), _NEG_INF)  # dead kernels never return
    return _keep_top(norms, n_c)


def _capped_combined_counts(prev3: Tensor, sparsity: float, n_c: int) -> tuple[int, int]:
    """Cap ``(n_c, n_w)`` by what ``prev3`` (K, C, S) still holds; re-fit ``n_c`` if ``n_w`` binds."""
    _, channels, window = prev3.shape
    per_kernel = prev3.sum(dim=-1)  # (K, C)
    cap_w = int(per_kernel.max().item())
    cap_c = int((per_kernel > 0).sum(dim=-1).max().item())
    if cap_w == 0:
        return n_c, 1  # nothing alive; the mask comes out empty anyway
    n_c = min(n_c, cap_c)
    wanted_w = _nearest_count(window, (1.0 - sparsity) * channels / n_c)
    n_w = min(wanted_w, cap_w)
    if wanted_w > cap_w:
        refit_c = _nearest_count(channels, (1.0 - sparsity) * window / n_w)
        n_c = max(n_c, min(refit_c, cap_c))
    return n_c, n_w


def nm_eligible(shape: tuple[int, ...] | torch.Size, m: int) -> bool:
    """True when the input-channel axis (``shape[1]``: conv ``C``, Linear in-features) splits
    into whole groups of ``m``. Layers that do not (a first conv with 1 or 3 channels) stay dense.
    """
    return len(shape) in (2, 4) and shape[1] % m == 0


def nm_counts(n_filters: int, sparsity: float, nm: tuple[int, int]) -> tuple[int, int]:
    """``(kept per M-group, kept filters)`` of an ``NM`` mask at ``sparsity``.

    Up to ``1 - N/M`` only the groups thin out, on the usual rounding rule: each keeps
    ``max(N, kept_per_group(M, s))`` (the cubic ramp passes 4:4 -> 3:4 -> 2:4). Beyond it the
    groups keep ``N`` and whole filters go: ``kept_per_group(K, 1 - (1 - s) * M / N)`` filters
    remain (filter density ``(1 - s) / (N/M)``), so 2:4 at 75 % keeps half the filters.

    Example: 2:4, K = 64: s = 0.3 -> (3, 64); s = 0.5 -> (2, 64); s = 0.75 -> (2, 32).
    """
    n, m = nm
    _check_sparsity(sparsity)
    density = 1.0 - sparsity
    kept = max(n, _nearest_count(m, density))
    filter_density = min(1.0, density * m / n)
    return kept, _nearest_count(n_filters, filter_density)


def nm_mask(
    weight: Tensor, sparsity: float, nm: tuple[int, int], previous: Tensor | None = None
) -> Tensor:
    """Bool keep-mask of ``weight`` (``(K, C, kh, kw)`` or ``(K, C)``) for N:M along ``C``.

    Every group ``W[k, M·j : M·(j+1), r, s]`` keeps its :func:`nm_counts` largest-|w| entries
    (ties: lowest channel first), the layout of NVIDIA's sparse tensor cores (apex ASP,
    ModelOpt: "for Conv2d dim = K x CRS; we prune along C"). Beyond ``1 - N/M`` the filters
    with the smallest L2 norm (of their kept weights) are removed entirely. Monotone wrt
    ``previous``: pruned positions and dead filters never return.
    """
    n, m = nm
    if not nm_eligible(weight.shape, m):
        raise ValueError(
            f"nm {n}:{m} needs input channels divisible by {m}, got shape {tuple(weight.shape)}"
        )
    w = weight.detach().float()
    w4 = w if w.ndim == 4 else w[:, :, None, None]  # (K, C, kh, kw)
    prev4 = None if previous is None else previous.reshape(w4.shape)
    n_filters = w4.shape[0]
    kept, filters = nm_counts(n_filters, sparsity, nm)
    by_pos = w4.abs().permute(0, 2, 3, 1)  # (K, kh, kw, C): groups along C, NVIDIA's layout
    scores = by_pos.reshape(-1, m)  # (K*kh*kw*C/M, M)
    if prev4 is not None:
        scores = scores.masked_fill(~prev4.permute(0, 2, 3, 1).reshape(-1, m), _NEG_INF)
    groups = _keep_top(scores, kept).reshape(by_pos.shape).permute(0, 3, 1, 2)  # (K, C, kh, kw)
    if filters < n_filters:
        rows = (w4 * groups).reshape(n_filters, -1)  # (K, C*kh*kw): what the groups keep
        norms = rows.norm(dim=1).masked_fill(~groups.reshape(n_filters, -1).any(dim=1), _NEG_INF)
        alive = _keep_top(norms.reshape(1, -1), filters).reshape(n_filters, 1, 1, 1)  # (K,1,1,1)
        groups = groups & alive
    return groups.reshape(weight.shape)


def nm_violations(mask: Tensor, nm: tuple[int, int]) -> int:
    """How many ``M``-groups along the input channels keep more than ``N`` (0 = a valid N:M mask).

    ``mask``: bool ``(K, C, kh, kw)`` or ``(K, C)`` with ``C % M == 0``. The hardware check: a
    2:4 sparse tensor core accepts a weight iff this is 0.
    """
    n, m = nm
    m4 = mask if mask.ndim == 4 else mask[:, :, None, None]
    counts = (m4 != 0).permute(0, 2, 3, 1).reshape(-1, m).sum(dim=1)  # (groups,)
    return int((counts > n).sum())
