"""Analysis helpers for the notebooks: sparsity tables, mask figures and results pivots.

Everything a notebook computes lives here (notebooks only call library functions and display the
results), so the logic is typed, documented and unit-tested:

* checkpoints: :func:`load_checkpoints_under`, :func:`checkpoint_sparsity_report`,
  :func:`layer_sparsity_table`, :func:`sparsity_totals_table`, :func:`kernel_nnz_table`,
  :func:`plot_kernel_nnz_hist`, :func:`plot_mask_heatmaps`
* results: :func:`nearest_epsilon`, :func:`robust_accuracy_pivot`,
  :func:`accuracy_vs_sparsity_table`, :func:`min_norm_summary`, :func:`plot_min_norm_distributions`,
  :func:`auc_pivot`

Figures are returned as :class:`matplotlib.figure.Figure` objects built without pyplot (no global
state, nothing written to disk); Jupyter displays them as the last expression of a cell.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from torch import nn

from evaluations.record.metrics import WORST_CASE, robustness_auc_table
from robustbench_sparse.checkpoint import META_FILE, LoadedCheckpoint, load_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import SparsityReport

__all__ = [
    "KERNEL_NNZ_COLUMNS",
    "accuracy_vs_sparsity_table",
    "auc_pivot",
    "checkpoint_sparsity_report",
    "conv_layers",
    "kernel_nnz_table",
    "layer_sparsity_table",
    "load_checkpoints_under",
    "min_norm_summary",
    "nearest_epsilon",
    "plot_kernel_nnz_hist",
    "plot_mask_heatmaps",
    "plot_min_norm_distributions",
    "robust_accuracy_pivot",
    "sparsity_totals_table",
]

#: Columns of :func:`kernel_nnz_table`.
KERNEL_NNZ_COLUMNS: list[str] = ["layer", "filter", "channel", "kernel_size", "nnz"]

_GRANULARITY_ORDER = ("dense", "window", "channel", "combined", "nm", "unstructured")


# --------------------------------------------------------------------------- checkpoints


def load_checkpoints_under(root: str | os.PathLike[str]) -> dict[str, LoadedCheckpoint]:
    """Load the checkpoint at ``root`` or every checkpoint directly below it, by name.

    ``root`` is a checkpoint directory (holding ``checkpoint.json``) or a directory of them, such
    as ``rbs run``'s ``OUT/checkpoints``. Names are the checkpoints' own names; the ``best``
    sub-checkpoints written during training are not included. Raises ``UserError`` when none is found.
    """
    base = Path(root)
    if (base / META_FILE).is_file():
        dirs = [base]
    else:
        dirs = sorted(p.parent for p in base.glob(f"*/{META_FILE}"))
    if not dirs:
        raise UserError(f"no checkpoint (a directory with {META_FILE}) found at or below {base}")
    loaded = [load_checkpoint(d) for d in dirs]
    return {c.name: c for c in sorted(loaded, key=_checkpoint_order)}


def _checkpoint_order(ckpt: LoadedCheckpoint) -> tuple[int, float, str]:
    g = ckpt.granularity
    rank = _GRANULARITY_ORDER.index(g) if g in _GRANULARITY_ORDER else len(_GRANULARITY_ORDER)
    return (rank, ckpt.sparsity_target, ckpt.name)


def checkpoint_sparsity_report(ckpt: LoadedCheckpoint) -> SparsityReport:
    """Per-layer sparsity of a loaded checkpoint, recomputed from its saved weights.

    Uses the checkpoint's recorded sparsity config and pruned layers; a checkpoint without them
    (a plain state dict) gets the pattern detected in its zeros (see
    :meth:`~robustbench_sparse.checkpoint.LoadedCheckpoint.sparsity_report`).
    """
    return ckpt.sparsity_report()


def layer_sparsity_table(checkpoints: Mapping[str, LoadedCheckpoint]) -> pd.DataFrame:
    """One row per (checkpoint, Conv2d/Linear weight): target vs achieved sparsity.

    Built from ``checkpoint_sparsity_report(ckpt).to_dict()["layers"]`` with a leading
    ``checkpoint`` column; ``shape`` is shown as ``"KxCxkhxkw"``. Columns: ``checkpoint, name,
    kind, shape, granularity, pruned, target, rounded_target, achieved, nnz, numel,
    kernel_nnz_min, kernel_nnz_max, filter_kernels_min, filter_kernels_max``.
    """
    rows: list[dict[str, Any]] = []
    for name, ckpt in checkpoints.items():
        for layer in checkpoint_sparsity_report(ckpt).to_dict()["layers"]:
            row = {"checkpoint": name, **layer}
            row["shape"] = "x".join(str(s) for s in layer["shape"])
            rows.append(row)
    cols = [
        "checkpoint",
        "name",
        "kind",
        "shape",
        "granularity",
        "pruned",
        "target",
        "rounded_target",
        "achieved",
        "nnz",
        "numel",
        "kernel_nnz_min",
        "kernel_nnz_max",
        "filter_kernels_min",
        "filter_kernels_max",
    ]
    return pd.DataFrame(rows, columns=cols)


def sparsity_totals_table(checkpoints: Mapping[str, LoadedCheckpoint]) -> pd.DataFrame:
    """One row per checkpoint: target and achieved sparsity with both denominators.

    ``achieved_pruned`` counts the weights of the pruned layers (``numel_pruned``),
    ``achieved_all`` all Conv2d/Linear weights (``numel_all``); ``clean_accuracy`` is the recorded
    test accuracy.
    """
    rows: list[dict[str, Any]] = []
    for name, ckpt in checkpoints.items():
        rep = checkpoint_sparsity_report(ckpt)
        rows.append(
            {
                "checkpoint": name,
                "granularity": ckpt.granularity,
                "target": ckpt.sparsity_target,
                "achieved_pruned": rep.achieved_pruned,
                "nnz_pruned": rep.nnz_pruned,
                "numel_pruned": rep.numel_pruned,
                "achieved_all": rep.achieved_all,
                "nnz_all": rep.nnz_all,
                "numel_all": rep.numel_all,
                "clean_accuracy": ckpt.meta.get("clean_accuracy"),
            }
        )
    return pd.DataFrame(rows)


def _resolve_param(params: Mapping[str, torch.Tensor], name: str) -> str:
    """Accept a parameter name (``net.conv2.0.weight``) or its module name (``net.conv2.0``)."""
    if name in params:
        return name
    if f"{name}.weight" in params:
        return f"{name}.weight"
    raise UserError(f"no parameter or module named {name!r} in the model")


def conv_layers(model: nn.Module, *, min_kernel_size: int = 2) -> list[str]:
    """Parameter names of the 4-D conv weights whose kernels hold at least ``min_kernel_size`` weights.

    The default skips 1×1 convolutions (they have no window to prune inside).
    """
    return [
        n
        for n, p in model.named_parameters()
        if p.ndim == 4 and p.shape[2] * p.shape[3] >= min_kernel_size
    ]


def kernel_nnz_table(model: nn.Module, layers: Iterable[str] | None = None) -> pd.DataFrame:
    """Nonzeros of every kernel ``W[k, c]`` of the given conv layers, one row per kernel.

    ``layers`` are parameter or module names (e.g. a checkpoint's ``pruned_layers``; default: every
    k×k conv from :func:`conv_layers`). Layers that are not 4-D convs are skipped. Counted from the
    actual zeros of the weights. Columns: :data:`KERNEL_NNZ_COLUMNS` (``kernel_size`` = kh·kw).
    """
    params = dict(model.named_parameters())
    names = conv_layers(model) if layers is None else [_resolve_param(params, n) for n in layers]
    frames: list[pd.DataFrame] = []
    for name in names:
        w = params[name].detach()
        if w.ndim != 4:
            continue
        k, c, kh, kw = (int(s) for s in w.shape)
        nnz = (w != 0).reshape(k, c, kh * kw).sum(dim=-1).cpu().numpy()  # (K, C)
        filt, chan = np.meshgrid(np.arange(k), np.arange(c), indexing="ij")  # (K, C) each
        frames.append(
            pd.DataFrame(
                {
                    "layer": name,
                    "filter": filt.ravel(),
                    "channel": chan.ravel(),
                    "kernel_size": kh * kw,
                    "nnz": nnz.ravel().astype(np.int64),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=KERNEL_NNZ_COLUMNS)
    return pd.concat(frames, ignore_index=True)[KERNEL_NNZ_COLUMNS]


def _pruned_union(checkpoints: Mapping[str, LoadedCheckpoint]) -> list[str]:
    """Pruned k×k conv layers of any checkpoint, in model order (all k×k convs if none pruned)."""
    first = next(iter(checkpoints.values()))
    convs = conv_layers(first.model)
    pruned = {str(n) for c in checkpoints.values() for n in c.meta.get("pruned_layers") or []}
    chosen = [n for n in convs if n in pruned or n.removesuffix(".weight") in pruned]
    return chosen or convs


def plot_kernel_nnz_hist(
    checkpoints: Mapping[str, LoadedCheckpoint], layers: Sequence[str] | None = None
) -> Figure:
    """Histogram of nonzeros per kernel, one panel per checkpoint, one bar colour per layer.

    The y axis is the fraction of the layer's kernels with that many nonzeros. ``window`` puts every
    surviving kernel on one bar (the balanced count), ``channel`` splits kernels into empty and full,
    ``combined`` does both. ``layers`` default to the k×k conv layers pruned in any checkpoint.
    """
    if not checkpoints:
        raise UserError("no checkpoints to plot")
    names = list(layers) if layers is not None else _pruned_union(checkpoints)
    n = len(checkpoints)
    fig = Figure(figsize=(3.6 * n, 3.2), layout="constrained")
    axes = fig.subplots(1, n, sharey=True, squeeze=False)[0]
    max_size = 1
    for ax, (title, ckpt) in zip(axes, checkpoints.items(), strict=True):
        table = kernel_nnz_table(ckpt.model, names)
        if table.empty:
            ax.set_axis_off()
            continue
        max_size = max(max_size, int(table["kernel_size"].max()))
        sns.histplot(
            data=table,
            x="nnz",
            hue="layer",
            discrete=True,
            multiple="dodge",
            stat="probability",
            common_norm=False,
            shrink=0.85,
            ax=ax,
            legend=ax is axes[-1],
        )
        ax.set_title(f"{title}\n({ckpt.granularity}, target {ckpt.sparsity_target:.0%})")
        ax.set_xlabel("nonzeros per kernel")
        ax.set_ylabel("fraction of kernels")
    for ax in axes:
        ax.set_xticks(range(max_size + 1))
        ax.set_xlim(-0.6, max_size + 0.6)
    legend = axes[-1].get_legend()
    if legend is not None:
        sns.move_legend(axes[-1], "upper left", bbox_to_anchor=(1.02, 1), frameon=False)
    return fig


def _filter_image(mask: np.ndarray, cols: int) -> np.ndarray:
    """Tile the kernels of one filter's mask ``(C, kh, kw)`` into a 2-D image with NaN gaps."""
    c, kh, kw = mask.shape
    rows = math.ceil(c / cols)
    img = np.full((rows * (kh + 1) - 1, cols * (kw + 1) - 1), np.nan)
    for i in range(c):
        r, q = divmod(i, cols)
        img[r * (kh + 1) : r * (kh + 1) + kh, q * (kw + 1) : q * (kw + 1) + kw] = mask[i]
    return img


def _layer_mask(ckpt: LoadedCheckpoint, layer: str) -> np.ndarray:
    """Bool mask ``(K, C, kh, kw)`` of ``layer``: the saved mask, else the nonzeros of the weight."""
    params = dict(ckpt.model.named_parameters())
    name = _resolve_param(params, layer)
    mask = ckpt.masks[name].bool() if name in ckpt.masks else params[name].detach() != 0
    if mask.ndim != 4:
        raise UserError(f"{name} is not a conv weight (shape {tuple(mask.shape)})")
    return np.asarray(mask.cpu().numpy(), dtype=bool)


def plot_mask_heatmaps(
    checkpoints: Mapping[str, LoadedCheckpoint],
    layer: str | None = None,
    filters: Sequence[int] = (0, 1, 2),
    *,
    max_channels: int | None = 16,
) -> Figure:
    """Masks of a few filters of one conv layer, one row per checkpoint, one column per filter.

    Each panel tiles the filter's kernels ``W[k, c]`` (k×k each, separated by gaps); dark = kept,
    light = pruned. The saved mask is used when the checkpoint has one, else the weight's nonzeros
    (dense checkpoints show all kept). ``layer`` is a parameter or module name (default: the first
    k×k conv layer pruned in any checkpoint); ``max_channels`` limits the kernels shown per filter.
    """
    if not checkpoints:
        raise UserError("no checkpoints to plot")
    name = layer if layer is not None else _pruned_union(checkpoints)[0]
    masks = {title: _layer_mask(c, name) for title, c in checkpoints.items()}
    n_filters = min(m.shape[0] for m in masks.values())
    bad = [f for f in filters if not 0 <= f < n_filters]
    if bad:
        raise UserError(f"filters {bad} out of range: {name} has {n_filters} filters")
    cmap = ListedColormap(["#f2f2f2", "#1f3b73"]).with_extremes(bad="white")
    rows, cols = len(masks), len(filters)
    fig = Figure(figsize=(2.2 * cols + 1.2, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, (title, mask) in enumerate(masks.items()):
        for q, f in enumerate(filters):
            kernels = mask[f] if max_channels is None else mask[f][:max_channels]  # (C', kh, kw)
            tile_cols = math.ceil(math.sqrt(kernels.shape[0]))
            ax = axes[r, q]
            ax.imshow(
                _filter_image(kernels.astype(float), tile_cols),
                cmap=cmap,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            kept = int(mask[f].sum())
            ax.set_xlabel(f"{kept}/{mask[f].size} kept", fontsize=8)
            if r == 0:
                ax.set_title(f"filter {f}", fontsize=9)
            if q == 0:
                ax.set_ylabel(title, fontsize=9)
    fig.suptitle(f"masks of {name} (dark = kept; one square per kernel W[k, c])", fontsize=10)
    return fig


# --------------------------------------------------------------------------- results


def nearest_epsilon(df: pd.DataFrame, epsilon: float, norm: str) -> float:
    """The epsilon of ``norm``'s grid in ``df`` nearest to ``epsilon`` (ties: the smaller)."""
    grid = sorted({float(e) for e in df.loc[df["norm"] == norm, "epsilon"]})
    if not grid:
        raise UserError(f"the results have no {norm} rows")
    return min(grid, key=lambda e: (abs(e - epsilon), e))


def robust_accuracy_pivot(
    df: pd.DataFrame, norm: str, attacks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Robust accuracy table for one norm: rows (checkpoint, attack), columns epsilon.

    Checkpoints keep their order of appearance in ``df``; ``attacks`` restricts and orders the
    attacks (default: all of that norm).
    """
    data = df[df["norm"] == norm]
    if attacks is not None:
        data = data[data["attack"].isin(list(attacks))]
    table = data.pivot_table(
        index=["checkpoint", "attack"],
        columns="epsilon",
        values="robust_accuracy",
        aggfunc="first",
        sort=False,
    )
    table.columns.name = f"epsilon ({norm})"
    return table


def accuracy_vs_sparsity_table(
    df: pd.DataFrame, epsilon: float, norm: str = "linf", attack: str = WORST_CASE
) -> pd.DataFrame:
    """Robust accuracy at the grid epsilon nearest ``epsilon``: rows sparsity target, columns granularity.

    The dense baseline is its own ``dense`` column at target 0. Cells are NaN where a
    (granularity, target) model is absent. The chosen epsilon is in ``df.attrs["epsilon"]``.
    """
    eps = nearest_epsilon(df, epsilon, norm)
    sel = df[(df["norm"] == norm) & (df["attack"] == attack) & np.isclose(df["epsilon"], eps)]
    if sel.empty:
        raise UserError(f"no {attack} rows for {norm} at epsilon {eps:g}")
    table = sel.pivot_table(
        index="sparsity_target", columns="granularity", values="robust_accuracy", aggfunc="mean"
    )
    order = sorted(table.columns, key=_granularity_key)
    table = table[order]
    table.columns.name = "granularity"
    table.attrs["epsilon"] = eps
    return table


def _granularity_key(g: Any) -> tuple[int, str]:
    s = str(g)
    return (_GRANULARITY_ORDER.index(s) if s in _GRANULARITY_ORDER else len(_GRANULARITY_ORDER), s)


def min_norm_summary(min_norms: pd.DataFrame) -> pd.DataFrame:
    """Per (checkpoint, attack, backend): distribution of the minimal adversarial distance.

    Only clean-correct examples count. ``found`` is how many of them got an adversarial (a finite
    ``min_norm``); the quantiles and mean are over those. Columns: ``checkpoint, attack, backend,
    n_correct, found, found_rate, min, q25, median, q75, max, mean``.
    """
    cols = [
        "checkpoint",
        "attack",
        "backend",
        "n_correct",
        "found",
        "found_rate",
        "min",
        "q25",
        "median",
        "q75",
        "max",
        "mean",
    ]
    if min_norms.empty:
        return pd.DataFrame(columns=cols)
    data = min_norms[min_norms["clean_correct"].astype(bool)]
    rows: list[dict[str, Any]] = []
    for key, group in data.groupby(["checkpoint", "attack", "backend"], sort=False):
        checkpoint, attack, backend = (str(k) for k in key)
        values = group["min_norm"].to_numpy(dtype=np.float64)
        finite = values[np.isfinite(values)]
        q = np.quantile(finite, [0.0, 0.25, 0.5, 0.75, 1.0]) if finite.size else np.full(5, np.nan)
        rows.append(
            {
                "checkpoint": checkpoint,
                "attack": attack,
                "backend": backend,
                "n_correct": int(values.size),
                "found": int(finite.size),
                "found_rate": finite.size / values.size if values.size else math.nan,
                "min": float(q[0]),
                "q25": float(q[1]),
                "median": float(q[2]),
                "q75": float(q[3]),
                "max": float(q[4]),
                "mean": float(finite.mean()) if finite.size else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def plot_min_norm_distributions(min_norms: pd.DataFrame) -> Figure:
    """Box plot (with points) of the minimal adversarial L2 distance per checkpoint.

    Only clean-correct examples with a found adversarial (finite distance) are drawn; one panel per
    (attack, backend). Smaller distances mean a less robust model.
    """
    data = min_norms[
        min_norms["clean_correct"].astype(bool) & np.isfinite(min_norms["min_norm"].astype(float))
    ].copy()
    if data.empty:
        raise UserError("no finite minimum-norm distances to plot")
    data["panel"] = data["attack"].astype(str) + " @ " + data["backend"].astype(str)
    panels = list(dict.fromkeys(data["panel"]))
    order = list(dict.fromkeys(data["checkpoint"].astype(str)))
    fig = Figure(figsize=(max(4.0, 0.9 * len(order) + 2) * len(panels), 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels, strict=True):
        part = data[data["panel"] == panel]
        sns.boxplot(
            data=part,
            x="checkpoint",
            y="min_norm",
            order=order,
            ax=ax,
            color="#c6d4e1",
            fliersize=0,
        )
        sns.stripplot(
            data=part, x="checkpoint", y="min_norm", order=order, ax=ax, size=2.5, color="#1f3b73"
        )
        ax.set_title(panel)
        ax.set_xlabel("")
        ax.set_ylabel("minimal adversarial L2 distance")
        ax.tick_params(axis="x", labelrotation=45)
    return fig


def auc_pivot(
    df: pd.DataFrame, norm: str | None = None, attacks: Sequence[str] | None = None
) -> pd.DataFrame:
    """Area under the robustness curve per model: rows checkpoint, columns (norm, attack).

    Built on :func:`evaluations.record.metrics.robustness_auc_table` (mean robust accuracy over each
    curve's epsilon range). Rows carry ``granularity`` and ``sparsity_target`` in the index, sorted
    dense first, then by granularity and target. ``norm`` restricts to one norm.
    """
    auc = robustness_auc_table(df, attacks=attacks)
    if norm is not None:
        auc = auc[auc["norm"] == norm]
    ident = df[["checkpoint", "granularity", "sparsity_target"]].drop_duplicates("checkpoint")
    merged = auc.merge(ident, on="checkpoint", how="left")
    table = merged.pivot_table(
        index=["checkpoint", "granularity", "sparsity_target"],
        columns=["norm", "attack"],
        values="auc",
        aggfunc="first",
    )
    keys = sorted(table.index, key=lambda t: (_granularity_key(t[1]), float(t[2]), str(t[0])))
    return table.loc[keys]
