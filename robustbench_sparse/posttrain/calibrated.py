"""``calibrated``: post-training pruning via layer-wise calibration (Lazarevich et al. 2021).

Lazarevich, Kozlov & Malinin, "Post-training deep neural network pruning via layer-wise
calibration", ICCV 2021 Workshops (arXiv 2104.15023); reference code: OpenVINO POT
(``MagnitudeSparsity``, ``LayerwiseModelFinetuning``). A trained dense model is

1. pruned once: granularity ``unstructured`` (the paper's) ranks ``|w| / ||W_l||_2`` of all pruned
   layers globally (:func:`~robustbench_sparse.posttrain.magnitude.normalised_global_masks`);
   ``window`` / ``channel`` / ``combined`` use Campfire's masks at the target in every layer;
2. corrected per output channel (:func:`~robustbench_sparse.posttrain.magnitude.correct_weights`);
3. calibrated: every pruned layer fitted to the dense layer's output on the dense model's inputs
   to it (:mod:`robustbench_sparse.posttrain.layerwise`), masks unchanged. No training loop.

Layers pruned: Campfire's selection (every Conv2d/Linear but the first conv and the classifier,
:func:`~robustbench_sparse.sparsity.selection.select_layers`), so rows compare with Campfire's.
Decisions where POT differs: one sparsity level (POT tunes at ``target - 0.1`` then at
``target``; the issue asks for one pruning step); POT's FastBiasCorrection step is not run
separately (the layer fit trains biases where layers have them); the calibration pool is split:
the last fifth (``holdout``) is never fitted and gives the per-layer errors before and after.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.posttrain.base import (
    CalibrationData,
    DataNeed,
    PostTrainConfig,
    PostTrainResult,
)
from robustbench_sparse.posttrain.layerwise import LayerFit, capture_io, fit_layer, output_error
from robustbench_sparse.posttrain.magnitude import (
    correct_weights,
    normalised_global_masks,
    structured_masks,
)
from robustbench_sparse.sparsity.config import PruningMethod, SparsityConfig
from robustbench_sparse.sparsity.granularity import Granularity
from robustbench_sparse.sparsity.selection import select_layers

__all__ = ["CalibratedPruning"]

logger = logging.getLogger(__name__)


class CalibratedPruning:
    """The ``calibrated`` post-training method (see the module docstring).

    Options (``PostTrainConfig.options``): ``iterations`` (30), ``samples_per_iteration``
    (2000), ``batch_size`` (50), ``lr`` (1e-5, weights), ``bias_lr`` (1e-4), ``correct`` (True:
    the weight correction; False skips it, for ablations), ``tune`` (True: the layer fit),
    ``holdout`` (0.2: the share of the calibration pool kept out of the fit, for the errors).
    """

    name = "calibrated"
    summary = (
        "layer-wise calibration (Lazarevich et al. 2021): prune once (global threshold on "
        "layer-normalised magnitudes, or Campfire's structured masks), correct weights per "
        "output channel, fit each layer to the dense one on calibration images"
    )
    granularities: tuple[str, ...] = ("unstructured", "window", "channel", "combined")
    data: DataNeed = "calibration"
    default_options: Mapping[str, Any] = {
        "iterations": 30,
        "samples_per_iteration": 2000,
        "batch_size": 50,
        "lr": 1e-5,
        "bias_lr": 1e-4,
        "correct": True,
        "tune": True,
        "holdout": 0.2,
    }

    def run(
        self, model: nn.Module, config: PostTrainConfig, calibration: CalibrationData | None
    ) -> PostTrainResult:
        """Prune, correct and calibrate ``model`` in place; see :class:`PostTrainResult`.

        ``calibration.images``: ``(N, C, H, W)`` in ``[0, 1]``, ``N >= 2`` when ``tune``.

        Raises:
            UserError: a target of 0, no layer selected, too few calibration images, a bad option.
        """
        opts = config.options
        fit = _layer_fit(opts)
        granularity = Granularity.parse(config.granularity)
        if config.sparsity <= 0.0:
            raise UserError("--sparsity must be > 0 for rbs prune (0 leaves the model dense)")
        sparsity = SparsityConfig(
            target=config.sparsity, granularity=granularity, method=PruningMethod.CALIBRATED
        )
        names = select_layers(model, sparsity)
        if not names:
            raise UserError("no Conv2d/Linear layer besides the first conv and classifier to prune")
        params = dict(model.named_parameters())
        weights = {n: params[n].detach() for n in names}
        if granularity is Granularity.UNSTRUCTURED:
            masks = normalised_global_masks(weights, config.sparsity)
        else:
            masks = structured_masks(weights, config.sparsity, granularity)
        dense = copy.deepcopy(model).eval()  # the FP reference of every layer
        with torch.no_grad():
            for n in names:
                w = params[n]
                plain = w.masked_fill(~masks[n], 0.0)  # +0.0 at pruned positions
                w.copy_(correct_weights(w, masks[n]) if opts["correct"] else plain)
        layers = _calibrate(model, dense, names, masks, calibration, fit, config, opts)
        result = PostTrainResult(
            model=model.eval(),
            masks={n: m.detach().cpu().clone() for n, m in masks.items()},
            sparsity=sparsity.to_dict(),
            pruned_layers=names,
            granularity=sparsity.label,
            layers=layers,
            record={
                "paper": "Lazarevich, Kozlov & Malinin, ICCV-W 2021 (arXiv 2104.15023)",
                "ranking": (
                    "global, |w| / ||W_l||_2"
                    if granularity is Granularity.UNSTRUCTURED
                    else f"Campfire {granularity.value} masks, one shot"
                ),
                "weight_correction": bool(opts["correct"]),
                "layer_fit": bool(opts["tune"]),
                "adam_steps_per_layer": fit.steps if opts["tune"] else 0,
            },
        )
        result.check()
        return result


def _layer_fit(opts: Mapping[str, Any]) -> LayerFit:
    for key in ("iterations", "samples_per_iteration", "batch_size"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"calibrated option {key} must be a positive integer, got {value!r}")
    for key in ("lr", "bias_lr"):
        value = opts[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise UserError(f"calibrated option {key} must be a number > 0, got {value!r}")
    for key in ("correct", "tune"):
        if not isinstance(opts[key], bool):
            raise UserError(f"calibrated option {key} must be true or false, got {opts[key]!r}")
    holdout = opts["holdout"]
    if isinstance(holdout, bool) or not isinstance(holdout, int | float) or not 0 < holdout < 1:
        raise UserError(f"calibrated option holdout must be in (0, 1), got {holdout!r}")
    return LayerFit(
        iterations=int(opts["iterations"]),
        samples_per_iteration=int(opts["samples_per_iteration"]),
        batch_size=int(opts["batch_size"]),
        lr=float(opts["lr"]),
        bias_lr=float(opts["bias_lr"]),
    )


def _calibrate(
    model: nn.Module,
    dense: nn.Module,
    names: list[str],
    masks: dict[str, Tensor],
    calibration: CalibrationData | None,
    fit: LayerFit,
    config: PostTrainConfig,
    opts: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """Fit every pruned layer (when ``tune``) and report its sparsity and held-out errors."""
    modules = dict(model.named_modules())
    images = calibration.images if calibration is not None else None
    if (images is None or images.shape[0] < 2) and opts["tune"]:
        raise UserError("calibrated needs at least 2 calibration images (--calibration N)")
    n_hold = 0 if images is None else max(1, math.floor(images.shape[0] * float(opts["holdout"])))
    generator = torch.Generator().manual_seed(config.seed)
    rows: list[dict[str, Any]] = []
    for name in names:
        module_name = name.rsplit(".", 1)[0]
        layer = modules[module_name]
        assert isinstance(layer, nn.Conv2d | nn.Linear)
        mask = masks[name]
        row: dict[str, Any] = {
            "name": name,
            "sparsity": 1.0 - float(mask.float().mean()),
            "numel": mask.numel(),
        }
        if images is not None and images.shape[0] >= 2:
            x, y = capture_io(dense, module_name, images)  # dense inputs / outputs
            fit_x, fit_y, hold_x, hold_y = x[:-n_hold], y[:-n_hold], x[-n_hold:], y[-n_hold:]
            dense_power = float(hold_y.double().pow(2).mean()) or 1.0
            before = output_error(layer, hold_x, hold_y)
            if opts["tune"]:
                fit_layer(layer, mask, fit_x, fit_y, fit, generator)
            after = output_error(layer, hold_x, hold_y)
            row.update(
                error_before=before / dense_power,
                error_after=after / dense_power,
                heldout_images=int(n_hold),
            )
            logger.info(
                "%s: sparsity %.2f%%, held-out output error / dense power %.4g -> %.4g",
                name,
                100 * row["sparsity"],
                row["error_before"],
                row["error_after"],
            )
        rows.append(row)
    return rows
