"""The post-training stage: what a post-training method receives and what it returns.

A post-training method starts from a *trained* model (a loaded checkpoint) and returns a pruned or
transformed model without a training run of its own (or with a short fine-tune it owns):
layer-wise calibration (Lazarevich et al. 2021), FilterSketch (Lin et al. 2020), and later ones
(HASTE, activation density). ``rbs prune CKPT --method NAME`` drives it through
:func:`robustbench_sparse.posttrain.job.run_prune_job`, which loads the checkpoint, gathers the
data the method asks for (:attr:`PostTrainMethod.data`), calls :meth:`PostTrainMethod.run` and
writes an ordinary checkpoint from the :class:`PostTrainResult`.

Every image tensor here is ``(N, C, H, W)`` float32 in pixel scale ``[0, 1]``: the models of this
product normalise inside their forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from robustbench_sparse.errors import UserError, unknown_name

__all__ = [
    "CalibrationData",
    "DataNeed",
    "PostTrainConfig",
    "PostTrainMethod",
    "PostTrainResult",
]

#: what a method needs besides the model: nothing, a calibration batch, or the training split
DataNeed = Literal["none", "calibration", "train"]


@dataclass(frozen=True)
class PostTrainConfig:
    """What the user asked for (``rbs prune`` flags), method-independent.

    Attributes:
        method: the registry name (:data:`robustbench_sparse.posttrain.POST_TRAINING_METHODS`).
        sparsity: target sparsity in ``[0, 1)`` (a fraction of the pruned layers' weights; a
            method that thins filters reads it as its own rate and says so in its docs).
        granularity: a Campfire granularity (``unstructured``, ``window``, ``channel``,
            ``combined``, ``nm``) or the method's own word; the method checks it against
            :attr:`PostTrainMethod.granularities`.
        seed: seeds every random choice (calibration subset, fractal images, tuning order).
        device: where the method computes (``"cpu"``, ``"cuda"``, ``"cuda:N"``).
        options: method-specific settings (keys of :attr:`PostTrainMethod.default_options`);
            unknown keys are refused by :meth:`with_defaults`.
    """

    method: str
    sparsity: float
    granularity: str = "unstructured"
    seed: int = 0
    device: str = "cpu"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, bool) or not isinstance(self.sparsity, int | float):
            raise UserError(f"--sparsity must be a number in [0, 1), got {self.sparsity!r}")
        if not 0.0 <= float(self.sparsity) < 1.0:
            raise UserError(f"--sparsity must be in [0, 1), got {self.sparsity}")
        object.__setattr__(self, "sparsity", float(self.sparsity))
        object.__setattr__(self, "options", dict(self.options))

    def with_defaults(self, defaults: Mapping[str, Any]) -> PostTrainConfig:
        """This config with ``defaults`` filled in under the given options.

        Raises:
            UserError: an option the method does not know (one line listing the valid ones).
        """
        for key in self.options:
            if key not in defaults:
                raise unknown_name(f"{self.method} option", str(key), sorted(defaults))
        return dataclasses.replace(self, options={**defaults, **self.options})

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (recorded in the checkpoint's ``post_training`` section)."""
        return {
            "method": self.method,
            "sparsity": self.sparsity,
            "granularity": self.granularity,
            "seed": self.seed,
            "device": self.device,
            "options": dict(self.options),
        }


@dataclass
class CalibrationData:
    """The data a post-training method may use.

    Attributes:
        images: ``(N, C, H, W)`` float32 in ``[0, 1]``: the calibration pool (real training images
            or data-free fractal images); empty ``(0, C, H, W)`` when the method needs none.
        labels: ``(N,)`` int64 class labels, or ``None`` for data-free images.
        source: ``"train"`` (a seeded subset of the checkpoint's dataset's training split) or
            ``"fractal"`` (:mod:`robustbench_sparse.posttrain.fractal`).
        train_set: the whole training split (``x`` in ``[0, 1]``, ``y``) for methods whose data
            need is ``"train"`` (a fine-tune); ``None`` otherwise.
        record: JSON-safe description stored in the checkpoint (source, count, seed, dataset).
    """

    images: Tensor
    labels: Tensor | None
    source: str
    train_set: Dataset[Any] | None = None
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class PostTrainResult:
    """What a post-training method returns; :func:`~robustbench_sparse.posttrain.job.run_prune_job`
    turns it into a checkpoint.

    Attributes:
        model: the pruned / transformed model, in eval mode, on the CPU or the config's device.
            It must be rebuildable from the checkpoint metadata: same architecture as the input,
            or a thinned one whose widths ``meta`` records (``{"thin": {"widths": ...}}``, read
            by :func:`~robustbench_sparse.models.widths.apply_widths`).
        masks: parameter name (``"net.conv2.weight"``) -> bool keep-mask of that weight's shape;
            saved in the checkpoint so reports and resumes see them. ``{}`` when nothing is masked.
        sparsity: the sparsity section the checkpoint records (``SparsityConfig.to_dict()``):
            target, granularity and method, so ``rbs inspect`` shows achieved beside target with
            the denominator stated; ``None`` for a dense result (a thinned model).
        pruned_layers: parameter names of the pruned layers (the sparsity report's denominator).
        granularity: the label results tables use (``calibrated``, ``calibrated-window``, ...).
        meta: extra top-level checkpoint metadata (e.g. ``thin`` widths); never overrides the
            fields the job writes itself.
        layers: one JSON-safe dict per touched layer (name, sparsity, errors before/after ...),
            stored under ``post_training.layers`` and logged.
        record: the method's resolved settings and anything a reader needs to reproduce it.
    """

    model: nn.Module
    masks: dict[str, Tensor]
    sparsity: dict[str, Any] | None
    pruned_layers: list[str]
    granularity: str
    meta: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        """Masks match their weights (bool, same shape) and masked weights are exactly zero.

        Raises:
            ValueError: a method broke its contract (a programming error, not the user's).
        """
        params = dict(self.model.named_parameters())
        for name, mask in self.masks.items():
            if name not in params:
                raise ValueError(f"mask {name!r} names no parameter of the model")
            weight = params[name]
            if mask.dtype != torch.bool or tuple(mask.shape) != tuple(weight.shape):
                raise ValueError(f"mask {name!r} must be bool of shape {tuple(weight.shape)}")
            if bool((weight.detach()[~mask.to(weight.device)] != 0).any()):
                raise ValueError(f"{name}: weights outside its mask are not zero")


@runtime_checkable
class PostTrainMethod(Protocol):
    """One post-training method (an entry of ``POST_TRAINING_METHODS``).

    Attributes:
        name: the ``--method`` name.
        summary: one line for ``rbs prune --help`` and the docs (paper and what it does).
        granularities: the ``--granularity`` values it accepts; the first is its default.
        data: ``"none"``, ``"calibration"`` (a pool of images, :class:`CalibrationData`) or
            ``"train"`` (the training split too, for a fine-tune).
        default_options: every option it reads from :attr:`PostTrainConfig.options`, with defaults.
    """

    name: str
    summary: str
    granularities: tuple[str, ...]
    data: DataNeed
    default_options: Mapping[str, Any]

    def run(
        self, model: nn.Module, config: PostTrainConfig, calibration: CalibrationData | None
    ) -> PostTrainResult:
        """Prune / transform ``model`` (a trained model in eval mode; the method may modify it in
        place or copy it) and return the result. ``calibration`` is ``None`` when :attr:`data` is
        ``"none"``. ``config`` arrives with :attr:`default_options` filled in.

        Raises:
            UserError: the model or settings do not suit the method (one line, what to do).
        """
        ...
