"""Training loop: dense or Campfire-sparse, seeded, resumable, with per-epoch history.

``fit`` owns the optimisation only; the sparsity logic lives in :class:`CampfireSparsifier` and the
file format in :mod:`robustbench_sparse.checkpoint`.

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
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from robustbench_sparse import distributed as rdist
from robustbench_sparse.adversarial import AdversarialConfig, robust_loss
from robustbench_sparse.datasets import DatasetSplits
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.progress import progress_bar
from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    SparsityConfig,
    calibration_batches,
    create_sparsifier,
)
from robustbench_sparse.training.config import TrainConfig
from robustbench_sparse.training.data import distributed_layout, train_loader, validation_split
from robustbench_sparse.training.evaluation import evaluate_all, robust_accuracy_all
from robustbench_sparse.training.optim import build_optimizer, lr_factor

logger = logging.getLogger(__name__)


@dataclass
class EpochRecord:
    """One row of the training history."""

    epoch: int
    train_loss: float
    train_accuracy: float
    test_loss: float
    test_accuracy: float
    lr: float
    sparsity: float
    masks_frozen: bool
    seconds: float
    # Adversarial training: loss / accuracy on the training adversarials (train_* are clean).
    train_adv_loss: float | None = None
    train_adv_accuracy: float | None = None
    adv_eps: float | None = None  # the training budget at the epoch's last step (eps warm-up)
    # Held-out validation split (None without one); robust = PGD at the training budget.
    val_accuracy: float | None = None
    val_robust_accuracy: float | None = None


@dataclass
class TrainResult:
    """What :func:`fit` returns: the trained model (train mode off) and its history."""

    model: nn.Module
    history: list[EpochRecord]
    sparsifier: CampfireSparsifier | None
    test_accuracy: float
    test_correct: int
    test_n: int
    best_epoch: int
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class _MaskSync:
    """Verifies the masks across ranks whenever the sparsifier recomputed or loaded them."""

    def __init__(self, sparsifier: CampfireSparsifier | None) -> None:
        self.sparsifier = sparsifier
        self.seen = -1
        self.verified = 0

    def check(self) -> None:
        sp = self.sparsifier
        if sp is None or not rdist.is_distributed() or sp.update_count == self.seen:
            return
        self.seen = sp.update_count
        if rdist.verify_masks_identical(sp.masks):
            self.verified += 1


def _learn_hydra_scores(
    sparsifier: CampfireSparsifier,
    model: nn.Module,
    train_set: Dataset[Any],
    config: TrainConfig,
    adv: AdversarialConfig | None,
    device: torch.device,
) -> None:
    """HYDRA's prune phase (:class:`~robustbench_sparse.sparsity.HydraSparsifier`) inside ``fit``.

    The scores are learned with the run's own training loss (its adversarial method at the full
    budget, or the cross-entropy for standard training) on seeded, unsharded training batches;
    under DDP rank 0's masks are broadcast (GPU scoring need not be bitwise equal across ranks).
    """

    def loss_fn(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if adv is None:
            return nn.functional.cross_entropy(net(x), y, label_smoothing=config.label_smoothing)
        return robust_loss(net, x, y, adv, adv.eps, label_smoothing=config.label_smoothing).loss

    def passes(k: int) -> Any:
        return calibration_batches(
            train_set, batch_size=config.batch_size, seed=config.seed * 7919 + k, device=device
        )

    sparsifier.learn_scores(model, passes, loss_fn, seed=config.seed)  # type: ignore[attr-defined]
    if rdist.is_distributed():
        sparsifier.load_state_dict(rdist.broadcast_object(sparsifier.state_dict()))


@dataclass
class Checkpointer:
    """Callbacks ``fit`` uses to persist state; the CLI wires them to :mod:`checkpoint`."""

    save_last: Any = None  # (model, sparsifier, history, train_state) -> None
    save_best: Any = None  # (model, sparsifier, history) -> None
    save_best_robust: Any = None  # (model, sparsifier, history) -> None (adversarial training)
    load_state: Any = None  # () -> dict | None


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
    """Train ``model`` on ``data.train``; prune with Campfire when ``sparsity.target > 0``.

    The sparsifier is stepped after every optimizer step (mask update when due, mask re-applied,
    optimizer state zeroed at pruned positions). With ``resume`` the state returned by
    ``checkpointer.load_state()`` (model, optimizer, LR schedule, sparsifier, history) is restored
    and training continues at the next epoch.

    ``config.val_fraction`` of ``data.train`` is held out (:func:`validation_split`) and read
    from ``plain_train`` (the same examples without augmentation; default ``data.train``).
    ``adversarial`` (method other than ``none``) trains on adversarials crafted per batch
    (:mod:`robustbench_sparse.adversarial`); each rank crafts those of its own shard.
    """
    device = resolve_device(config.device)
    distributed = rdist.is_distributed()
    main = rdist.is_main()
    if distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK
    use_amp = config.amp and device.type == "cuda"
    torch.manual_seed(config.seed)
    adv = adversarial if adversarial is not None and adversarial.enabled else None
    split = validation_split(len(data.train), config.val_fraction, config.seed)  # type: ignore[arg-type]
    train_set: Dataset[Any] = data.train
    val_set: Dataset[Any] | None = None
    if plain_train is not None and len(plain_train) != len(data.train):  # type: ignore[arg-type]
        raise ValueError("plain_train must hold the same examples as data.train (same length)")
    if split.val_indices:
        train_set = Subset(data.train, split.train_indices)
        val_set = Subset(plain_train if plain_train is not None else data.train, split.val_indices)
    layout = distributed_layout(config, len(train_set))  # type: ignore[arg-type]
    steps_per_epoch = int(layout["steps_per_epoch"])
    if distributed:
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

    # The sparsifier holds the unwrapped model's parameters (names without a "module." prefix);
    # DDP shares those very Parameter objects, so masks applied here are what DDP trains.
    sparsifier: CampfireSparsifier | None = None
    if sparsity is not None and sparsity.target > 0:
        sparsifier = create_sparsifier(sparsity, steps_per_epoch)  # sparsity.method
        sparsifier.prepare(model)
    mask_sync = _MaskSync(sparsifier)
    mask_sync.check()

    optimizer = build_optimizer(model, replace(config, lr=float(layout["effective_lr"])))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, steps_per_epoch, config)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    history: list[EpochRecord] = []
    start_epoch = 0
    best_acc, best_epoch = -1.0, -1
    best_rob, best_rob_epoch = -1.0, -1
    if resume and checkpointer is not None and checkpointer.load_state is not None:
        # Rank 0 reads the state and every rank gets the very same copy (no shared disk needed).
        state = rdist.broadcast_object(checkpointer.load_state() if main else None)
        if state is not None:
            saved_world = int(state.get("world_size", 1))
            if saved_world != layout["world_size"]:
                raise UserError(
                    f"cannot resume: the run was trained with {saved_world} process(es), this "
                    f"one has {layout['world_size']} (batching and LR schedule would change); "
                    f"resume with --nproc {saved_world}"
                )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if sparsifier is not None and state.get("sparsifier") is not None:
                sparsifier.load_state_dict(state["sparsifier"])
            history = [EpochRecord(**h) for h in state["history"]]
            start_epoch = len(history)
            best_acc = float(state.get("best_accuracy", -1.0))
            best_epoch = int(state.get("best_epoch", -1))
            best_rob = float(state.get("best_robust_accuracy", -1.0))
            best_rob_epoch = int(state.get("best_robust_epoch", -1))
            logger.info("resuming after epoch %d", start_epoch)
    if sparsifier is not None and not sparsifier.frozen and hasattr(sparsifier, "calibrate"):
        # Pruning at init from data (GraSP): score on a few seeded batches, same on every rank.
        sparsifier.calibrate(
            model,
            calibration_batches(
                train_set, batch_size=config.batch_size, seed=config.seed, device=device
            ),
        )
        if distributed:  # GPU scoring need not be bitwise equal across ranks: rank 0's masks win
            sparsifier.load_state_dict(rdist.broadcast_object(sparsifier.state_dict()))
    mask_sync.check()

    train_model: nn.Module = model
    if distributed:
        train_model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )

    t_start = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        t_epoch = time.perf_counter()
        # Data order and augmentation of this epoch depend on (seed, epoch) only: resumable.
        # (Ranks > 0 offset the augmentation seed; rank 0 draws what a single process draws.)
        torch.manual_seed(config.seed * 100_003 + epoch + 1_000_003 * rdist.rank())
        loader = train_loader(
            train_set, config, shuffle=True, seed=config.seed * 100_003 + epoch, epoch=epoch
        )
        train_model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        adv_loss_sum, adv_correct = 0.0, 0
        eps_now = 0.0
        bar = progress_bar(
            loader,
            desc=f"epoch {epoch + 1}/{config.epochs}",
            leave=False,
            disable=not (progress and main),
            unit="batch",
        )
        for i, (x, y) in enumerate(bar):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if sparsifier is not None and getattr(sparsifier, "scores_due", False):
                _learn_hydra_scores(sparsifier, model, train_set, config, adv, device)
                mask_sync.check()
            logits_adv: torch.Tensor | None = None
            if adv is None:
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    logits = train_model(x)
                    loss = criterion(logits, y)
            else:
                eps_now = adv.eps_at(epoch * steps_per_epoch + i, steps_per_epoch)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type=device.type, enabled=use_amp):
                    # Crafting reads the unwrapped model (no DDP reducer, own shard only).
                    out = robust_loss(
                        model,
                        x,
                        y,
                        adv,
                        eps_now,
                        forward=train_model,
                        label_smoothing=config.label_smoothing,
                    )
                loss, logits, logits_adv = out.loss, out.logits_clean, out.logits_adv
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if sparsifier is not None:
                sparsifier.step(optimizer)
                mask_sync.check()
            batch = int(y.numel())
            seen += batch
            if logits_adv is None:
                loss_sum += float(loss.detach()) * batch
                correct += int((logits.detach().argmax(1) == y).sum())
                postfix = {"loss": f"{loss_sum / seen:.3f}", "acc": f"{correct / seen:.3f}"}
            else:
                with torch.no_grad():
                    lc = logits.detach().float()
                    la = logits_adv.detach().float()
                    loss_sum += float(nn.functional.cross_entropy(lc, y, reduction="sum"))
                    adv_loss_sum += float(nn.functional.cross_entropy(la, y, reduction="sum"))
                correct += int((lc.argmax(1) == y).sum())
                adv_correct += int((la.argmax(1) == y).sum())
                postfix = {
                    "clean": f"{loss_sum / seen:.3f}/{correct / seen:.3f}",
                    "adv": f"{adv_loss_sum / seen:.3f}/{adv_correct / seen:.3f}",
                    "eps": f"{eps_now:.3g}",
                }
            postfix["sparsity"] = f"{sparsifier.current_sparsity:.2f}" if sparsifier else "0"
            bar.set_postfix(postfix)
        if distributed:
            loss_sum, correct_f, seen_f, adv_loss_sum, adv_correct_f = rdist.all_reduce_sum(
                [loss_sum, correct, seen, adv_loss_sum, adv_correct]
            )
            correct, seen, adv_correct = round(correct_f), round(seen_f), round(adv_correct_f)
            # DDP broadcasts buffers before each forward, so the last batch left every rank
            # with its own BatchNorm statistics: take rank 0's before evaluating and saving.
            rdist.broadcast_buffers(model)
        if not math.isfinite(loss_sum):
            raise UserError(
                f"training diverged at epoch {epoch + 1} (loss is not finite); lower --lr"
            )
        test_loss, test_correct, test_n = evaluate_all(model, data.test, device=device)
        val_acc: float | None = None
        val_rob: float | None = None
        if val_set is not None:
            _, val_correct, val_n = evaluate_all(model, val_set, device=device)
            val_acc = val_correct / max(val_n, 1)
            if adv is not None:
                val_rob = robust_accuracy_all(model, val_set, adv, device=device, seed=config.seed)
        record = EpochRecord(
            epoch=epoch + 1,
            train_loss=loss_sum / max(seen, 1),
            train_accuracy=correct / max(seen, 1),
            test_loss=test_loss,
            test_accuracy=test_correct / max(test_n, 1),
            lr=float(optimizer.param_groups[0]["lr"]),
            sparsity=sparsifier.current_sparsity if sparsifier else 0.0,
            masks_frozen=sparsifier.frozen if sparsifier else True,
            seconds=time.perf_counter() - t_epoch,
            train_adv_loss=adv_loss_sum / max(seen, 1) if adv is not None else None,
            train_adv_accuracy=adv_correct / max(seen, 1) if adv is not None else None,
            adv_eps=eps_now if adv is not None else None,
            val_accuracy=val_acc,
            val_robust_accuracy=val_rob,
        )
        history.append(record)
        logger.info(
            "epoch %d/%d loss %.4f train acc %.4f%s val acc %s%s test acc %.4f sparsity %.3f "
            "(%.1fs)",
            record.epoch,
            config.epochs,
            record.train_loss,
            record.train_accuracy,
            f" adv acc {record.train_adv_accuracy:.4f}" if adv is not None else "",
            "-" if val_acc is None else f"{val_acc:.4f}",
            "" if val_rob is None else f" val robust acc {val_rob:.4f}",
            record.test_accuracy,
            record.sparsity,
            record.seconds,
        )
        # "Best" only counts epochs whose masks are final (an earlier, denser model is not a
        # Campfire model at the target sparsity) and is selected on the validation split,
        # never on the test set that is attacked afterwards.
        if record.masks_frozen and val_acc is not None and val_acc > best_acc:
            best_acc, best_epoch = val_acc, record.epoch
            if main and checkpointer is not None and checkpointer.save_best is not None:
                checkpointer.save_best(model, sparsifier, history)
        if record.masks_frozen and val_rob is not None and val_rob > best_rob:
            best_rob, best_rob_epoch = val_rob, record.epoch
            if main and checkpointer is not None and checkpointer.save_best_robust is not None:
                checkpointer.save_best_robust(model, sparsifier, history)
        if main and checkpointer is not None and checkpointer.save_last is not None:
            train_state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sparsifier": sparsifier.state_dict() if sparsifier else None,
                "history": [vars(h) for h in history],
                "best_accuracy": best_acc,
                "best_epoch": best_epoch,
                "best_robust_accuracy": best_rob,
                "best_robust_epoch": best_rob_epoch,
                "world_size": layout["world_size"],
            }
            checkpointer.save_last(model, sparsifier, history, train_state)
        rdist.barrier()  # the others wait while rank 0 writes

    if sparsifier is not None and not sparsifier.frozen:
        logger.warning(
            "training ended before the pruning schedule finished (end epoch %.2f > %d epochs); "
            "freezing masks at sparsity %.3f",
            sparsity.end if sparsity else float("nan"),
            config.epochs,
            sparsifier.current_sparsity,
        )
        sparsifier.freeze()
    model.eval()
    _, test_correct, test_n = evaluate_all(model, data.test, device=device)
    layout["masks_verified"] = mask_sync.verified
    return TrainResult(
        model=model,
        history=history,
        sparsifier=sparsifier,
        test_accuracy=test_correct / max(test_n, 1),
        test_correct=test_correct,
        test_n=test_n,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - t_start,
        extra={
            "distributed": layout,
            "validation": split.record(),
            "best_robust_epoch": best_rob_epoch,
        },
    )
