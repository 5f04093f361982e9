"""One post-training job: ``load_checkpoint -> data -> method.run -> evaluate -> checkpoint``.

:func:`run_prune_job` is what ``rbs prune`` calls. The output is an ordinary checkpoint
(``checkpoint.safetensors`` + ``checkpoint.json``) that ``rbs attack``, ``rbs inspect``, ``rbs cost``,
reports and exports load like a trained one: the masks are saved beside the weights, the
``sparsity`` section and ``pruned_layers`` let the sparsity report be rebuilt from the weights
(achieved beside target, with its denominator), and ``post_training`` records the method, its
settings, the source checkpoint (path, name, weights SHA-256, accuracy), the calibration data and
the per-layer report. Everything else of the source's metadata (training, threat model,
normalisation, history) is kept: it says how the weights that were pruned came about.

Nothing half-written: the directory is written under a temporary name next to ``out`` and renamed
into place at the end; a non-empty ``out`` is refused unless ``overwrite``, and refused before any
work is done.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from robustbench_sparse.checkpoint import (
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
    thin_checkpoint_report,
)
from robustbench_sparse.checkpoint_files import resolve_checkpoint_files, sha256_file
from robustbench_sparse.data_roots import load_evaluation_split
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.posttrain import get_post_training_method
from robustbench_sparse.posttrain.base import PostTrainConfig, PostTrainMethod, PostTrainResult
from robustbench_sparse.posttrain.data import DEFAULT_CALIBRATION_IMAGES, calibration_data
from robustbench_sparse.provenance import provenance
from robustbench_sparse.sparsity.config import SparsityConfig
from robustbench_sparse.sparsity.detect import measured_sparsity_report
from robustbench_sparse.sparsity.report import sparsity_report
from robustbench_sparse.training.evaluation import evaluate

__all__ = ["PruneJob", "run_prune_job"]

logger = logging.getLogger(__name__)

#: source metadata that describes the source file, not the new checkpoint
_DROPPED = (
    "format",
    "format_version",
    "weights_sha256",
    "source",
    "state_dict_key",
    "prune_masks_folded",
    "best_epoch",
    "best_robust_epoch",
)


@dataclass(frozen=True)
class PruneJob:
    """Everything ``rbs prune`` was asked.

    Attributes:
        source: the trained checkpoint (directory, ``.safetensors``, or a plain ``.pt`` with
            ``load["arch"]`` / ``load["dataset"]``).
        out: the new checkpoint's directory.
        config: method, sparsity, granularity (``None``: the method's default), seed, device,
            options.
        calibration: images in the calibration pool.
        calibration_data: ``"train"`` (real training images) or ``"fractal"`` (data-free).
        data_root: ``--data-root`` (default: the recorded root).
        overwrite: replace a non-empty ``out``.
        name: the checkpoint name (default: ``out``'s directory name).
        load: keyword arguments of :func:`~robustbench_sparse.checkpoint.load_checkpoint`
            (``arch``, ``dataset``, ``arch_kwargs``, ``normalize``, ``state_dict_key``,
            ``trust_arch``).
    """

    source: Path
    out: Path
    config: PostTrainConfig
    calibration: int = DEFAULT_CALIBRATION_IMAGES
    calibration_data: str = "train"
    data_root: str | None = None
    overwrite: bool = False
    name: str | None = None
    load: dict[str, Any] = field(default_factory=dict)


def _checked_config(job: PruneJob) -> tuple[PostTrainMethod, PostTrainConfig]:
    method = get_post_training_method(job.config.method)
    granularity = str(job.config.granularity).strip().lower()
    if granularity not in method.granularities:
        raise UserError(
            f"--method {method.name} supports --granularity {', '.join(method.granularities)}; "
            f"got {job.config.granularity!r}"
        )
    config = PostTrainConfig(
        method.name,
        job.config.sparsity,
        granularity,
        job.config.seed,
        job.config.device,
        job.config.options,
    )
    return method, config.with_defaults(method.default_options)


def check_output_dir(out: Path, source: Path, overwrite: bool) -> None:
    """Refuse (before any work) an ``out`` that is a file, the source, or non-empty.

    Raises:
        UserError: one line saying what to pass.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file; pass a directory")
    src_dir = source if source.is_dir() else source.parent
    if out.exists() and out.resolve() == src_dir.resolve():
        raise UserError(f"--out {str(out)!r} is the checkpoint being pruned; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(
            f"output directory {str(out)!r} already exists and is not empty; "
            "pass --overwrite to replace it or choose another --out"
        )


def _check_dense(ckpt: LoadedCheckpoint, method: str) -> None:
    thin = ckpt.meta.get("thin")
    if ckpt.sparsity_target > 0 or ckpt.masks or thin:
        if thin:
            what = "thinned"
        elif ckpt.sparsity_target > 0:
            what = f"pruned ({ckpt.granularity}, target {ckpt.sparsity_target:.0%})"
        else:
            what = f"masked ({len(ckpt.masks)} pruning mask(s) in its weights file)"
        raise UserError(
            f"rbs prune --method {method} starts from a dense checkpoint; {ckpt.name} is "
            f"already {what}: pass the dense checkpoint it came from"
        )


def run_prune_job(job: PruneJob) -> Path:
    """Run ``job`` and write its checkpoint; returns ``job.out``.

    Raises:
        UserError: an unknown method or granularity, bad options, a refused ``out``, a source
            that is not a dense trained checkpoint, missing data (all one line).
    """
    method, config = _checked_config(job)
    check_output_dir(job.out, job.source, job.overwrite)
    ckpt = load_checkpoint(job.source, data_root=job.data_root, **job.load)
    _check_dense(ckpt, method.name)
    data = calibration_data(
        ckpt,
        method.data,
        n=job.calibration,
        source=job.calibration_data,
        seed=config.seed,
        data_root=job.data_root,
    )
    device = resolve_device(config.device)
    model = ckpt.model.to(device).eval()
    if data is not None:
        data.images = data.images.to(device)
    started = time.perf_counter()
    result = method.run(model, config, data)
    result.check()
    seconds = time.perf_counter() - started
    result.model.eval()
    accuracy = _test_accuracy(result, ckpt, job.data_root, device)
    meta = _meta(job, ckpt, config, result, data.record if data is not None else None)
    meta.update(accuracy)
    meta["post_training"]["seconds"] = seconds
    meta.update(provenance(device))
    _write(job.out, result, meta, job.overwrite)
    _log_summary(job.out, meta)
    return job.out


def _test_accuracy(
    result: PostTrainResult, ckpt: LoadedCheckpoint, data_root: str | None, device: Any
) -> dict[str, Any]:
    """Clean accuracy on the test split the source was evaluated on (same limit)."""
    dataset = str(ckpt.meta["dataset"])
    data = ckpt.meta.get("data") if isinstance(ckpt.meta.get("data"), dict) else {}
    try:
        test = load_evaluation_split(
            dataset,
            {ckpt.name: ckpt.meta.get("data_root")},
            data_root,
            limit=(data or {}).get("test_limit"),
            image_size=(data or {}).get("image_size"),
        )
    except UserError as exc:
        logger.warning("clean accuracy not measured: %s", exc)
        return {"clean_accuracy": None, "test_correct": None, "test_n": None}
    _, correct, n = evaluate(result.model, test, device=device)
    return {"clean_accuracy": correct / max(n, 1), "test_correct": correct, "test_n": n}


def _meta(
    job: PruneJob,
    ckpt: LoadedCheckpoint,
    config: PostTrainConfig,
    result: PostTrainResult,
    calibration: dict[str, Any] | None,
) -> dict[str, Any]:
    meta = {k: v for k, v in ckpt.meta.items() if k not in _DROPPED}
    if result.meta.get("thin"):  # narrower layers: removed weights count against the dense ones
        report = thin_checkpoint_report(
            result.model,
            {
                **meta,
                "sparsity_target": config.sparsity,
                "granularity": result.granularity,
                "method": config.method,
            },
        )
        target = config.sparsity
    elif result.sparsity is not None:
        sparsity = SparsityConfig.from_dict(result.sparsity)
        report = sparsity_report(result.model, sparsity, result.pruned_layers)
        target = sparsity.target
    else:
        report = measured_sparsity_report(result.model)
        target = config.sparsity
    # the post-training method names the row, also where its masks come from another method
    # (FilterSketch's fine-tune with Campfire masks records those masks under "sparsity")
    method = config.method
    meta.update(
        name=job.name or job.out.name,
        kind="post-training",
        granularity=result.granularity,
        method=method,
        sparsity_target=float(target),
        sparsity=result.sparsity,
        sparsity_report=report.to_dict(),
        pruned_layers=list(result.pruned_layers),
        masks_frozen=True,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    meta.update({k: v for k, v in result.meta.items() if k not in meta or k == "thin"})
    meta["post_training"] = {
        "method": config.method,
        "summary": get_post_training_method(config.method).summary,
        "config": config.to_dict(),
        "source": {
            "path": str(ckpt.path.resolve()),
            "name": ckpt.name,
            "weights_sha256": sha256_file(_weights_file(ckpt.path)),
            "clean_accuracy": ckpt.meta.get("clean_accuracy"),
        },
        "calibration": calibration,
        "settings": result.record,
        "layers": result.layers,
    }
    return meta


def _weights_file(path: Path) -> Path:
    """The file holding the source's weights: a directory's or a ``.json``'s safetensors, else
    the file itself (``.safetensors``, ``.rbsp``, ``.pt`` / ``.pth``)."""
    if path.is_dir() or path.suffix == ".json":
        return resolve_checkpoint_files(path)[0]
    return path


def _write(out: Path, result: PostTrainResult, meta: dict[str, Any], overwrite: bool) -> None:
    """Write the checkpoint under a temporary name beside ``out``, then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.rbs-prune-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_checkpoint(tmp, result.model.to("cpu"), meta, result.masks)
        if out.exists():
            if any(out.iterdir()) and not overwrite:  # appeared while we worked
                raise UserError(
                    f"output directory {str(out)!r} was filled meanwhile; pass --overwrite"
                )
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _log_summary(out: Path, meta: dict[str, Any]) -> None:
    report = meta["sparsity_report"]
    acc = meta.get("clean_accuracy")
    source_acc = meta["post_training"]["source"].get("clean_accuracy")
    logger.info(
        "wrote %s: %s, target %.2f%%, achieved %.2f%% of the pruned layers' weights (%d/%d zero); "
        "clean accuracy %s (source %s)",
        out,
        meta["granularity"],
        100 * meta["sparsity_target"],
        100 * report["achieved_pruned"],
        report["numel_pruned"] - report["nnz_pruned"],
        report["numel_pruned"],
        "n/a" if acc is None else f"{acc:.4f}",
        "n/a" if source_acc is None else f"{source_acc:.4f}",
    )
