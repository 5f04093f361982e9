"""One training job: ``load_dataset -> create_model -> sparsifier -> fit -> save_checkpoint``.

Used by ``rbs train`` and by the experiment runner (``rbs run``). Output directory rules: an existing
finished checkpoint is never overwritten without ``overwrite``; ``resume`` continues an interrupted
run (or returns the finished one untouched).

Under ``torchrun`` (several ranks) only rank 0 checks and prepares the output directory and writes
files; the other ranks wait at a barrier and then load the finished checkpoint too (with several
nodes, ``out_dir`` must be on a filesystem every node sees).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from robustbench_sparse import distributed as rdist
from robustbench_sparse.adversarial import AdversarialConfig
from robustbench_sparse.augmentation import (
    Augment,
    augmentation_record,
    parse_augment,
    resolve_augment,
)
from robustbench_sparse.autosparse_search import needs_search, search_threshold_decay
from robustbench_sparse.checkpoint import (
    META_FILE,
    LoadedCheckpoint,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from robustbench_sparse.config import (
    ConfigSchema,
    check_keys,
    dataclass_from_dict,
    dataclass_keys,
    deep_merge,
    to_jsonable,
)
from robustbench_sparse.data_roots import recorded_data_root
from robustbench_sparse.datasets import (
    DatasetSplits,
    dataset_info,
    default_data_root,
    load_dataset,
    load_split,
)
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.epoch_settings import (
    ADVERSARIAL_EPOCH_KEYS,
    SPARSITY_EPOCH_KEYS,
    TRAIN_EPOCH_KEYS,
    fit_derived_epochs,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.imagefolder import resolve_layout
from robustbench_sparse.model_section import check_user_arch, model_section
from robustbench_sparse.models import create_model_for
from robustbench_sparse.models.user_arch import source_record
from robustbench_sparse.outdir import TRAIN_RULES, prepare_output_dir
from robustbench_sparse.provenance import provenance
from robustbench_sparse.sparsity import PruningMethod, Sparsifier, SparsityConfig, sparsity_report
from robustbench_sparse.sparsity.methods.tost import check_tost_job
from robustbench_sparse.training import (
    Checkpointer,
    EpochRecord,
    TrainConfig,
    TrainResult,
    default_prune_window,
    default_train_config,
    distributed_layout,
    fit,
    validation_split,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataConfig:
    """Which dataset and how much of it."""

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    train_limit: int | None = None
    test_limit: int | None = None
    # training augmentation: auto (the dataset's recipe) | none | crop | crop-flip (bool: older
    # configs, true = auto, false = none)
    augment: Augment | bool = Augment.AUTO
    # imagefolder only: square input size (None: the images' own) and mean/std (None: computed)
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", parse_augment(self.augment))


@dataclass(frozen=True)
class TrainJob:
    """Everything that defines one checkpoint."""

    data: DataConfig = field(default_factory=DataConfig)
    arch: str = "small_cnn"
    arch_kwargs: tuple[tuple[str, Any], ...] = ()
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    name: str | None = None
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)


def _training_record(
    job: TrainJob, data: DatasetSplits, sparsifier: Sparsifier | None
) -> dict[str, Any]:
    record: dict[str, Any] = to_jsonable(job.train)
    if sparsifier is not None:
        used = sparsifier.label_smoothing(data.info.num_classes, job.train.label_smoothing)
        record["label_smoothing"] = float(used)
    return record


def _meta(
    job: TrainJob,
    data: DatasetSplits,
    model: nn.Module,
    sparsifier: Sparsifier | None,
    history: list[EpochRecord],
    *,
    test_correct: int,
    test_n: int,
    kind: str,
    name: str,
    seconds: float,
    distributed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    pruned = sparsifier.pruned_names if sparsifier is not None else []
    report = sparsity_report(model, job.sparsity, pruned)
    dense = job.sparsity.target == 0
    split = validation_split(len(data.train), job.train.val_fraction, job.train.seed)  # type: ignore[arg-type]
    return {
        "name": name,
        "kind": kind,
        "arch": job.arch,
        "arch_kwargs": dict(job.arch_kwargs),
        # the user's own package.module:Class: its file and SHA-256 (never imported on load alone)
        **({"arch_source": source_record(job.arch)} if source_record(job.arch) else {}),
        "dataset": data.info.name,
        # the absolute root the data was read from (rbs attack reads it again while it exists)
        "data_root": recorded_data_root(data.info.name, job.data.data_root),
        "num_classes": data.info.num_classes,
        "in_channels": data.info.input_shape[0],
        "input_shape": list(data.info.input_shape),
        "normalization": {
            "mean": list(data.info.mean),
            "std": list(data.info.std),
            "source": data.info.stats_source,
        },
        # Campfire: its granularity; other methods: gmp / random-erk / grasp / filter ...
        "granularity": "dense" if dense else job.sparsity.label,
        "method": job.sparsity.method.value,
        "sparsity_target": float(job.sparsity.target),
        "sparsity": to_jsonable(job.sparsity),
        "sparsity_report": report.to_dict(),
        "pruned_layers": list(pruned),
        "masks_frozen": bool(sparsifier.frozen) if sparsifier is not None else True,
        # the label smoothing the losses used (ToST sets its own: sparsity tost_label_smoothing)
        "training": _training_record(job, data, sparsifier),
        # The training threat model (method "none" = standard training), every value resolved.
        "adversarial_training": job.adversarial.record(history[-1].adv_eps if history else None),
        # The seeded hold-out that best/ and best-robust/ were selected on (never the test set).
        "validation": split.record(),
        "data": to_jsonable(job.data),
        "augmentation": augmentation_record(
            job.data.dataset, job.data.augment, data.info.input_shape
        ),
        "history": [vars(h) for h in history],
        "epochs_completed": len(history),
        "clean_accuracy": test_correct / max(test_n, 1),
        "test_correct": test_correct,
        "test_n": test_n,
        "seed": job.train.seed,
        "train_seconds": seconds,
        # world size, per-rank / effective batch, effective LR, masks verified across ranks
        "distributed": distributed or distributed_layout(job.train, len(split.train_indices)),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **provenance(resolve_device(job.train.device)),
    }


def is_finished(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a finished (all epochs) checkpoint."""
    meta_path = Path(out_dir) / META_FILE
    if not meta_path.is_file():
        return False
    try:
        import json

        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return False
    epochs = (meta.get("training") or {}).get("epochs")
    return bool(meta.get("kind") == "final" and meta.get("epochs_completed") == epochs)


def prepare_out_dir(out_dir: Path, *, overwrite: bool, resume: bool) -> None:
    """Apply ``rbs train``'s output-directory rules (:data:`~robustbench_sparse.outdir.TRAIN_RULES`)."""
    prepare_output_dir(out_dir, TRAIN_RULES, overwrite=overwrite, resume=resume)


def run_train_job(
    job: TrainJob,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    data: DatasetSplits | None = None,
) -> LoadedCheckpoint:
    """Train one checkpoint into ``out_dir`` and return it loaded back from disk.

    Steps: check the job, prepare the directory (rank 0), load the data, fit with per-epoch
    checkpoints (:class:`_EpochSaver`), save the final checkpoint.
    """
    out = Path(out_dir)
    _check_job(job, data)  # before the directory: with ``overwrite`` it deletes the old checkpoint

    # Rank 0 alone touches the directory; its verdict (or error) reaches every rank.
    def prepare() -> bool:
        prepare_out_dir(out, overwrite=overwrite, resume=resume)
        return bool(resume and is_finished(out))

    if rdist.on_main(prepare):
        logger.info("%s is already finished; skipping training", out)
        return load_checkpoint(out, arch=job.arch)
    data, plain_train = _load_job_data(job, data)
    search = None
    if needs_search(job.sparsity):  # autosparse at a target: search its threshold decay first
        info, kwargs = data.info, dict(job.arch_kwargs)
        search = search_threshold_decay(
            lambda: create_model_for(job.arch, info, **kwargs),
            *(data, job.train, job.sparsity, job.adversarial, plain_train),
        )
        decay = search.threshold_decay
        job = replace(job, sparsity=replace(job.sparsity, autosparse_threshold_decay=decay))
    torch.manual_seed(job.train.seed)
    model = create_model_for(job.arch, data.info, **dict(job.arch_kwargs))
    name = job.name or out.name
    saver = _EpochSaver(job, data, out, name, time.perf_counter())
    result = fit(
        model,
        data,
        job.train,
        job.sparsity,
        checkpointer=saver.checkpointer(),
        resume=resume,
        progress=progress,
        adversarial=job.adversarial,
        plain_train=plain_train,
    )
    if search is not None:
        result.extra["autosparse_search"] = search.record()
    _save_final(job, data, result, out, name)
    return load_checkpoint(out, arch=job.arch)  # the job names its arch: a user class is trusted


def load_job_dataset(job: TrainJob) -> DatasetSplits:
    """The train/test splits a job's ``[data]`` section names, seeded with the job's seed."""
    return load_dataset(
        job.data.dataset,
        root=job.data.data_root,
        download=job.data.download,
        train_limit=job.data.train_limit,
        test_limit=job.data.test_limit,
        augment=job.data.augment,
        seed=job.train.seed,
        image_size=job.data.image_size,
        mean=job.data.mean,
        std=job.data.std,
    )


def _check_job(job: TrainJob, data: DatasetSplits | None) -> None:
    """What can be refused before the output directory is touched."""
    if job.sparsity.end > job.train.epochs:
        raise UserError(
            f"pruning ends at epoch {job.sparsity.end} but training has only "
            f"{job.train.epochs} epochs; lower --prune-end or raise --epochs"
        )
    if data is None:
        dataset_info(job.data.dataset)  # unknown names fail here, listing the valid ones
    if job.adversarial.enabled:  # the training budget's units, once, before the first step
        job.adversarial.check_budget(_input_shape(job, data))
    info = data.info if data is not None else dataset_info(job.data.dataset)
    check_user_arch(job.arch, dict(job.arch_kwargs), info)  # a user class: import, kwargs, logits
    if job.sparsity.method is PruningMethod.TOST:  # --mask-from's masks fit; label smoothing
        model = create_model_for(job.arch, info, **dict(job.arch_kwargs))
        check_tost_job(job.sparsity, job.train.label_smoothing, model)


def _input_shape(job: TrainJob, data: DatasetSplits | None) -> tuple[int, ...] | None:
    """The model's ``(C, H, W)`` before loading (imagefolder: its headers; linf needs none)."""
    if data is not None:
        return data.info.input_shape
    if job.data.dataset != "imagefolder":
        return dataset_info(job.data.dataset).input_shape
    if job.adversarial.norm.value == "linf":
        return None
    root = job.data.data_root or default_data_root()
    return (3, *resolve_layout(root, ["train"], job.data.image_size).size)


def _load_job_data(job: TrainJob, data: DatasetSplits | None) -> tuple[DatasetSplits, Dataset[Any]]:
    """The job's data (``data`` when given) and its training split without augmentation.

    Under torchrun rank 0 downloads first; the others then read its copy. The validation
    hold-out is read without training augmentation (same examples, same order).
    """
    download_first = data is None and job.data.download and rdist.is_distributed()
    if download_first and not rdist.is_main():
        rdist.barrier()
    if data is None:
        data = load_job_dataset(job)
    if download_first and rdist.is_main():
        rdist.barrier()
    plain_train = data.train
    aug = augmentation_record(job.data.dataset, job.data.augment, data.info.input_shape)
    logger.info("training augmentation: %s", aug["description"])
    augmented = resolve_augment(job.data.dataset, job.data.augment) is not Augment.NONE
    if augmented and job.train.val_fraction > 0:
        plain_train = load_split(
            job.data.dataset,
            "train",
            job.data.data_root,
            False,
            job.data.train_limit,
            augment=False,
            seed=job.train.seed,
            image_size=job.data.image_size,
        )
    return data, plain_train


def _masks_of(sparsifier: Sparsifier | None) -> dict[str, torch.Tensor]:
    return dict(sparsifier.masks) if sparsifier is not None else {}


@dataclass
class _EpochSaver:
    """The per-epoch checkpoints ``fit`` writes: last (+ training state), best, best-robust."""

    job: TrainJob
    data: DatasetSplits
    out: Path
    name: str
    t0: float

    def checkpointer(self) -> Checkpointer:
        return Checkpointer(
            save_last=self.save_last,
            save_best=self.save_best,
            save_best_robust=self.save_best_robust,
            load_state=lambda: load_train_state(self.out),
        )

    def save_epoch(
        self,
        where: Path,
        kind: str,
        ckpt_name: str,
        model: nn.Module,
        sparsifier: Sparsifier | None,
        history: list[EpochRecord],
    ) -> None:
        rec = history[-1]
        test_n = len(self.data.test)  # type: ignore[arg-type]
        meta = _meta(
            self.job,
            self.data,
            model,
            sparsifier,
            history,
            test_correct=round(rec.test_accuracy * test_n),
            test_n=test_n,
            kind=kind,
            name=ckpt_name,
            seconds=time.perf_counter() - self.t0,
        )
        save_checkpoint(where, model, meta, _masks_of(sparsifier))

    def save_last(
        self,
        model: nn.Module,
        sparsifier: Sparsifier | None,
        history: list[EpochRecord],
        train_state: dict[str, Any],
    ) -> None:
        # Training state first, then the checkpoint: a kill in between resumes from the
        # newer state and rewrites the checkpoint at the next epoch.
        save_train_state(self.out, train_state)
        self.save_epoch(self.out, "last", self.name, model, sparsifier, history)

    def save_best(
        self, model: nn.Module, sparsifier: Sparsifier | None, history: list[EpochRecord]
    ) -> None:
        where = self.out / "best"
        self.save_epoch(where, "best", f"{self.name}-best", model, sparsifier, history)

    def save_best_robust(
        self, model: nn.Module, sparsifier: Sparsifier | None, history: list[EpochRecord]
    ) -> None:
        where, kind = self.out / "best-robust", "best-robust"
        self.save_epoch(where, kind, f"{self.name}-{kind}", model, sparsifier, history)


def _save_final(
    job: TrainJob, data: DatasetSplits, result: TrainResult, out: Path, name: str
) -> None:
    """The final checkpoint (rank 0 writes; every rank waits), and its summary log line."""
    meta = _meta(
        job,
        data,
        result.model,
        result.sparsifier,
        result.history,
        test_correct=result.test_correct,
        test_n=result.test_n,
        kind="final",
        name=name,
        seconds=result.seconds,
        distributed=result.extra.get("distributed"),
    )
    meta["best_epoch"] = result.best_epoch
    if "autosparse_search" in result.extra:  # every probe of the threshold-decay search
        meta["autosparse_search"] = result.extra["autosparse_search"]
    if job.adversarial.enabled:
        meta["best_robust_epoch"] = result.extra.get("best_robust_epoch", -1)
    if rdist.is_main():
        save_checkpoint(out, result.model.to("cpu"), meta, _masks_of(result.sparsifier))
        (out / "train_state.pt").unlink(missing_ok=True)
    rdist.barrier()
    logger.info(
        "trained %s: test accuracy %.4f (%d/%d), sparsity %.4f, %.1fs",
        name,
        meta["clean_accuracy"],
        result.test_correct,
        result.test_n,
        meta["sparsity_report"].get("achieved_pruned", 0.0),
        result.seconds,
    )


def job_with(job: TrainJob, **changes: Any) -> TrainJob:
    """``dataclasses.replace`` for jobs (kept here so callers need not import dataclasses)."""
    return replace(job, **changes)


#: the keys of a training config: ``[data]``, ``[model]`` (``arch`` + any model keyword),
#: ``[train]``, ``[sparsity]``, ``[adversarial]`` and a top-level ``name``
TRAIN_SCHEMA = ConfigSchema(
    sections={
        "data": dataclass_keys(DataConfig),
        "model": None,
        "train": dataclass_keys(TrainConfig),
        "sparsity": dataclass_keys(SparsityConfig),
        "adversarial": dataclass_keys(AdversarialConfig),
    },
    scalars=("name",),
)


def train_job_from_config(
    config: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    *,
    data_overrides: Mapping[str, Any] | None = None,
    train_overrides: Mapping[str, Any] | None = None,
    sparsity_overrides: Mapping[str, Any] | None = None,
    adversarial_overrides: Mapping[str, Any] | None = None,
    arch: str | None = None,
    name: str | None = None,
) -> TrainJob:
    """Compose a :class:`TrainJob` from a config and a layer of overrides above it.

    Both are plain nested dicts of the same shape (:data:`TRAIN_SCHEMA`: ``[data]``, ``[model]``
    with ``arch`` + any model kwargs, ``[train]``, ``[sparsity]``, ``[adversarial]``, ``name``),
    e.g. a TOML file and ``{"train": {"epochs": 3}, "sparsity": {"target": 0.7}}``; ``None``
    values in ``overrides`` are unset. The keywords are shorthands for sections of ``overrides``
    (``sparsity_overrides={...}`` is ``overrides={"sparsity": {...}}``; ``arch``, ``name``).

    Precedence: overrides > config > per-dataset defaults; epoch-valued settings of a lower layer
    than ``epochs`` are fitted to it (:func:`fit_derived_epochs`). The pruning window defaults to
    :func:`default_prune_window` of the final epoch count.
    """
    shorthands = {
        "data": data_overrides,
        "train": train_overrides,
        "sparsity": sparsity_overrides,
        "adversarial": adversarial_overrides,
        "model": {"arch": arch or None},
        "name": name or None,
    }
    layers = [dict(config), deep_merge(deep_merge({}, overrides or {}), shorthands)]
    for layer in layers:
        check_keys("config", layer, TRAIN_SCHEMA.top_keys())
    data_cfg = dataclass_from_dict(DataConfig, _merged_section(layers, "data"), "data")
    arch_name, arch_kwargs = model_section([_section(layer, "model") for layer in layers])
    train_layers = [
        to_jsonable(default_train_config(data_cfg.dataset)),
        *(_section(layer, "train") for layer in layers),
    ]
    train_cfg = _train_config(train_layers)
    sparsity_cfg = _sparsity_config(layers, train_layers, train_cfg.epochs)
    return TrainJob(
        data=data_cfg,
        arch=arch_name,
        arch_kwargs=tuple(sorted(arch_kwargs.items())),
        train=train_cfg,
        sparsity=sparsity_cfg,
        name=layers[1].get("name") or layers[0].get("name"),
        adversarial=_adversarial_config(layers, train_layers, train_cfg.epochs),
    )


def _section(layer: Mapping[str, Any], name: str) -> dict[str, Any]:
    table = layer.get(name, {})
    if not isinstance(table, Mapping):
        raise UserError(f"[{name}] must be a table of keys, got {table!r}")
    return dict(table)


def _merged_section(layers: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return {k: v for layer in layers for k, v in _section(layer, name).items()}


def _train_config(train_layers: list[dict[str, Any]]) -> TrainConfig:
    """``[train]`` over the dataset defaults; the LR step / milestones are fitted only under the
    schedule that uses them."""
    schedule = {k: v for layer in train_layers for k, v in layer.items()}.get("lr_schedule")
    schedule = str(getattr(schedule, "value", schedule))
    used = {"warmup_epochs", {"step": "step_size", "multistep": "milestones"}.get(schedule, "")}
    train_rules = {k: rule for k, rule in TRAIN_EPOCH_KEYS.items() if k in used}
    train_section = fit_derived_epochs(train_layers, train_layers, train_rules)
    return dataclass_from_dict(TrainConfig, train_section, "train")


def _sparsity_config(
    layers: list[dict[str, Any]], train_layers: list[dict[str, Any]], epochs: int
) -> SparsityConfig:
    """``[sparsity]`` over the default pruning window of the final ``epochs``."""
    start, end = default_prune_window(epochs)
    sparsity_layers = [
        {"start": start, "end": end},  # derived from the final epochs: always fits
        *(_section(layer, "sparsity") for layer in layers),
    ]
    sparsity_section = fit_derived_epochs(
        sparsity_layers, train_layers, SPARSITY_EPOCH_KEYS, joint=True
    )
    return dataclass_from_dict(SparsityConfig, sparsity_section, "sparsity")


def _adversarial_config(
    layers: list[dict[str, Any]], train_layers: list[dict[str, Any]], epochs: int
) -> AdversarialConfig:
    """``[adversarial]`` with its eps warm-up fitted to (or checked against) the final ``epochs``."""
    adv_layers = [{}, *(_section(layer, "adversarial") for layer in layers)]
    adv = adversarial_from_dict(
        fit_derived_epochs(adv_layers, train_layers, ADVERSARIAL_EPOCH_KEYS)
    )
    adv.check_warmup(epochs)
    return adv


def adversarial_from_dict(section: Mapping[str, Any]) -> AdversarialConfig:
    """:class:`AdversarialConfig` from a TOML ``[adversarial]`` table (eps may be ``"8/255"``)."""
    check_keys("adversarial", section, dataclass_keys(AdversarialConfig))
    return AdversarialConfig(**section)
