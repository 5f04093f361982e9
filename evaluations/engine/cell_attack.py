"""Attack one cell: all examples of one checkpoint with one attack, in batches, optionally sharded.

The grid engine (:mod:`evaluations.engine.grid`) calls :func:`attack_cell_sharded` once per
(checkpoint, attack); it returns a :class:`~evaluations.record.cells.CellOutcome`. Out-of-memory
batches are retried once at half size; under ``torchrun`` whole batches are sharded across ranks.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attacks import Attack, AttackKind
from attacks.registry import attack_class
from evaluations.record.adversarials import KeptAdversarials
from evaluations.record.cells import CellOutcome, concat_or_none, sum_failed
from robustbench_sparse import distributed as rdist
from robustbench_sparse.datasets import balanced_subset
from robustbench_sparse.errors import UserError
from robustbench_sparse.progress import progress_bar

logger = logging.getLogger(__name__)


def evaluation_tensors(data: Dataset[Any], limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples a grid attacks: ``x`` float (N, C, H, W) in [0, 1], ``y`` long (N,).

    ``limit`` takes a class-balanced, seeded subset of at most that many examples
    (:func:`robustbench_sparse.datasets.balanced_subset`); ``None`` takes all. An empty set gives
    empty tensors (the grid turns that into a :class:`UserError`).
    """
    # The same class-balanced, seeded subset for every checkpoint (a class-sorted split would
    # otherwise give the first classes only); recorded in the sidecar (evaluation_subset).
    data = balanced_subset(data, limit)
    n_total = len(data)  # type: ignore[arg-type]
    n = n_total if limit is None else min(limit, n_total)
    if n == 0:  # run_grid refuses an empty test set with a clear error
        return torch.zeros(0), torch.zeros(0, dtype=torch.long)
    xs, ys = [], []
    seen = 0
    for x, y in DataLoader(data, batch_size=512, shuffle=False):
        take = min(n - seen, x.shape[0])
        xs.append(x[:take])
        ys.append(torch.as_tensor(y)[:take])
        seen += take
        if seen >= n:
            break
    return torch.cat(xs).float(), torch.cat(ys).long()


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA / host out-of-memory errors (PyTorch reports some as ``RuntimeError``)."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _smaller_batch(
    size: int, halved: bool, batch_size: int, device: torch.device
) -> tuple[int, bool]:
    """After an out-of-memory batch: half the batch size once, else a :class:`UserError`."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if halved:
        raise UserError(
            f"out of memory on a batch of {batch_size} examples even after retrying "
            f"with {size}; pass a smaller --batch-size"
        ) from None
    if size == 1:
        raise UserError(
            "out of memory on a batch of 1 example; free memory or use another --device"
        ) from None
    size, halved = max(1, size // 2), True
    logger.warning("out of memory on a batch of %d examples; retrying with %d", batch_size, size)
    return size, halved


def _log_failed_verifications(
    attack: Attack, failed: np.ndarray, n: int, epsilons: list[float]
) -> None:
    """One warning per epsilon at which returned adversarials failed verification (per cell)."""
    for k, e in enumerate(epsilons):
        if failed[k] > 0:
            logger.warning(
                "%s/%s: %d of %d adversarials at eps=%g failed verification (outside [0, 1] or "
                "the eps ball); counting them as not broken",
                attack.backend,
                attack.name,
                int(failed[k]),
                n,
                e,
            )


def attack_cell(
    model: torch.nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "",
    keep_adversarials: bool = False,
) -> CellOutcome:
    """Run one attack over all examples in batches; per-example outcome arrays.

    A batch that runs out of memory is retried once with half the batch size (which is then kept
    for the remaining batches); a second out-of-memory is a :class:`UserError`.
    ``keep_adversarials``: the outcome also holds the verified adversarials (:func:`verified`).
    """
    t0 = time.perf_counter()
    clean, robust, norms, mins = [], [], [], []
    kept: list[KeptAdversarials] = []
    offsets: list[int] = []
    black: list[np.ndarray | None] = []
    failed = np.zeros(len(epsilons), dtype=np.int64)  # (K,) failed verifications
    evals = 0
    n = int(x.shape[0])
    size, halved, s = batch_size, False, 0
    bar = progress_bar(total=n, desc=desc, leave=False, disable=not progress, unit="ex")
    # Progress inside a batch: count the model's forward passes against the attack's nominal
    # number (steps x binary-search steps x restarts), so a long C&W batch moves the bar instead
    # of sitting at 0 for minutes. Capped at 95 % of the batch until the batch really finishes.
    expected = attack.nominal_forwards()
    forwards = [0]

    def _tick(*_: Any) -> None:
        forwards[0] += 1
        if expected:
            done = s + int(min(forwards[0] / expected, 0.95) * min(size, n - s))
            if done > bar.n:
                bar.update(done - bar.n)

    # (on an exception the hook stays, harmlessly: a closed bar ignores updates)
    hook = model.register_forward_hook(_tick) if progress and expected else None
    while s < n:
        forwards[0] = 0
        xb = x[s : s + size].to(device)
        yb = y[s : s + size].to(device)
        try:
            # Epsilon-unit warnings are logged once per grid by run_grid, failed verifications
            # once per cell (below), not per batch.
            result = attack(model, xb, yb, epsilons=epsilons, warn_units=False, log_warnings=False)
            # At eps index 0 with eps == 0 the adversarial is x itself; clean correctness comes
            # from the attack's own eps-0 prediction when present, else from a clean pass.
            with torch.no_grad():
                clean_ok = model(xb).argmax(1) == yb  # (B,)
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc):
                raise
            oom = True
        else:
            oom = False
        if oom:
            del xb, yb
            size, halved = _smaller_batch(size, halved, batch_size, device)
            continue
        clean.append(clean_ok.cpu().numpy())
        robust.append((~result.success).cpu().numpy())  # (K, B)
        norms.append(result.norms.double().cpu().numpy())  # (K, B)
        if result.min_norm is not None:
            mins.append(result.min_norm.double().cpu().numpy())
        if result.verify_failed is not None:
            failed += result.verify_failed.sum(dim=1).cpu().numpy().astype(np.int64)  # (K,)
        black.append(black_box_broken(result))  # (K, B) or None
        if keep_adversarials:
            kept.append(verified(result, clean_ok))
            offsets.append(s)
        evals += int(result.grad_evals)
        del result
        bar.update(max(0, min(s + int(xb.shape[0]), n) - bar.n))
        s += size
    bar.close()
    if hook is not None:
        hook.remove()
    _log_failed_verifications(attack, failed, n, epsilons)
    return CellOutcome(
        epsilons=list(epsilons),
        clean_correct=np.concatenate(clean),
        robust=np.concatenate(robust, axis=1),
        norms=np.concatenate(norms, axis=1),
        min_norm=np.concatenate(mins) if mins and attack.kind is AttackKind.MINIMUM_NORM else None,
        seconds=time.perf_counter() - t0,
        grad_evals=evals,
        params=attack.params(),
        verify_failed=failed,
        black_box_broken=concat_or_none(black),
        adversarials=KeptAdversarials.concat(kept, offsets) if kept else None,
    )


def verified(result: Any, clean_ok: torch.Tensor) -> KeptAdversarials:
    """The adversarials of one batch worth keeping: the attack's verified successes (inside
    [0, 1] and the ball, misclassified) on examples the model classified correctly (``clean_ok``
    bool (B,)); ``position`` indexes the batch. Tensors on the CPU, adversarials float32."""
    mask = result.success & clean_ok.unsqueeze(0)  # (K, B)
    if result.verify_failed is not None:
        mask = mask & ~result.verify_failed.to(mask.device)
    k, b = torch.nonzero(mask, as_tuple=True)  # (M,), (M,)
    adv = result.adversarials[k, b]  # (M, C, H, W)
    return KeptAdversarials(b.cpu(), k.cpu(), adv.detach().to("cpu", torch.float32))


def black_box_broken(result: Any) -> np.ndarray | None:
    """Bool (K, B): examples a cascade counts as broken by one of its gradient-free stages."""
    details = getattr(result, "details", None)
    if not details or "broken_by" not in details or "stages" not in details:
        return None

    free = [
        i
        for i, name in enumerate(details["stages"])
        if getattr(attack_class(name), "gradient_free", False)
    ]
    by = details["broken_by"].cpu().numpy()  # (K, B) stage index, -1 = none
    return np.isin(by, free)


def attack_cell_sharded(
    model: torch.nn.Module,
    attack: Attack,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilons: list[float],
    *,
    batch_size: int,
    device: torch.device,
    progress: bool = False,
    desc: str = "",
    keep_adversarials: bool = False,
) -> CellOutcome:
    """:func:`attack_cell` over all of ``x``; under DDP sharded across ranks and gathered.

    Rank ``r`` attacks the examples of batches ``[r * ceil(B / W), (r + 1) * ceil(B / W))`` (B
    batches of ``batch_size``, W ranks), so every batch is the batch a single process would attack;
    the per-example arrays are concatenated in rank (= example) order and every rank returns the
    same outcome. ``seconds`` is the slowest shard's time, ``grad_evals`` the sum.
    """
    if not rdist.is_distributed():
        return attack_cell(
            model,
            attack,
            x,
            y,
            epsilons,
            batch_size=batch_size,
            device=device,
            progress=progress,
            desc=desc,
            keep_adversarials=keep_adversarials,
        )
    lo, hi = rdist.shard_range(int(x.shape[0]), unit=batch_size)
    part: CellOutcome | None = None
    if hi > lo:
        part = attack_cell(
            model,
            attack,
            x[lo:hi],
            y[lo:hi],
            epsilons,
            batch_size=batch_size,
            device=device,
            progress=progress,
            desc=desc,
            keep_adversarials=keep_adversarials,
        )
    parts = [p for p in rdist.all_gather_object(part) if p is not None]  # rank order
    if not parts:
        raise UserError("no examples to attack")
    mins = [p.min_norm for p in parts]
    return CellOutcome(
        epsilons=list(epsilons),
        clean_correct=np.concatenate([p.clean_correct for p in parts]),  # (N,)
        robust=np.concatenate([p.robust for p in parts], axis=1),  # (K, N)
        norms=np.concatenate([p.norms for p in parts], axis=1),  # (K, N)
        min_norm=np.concatenate([m for m in mins if m is not None])
        if all(m is not None for m in mins)
        else None,
        seconds=max(p.seconds for p in parts),
        grad_evals=sum(p.grad_evals for p in parts),
        params=parts[0].params,
        verify_failed=sum_failed([p.verify_failed for p in parts]),
        black_box_broken=concat_or_none([p.black_box_broken for p in parts]),
        adversarials=_gathered_adversarials(parts),
    )


def _gathered_adversarials(parts: list[CellOutcome]) -> KeptAdversarials | None:
    """The ranks' kept adversarials joined in example order (None unless every rank kept)."""
    kept = [p.adversarials for p in parts]
    if not kept or any(k is None for k in kept):
        return None
    offsets = np.cumsum([0] + [len(p.clean_correct) for p in parts[:-1]]).tolist()
    return KeptAdversarials.concat([k for k in kept if k is not None], offsets)
