"""Post-training methods: a trained checkpoint in, a pruned / transformed checkpoint out.

``rbs prune CKPT --method NAME --sparsity S --out DIR`` looks ``NAME`` up in
:data:`POST_TRAINING_METHODS` and runs it through :func:`robustbench_sparse.posttrain.job.run_prune_job`.
The interface (:mod:`robustbench_sparse.posttrain.base`):

- :class:`PostTrainMethod`: ``name``, ``summary``, ``granularities`` (first = default), ``data``
  (``"none"`` / ``"calibration"`` / ``"train"``), ``default_options`` and
  ``run(model, config: PostTrainConfig, calibration: CalibrationData | None) -> PostTrainResult``.
- :class:`PostTrainConfig`: method, sparsity, granularity, seed, device, options.
- :class:`CalibrationData`: ``images`` ``(N, C, H, W)`` in ``[0, 1]``, ``labels`` or ``None``,
  ``source`` (``train`` / ``fractal``), ``train_set`` (for a fine-tune), ``record``.
- :class:`PostTrainResult`: model, masks, sparsity section, pruned layers, granularity label,
  extra metadata (e.g. ``thin`` widths), per-layer report rows, settings record.

To add a method: write a module here with a class satisfying :class:`PostTrainMethod` and add one
line to :data:`POST_TRAINING_METHODS` below (``rbs prune --method`` lists its keys).
"""

from __future__ import annotations

from robustbench_sparse.errors import unknown_name
from robustbench_sparse.posttrain.base import (
    CalibrationData,
    DataNeed,
    PostTrainConfig,
    PostTrainMethod,
    PostTrainResult,
)
from robustbench_sparse.posttrain.calibrated import CalibratedPruning
from robustbench_sparse.posttrain.filtersketch import FilterSketch

#: method name -> implementation (one line per method)
POST_TRAINING_METHODS: dict[str, PostTrainMethod] = {
    "calibrated": CalibratedPruning(),
    "filtersketch": FilterSketch(),
}


def get_post_training_method(name: str) -> PostTrainMethod:
    """The registered method called ``name`` (case-insensitive).

    Raises:
        UserError: an unknown name (one line listing the registered ones).
    """
    method = POST_TRAINING_METHODS.get(str(name).strip().lower())
    if method is None:
        raise unknown_name("post-training method", str(name), POST_TRAINING_METHODS)
    return method


__all__ = [
    "POST_TRAINING_METHODS",
    "CalibrationData",
    "DataNeed",
    "PostTrainConfig",
    "PostTrainMethod",
    "PostTrainResult",
    "get_post_training_method",
]
