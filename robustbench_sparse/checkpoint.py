"""Self-describing checkpoints: ``checkpoint.safetensors`` (weights + masks) and ``checkpoint.json``.

The JSON holds everything needed to rebuild and judge the model (arch and kwargs, dataset,
normalisation, sparsity config and per-layer report, training config and history, accuracy, seed,
versions) plus the SHA-256 of the weights file, so a torn or mismatched pair is detected on load.

Loading never executes code: safetensors holds raw tensors only, and plain PyTorch state dicts
(``.pt`` / ``.pth``) are read with ``torch.load(weights_only=True)``, which refuses pickled objects.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from robustbench_sparse.atomic import atomic_path, atomic_write_text
from robustbench_sparse.checkpoint_files import (
    FORMAT,
    FORMAT_VERSION,
    MASK_PREFIX,
    META_FILE,
    PACKED_SUFFIX,
    WEIGHTS_FILE,
    check_finite,
    load_plain_state_dict,
    load_safetensors,
    read_meta,
    resolve_checkpoint_files,
    sha256_file,
)
from robustbench_sparse.datasets import (
    DatasetInfo,
    dataset_info,
    default_data_root,
    imagefolder_classes,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.imagefolder import resolve_layout
from robustbench_sparse.model_section import check_arch_kwargs
from robustbench_sparse.models import create_model, is_user_arch, load_state_dict_into
from robustbench_sparse.models.user_arch import warn_if_source_changed
from robustbench_sparse.models.widths import apply_widths
from robustbench_sparse.packed_format import load_packed
from robustbench_sparse.sparsity.detect import MEASURED_METHOD, measured_sparsity_report
from robustbench_sparse.sparsity.report import SparsityReport
from robustbench_sparse.state_dicts import (
    KEY_FLAG,
    describe_normalization,
    fold_prune_masks,
    resolve_normalization,
)

__all__ = [
    "MASK_PREFIX",
    "META_FILE",
    "WEIGHTS_FILE",
    "LoadedCheckpoint",
    "load_checkpoint",
    "load_train_state",
    "save_checkpoint",
    "save_train_state",
]

logger = logging.getLogger(__name__)


@dataclass
class LoadedCheckpoint:
    """A model rebuilt from a checkpoint, in eval mode, with its metadata."""

    model: nn.Module
    meta: dict[str, Any]
    path: Path
    name: str
    info: DatasetInfo
    masks: dict[str, torch.Tensor]

    @property
    def granularity(self) -> str:
        """``dense`` or the Campfire granularity."""
        return str(self.meta.get("granularity", "dense"))

    @property
    def sparsity_target(self) -> float:
        """Target sparsity (0 for dense)."""
        return float(self.meta.get("sparsity_target", 0.0))

    @property
    def sparsity_achieved(self) -> float:
        """Achieved sparsity over the pruned layers' weights (0 for dense)."""
        report = self.meta.get("sparsity_report") or {}
        return float(report.get("achieved_pruned", 0.0))

    def sparsity_report(self) -> SparsityReport:
        """Per-layer sparsity recomputed from the loaded weights.

        A checkpoint of this product is reported against its recorded sparsity config and pruned
        layers; one without them (a plain state dict) gets the pattern detected in its zeros
        (:func:`~robustbench_sparse.sparsity.detect.measured_sparsity_report`).
        """
        from robustbench_sparse.config import dataclass_from_dict
        from robustbench_sparse.sparsity import SparsityConfig, sparsity_report

        section = self.meta.get("sparsity")
        thin = bool(self.meta.get("thin"))  # thinned: its shapes are not the config's
        if thin:  # against the architecture's dense widths (removed weights count as pruned)
            return thin_checkpoint_report(self.model, self.meta)
        if self.meta.get("method") == MEASURED_METHOD or not isinstance(section, dict):
            return measured_sparsity_report(self.model)
        config = dataclass_from_dict(SparsityConfig, section, "sparsity")
        pruned = [str(n) for n in self.meta.get("pruned_layers") or []]
        return sparsity_report(self.model, config, pruned)


def _model_from_meta(meta: dict[str, Any]) -> nn.Module:
    """The architecture ``meta`` records, at its dense widths, with its input normalisation."""
    norm = meta.get("normalization") or {}
    return create_model(
        str(meta["arch"]),
        num_classes=int(meta["num_classes"]),
        in_channels=int(meta["in_channels"]),
        mean=norm.get("mean"),
        std=norm.get("std"),
        input_shape=meta.get("input_shape"),
        **dict(meta.get("arch_kwargs") or {}),
    )


def dense_weight_numels(meta: dict[str, Any]) -> dict[str, int]:
    """Conv2d/Linear weight name -> element count of the checkpoint's architecture at its dense
    widths (the model ``meta`` describes, built without its ``thin`` widths)."""
    from robustbench_sparse.sparsity.selection import weight_layers

    dense = _model_from_meta(meta)
    return {
        f"{name}.weight" if name else "weight": int(module.weight.numel())
        for name, module in weight_layers(dense)
    }


def thin_checkpoint_report(model: nn.Module, meta: dict[str, Any]) -> SparsityReport:
    """The sparsity report of a thinned ``model`` (``meta["thin"]``: FilterSketch, ``rbs export
    --format thin``) against its architecture's dense widths
    (:func:`~robustbench_sparse.sparsity.thinned.thinned_sparsity_report`): removed weights count
    as pruned, so the achieved figure is comparable with a masked model's."""
    from robustbench_sparse.sparsity.thinned import thinned_sparsity_report

    return thinned_sparsity_report(
        measured_sparsity_report(model),
        dense_weight_numels(meta),
        target=float(meta.get("sparsity_target", 0.0)),
        granularity=str(meta.get("granularity") or "thin"),
        method=str(meta.get("method") or MEASURED_METHOD),
    )


def _refuse_ghost_window(p: Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Raises UserError for a ToST checkpoint saved inside its ghost window: it holds ghost
    paths that exist only while training (:mod:`~robustbench_sparse.sparsity.methods.tost_ghosts`),
    so no model of its architecture can take its weights."""
    from robustbench_sparse.sparsity.methods.tost_ghosts import GHOST_NAME

    ghost = next((k for k in state if f".{GHOST_NAME}." in f".{k}"), None)
    if ghost is None:
        return
    epoch = meta.get("epochs_completed", "?")
    end = (
        (meta.get("sparsity") or {}).get("end", "?")
        if isinstance(meta.get("sparsity"), dict)
        else "?"
    )
    raise UserError(
        f"{p} was saved at epoch {epoch}, inside ToST's ghost window (its temporary ghost paths, "
        f"e.g. {ghost!r}, are removed when the prune window ends at epoch {end}): finish its "
        "training with `rbs train ... --resume` and load the final checkpoint"
    )


def save_checkpoint(
    out_dir: str | Path,
    model: nn.Module,
    meta: dict[str, Any],
    masks: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``out_dir/checkpoint.safetensors`` and ``out_dir/checkpoint.json`` atomically.

    ``meta`` must contain at least ``arch``, ``num_classes``, ``in_channels``, ``dataset``.
    Returns the directory.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for key in ("arch", "num_classes", "in_channels", "dataset"):
        if key not in meta:
            raise ValueError(f"checkpoint metadata lacks {key!r}")
    tensors: dict[str, torch.Tensor] = {
        k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()
    }
    for name, mask in (masks or {}).items():
        tensors[MASK_PREFIX + name] = mask.detach().to("cpu", torch.bool).contiguous()
    weights = out / WEIGHTS_FILE
    with atomic_path(weights) as tmp:
        # One metadata key only: safetensors keeps the metadata in a hash map whose order is
        # random per process, so two keys would make identical runs write different bytes.
        # The architecture and everything else live in checkpoint.json.
        save_file(tensors, str(tmp), metadata={"format": FORMAT})
    full_meta = {"format": FORMAT, "format_version": FORMAT_VERSION, **meta}
    full_meta["weights_sha256"] = sha256_file(weights)
    atomic_write_text(out / META_FILE, json.dumps(full_meta, indent=2, sort_keys=False) + "\n")
    return out


def _info_for(
    name: str, data_root: str | Path | None, recorded: dict[str, Any] | None = None
) -> DatasetInfo:
    """The dataset's metadata; an ``imagefolder``'s class count comes from its folders.

    ``recorded`` (a checkpoint's own metadata, when ``name`` is its dataset) supplies the class
    count, input shape and normalisation without touching the disk; with ``data_root`` an
    ``imagefolder``'s folders are still counted so that a different folder is caught.
    """
    info = dataset_info(name)
    if recorded is not None:
        norm = recorded.get("normalization") or {}
        shape = recorded.get("input_shape") or info.input_shape
        info = DatasetInfo(
            name,
            int(recorded["num_classes"]),
            (int(shape[0]), int(shape[1]), int(shape[2])),
            tuple(float(m) for m in norm.get("mean") or info.mean),
            tuple(float(v) for v in norm.get("std") or info.std),
        )
        if name != "imagefolder" or data_root is None:
            return info
    if name == "imagefolder":
        root = data_root if data_root is not None else default_data_root()
        classes = imagefolder_classes(root)
        shape = info.input_shape
        if recorded is None:  # a plain state dict: the evaluation images' own size, if uniform
            try:
                h, w = resolve_layout(root, ["test"]).size
                shape = (3, h, w)
            except UserError:
                pass  # mixed sizes: the images are resized to the recorded/placeholder shape
        info = DatasetInfo(name, len(classes), shape, info.mean, info.std)
    return info


def _check_dataset_fits(p: Path, meta: dict[str, Any], info: DatasetInfo) -> None:
    if int(meta["num_classes"]) != info.num_classes:
        raise UserError(
            f"checkpoint {p} has {meta['num_classes']} classes but dataset {info.name!r} has "
            f"{info.num_classes}; pass the dataset it was trained on"
        )
    if int(meta["in_channels"]) != info.input_shape[0]:
        raise UserError(
            f"checkpoint {p} takes {meta['in_channels']}-channel inputs but dataset {info.name!r} "
            f"has {info.input_shape[0]}; pass the dataset it was trained on"
        )


def _mask_names(model: nn.Module, masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Masks keyed by the model's own parameter names (plain keys gain the ``net.`` prefix)."""
    params = dict(model.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for key, mask in masks.items():
        name = key if key in params else f"net.{key}"
        if name in params:
            out[name] = mask
    return out


def _load_plain(
    p: Path,
    arch: str | None,
    dataset: str | None,
    arch_kwargs: dict[str, Any] | None,
    data_root: str | Path | None,
    normalize: str | None,
    state_dict_key: str | None = None,
) -> LoadedCheckpoint:
    if arch is None or dataset is None:
        raise UserError(f"{p} is a plain state dict: pass --arch and --dataset to load it")
    check_arch_kwargs(arch_kwargs or {})
    info = _info_for(dataset, data_root)
    plain, used_key = load_plain_state_dict(p, state_dict_key)
    state, masks = fold_prune_masks(plain, str(p))
    check_finite(state, p)
    mean, std, norm_label = resolve_normalization(normalize, info)
    normalization = {
        "mean": list(mean),
        "std": list(std),
        "source": norm_label,
        "assumed": normalize is None,  # no --normalize: the product cannot know, it assumes
    }
    applied, how = describe_normalization(normalization)
    # Said at every load: a wrong guess gives near-chance accuracy, not an error.
    (logger.warning if normalize is None else logger.info)(
        "%s: plain state dict, inputs normalized with %s; %s", p, applied, how
    )
    model = create_model(
        arch,
        num_classes=info.num_classes,
        in_channels=info.input_shape[0],
        mean=mean,
        std=std,
        input_shape=info.input_shape,
        **(arch_kwargs or {}),
    )
    load_state_dict_into(model, state)
    model.eval()
    masks = _mask_names(model, masks)
    # Nothing was recorded about how (or whether) it was pruned: read it off the zeros.
    report = measured_sparsity_report(model)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": arch_kwargs or {},
        "dataset": dataset,
        "num_classes": info.num_classes,
        "in_channels": info.input_shape[0],
        "input_shape": list(info.input_shape),
        "normalization": normalization,
        "granularity": report.granularity,
        "method": MEASURED_METHOD,
        # No target was recorded: the measured sparsity of the pruned layers stands in for it.
        "sparsity_target": report.achieved_pruned,
        "sparsity_report": report.to_dict(),
        "pruned_layers": report.pruned_names,
        "prune_masks_folded": sorted(masks),
        "source": "plain-state-dict",
        "state_dict_key": used_key,
    }
    if masks:
        logger.info(
            "%s: folded %d torch.nn.utils.prune mask(s) into the weights (%.2f%% of pruned "
            "layers' weights are zero)",
            p,
            len(masks),
            100 * report.achieved_pruned,
        )
    return LoadedCheckpoint(model, meta, p, p.stem, info, masks)


def _check_arch_trusted(
    p: Path,
    meta: dict[str, Any],
    arch: str | None,
    arch_kwargs: dict[str, Any] | None,
    trust_arch: bool,
) -> None:
    """A checkpoint of the user's own class is rebuilt only when the user names it (or trusts it).

    Rebuilding imports the recorded module, which runs its code: a checkpoint alone must never
    make that happen.
    """
    recorded = str(meta["arch"])
    if not is_user_arch(recorded):
        return
    recorded_kwargs = dict(meta.get("arch_kwargs") or {})
    if arch == recorded and arch_kwargs and dict(arch_kwargs) != recorded_kwargs:
        raise UserError(
            f"checkpoint {p} records arch kwargs {meta.get('arch_kwargs') or {}}, not "
            f"{dict(arch_kwargs)}; drop --arch-kwargs (a checkpoint records its own)"
        )
    if trust_arch or arch == recorded:
        return
    named = f", not {arch!r}," if arch is not None else ""
    raise UserError(
        f"checkpoint {p} is built from your own class {recorded!r}{named} and loading it would "
        f"import and run that module: pass --arch {recorded} (or --trust-arch) if you trust it"
    )


def load_checkpoint(
    path: str | Path,
    *,
    arch: str | None = None,
    dataset: str | None = None,
    arch_kwargs: dict[str, Any] | None = None,
    data_root: str | Path | None = None,
    normalize: str | None = None,
    state_dict_key: str | None = None,
    trust_arch: bool = False,
) -> LoadedCheckpoint:
    """Rebuild a model from a checkpoint directory / file, in eval mode on the CPU.

    A ``.pt`` / ``.pth`` plain state dict needs ``arch`` and ``dataset`` (which gives the class
    count); ``normalize`` says what input normalisation it expects (see
    :func:`resolve_normalization`; default the dataset's mean/std) and ``state_dict_key`` which
    entry of the file holds the weights (default: the one state dict it holds; see
    :func:`~robustbench_sparse.state_dicts.find_state_dict`). Its ``torch.nn.utils.prune``
    pairs are folded into weights + masks, and its sparsity and granularity are measured from the
    weights. ``dataset`` may also override a checkpoint's own dataset when the class count and
    input channels agree. An ``imagefolder``'s class count comes from its folders under
    ``data_root`` (default :func:`~robustbench_sparse.datasets.default_data_root`).

    A checkpoint of the user's own class (``package.module:ClassName``) is rebuilt only when
    ``arch`` names that class again or ``trust_arch`` is set: rebuilding imports its module
    (:mod:`robustbench_sparse.models.user_arch`), so a checkpoint alone never runs code.

    Raises:
        UserError: missing or corrupt files, a dataset that does not fit, a bad ``normalize``,
            a user architecture that was neither named nor trusted.
    """
    p = Path(path)
    if p.suffix in (".pt", ".pth"):
        return _load_plain(p, arch, dataset, arch_kwargs, data_root, normalize, state_dict_key)
    if normalize is not None:
        raise UserError(
            "--normalize applies to plain .pt/.pth state dicts only; a checkpoint directory "
            "records its own normalization"
        )
    if state_dict_key is not None:
        raise UserError(
            f"{KEY_FLAG} applies to plain .pt/.pth files only; {p} holds one model and needs no key"
        )

    if p.suffix == PACKED_SUFFIX:  # `rbs export --format packed`: metadata in its header
        meta, tensors = load_packed(p)
        weights_path = p
    else:
        weights_path, meta_path = resolve_checkpoint_files(p)
        meta = read_meta(meta_path)
        if not weights_path.is_file():
            raise UserError(f"checkpoint weights {weights_path} are missing")
        expected = meta.get("weights_sha256")
        if expected is not None and sha256_file(weights_path) != expected:
            raise UserError(
                f"{weights_path} does not match {meta_path.name} (checksum differs): the pair is "
                "torn or was edited; re-create or re-train this checkpoint"
            )
        tensors = load_safetensors(weights_path)
    masks = {k[len(MASK_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    check_finite(state, weights_path)
    _refuse_ghost_window(p, meta, state)

    _check_arch_trusted(p, meta, arch, arch_kwargs, trust_arch)
    ckpt_dataset = str(meta["dataset"])
    name = dataset or ckpt_dataset
    info = _info_for(name, data_root, meta if name == ckpt_dataset else None)
    _check_dataset_fits(p, meta, info)
    model = _model_from_meta(meta)
    warn_if_source_changed(str(meta["arch"]), meta.get("arch_source"))
    thin = meta.get("thin")
    if isinstance(thin, dict) and thin.get("widths"):  # `rbs export --format thin`
        apply_widths(model, thin["widths"])
    load_state_dict_into(model, state)
    model.eval()
    name = str(meta.get("name") or (p.name if p.is_dir() else p.stem))
    return LoadedCheckpoint(model, meta, p, name, info, masks)


def save_train_state(out_dir: str | Path, state: dict[str, Any]) -> None:
    """Persist the resumable training state (optimizer, LR schedule, sparsifier, history)."""
    with atomic_path(Path(out_dir) / "train_state.pt") as tmp:
        torch.save(state, str(tmp))


def load_train_state(out_dir: str | Path) -> dict[str, Any] | None:
    """Load the training state written by :func:`save_train_state` (``None`` if absent)."""
    path = Path(out_dir) / "train_state.pt"
    if not path.is_file():
        return None
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage input: see load_plain_state_dict
        raise UserError(f"cannot resume: {path} is unreadable ({exc}); start afresh") from None
    if not isinstance(state, dict):
        raise UserError(f"cannot resume: {path} is not a training state")
    return state
