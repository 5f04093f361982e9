"""Multi-process helpers on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc_per_node N -m rbs ...`` starts N copies of the CLI with the
``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_ADDR`` / ``MASTER_PORT`` environment
variables set; :func:`init_from_env` turns them into a process group. Backends: ``gloo`` for CPU
tensors and, where CUDA is available, ``nccl`` for CUDA tensors (one combined group
``cpu:gloo,cuda:nccl``, so a CPU run on a GPU machine works too); each process binds
``cuda:LOCAL_RANK``.

Every helper is a no-op (or the identity) when no process group is initialized or the world has
one process, so library code calls them unconditionally.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from robustbench_sparse.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: seconds a collective may wait for the other ranks before failing (env RBS_DIST_TIMEOUT)
DEFAULT_TIMEOUT_S = 1800


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


def is_initialized() -> bool:
    """True when a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def is_distributed() -> bool:
    """True when running with more than one process."""
    return is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """Global rank of this process (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    """Rank on this node (``LOCAL_RANK``; 0 when not set)."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return 0


def is_main() -> bool:
    """True on rank 0 (the only process that writes files and logs progress)."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend string, ``None`` without one."""
    return str(dist.get_backend()) if is_initialized() else None


def init_from_env() -> bool:
    """Initialise the default process group from torchrun's environment variables.

    Returns True when a group was created here (``WORLD_SIZE > 1`` and none existed). With CUDA
    available the process binds ``cuda:LOCAL_RANK`` and the group is ``cpu:gloo,cuda:nccl``;
    otherwise it is ``gloo``. ``RBS_DIST_BACKEND`` overrides the backend string.
    """
    if env_world_size() <= 1 or is_initialized():
        return False
    if not dist.is_available():  # pragma: no cover - every supported wheel has it
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    chosen = os.environ.get("RBS_DIST_BACKEND")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        chosen = chosen or "cpu:gloo,cuda:nccl"
    chosen = chosen or "gloo"
    timeout = timedelta(seconds=float(os.environ.get("RBS_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    dist.init_process_group(backend=chosen, init_method="env://", timeout=timeout)
    logger.debug("process group: rank %d of %d, backend %s", rank(), world_size(), chosen)
    return True


def cleanup() -> None:
    """Destroy the default process group (no-op without one)."""
    if is_initialized():
        dist.destroy_process_group()


@contextmanager
def session() -> Iterator[bool]:
    """``init_from_env`` for the body, ``cleanup`` afterwards; yields whether a group exists."""
    created = init_from_env()
    try:
        yield is_initialized()
        if created:  # normal exit only: no rank tears its connections down while another is
            barrier()  # still inside a collective (seen once: SIGABRT at exit under load)
    finally:
        if created:
            cleanup()


def _collective_device() -> torch.device:
    """Where tensors for a collective must live: CPU unless the group is NCCL-only."""
    name = backend() or "gloo"
    if "gloo" in name or "cpu" in name:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (picklable objects; identity in one process)."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]  # type: ignore[return-value]


def all_gather_object(obj: T) -> list[T]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks, in float64 (the values in one process)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.cpu().tolist()]


def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy every buffer (BatchNorm running statistics) of rank ``src`` to all ranks in place.

    DDP broadcasts buffers *before* each forward, so after the last training step every rank's
    running statistics include its own last batch; this makes them identical again before
    evaluation and checkpointing.
    """
    if not is_distributed():
        return
    with torch.no_grad():
        for buf in model.buffers():
            # Buffers live where the model does: CPU (gloo) or CUDA (nccl in the combined group).
            dist.broadcast(buf, src=src)


def mask_digests(masks: Mapping[str, Tensor]) -> list[int]:
    """One deterministic signed 64-bit digest per mask (SHA-256 of name, shape and bytes)."""
    out = []
    for name in sorted(masks):
        mask = masks[name].detach().to("cpu", torch.bool).contiguous()
        h = hashlib.sha256()
        h.update(name.encode())
        h.update(repr(tuple(mask.shape)).encode())
        h.update(mask.numpy().tobytes())
        out.append(int.from_bytes(h.digest()[:8], "little", signed=True))
    return out


def verify_masks_identical(masks: Mapping[str, Tensor]) -> bool:
    """Check that every rank holds bit-identical ``masks``; raise ``RuntimeError`` otherwise.

    The per-layer digests of :func:`mask_digests` are all-reduced with MIN and MAX: they agree on
    every rank exactly when min == max for every layer (a mismatch is seen by every rank, so all
    of them raise together instead of one of them hanging). Returns False (nothing checked) in a
    single process, True after a successful check.
    """
    if not is_distributed():
        return False
    names = sorted(masks)
    digests = [*mask_digests(masks), len(names)]
    device = _collective_device()
    lo = torch.tensor(digests, dtype=torch.int64, device=device)
    hi = lo.clone()
    # Ranks with a different number of layers would all-reduce different lengths: compare the
    # count first so that case fails cleanly too.
    count = lo[-1:].clone()
    count_hi = count.clone()
    dist.all_reduce(count, op=dist.ReduceOp.MIN)
    dist.all_reduce(count_hi, op=dist.ReduceOp.MAX)
    if int(count) != int(count_hi):
        raise RuntimeError(
            f"Campfire masks differ across ranks: {int(count)}..{int(count_hi)} pruned layers"
        )
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    bad = [names[i] for i in range(len(names)) if int(lo[i]) != int(hi[i])]
    if bad:
        raise RuntimeError(
            f"Campfire masks differ across ranks in {len(bad)} layer(s): {', '.join(bad)}; "
            "masks must be computed identically on every rank"
        )
    return True


def shard_range(n: int, *, unit: int = 1) -> tuple[int, int]:
    """Contiguous ``[lo, hi)`` slice of ``n`` items for this rank, cut at multiples of ``unit``.

    Blocks of ``unit`` items are split as evenly as possible; rank ``r`` gets blocks
    ``[r * ceil(B / W), (r + 1) * ceil(B / W))`` (empty for trailing ranks when B < W).
    """
    if unit < 1:
        raise ValueError(f"unit must be >= 1 (got {unit})")
    w, r = world_size(), rank()
    blocks = -(-n // unit)
    per = -(-blocks // w) if blocks else 0
    lo = min(r * per * unit, n)
    hi = min((r + 1) * per * unit, n)
    return lo, hi


def run_description() -> dict[str, Any]:
    """World size, rank and backend, for records."""
    return {"world_size": world_size(), "backend": backend()}


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn()`` on rank 0 only; its (picklable) result, or its ``UserError``, reaches every rank.

    Used for file-system decisions (prepare an output directory, refuse to clobber one) that rank 0
    alone must take: the other ranks raise the same error instead of waiting forever.
    """
    if not is_distributed():
        return fn()
    value: Any = None
    error: str | None = None
    if is_main():
        try:
            value = fn()
        except UserError as exc:
            error = str(exc)
    value, error = broadcast_object((value, error))
    if error is not None:
        raise UserError(error)
    return value  # type: ignore[no-any-return]
