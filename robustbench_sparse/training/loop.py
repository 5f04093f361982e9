"""Training loop: dense or Campfire-sparse, seeded, resumable, with per-epoch history.

``fit`` owns the optimisation only: the sparsity logic lives in the sparsifier (a
:class:`~robustbench_sparse.sparsity.Sparsifier`, reached only through its hooks) and the file
format in :mod:`robustbench_sparse.checkpoint`. Its named steps: set up the run (hold-out,
placement, sparsifier, optimizer), restore a saved state, start the sparsifier, then per epoch
:func:`~robustbench_sparse.training.epoch.train_one_epoch`, evaluate, select the best epochs and
save; finally freeze what is left and evaluate once more.

Determinism: the data order and augmentation of epoch ``e`` depend only on ``(seed, e)`` (the global
RNG is re-seeded at every epoch start), so a run resumed after epoch ``e`` sees exactly the batches an
uninterrupted run sees, and on CPU reproduces its weights and masks bit for bit.

Distributed (``torchrun``, see :mod:`robustbench_sparse.distributed`): when a process group with
more than one rank exists, the model is wrapped in ``DistributedDataParallel`` (optionally with
SyncBatchNorm), every rank reads its own part of each epoch through a ``DistributedSampler``
seeded with ``(seed, epoch)``, and ``batch_size`` is the *per-rank* batch: the effective batch is
``batch_size x world_size`` and ``scale_lr`` multiplies the LR by ``world_size`` (linear scaling).
The sparsifier works on the unwrapped model (parameter names without ``module.``); after every
mask update the masks are verified bit-identical on all ranks (a mismatch is an error). Losses,
accuracies and test metrics are all-reduced, so the history is the same on every rank. Only rank
0 calls the checkpointer's save functions and shows progress bars; the others wait for it.

Model selection: a seeded ``val_fraction`` of the training set (:func:`validation_split`) is held
out; the ``best`` checkpoint is the epoch (with final masks) of highest *validation* accuracy,
never selected on the test set. With adversarial training (:mod:`robustbench_sparse.adversarial`)
every epoch also records the PGD robust validation accuracy at the training budget and a
``best-robust`` checkpoint is kept (robust overfitting, Rice et al. 2020, shows as a gap between
it and ``last``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from robustbench_sparse import distributed as rdist
from robustbench_sparse.adversarial import AdversarialConfig, robust_loss
from robustbench_sparse.datasets import DatasetSplits
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import (
    LossFn,
    Sparsifier,
    SparsityConfig,
    TrainingContext,
    calibration_batches,
    create_sparsifier,
)
from robustbench_sparse.threads import rebalance
from robustbench_sparse.training.config import TrainConfig
from robustbench_sparse.training.data import ValidationSplit, distributed_layout, validation_split
from robustbench_sparse.training.epoch import (
    EpochTotals,
    MaskSync,
    TrainingRun,
    share_rank0_masks,
    train_one_epoch,
)
from robustbench_sparse.training.evaluation import evaluate_all, robust_accuracy_all
from robustbench_sparse.training.optim import build_optimizer, lr_factor
from robustbench_sparse.training.records import BestEpochs, Checkpointer, EpochRecord, TrainResult

logger = logging.getLogger(__name__)

__all__ = ["fit"]


def fit(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    sparsity: SparsityConfig | None = None,
    *,
    checkpointer: Checkpointer | None = None,
    resume: bool = False,
    progress: bool = True,
    adversarial: AdversarialConfig | None = None,
    plain_train: Dataset[Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.train``; prune with ``sparsity.method`` when ``sparsity.target > 0``.

    The sparsifier is stepped after every optimizer step (mask update when due, mask re-applied,
    optimizer state zeroed at pruned positions). With ``resume`` the state returned by
    ``checkpointer.load_state()`` (model, optimizer, LR schedule, sparsifier, history) is restored
    and training continues at the next epoch.

    ``config.val_fraction`` of ``data.train`` is held out (:func:`validation_split`) and read
    from ``plain_train`` (the same examples without augmentation; default ``data.train``).
    ``adversarial`` (method other than ``none``) trains on adversarials crafted per batch
    (:mod:`robustbench_sparse.adversarial`); each rank crafts those of its own shard.
    """
    device = _training_device(config)
    torch.manual_seed(config.seed)
    adv = adversarial if adversarial is not None and adversarial.enabled else None
    split, train_set, val_set = _hold_out(data, config, plain_train)
    layout = distributed_layout(config, len(train_set))  # type: ignore[arg-type]
    steps_per_epoch = int(layout["steps_per_epoch"])
    model = _place_model(model, config, layout, device)
    # The sparsifier holds the unwrapped model's parameters (names without a "module." prefix);
    # DDP shares those very Parameter objects, so masks applied here are what DDP trains.
    sparsifier: Sparsifier | None = None
    if sparsity is not None and sparsity.target > 0:
        sparsifier = create_sparsifier(sparsity, steps_per_epoch)  # sparsity.method
        sparsifier.prepare(model)
        smoothing = sparsifier.label_smoothing(data.info.num_classes, config.label_smoothing)
        config = replace(config, label_smoothing=smoothing)  # ToST sets its own
    mask_sync = MaskSync(sparsifier)
    mask_sync.check()
    optimizer = build_optimizer(model, replace(config, lr=float(layout["effective_lr"])))
    if sparsifier is not None:  # its own trainable tensors (thresholds) join the optimizer
        sparsifier.attach_optimizer(optimizer, config.weight_decay)
    run = TrainingRun(
        model=model,
        train_model=model,
        train_set=train_set,
        val_set=val_set,
        test_set=data.test,
        config=config,
        adv=adv,
        device=device,
        use_amp=config.amp and device.type == "cuda",
        steps_per_epoch=steps_per_epoch,
        layout=layout,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, steps_per_epoch, config)
        ),
        scaler=torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda"),
        criterion=nn.CrossEntropyLoss(label_smoothing=config.label_smoothing),
        sparsifier=sparsifier,
        mask_sync=mask_sync,
        context=_training_context(model, train_set, config, adv, device),
        checkpointer=checkpointer,
        progress=progress,
    )
    if resume:
        _resume(run)
    if sparsifier is not None and sparsifier.on_train_start(run.context):
        share_rank0_masks(sparsifier)  # GPU scoring need not be bitwise equal across ranks
    mask_sync.check()
    run.train_model = _wrap_ddp(model, device)

    t_start = time.perf_counter()
    for epoch in range(len(run.history), config.epochs):
        rebalance()  # the automatic thread count follows the machine's load, epoch by epoch
        t_epoch = time.perf_counter()
        totals = train_one_epoch(run, epoch)
        record = _evaluate_epoch(run, epoch, totals, time.perf_counter() - t_epoch)
        _select_best(run, record)
        _save_last(run)
        rdist.barrier()  # the others wait while rank 0 writes
    return _finish(run, split, time.perf_counter() - t_start)


def _training_device(config: TrainConfig) -> torch.device:
    """The device to train on; under DDP on CUDA, this rank's GPU."""
    device = resolve_device(config.device)
    if rdist.is_distributed() and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK
    return device


def _hold_out(
    data: DatasetSplits, config: TrainConfig, plain_train: Dataset[Any] | None
) -> tuple[ValidationSplit, Dataset[Any], Dataset[Any] | None]:
    """(split, examples trained on, held-out validation examples or None)."""
    split = validation_split(len(data.train), config.val_fraction, config.seed)  # type: ignore[arg-type]
    if plain_train is not None and len(plain_train) != len(data.train):  # type: ignore[arg-type]
        raise ValueError("plain_train must hold the same examples as data.train (same length)")
    if not split.val_indices:
        return split, data.train, None
    plain = plain_train if plain_train is not None else data.train
    return split, Subset(data.train, split.train_indices), Subset(plain, split.val_indices)


def _place_model(
    model: nn.Module, config: TrainConfig, layout: dict[str, Any], device: torch.device
) -> nn.Module:
    """Log the DDP layout, convert BatchNorm to SyncBatchNorm if asked, move to ``device``."""
    if rdist.is_distributed():
        logger.info(
            "DDP: %d ranks (%s), per-rank batch %d, effective batch %d, lr %g%s",
            layout["world_size"],
            layout["backend"],
            config.batch_size,
            layout["effective_batch_size"],
            layout["effective_lr"],
            " (linearly scaled)" if config.scale_lr else "",
        )
    if layout["sync_bn"]:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    elif config.sync_bn:
        logger.info("sync_bn has no effect in a single process")
    model.to(device)
    return model


def _training_loss(config: TrainConfig, adv: AdversarialConfig | None) -> LossFn:
    """The run's training loss of a module on ``(x, y)``: its adversarial method at the full
    budget, or the cross-entropy for standard training (label smoothing included)."""

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if adv is None:
            return nn.functional.cross_entropy(net(x), y, label_smoothing=config.label_smoothing)
        return robust_loss(net, x, y, adv, adv.eps, label_smoothing=config.label_smoothing).loss

    return loss_fn


def _training_context(
    model: nn.Module,
    train_set: Dataset[Any],
    config: TrainConfig,
    adv: AdversarialConfig | None,
    device: torch.device,
) -> TrainingContext:
    """What the sparsifier hooks may use: seeded unsharded batches (the same on every rank)."""

    def batches(seed: int) -> Any:
        return calibration_batches(
            train_set, batch_size=config.batch_size, seed=seed, device=device
        )

    return TrainingContext(model, batches, _training_loss(config, adv), config.seed)


def _resume(run: TrainingRun) -> None:
    """Restore model, optimizer, LR schedule, sparsifier, history and best epochs if saved."""
    checkpointer = run.checkpointer
    if checkpointer is None or checkpointer.load_state is None:
        return
    # Rank 0 reads the state and every rank gets the very same copy (no shared disk needed).
    state = rdist.broadcast_object(checkpointer.load_state() if rdist.is_main() else None)
    if state is None:
        return
    saved_world = int(state.get("world_size", 1))
    if saved_world != run.layout["world_size"]:
        raise UserError(
            f"cannot resume: the run was trained with {saved_world} process(es), this "
            f"one has {run.layout['world_size']} (batching and LR schedule would change); "
            f"resume with --nproc {saved_world}"
        )
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    if run.sparsifier is not None and state.get("sparsifier") is not None:
        run.sparsifier.load_state_dict(state["sparsifier"])
    run.history = [EpochRecord(**h) for h in state["history"]]
    run.best = BestEpochs.from_state(state)
    logger.info("resuming after epoch %d", len(run.history))


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """The module the forward passes go through: DDP around ``model`` under DDP, else ``model``."""
    if not rdist.is_distributed():
        return model
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=False,
    )


def _evaluate_epoch(
    run: TrainingRun, epoch: int, totals: EpochTotals, seconds: float
) -> EpochRecord:
    """Test and validation accuracy after epoch ``epoch``; the record is appended and logged."""
    model, device, adv, sparsifier = run.model, run.device, run.adv, run.sparsifier
    test_loss, test_correct, test_n = evaluate_all(model, run.test_set, device=device)
    val_acc: float | None = None
    val_rob: float | None = None
    if run.val_set is not None:
        _, val_correct, val_n = evaluate_all(model, run.val_set, device=device)
        val_acc = val_correct / max(val_n, 1)
        if adv is not None and adv.has_budget:  # gaussian: no budget to attack at
            val_rob = robust_accuracy_all(
                model, run.val_set, adv, device=device, seed=run.config.seed
            )
    seen = max(totals.seen, 1)
    record = EpochRecord(
        epoch=epoch + 1,
        train_loss=totals.loss_sum / seen,
        train_accuracy=totals.correct / seen,
        test_loss=test_loss,
        test_accuracy=test_correct / max(test_n, 1),
        lr=float(run.optimizer.param_groups[0]["lr"]),
        sparsity=sparsifier.current_sparsity if sparsifier else 0.0,
        masks_frozen=sparsifier.frozen if sparsifier else True,
        seconds=seconds,
        train_adv_loss=totals.adv_loss_sum / seen if adv is not None else None,
        train_adv_accuracy=totals.adv_correct / seen if adv is not None else None,
        adv_eps=totals.eps if adv is not None else None,
        val_accuracy=val_acc,
        val_robust_accuracy=val_rob,
    )
    run.history.append(record)
    logger.info(
        "epoch %d/%d loss %.4f train acc %.4f%s val acc %s%s test acc %.4f sparsity %.3f (%.1fs)",
        record.epoch,
        run.config.epochs,
        record.train_loss,
        record.train_accuracy,
        f" adv acc {record.train_adv_accuracy:.4f}" if adv is not None else "",
        "-" if val_acc is None else f"{val_acc:.4f}",
        "" if val_rob is None else f" val robust acc {val_rob:.4f}",
        record.test_accuracy,
        record.sparsity,
        record.seconds,
    )
    return record


def _select_best(run: TrainingRun, record: EpochRecord) -> None:
    """Keep ``best`` (and ``best-robust``) when the validation accuracy improved.

    "Best" only counts epochs whose masks are final (an earlier, denser model is not a sparse
    model at the target sparsity) and, with adversarial training, whose last step trained at the
    full budget (after the eps warm-up); it is selected on the validation split, never on the
    test set that is attacked afterwards.
    """
    best, ck, main = run.best, run.checkpointer, rdist.is_main()
    val_acc, val_rob = record.val_accuracy, record.val_robust_accuracy
    # Nor an epoch of the eps warm-up: its model never trained at the budget it is labelled with.
    if run.adv is not None and (record.adv_eps is None or record.adv_eps < run.adv.eps):
        return
    if record.masks_frozen and val_acc is not None and val_acc > best.accuracy:
        best.accuracy, best.epoch = val_acc, record.epoch
        if main and ck is not None and ck.save_best is not None:
            ck.save_best(run.model, run.sparsifier, run.history)
    if record.masks_frozen and val_rob is not None and val_rob > best.robust_accuracy:
        best.robust_accuracy, best.robust_epoch = val_rob, record.epoch
        if main and ck is not None and ck.save_best_robust is not None:
            ck.save_best_robust(run.model, run.sparsifier, run.history)


def _save_last(run: TrainingRun) -> None:
    """Hand the resumable training state and the ``last`` model to the checkpointer (rank 0)."""
    ck = run.checkpointer
    if not rdist.is_main() or ck is None or ck.save_last is None:
        return
    train_state = {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "sparsifier": run.sparsifier.state_dict() if run.sparsifier else None,
        "history": [vars(h) for h in run.history],
        **run.best.to_state(),
        "world_size": run.layout["world_size"],
    }
    ck.save_last(run.model, run.sparsifier, run.history, train_state)


def _finish(run: TrainingRun, split: ValidationSplit, seconds: float) -> TrainResult:
    """Freeze an unfinished schedule, evaluate the final model (eval mode), build the result."""
    if run.sparsifier is not None:
        run.sparsifier.on_train_end(run.config.epochs)
    run.model.eval()
    _, test_correct, test_n = evaluate_all(run.model, run.test_set, device=run.device)
    run.layout["masks_verified"] = run.mask_sync.verified
    return TrainResult(
        model=run.model,
        history=run.history,
        sparsifier=run.sparsifier,
        test_accuracy=test_correct / max(test_n, 1),
        test_correct=test_correct,
        test_n=test_n,
        best_epoch=run.best.epoch,
        seconds=seconds,
        extra={
            "distributed": run.layout,
            "validation": split.record(),
            "best_robust_epoch": run.best.robust_epoch,
        },
    )
