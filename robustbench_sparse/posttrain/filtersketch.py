"""FilterSketch (Lin, Ji, Li, Ye, Tian, Liu & Tian, "Filter Sketch for Network Pruning", TNNLS 2021,
arXiv 2001.08514; reference code lmbxmu/FilterSketch, ``sketch.py``): ``rbs prune CKPT --method
filtersketch --sparsity s`` thins a trained model by sketching filters, then fine-tunes it.

What is sketched (the paper's "middle" channels): a ``Conv2d`` whose output channels reach only
one ``BatchNorm2d`` and other convolutions (through ReLU / pooling), never a residual sum, a
``Linear`` or a second producer. The coupling is read off Torch-Pruning's dependency graph (Fang
et al., CVPR 2023), as :mod:`robustbench_sparse.thin` does. In a plain chain (``small_cnn``) that is
every conv that feeds another conv; in a ResNet the first conv of each basic block (the others
write the residual stream). For each such layer with ``K`` filters:

* ``ℓ = max(1, floor((1 - s) · K))`` filters are kept (the reference's ``int(rate · K)`` with
  ``rate = 1 - s``; its ResNet-56 "rate 0.6" is ``--sparsity 0.4``). A layer with ``ℓ >= C·kh·kw``
  (its fan-in: ``ℓ`` independent filters cannot exist) or ``ℓ == K`` is left whole, as the
  reference leaves such a layer unsketched; every such case is listed in ``layers``.
* its filters ``A (K, C·kh·kw)`` become the Frequent-Directions sketch ``B (ℓ, C·kh·kw)``
  (:func:`~robustbench_sparse.posttrain.frequent_directions.frequent_directions`), each row
  scaled to unit L2 norm (the reference command's ``--weight_norm_method l2 --filter_norm True``;
  the BatchNorm that follows makes a per-filter scale immaterial). A bias, if any, becomes 0 (the
  BatchNorm absorbs it).
* every consumer conv's input slices ``W[:, c]`` -- the rows of ``(C_in, K₂·kh·kw)`` -- are
  sketched the same way to ``ℓ`` rows (the paper's "channel sketch"). The reference reshapes
  with ``view(size(1), -1)``, which reinterprets memory instead of transposing; here the slices
  are transposed properly. Consumer slices keep their sketched scale (not normalised).
* BatchNorm: the BatchNorm after a sketched conv gets fresh parameters (``γ = 1, β = 0``), as in
  the reference, which does not copy it; the others keep theirs. Then the running statistics of
  every BatchNorm are re-estimated on training images (cumulative average), since sketched
  channels and their consumers change every downstream distribution (the statistics the
  fine-tune starts from, and those a ``finetune_epochs = 0`` model is evaluated with).

The fine-tune is not optional in practice: the filter sketch (rotated by its own singular
vectors) and the consumer's slice sketch (rotated by *its* own) are independent, as in the paper
and the reference, so channel ``j`` of one does not meet slice ``j`` of the other and even a small
sparsity scrambles the function. Measured on digits (small_cnn, dense 99.1 %, ``--sparsity
0.5``): 8.2 % without fine-tuning, 96.4 % after 3 epochs.

The result is a thinner *dense* model: its changed widths go to the checkpoint's ``thin.widths``
(:mod:`robustbench_sparse.models.widths`), so it loads wherever a checkpoint loads. No mask is
kept from the source (sketched filters mix the originals); Campfire masks of any granularity may be
ramped in on the thin model during the fine-tune (options ``mask_granularity``, ``mask_sparsity``).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import update_bn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.models.widths import Widths, apply_widths, changed_widths, module_widths
from robustbench_sparse.posttrain.base import (
    CalibrationData,
    DataNeed,
    PostTrainConfig,
    PostTrainResult,
)
from robustbench_sparse.posttrain.frequent_directions import frequent_directions
from robustbench_sparse.sparsity import Granularity, Sparsifier, SparsityConfig
from robustbench_sparse.thin import count_macs, count_params

logger = logging.getLogger(__name__)

__all__ = [
    "FilterSketch",
    "SketchLayer",
    "SketchResult",
    "kept_filters",
    "recalibrate_batchnorm",
    "sketch_model",
    "sketch_plan",
]


@dataclass
class SketchLayer:
    """One middle layer: ``producer`` conv, its ``bn``, the ``consumers`` convs; ``filters`` K,
    ``keep`` ℓ, ``fan_in`` C·kh·kw; ``sketched`` False with a ``reason`` when left whole."""

    producer: str
    bn: str
    consumers: list[str]
    filters: int
    keep: int
    fan_in: int
    sketched: bool = True
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe row (the checkpoint's per-layer record)."""
        return dict(vars(self))


@dataclass
class SketchResult:
    """The thinned model (eval mode, BatchNorm statistics *not* yet re-estimated), the widths a
    checkpoint records, the per-layer plan and parameter / MAC counts (one example)."""

    model: nn.Module
    widths: Widths
    layers: list[SketchLayer]
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    notes: list[str] = field(default_factory=list)


def kept_filters(filters: int, sparsity: float) -> int:
    """``ℓ = max(1, floor((1 - sparsity) · filters))``, rounded to 9 decimals first so that
    ``(1 - 0.9) · 10`` is 1, not 0."""
    return max(1, math.floor(round((1.0 - sparsity) * filters, 9)))


def _role(module: Any, handler: str) -> str:
    """``producer`` / ``bn`` / ``consumer`` / ``free`` (no parameters) / ``other``."""
    if not isinstance(module, nn.Module):
        return "free"
    if isinstance(module, nn.Conv2d) and module.groups == 1:
        return "producer" if "out" in handler else "consumer"
    if isinstance(module, nn.BatchNorm2d) and "out" in handler:
        return "bn"
    if any(True for _ in module.parameters(recurse=False)):
        return "other"
    return "free"


def sketch_plan(model: nn.Module, input_shape: Sequence[int], sparsity: float) -> list[SketchLayer]:
    """The middle layers of ``model`` (see the module docstring) and what happens to each.

    ``input_shape``: one example ``(C, H, W)`` (the graph is traced on zeros).

    Raises:
        UserError: torch-pruning is missing, or the model has no middle layer to sketch.
    """
    try:
        import torch_pruning as tp
    except ImportError:  # pragma: no cover - a dependency; the message says how to get it
        raise UserError(
            "filtersketch needs the torch-pruning package: pip install torch-pruning"
        ) from None
    work = copy.deepcopy(model).cpu().eval()  # traced on a copy: ``model`` is not touched
    names = {id(m): n for n, m in work.named_modules()}
    example = torch.zeros(1, *input_shape)
    graph = tp.DependencyGraph().build_dependency(work, example_inputs=example)
    plan: list[SketchLayer] = []
    for group in graph.get_all_groups(root_module_types=(nn.Conv2d,)):
        roles: dict[str, list[str]] = {}
        for item in group.items:
            module = item.dep.target.module
            role = _role(module, getattr(item.dep.handler, "__name__", ""))
            if role != "free":
                roles.setdefault(role, []).append(names[id(module)])
        if set(roles) != {"producer", "bn", "consumer"} or any(
            len(roles[r]) != 1 for r in ("producer", "bn")
        ):
            continue  # residual stream, classifier input, grouped conv, no BatchNorm, ...
        conv = model.get_submodule(roles["producer"][0])
        assert isinstance(conv, nn.Conv2d)
        k, fan_in = conv.out_channels, conv.weight[0].numel()
        layer = SketchLayer(
            roles["producer"][0], roles["bn"][0], sorted(set(roles["consumer"])), k,
            kept_filters(k, sparsity), fan_in,
        )  # fmt: skip
        if layer.keep >= k:
            layer.sketched, layer.reason = False, f"keeps all {k} filters at this sparsity"
        elif layer.keep >= fan_in:
            layer.sketched, layer.reason = False, f"{layer.keep} filters >= fan-in {fan_in}"
        plan.append(layer)
    if not plan:
        raise UserError(
            "filtersketch found no conv whose channels feed only a BatchNorm and other convs; "
            "this architecture has nothing it can sketch"
        )
    return sorted(plan, key=lambda layer: list(names.values()).index(layer.producer))


def _unit_rows(b: Tensor) -> Tensor:
    """Each row of ``b`` ``(ℓ, d)`` divided by its L2 norm (zero rows stay zero)."""
    norms = b.norm(dim=1, keepdim=True)
    return b / torch.where(norms > 0, norms, torch.ones_like(norms))


def _sketched_weights(model: nn.Module, plan: list[SketchLayer]) -> dict[str, Tensor]:
    """Module name -> its new weight: filters sketched first, then input slices (reference order)."""
    weights: dict[str, Tensor] = {}

    def current(name: str) -> Tensor:
        if name not in weights:
            conv = model.get_submodule(name)
            assert isinstance(conv, nn.Conv2d)
            weights[name] = conv.weight.detach().cpu().clone()
        return weights[name]

    for layer in (la for la in plan if la.sketched):
        w = current(layer.producer)  # (K, C, kh, kw)
        b = frequent_directions(w.reshape(w.shape[0], -1), layer.keep)  # (ℓ, C·kh·kw)
        weights[layer.producer] = _unit_rows(b).reshape(layer.keep, *w.shape[1:])
    for layer in (la for la in plan if la.sketched):
        for name in layer.consumers:
            w = current(name)  # (K₂, K, kh, kw)
            slices = w.transpose(0, 1).reshape(w.shape[1], -1)  # (K, K₂·kh·kw)
            b = frequent_directions(slices, layer.keep)  # (ℓ, K₂·kh·kw)
            weights[name] = b.reshape(layer.keep, w.shape[0], *w.shape[2:]).transpose(0, 1)
    return {n: w.contiguous() for n, w in weights.items()}  # (K'₂, ℓ, kh, kw) etc.


def _reference_widths(model: nn.Module) -> Widths | None:
    """The widths of ``model``'s architecture as built by default (None: not rebuildable)."""
    arch, num_classes = getattr(model, "arch", None), getattr(model, "num_classes", None)
    normalize = getattr(model, "normalize", None)
    mean = getattr(normalize, "mean", None)
    if not isinstance(arch, str) or not isinstance(num_classes, int) or mean is None:
        return None
    from robustbench_sparse.models import create_model

    kwargs = dict(getattr(model, "arch_kwargs", {}) or {})
    try:
        fresh = create_model(arch, num_classes=num_classes, in_channels=mean.numel(), **kwargs)
    except (UserError, TypeError, ValueError):
        return None
    return module_widths(fresh)


def sketch_model(model: nn.Module, sparsity: float, input_shape: Sequence[int]) -> SketchResult:
    """A thinned copy of ``model`` (``model`` is not changed), no data needed.

    ``sparsity``: fraction of each middle layer's filters removed, in ``[0, 1)``. ``input_shape``:
    one example ``(C, H, W)``, pixels in ``[0, 1]``. ``widths`` are relative to the
    architecture as the registry builds it (so a source that was already thin stays loadable); a
    model the registry cannot rebuild records every module's width.

    Raises:
        UserError: ``sparsity`` outside ``[0, 1)`` or nothing to sketch (:func:`sketch_plan`).
    """
    if not 0.0 <= sparsity < 1.0:
        raise UserError(f"--sparsity must be in [0, 1), got {sparsity}")
    source = copy.deepcopy(model).cpu().eval()
    plan = sketch_plan(source, input_shape, sparsity)
    new = _sketched_weights(source, plan)
    resized: Widths = {}
    for layer in (la for la in plan if la.sketched):
        resized[layer.bn] = {"features": layer.keep}
    for name, w in new.items():
        conv = source.get_submodule(name)
        resized[name] = {"in": int(w.shape[1]), "out": int(w.shape[0]), "groups": conv.groups}  # type: ignore[dict-item]
    thin = copy.deepcopy(source)
    apply_widths(
        thin, resized
    )  # fresh modules: the sketched conv's BatchNorm is γ=1, β=0, μ=0, σ²=1
    state = thin.state_dict()
    for key, value in source.state_dict().items():
        module = key.rpartition(".")[0]
        if module not in resized:
            state[key] = value
    for name, w in new.items():
        state[f"{name}.weight"] = w
        bias = source.get_submodule(name).bias
        if isinstance(bias, Tensor) and any(la.producer == name for la in plan if la.sketched):
            state[f"{name}.bias"] = torch.zeros(w.shape[0])  # absorbed by the BatchNorm after it
        elif isinstance(bias, Tensor):
            state[f"{name}.bias"] = bias.detach().cpu().clone()
    thin.load_state_dict(state)
    thin.eval()
    reference = _reference_widths(source)
    widths = changed_widths(reference, module_widths(thin)) if reference else module_widths(thin)
    return SketchResult(
        model=thin,
        widths=widths,
        layers=plan,
        params_before=count_params(source),
        params_after=count_params(thin),
        macs_before=count_macs(source, input_shape),
        macs_after=count_macs(thin, input_shape),
    )


def recalibrate_batchnorm(
    model: nn.Module,
    images: Dataset[Any] | Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> int:
    """Re-estimate every ``BatchNorm``'s running mean / variance on ``images`` (in place) with
    :func:`torch.optim.swa_utils.update_bn`: statistics reset, then the cumulative average of
    the per-batch statistics (``momentum = None``); parameters untouched, model left in eval mode.

    ``images``: ``(N, C, H, W)`` in ``[0, 1]`` or a dataset of ``(x, y)``; ``device``: where
    to compute (``"auto"`` resolves as everywhere). Returns ``N``.
    """
    data = TensorDataset(images) if isinstance(images, Tensor) else images
    target = resolve_device(device) if isinstance(device, str) else device  # "auto" too
    model.to(target)
    update_bn(DataLoader(data, batch_size=batch_size, shuffle=False), model, target)
    model.eval()
    return len(data)  # type: ignore[arg-type]


def _finetune(
    model: nn.Module,
    train_set: Dataset[Any],
    options: Mapping[str, Any],
    config: PostTrainConfig,
    masks: SparsityConfig | None,
) -> tuple[list[dict[str, Any]], Sparsifier | None]:
    """Fine-tune ``model`` on all of ``train_set`` with :func:`~robustbench_sparse.training.fit`
    (SGD, cosine, no warm-up, no hold-out; ``masks``: Campfire pruning during it); per-epoch
    history and the sparsifier. Its ``test_accuracy`` column is measured on a seeded subset of at
    most 256 *training* images, never the test split."""
    from robustbench_sparse.datasets import DatasetInfo, DatasetSplits
    from robustbench_sparse.training import TrainConfig, fit

    n = len(train_set)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(config.seed)
    probe = Subset(train_set, sorted(torch.randperm(n, generator=gen)[:256].tolist()))
    shape = tuple(int(s) for s in train_set[0][0].shape)
    info = DatasetInfo("filtersketch-finetune", 1, shape, (0.0,) * shape[0], (1.0,) * shape[0])  # type: ignore[arg-type]
    train = TrainConfig(
        epochs=int(options["finetune_epochs"]),
        batch_size=int(options["batch_size"]),
        lr=float(options["lr"]),
        warmup_epochs=0.0,
        seed=config.seed,
        device=config.device,
        val_fraction=0.0,
    )
    result = fit(model, DatasetSplits(info, train_set, probe), train, masks, progress=False)
    return [vars(record) for record in result.history], result.sparsifier


def _campfire_config(options: Mapping[str, Any], n_train: int) -> SparsityConfig | None:
    """Campfire's masks for the fine-tune (``mask_granularity`` / ``mask_sparsity``), ramped over
    the default window (10 % -> 50 % of the fine-tune), about 4 mask updates per epoch; None
    when ``mask_granularity`` is ``none``.

    Raises:
        UserError: an unknown granularity, a target outside (0, 1), or no fine-tune epochs.
    """
    from robustbench_sparse.training.config import default_prune_window

    name = str(options["mask_granularity"]).strip().lower()
    if name == "none":
        return None
    valid = [g.value for g in Granularity]
    if name not in valid:
        raise UserError(
            f"filtersketch mask_granularity must be none or one of {', '.join(valid)}, got {name!r}"
        )
    target, epochs = options["mask_sparsity"], int(options["finetune_epochs"])
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise UserError(f"filtersketch mask_sparsity must be in (0, 1), got {target!r}")
    if epochs < 1:
        raise UserError(
            "filtersketch mask_granularity needs finetune_epochs >= 1 (masks are set during it)"
        )
    start, end = default_prune_window(epochs)
    steps = max(1, math.ceil(n_train / int(options["batch_size"])))
    return SparsityConfig(
        target=float(target),
        granularity=Granularity(name),
        start=start,
        end=end,
        update_every=max(1, steps // 4),
    )


def _check_options(options: Mapping[str, Any]) -> None:
    """Raises UserError naming the first invalid option."""
    epochs, lr, batch = options["finetune_epochs"], options["lr"], options["batch_size"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise UserError(f"filtersketch finetune_epochs must be an integer >= 0, got {epochs!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr < math.inf:
        raise UserError(f"filtersketch lr must be a positive number, got {lr!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise UserError(f"filtersketch batch_size must be an integer >= 1, got {batch!r}")


def _result(
    sketch: SketchResult,
    shape: Sequence[int],
    sparsifier: Sparsifier | None,
    masks: SparsityConfig | None,
    record: dict[str, Any],
) -> PostTrainResult:
    """The :class:`PostTrainResult` of a sketched (and maybe masked) thin model."""
    return PostTrainResult(
        model=sketch.model,
        masks={n: m.detach().bool() for n, m in sparsifier.masks.items()} if sparsifier else {},
        sparsity=masks.to_dict() if masks is not None and sparsifier is not None else None,
        pruned_layers=list(sparsifier.pruned_names) if sparsifier else [],
        granularity=f"filtersketch+{masks.label}" if masks is not None else "filtersketch",
        meta={
            "thin": {
                "widths": sketch.widths,
                "input_shape": [int(v) for v in shape],
                "params_dense": sketch.params_before,
                "params_thin": sketch.params_after,
                "macs_dense": sketch.macs_before,
                "macs_thin": sketch.macs_after,
            }
        },
        layers=[la.to_dict() for la in sketch.layers],
        record={
            "paper": "Lin et al., Filter Sketch for Network Pruning (arXiv 2001.08514)",
            "filters_before": sum(la.filters for la in sketch.layers),
            "filters_after": sum(la.keep if la.sketched else la.filters for la in sketch.layers),
            "campfire_masks_in_finetune": masks.to_dict() if masks is not None else None,
            **record,
        },
    )


class FilterSketch:
    """The ``filtersketch`` post-training method (:class:`~robustbench_sparse.posttrain.base.PostTrainMethod`).

    Options: ``finetune_epochs`` (default 3; 0 = sketch and re-estimate BatchNorm only), ``lr``
    (0.01, the reference's CIFAR fine-tune rate), ``batch_size`` (64), ``mask_granularity``
    (``none``, or a Campfire granularity whose masks are ramped in during the fine-tune, on the
    thin model: sketch first, then masks) and ``mask_sparsity`` (their target, default 0.5).
    """

    name = "filtersketch"
    summary = (
        "FilterSketch (Lin et al. 2020): Frequent-Directions sketch of each block's middle "
        "filters to (1 - s) of them, consumers' input slices sketched to match; a thinner "
        "dense model, BatchNorm re-estimated, short fine-tune (optionally with Campfire masks)"
    )
    granularities: tuple[str, ...] = ("filter",)
    data: DataNeed = "train"
    default_options: Mapping[str, Any] = {
        "finetune_epochs": 3,
        "lr": 0.01,
        "batch_size": 64,
        "mask_granularity": "none",
        "mask_sparsity": 0.5,
    }

    def run(
        self, model: nn.Module, config: PostTrainConfig, calibration: CalibrationData | None
    ) -> PostTrainResult:
        """Sketch ``model`` (not changed), re-estimate BatchNorm, fine-tune; the thin result.

        Raises:
            UserError: another granularity than ``filter``, invalid options, no training data,
                or nothing to sketch.
        """
        if config.granularity not in self.granularities:
            raise UserError(
                f"filtersketch thins whole filters; --granularity {config.granularity} is not "
                "one of its granularities (filter)"
            )
        options = {**self.default_options, **config.options}
        _check_options(options)
        train_set = calibration.train_set if calibration is not None else None
        if calibration is None or (train_set is None and calibration.images.shape[0] == 0):
            raise UserError("filtersketch needs training images (BatchNorm statistics, fine-tune)")
        epochs = int(options["finetune_epochs"])
        if epochs > 0 and train_set is None:
            raise UserError("filtersketch's fine-tune needs the training split; none was given")
        masks = _campfire_config(options, len(train_set) if train_set is not None else 0)  # type: ignore[arg-type]
        images = calibration.images
        bn_data: Dataset[Any] | Tensor = images if images.shape[0] else train_set  # type: ignore[assignment]
        shape = tuple(images.shape[1:]) if images.shape[0] else tuple(train_set[0][0].shape)  # type: ignore[index]
        sketch = sketch_model(model, config.sparsity, shape)
        seen = recalibrate_batchnorm(sketch.model, bn_data, device=config.device)
        history: list[dict[str, Any]] = []
        sparsifier: Sparsifier | None = None
        if epochs > 0:
            history, sparsifier = _finetune(sketch.model, train_set, options, config, masks)  # type: ignore[arg-type]
        sketch.model.eval()
        logger.info(
            "filtersketch: %d of %d middle layers sketched; parameters %d -> %d, MACs %d -> %d",
            sum(la.sketched for la in sketch.layers), len(sketch.layers), sketch.params_before,
            sketch.params_after, sketch.macs_before, sketch.macs_after,
        )  # fmt: skip
        record = {
            "keep_fraction": 1.0 - config.sparsity,
            "batchnorm": "sketched layers' BatchNorm re-initialised; all statistics re-estimated "
            f"on {seen} training images",
            "finetune_epochs": epochs,
            "finetune_history": history,
        }
        return _result(sketch, shape, sparsifier, masks, record)


#: the registry entry
FILTERSKETCH = FilterSketch()
