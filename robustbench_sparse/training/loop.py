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

import hashlib
import logging
import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

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

logger = logging.getLogger(__name__)


class OptimizerName(str, Enum):
    """Supported optimizers."""

    SGD = "sgd"
    ADAM = "adam"
    ADAMW = "adamw"


class LRSchedule(str, Enum):
    """Supported learning-rate schedules (all with optional linear warmup)."""

    CONSTANT = "constant"
    COSINE = "cosine"
    STEP = "step"
    MULTISTEP = "multistep"


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Epoch-valued fields may be fractional."""

    epochs: int = 30
    batch_size: int = 64
    optimizer: OptimizerName = OptimizerName.SGD
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: LRSchedule = LRSchedule.COSINE
    warmup_epochs: float = 1.0
    step_size: float = 30.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    label_smoothing: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    num_workers: int = 0
    sync_bn: bool = False  # DDP only: convert BatchNorm to SyncBatchNorm
    scale_lr: bool = False  # DDP only: lr x world_size (linear scaling rule)
    val_fraction: float = 0.1  # held out of the training set for model selection (0 = none)

    def __post_init__(self) -> None:
        # Normalise enum-like strings (direct construction, ``with_overrides``): identity checks
        # on the enums in ``build_optimizer`` / ``lr_factor`` would silently fall through otherwise.
        for name, enum in (("optimizer", OptimizerName), ("lr_schedule", LRSchedule)):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                valid = ", ".join(m.value for m in enum)
                raise UserError(
                    f"{name} {getattr(self, name)!r} is unknown; valid: {valid}"
                ) from None
        if self.epochs < 1:
            raise UserError(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 1:
            raise UserError(f"batch size must be >= 1 (got {self.batch_size})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UserError(f"learning rate must be a positive number (got {self.lr})")
        if self.weight_decay < 0:
            raise UserError(f"weight decay must be >= 0 (got {self.weight_decay})")
        if not 0 <= self.label_smoothing < 1:
            raise UserError(f"label smoothing must be in [0, 1) (got {self.label_smoothing})")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise UserError(
                f"warmup epochs must be in [0, epochs = {self.epochs}] (got {self.warmup_epochs}); "
                "lower --warmup-epochs ([train] warmup_epochs) or raise --epochs"
            )
        if not self.step_size > 0:
            raise UserError(f"step size must be > 0 epochs (got {self.step_size})")
        if not 0 <= self.val_fraction <= 0.5:
            raise UserError(f"validation fraction must be in [0, 0.5] (got {self.val_fraction})")


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


@dataclass(frozen=True)
class ValidationSplit:
    """Indices of a seeded hold-out of the training set (:func:`validation_split`)."""

    train_indices: list[int]
    val_indices: list[int]
    fraction: float
    seed: int

    def record(self) -> dict[str, Any]:
        """What checkpoints store: rule, sizes and a SHA-256 of the sorted validation indices."""
        digest = hashlib.sha256(",".join(map(str, sorted(self.val_indices))).encode()).hexdigest()
        return {
            "fraction": self.fraction,
            "seed": self.seed,
            "n_train": len(self.train_indices),
            "n_val": len(self.val_indices),
            "rule": "torch.randperm(n, generator=manual_seed(seed)); the first n_val are held out",
            "val_indices_sha256": digest,
        }


def validation_split(n: int, fraction: float, seed: int) -> ValidationSplit:
    """Hold out ``round(fraction * n)`` (at least 1 when ``fraction > 0``) of ``n`` examples.

    The permutation comes from its own ``torch.Generator`` seeded with ``seed``, so the split does
    not touch the global RNG and is the same on every rank and every resume. Both index lists
    are sorted (the training order is shuffled by the loader anyway).

    Raises:
        UserError: the hold-out would leave no training example.
    """
    if fraction <= 0:
        return ValidationSplit(list(range(n)), [], 0.0, seed)
    n_val = max(1, round(fraction * n))
    if n_val >= n:
        raise UserError(
            f"validation fraction {fraction} of {n} training examples leaves none to train on; "
            "lower --val-fraction or use more training data"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return ValidationSplit(sorted(perm[n_val:]), sorted(perm[:n_val]), fraction, seed)


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


# Per-dataset defaults, chosen so the default digits run trains a good small CNN in well under 2 min.
_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 30, "batch_size": 64, "lr": 0.05, "warmup_epochs": 1.0},
    "mnist": {"epochs": 12, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "fashion-mnist": {"epochs": 20, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "cifar10": {"epochs": 160, "batch_size": 128, "lr": 0.1, "warmup_epochs": 2.0},
    "cifar100": {"epochs": 160, "batch_size": 128, "lr": 0.1, "warmup_epochs": 2.0},
    "svhn": {"epochs": 40, "batch_size": 128, "lr": 0.05, "warmup_epochs": 1.0},
    "imagefolder": {
        "epochs": 90,
        "batch_size": 256,
        "lr": 0.1,
        "warmup_epochs": 5.0,
        "weight_decay": 1e-4,
    },
}


def default_train_config(dataset: str) -> TrainConfig:
    """The per-dataset default :class:`TrainConfig`."""
    return TrainConfig(**_DATASET_DEFAULTS.get(dataset, {}))


def default_prune_window(epochs: int) -> tuple[float, float]:
    """Default Campfire schedule window in epochs: ramp from 10 % to 50 % of training.

    Campfire fixes the mask part-way through training and fine-tunes with it for the rest.
    """
    return (round(0.1 * epochs, 3), round(0.5 * epochs, 3))


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Optimizer over all trainable parameters (no weight decay on BatchNorm and biases)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer is OptimizerName.SGD:
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov
        )
    if config.optimizer is OptimizerName.ADAM:
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(step: int, steps_per_epoch: int, config: TrainConfig) -> float:
    """Multiplier of the base LR at optimizer step ``step`` (pure; used by LambdaLR)."""
    epoch = step / steps_per_epoch
    total = float(config.epochs)
    if config.warmup_epochs > 0 and epoch < config.warmup_epochs:
        return min(1.0, (step + 1) / (config.warmup_epochs * steps_per_epoch))
    if config.lr_schedule is LRSchedule.CONSTANT:
        return 1.0
    if config.lr_schedule is LRSchedule.COSINE:
        span = max(total - config.warmup_epochs, 1e-12)
        progress = min(max((epoch - config.warmup_epochs) / span, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if config.lr_schedule is LRSchedule.STEP:
        return float(config.gamma ** math.floor(epoch / config.step_size))
    passed = sum(1 for m in config.milestones if epoch >= m)
    return float(config.gamma**passed)


def _loader(
    dataset: Dataset[Any], config: TrainConfig, *, shuffle: bool, seed: int, epoch: int = 0
) -> DataLoader:
    generator = torch.Generator()
    generator.manual_seed(seed)
    if rdist.is_distributed():
        # Every rank sees a disjoint ceil(N / W) part (padded by repetition), ordered by
        # (config.seed, epoch) only: resumable like the single-process order.
        sampler: DistributedSampler[Any] = DistributedSampler(
            dataset, shuffle=shuffle, seed=config.seed, drop_last=False
        )
        sampler.set_epoch(epoch)
        return DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=sampler,
            drop_last=False,
            num_workers=config.num_workers,
            generator=generator,
        )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=shuffle,
        drop_last=False,
        num_workers=config.num_workers,
        generator=generator,
    )


def distributed_layout(config: TrainConfig, n_train: int) -> dict[str, Any]:
    """World size, per-rank / effective batch and the LR actually used (recorded in checkpoints)."""
    world = rdist.world_size()
    per_rank = math.ceil(n_train / world)
    return {
        "world_size": world,
        "backend": rdist.backend(),
        "per_rank_batch_size": config.batch_size,
        "effective_batch_size": config.batch_size * world,
        "steps_per_epoch": max(math.ceil(per_rank / config.batch_size), 1),
        "base_lr": config.lr,
        "scale_lr": config.scale_lr,
        "effective_lr": config.lr * world if config.scale_lr else config.lr,
        "sync_bn": bool(config.sync_bn and world > 1),
    }


def evaluate_all(
    model: nn.Module, dataset: Dataset[Any], *, device: torch.device, batch_size: int = 256
) -> tuple[float, int, int]:
    """:func:`evaluate` over the whole ``dataset``; sharded across ranks and all-reduced under DDP.

    Every rank gets the same numbers (the sums are all-reduced in float64).
    """
    if not rdist.is_distributed():
        return evaluate(model, dataset, device=device, batch_size=batch_size)
    lo, hi = rdist.shard_range(len(dataset))  # type: ignore[arg-type]
    mean, correct, n = evaluate(
        model, Subset(dataset, range(lo, hi)), device=device, batch_size=batch_size
    )
    loss_sum, correct_f, n_f = rdist.all_reduce_sum([mean * n, correct, n])
    return loss_sum / max(n_f, 1.0), round(correct_f), round(n_f)


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


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Dataset[Any], *, device: torch.device, batch_size: int = 256
) -> tuple[float, int, int]:
    """Mean cross-entropy loss, number correct and number of examples on ``dataset`` (eval mode)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        logits = model(x)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
        n += int(y.numel())
    model.train(was_training)
    return loss_sum / max(n, 1), correct, n


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


def robust_accuracy_all(
    model: nn.Module,
    dataset: Dataset[Any],
    config: AdversarialConfig,
    *,
    device: torch.device,
    seed: int,
    batch_size: int = 256,
) -> float:
    """PGD robust accuracy of ``model`` on ``dataset`` at the training budget ``config.eps``.

    The attack is the project's native PGD (``pgd`` / ``pgd-l2`` from :mod:`attacks.registry`,
    ``config.effective_val_steps`` steps of ``2.5 / steps * eps``, random start, seeded), so every
    adversarial is verified in the ball and ``[0, 1]`` before it counts. Sharded and all-reduced
    under DDP (every rank gets the same number).
    """
    from attacks.registry import get_attack

    steps = config.effective_val_steps
    attack = get_attack(
        "pgd" if config.norm.value == "linf" else "pgd-l2",
        steps=steps,
        rel_stepsize=2.5 / steps,
        seed=seed,
    )
    subset: Dataset[Any] = dataset
    if rdist.is_distributed():
        lo, hi = rdist.shard_range(len(dataset))  # type: ignore[arg-type]
        subset = Subset(dataset, range(lo, hi))
    robust, n = 0.0, 0
    for x, y in DataLoader(subset, batch_size=batch_size, shuffle=False):
        x, y = x.to(device), y.to(device)
        result = attack(model, x, y, epsilons=[config.eps])
        robust += float((~result.success[0]).sum())
        n += int(y.numel())
    if rdist.is_distributed():
        robust, n_f = rdist.all_reduce_sum([robust, n])
        n = round(n_f)
    return robust / max(n, 1)


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
        loader = _loader(
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


def with_overrides(config: TrainConfig, **overrides: Any) -> TrainConfig:
    """``dataclasses.replace`` ignoring ``None`` values (CLI flags that were not given)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})
