"""The robustness grid: checkpoints x attacks x epsilons -> tidy results.

``run_grid`` attacks every checkpoint with every attack over the epsilon grid of the attack's norm,
in batches, and adds per norm a ``worst_case`` row per epsilon: an example counts as robust at
``eps_k`` only if no attack of that norm broke it at any ``eps_j <= eps_k`` (the ball of radius
``eps_j`` lies inside the ball of ``eps_k``, so the adversarial found there is valid at ``eps_k``).
The worst case is therefore monotone in epsilon and never above any single attack by construction.

Each finished (checkpoint, attack) cell is stored under ``out_dir/cells`` with a fingerprint of
everything that determines it; a re-run skips cells whose fingerprint matches (resume), and the
results files are rewritten after every finished cell.

Under ``torchrun`` (several ranks, see :mod:`robustbench_sparse.distributed`) every cell is
sharded: each rank attacks a contiguous run of whole attack batches, the per-example outcomes are
gathered in example order on every rank, and only rank 0 reads and writes cells and results. Because
shards are cut at batch boundaries, every rank calls the attack on exactly the batches a single
process would (and attacks are seeded per call), so the sharded table equals the single-process one
(the ``seconds`` column aside).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import time
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from attacks import Attack, AttackKind, Norm, get_attack
from attacks.contracts import epsilon_unit_warnings
from evaluations.engine.data_checks import accuracy_warning, check_input_shape
from evaluations.record.metrics import WORST_CASE, summarize_cell
from evaluations.record.results import (
    OPTIONAL_COLUMNS,
    RESULT_COLUMNS,
    make_min_norms,
    write_min_norms,
    write_results,
)
from evaluations.record.security import min_norm_table, write_min_norm_table
from evaluations.record.training_methods import checkpoint_training
from robustbench_sparse import distributed as rdist
from robustbench_sparse.atomic import atomic_path, atomic_write_text
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.datasets import balanced_subset, default_eps_grid
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.progress import progress_bar

logger = logging.getLogger(__name__)

CELLS_DIR = "cells"


@dataclass(frozen=True)
class AttackSpec:
    """One attack of the grid: registry name, backend and parameters."""

    name: str
    backend: str = "native"
    params: tuple[tuple[str, Any], ...] = ()

    def build(self) -> Attack:
        """Instantiate the attack through the registry (validates name, backend, params)."""
        return get_attack(self.name, backend=self.backend, **dict(self.params))

    @property
    def label(self) -> str:
        """File-system-safe cell label."""
        return f"{self.name}@{self.backend}"


@dataclass(frozen=True)
class GridConfig:
    """What to run: attacks, epsilon grids per norm (``None`` = dataset default), batching."""

    attacks: tuple[AttackSpec, ...] = (AttackSpec("fgsm"), AttackSpec("pgd"), AttackSpec("cw"))
    linf_epsilons: tuple[float, ...] | None = None
    l2_epsilons: tuple[float, ...] | None = None
    batch_size: int = 500
    limit: int | None = None
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self) -> None:
        # A negative limit would silently slice examples off the end (x[:-k]).
        if self.limit is not None and (
            isinstance(self.limit, bool) or not isinstance(self.limit, int) or self.limit < 1
        ):
            raise UserError(f"the attack limit must be an integer >= 1 (got {self.limit!r})")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise UserError(f"the attack batch size must be an integer (got {self.batch_size!r})")
        if self.batch_size < 1:
            raise UserError(f"the attack batch size must be >= 1 (got {self.batch_size})")

    def epsilons(self, norm: Norm, dataset: str) -> list[float]:
        """The sorted epsilon grid for ``norm`` (dataset default where not configured)."""
        given = self.linf_epsilons if norm is Norm.LINF else self.l2_epsilons
        grid = list(given) if given is not None else default_eps_grid(dataset, norm.value)
        return validate_epsilons(grid, norm.value)


def validate_epsilons(values: Sequence[float], norm: str) -> list[float]:
    """Check an epsilon grid: finite, >= 0, no duplicates; returns it sorted (logged if changed)."""
    eps = [float(e) for e in values]
    if not eps:
        raise UserError(f"the {norm} epsilon grid is empty")
    for e in eps:
        if not math.isfinite(e) or e < 0:
            raise UserError(f"epsilon {e} is invalid: epsilons must be finite and >= 0")
    if len(set(eps)) != len(eps):
        dup = sorted({e for e in eps if eps.count(e) > 1})
        raise UserError(f"the {norm} epsilon grid has duplicates {dup}; list each value once")
    ordered = sorted(eps)
    if ordered != eps:
        logger.info("sorted the %s epsilon grid to %s", norm, ordered)
    return ordered


@dataclass
class CellOutcome:
    """Per-example outcome of one (checkpoint, attack) cell."""

    epsilons: list[float]
    clean_correct: np.ndarray  # bool (N,)
    robust: np.ndarray  # bool (K, N)
    norms: np.ndarray  # float (K, N)
    min_norm: np.ndarray | None  # float (N,)
    seconds: float
    grad_evals: int
    params: dict[str, Any]
    # int (K,): adversarials the attack returned that failed verification (None: not recorded)
    verify_failed: np.ndarray | None = None
    # bool (K, N): broken by a gradient-free stage of a cascade (e.g. AutoAttack's Square) that
    # every earlier, white-box stage left robust; None for single attacks (masking check 2)
    black_box_broken: np.ndarray | None = None


#: a cell whose failed verifications exceed this fraction of its examples (at some epsilon) is
#: marked ``unreliable``: its attack misbehaved (NaN iterates, points outside the ball), so its
#: robust accuracy is an overestimate of unknown size
UNRELIABLE_VERIFY_FRACTION = 0.01


def _fingerprint(
    ckpt: LoadedCheckpoint, spec: AttackSpec, params: dict[str, Any], eps: list[float], n: int
) -> str:
    payload = {
        "weights": ckpt.meta.get("weights_sha256") or str(ckpt.path),
        "attack": spec.name,
        "backend": spec.backend,
        "params": params,
        "epsilons": eps,
        "n": n,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cell_paths(out_dir: Path, ckpt_name: str, spec: AttackSpec) -> tuple[Path, Path]:
    base = out_dir / CELLS_DIR / ckpt_name
    return base / f"{spec.label}.npz", base / f"{spec.label}.json"


def _load_cell(
    out_dir: Path, ckpt_name: str, spec: AttackSpec, fingerprint: str
) -> CellOutcome | None:
    npz_path, json_path = _cell_paths(out_dir, ckpt_name, spec)
    if not (npz_path.is_file() and json_path.is_file()):
        return None
    try:
        meta = json.loads(json_path.read_text())
        if meta.get("fingerprint") != fingerprint:
            return None
        with np.load(npz_path) as z:
            return CellOutcome(
                epsilons=[float(e) for e in z["epsilons"]],
                clean_correct=z["clean_correct"].astype(bool),
                robust=z["robust"].astype(bool),
                norms=z["norms"],
                min_norm=z["min_norm"] if "min_norm" in z.files else None,
                verify_failed=z["verify_failed"] if "verify_failed" in z.files else None,
                black_box_broken=z["black_box_broken"] if "black_box_broken" in z.files else None,
                seconds=float(meta["seconds"]),
                grad_evals=int(meta["grad_evals"]),
                params=dict(meta["params"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        logger.warning("ignoring unreadable cell %s; recomputing it", npz_path)
        return None


def _save_cell(
    out_dir: Path, ckpt_name: str, spec: AttackSpec, fingerprint: str, cell: CellOutcome
) -> None:
    npz_path, json_path = _cell_paths(out_dir, ckpt_name, spec)
    arrays: dict[str, np.ndarray] = {
        "epsilons": np.asarray(cell.epsilons, dtype=np.float64),
        "clean_correct": cell.clean_correct,
        "robust": cell.robust,
        "norms": cell.norms,
    }
    if cell.min_norm is not None:
        arrays["min_norm"] = cell.min_norm
    if cell.verify_failed is not None:
        arrays["verify_failed"] = cell.verify_failed
    if cell.black_box_broken is not None:
        arrays["black_box_broken"] = cell.black_box_broken
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    with atomic_path(npz_path) as tmp:
        tmp.write_bytes(buf.getvalue())
    meta = {
        "fingerprint": fingerprint,
        "seconds": cell.seconds,
        "grad_evals": cell.grad_evals,
        "params": cell.params,
    }
    # The JSON is written last: a cell counts as finished only when both files agree.
    atomic_write_text(json_path, json.dumps(meta, indent=2, default=str) + "\n")


def _as_tensors(data: Dataset[Any], limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
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


def _is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA / host out-of-memory errors (PyTorch reports some as ``RuntimeError``)."""
    if isinstance(exc, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _expected_forwards(params: Mapping[str, Any]) -> int:
    """Nominal forward passes per batch of an iterative attack (0: unknown, e.g. FGSM)."""
    try:
        steps = int(params.get("steps") or 0)
        searches = int(params.get("binary_search_steps") or 1)
        restarts = int(params.get("restarts") or 1)
    except (TypeError, ValueError):
        return 0
    return steps * searches * restarts if steps > 1 else 0


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
) -> CellOutcome:
    """Run one attack over all examples in batches; per-example outcome arrays.

    A batch that runs out of memory is retried once with half the batch size (which is then kept
    for the remaining batches); a second out-of-memory is a :class:`UserError`.
    """
    t0 = time.perf_counter()
    clean, robust, norms, mins = [], [], [], []
    black: list[np.ndarray | None] = []
    failed = np.zeros(len(epsilons), dtype=np.int64)  # (K,) failed verifications
    evals = 0
    n = int(x.shape[0])
    size, halved, s = batch_size, False, 0
    bar = progress_bar(total=n, desc=desc, leave=False, disable=not progress, unit="ex")
    # Progress inside a batch: count the model's forward passes against the attack's nominal
    # number (steps x binary-search steps x restarts), so a long C&W batch moves the bar instead
    # of sitting at 0 for minutes. Capped at 95 % of the batch until the batch really finishes.
    expected = _expected_forwards(attack.params())
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
            # Epsilon-unit warnings are logged once per grid by run_grid, not per batch.
            result = attack(model, xb, yb, epsilons=epsilons, warn_units=False)
            # At eps index 0 with eps == 0 the adversarial is x itself; clean correctness comes
            # from the attack's own eps-0 prediction when present, else from a clean pass.
            with torch.no_grad():
                clean_ok = model(xb).argmax(1) == yb  # (B,)
        except (RuntimeError, MemoryError) as exc:
            if not _is_out_of_memory(exc):
                raise
            oom = True
        else:
            oom = False
        if oom:
            del xb, yb
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
            logger.warning(
                "out of memory on a batch of %d examples; retrying with %d", batch_size, size
            )
            continue
        clean.append(clean_ok.cpu().numpy())
        robust.append((~result.success).cpu().numpy())  # (K, B)
        norms.append(result.norms.double().cpu().numpy())  # (K, B)
        if result.min_norm is not None:
            mins.append(result.min_norm.double().cpu().numpy())
        if result.verify_failed is not None:
            failed += result.verify_failed.sum(dim=1).cpu().numpy().astype(np.int64)  # (K,)
        black.append(_black_box_broken(result))  # (K, B) or None
        evals += int(result.grad_evals)
        del result
        bar.update(max(0, min(s + int(xb.shape[0]), n) - bar.n))
        s += size
    bar.close()
    if hook is not None:
        hook.remove()
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
        black_box_broken=_concat_or_none(black),
    )


def _black_box_broken(result: Any) -> np.ndarray | None:
    """Bool (K, B): examples a cascade counts as broken by one of its gradient-free stages."""
    details = getattr(result, "details", None)
    if not details or "broken_by" not in details or "stages" not in details:
        return None
    from attacks.registry import attack_class

    free = [
        i
        for i, name in enumerate(details["stages"])
        if getattr(attack_class(name), "gradient_free", False)
    ]
    by = details["broken_by"].cpu().numpy()  # (K, B) stage index, -1 = none
    return np.isin(by, free)


def _concat_or_none(parts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Concatenate (K, B_i) parts along examples; None if any part is None."""
    if not parts or any(p is None for p in parts):
        return None
    return np.concatenate([p for p in parts if p is not None], axis=1)


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
        verify_failed=_sum_failed([p.verify_failed for p in parts]),
        black_box_broken=_concat_or_none([p.black_box_broken for p in parts]),
    )


def _sum_failed(counts: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """Element-wise sum of (K,) failed-verification counts; None if any is unknown."""
    if not counts or any(c is None for c in counts):
        return None
    return np.sum([c for c in counts if c is not None], axis=0).astype(np.int64)


def worst_case(cells: Sequence[CellOutcome]) -> CellOutcome:
    """Per-example worst case over cells of one norm (same epsilon grid), nested over epsilon."""
    eps = cells[0].epsilons
    for c in cells[1:]:
        if c.epsilons != eps:
            raise ValueError("worst case needs the same epsilon grid for every attack")
    robust = np.logical_and.reduce([c.robust for c in cells])  # (K, N)
    # Nested balls: broken at eps_j implies broken at every eps_k >= eps_j.
    robust = np.logical_and.accumulate(robust, axis=0)
    # Norm of the smallest perturbation that breaks the example at or below eps_k.
    big = np.full_like(cells[0].norms, np.inf)
    broken_norms = np.minimum.reduce([np.where(~c.robust, c.norms, big) for c in cells])  # (K, N)
    broken_norms = np.minimum.accumulate(broken_norms, axis=0)
    return CellOutcome(
        epsilons=list(eps),
        clean_correct=cells[0].clean_correct,
        robust=robust,
        norms=np.where(np.isfinite(broken_norms), broken_norms, 0.0),
        min_norm=None,
        seconds=sum(c.seconds for c in cells),
        grad_evals=sum(c.grad_evals for c in cells),
        params={"over": "all attacks of this norm"},
        verify_failed=_sum_failed([c.verify_failed for c in cells]),
    )


def _rows(
    ckpt: LoadedCheckpoint, attack: str, backend: str, norm: str, cell: CellOutcome
) -> list[dict[str, Any]]:
    rows = summarize_cell(cell.epsilons, cell.clean_correct, cell.robust, cell.norms)
    ident = {
        "checkpoint": ckpt.name,
        "arch": str(ckpt.meta.get("arch")),
        "dataset": ckpt.info.name,
        "granularity": ckpt.granularity,
        "sparsity_target": ckpt.sparsity_target,
        "sparsity_achieved": ckpt.sparsity_achieved,
        "attack": attack,
        "backend": backend,
        "norm": norm,
        # training, train_method, train_norm, train_eps (evaluations.record.training_methods)
        **checkpoint_training(ckpt.meta),
    }
    per_row = cell.seconds / max(len(rows), 1)
    params = json.dumps(cell.params, sort_keys=True, default=str)
    failed = cell.verify_failed
    # Unreliable: too many returned points failed verification at some epsilon of the cell.
    unreliable = bool(
        failed is not None
        and failed.max(initial=0) > UNRELIABLE_VERIFY_FRACTION * len(cell.clean_correct)
    )
    return [
        {
            **ident,
            **r,
            "seconds": per_row,
            "params": params,
            "grad_evals": cell.grad_evals,
            "verify_failed": int(failed[k]) if failed is not None else math.nan,
            "unreliable": unreliable,
        }
        for k, r in enumerate(rows)
    ]


@dataclass(frozen=True)
class CellRecord:
    """One finished (checkpoint, attack) cell with what the masking checks need to know about it."""

    checkpoint: str
    attack: str
    backend: str
    norm: str
    kind: AttackKind
    gradient_free: bool  # the attack never uses gradients (class attribute ``gradient_free``)
    outcome: CellOutcome


@dataclass
class GridRun:
    """What :func:`run_grid` produced besides the table.

    ``cells`` keeps every cell's per-example outcome (for the masking checks); ``security`` is the
    per-(checkpoint, norm, example) smallest-perturbation table (:mod:`evaluations.record.security`).
    """

    results: pd.DataFrame
    min_norms: pd.DataFrame
    grad_evals: int
    naive_grad_evals: int
    cells_computed: int
    cells_reused: int
    clean_checks: list[dict[str, Any]]
    # budgets that look like the 0..255 scale (attacks.contracts.epsilon_unit_warnings)
    epsilon_warnings: list[str] = field(default_factory=list)
    cells: list[CellRecord] = field(default_factory=list)
    security: pd.DataFrame = field(default_factory=pd.DataFrame)


def run_grid(
    checkpoints: Sequence[LoadedCheckpoint],
    data: Dataset[Any] | Mapping[str, Dataset[Any]],
    grid: GridConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> GridRun:
    """Attack every checkpoint with every attack over its epsilon grid; see the module docstring.

    ``data`` is the test set (or a mapping dataset name -> test set when checkpoints differ).
    With ``out_dir`` every finished cell is persisted and the results files are rewritten after
    each cell; cells already finished with the same fingerprint are reused.
    """
    names = [c.name for c in checkpoints]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"checkpoint names must be unique (duplicated: {', '.join(dup)})")
    if not checkpoints:
        raise UserError("no checkpoints to attack")
    attacks = [(spec, spec.build()) for spec in grid.attacks]
    if not attacks:
        raise UserError("no attacks configured")
    device = resolve_device(grid.device)
    out = Path(out_dir) if out_dir is not None else None
    main = rdist.is_main()  # under DDP only rank 0 reads/writes cells and shows progress
    progress = progress and main

    rows: list[dict[str, Any]] = []
    min_frames: list[pd.DataFrame] = []
    total_evals = naive_evals = computed = reused = 0
    clean_checks: list[dict[str, Any]] = []
    records: list[CellRecord] = []
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    eps_warnings: list[str] = []
    total_cells = len(checkpoints) * len(attacks)
    for ckpt in checkpoints:  # every checkpoint's data is checked before any attack runs
        key = ckpt.info.name
        if key not in cache:
            dataset = data[key] if isinstance(data, Mapping) else data
            cache[key] = _as_tensors(dataset, grid.limit)
        if cache[key][0].shape[0] == 0:  # like --limit 0: nothing to attack is an error
            raise UserError(f"dataset '{key}' has no test examples to attack")
        check_input_shape(ckpt.name, ckpt.meta, key, cache[key][0])
        dim = math.prod(cache[key][0].shape[1:])
        for grid_norm in sorted({a.norm for _, a in attacks}, key=lambda nm: nm.value):
            for message in epsilon_unit_warnings(grid.epsilons(grid_norm, key), grid_norm, dim):
                if message not in eps_warnings:  # once per grid, recorded in the sidecar
                    logger.warning("%s", message)
                    eps_warnings.append(message)
    bar = progress_bar(total=total_cells, desc="attack grid", disable=not progress, unit="cell")
    for ckpt in checkpoints:
        dataset = data[ckpt.info.name] if isinstance(data, Mapping) else data
        key = ckpt.info.name
        if key not in cache:
            cache[key] = _as_tensors(dataset, grid.limit)
        x, y = cache[key]
        model = ckpt.model.to(device).eval()
        by_norm: dict[str, list[tuple[AttackSpec, Attack, CellOutcome]]] = {}
        for spec, attack in attacks:
            eps = grid.epsilons(attack.norm, ckpt.info.name)
            params = attack.params()
            fp = _fingerprint(ckpt, spec, params, eps, int(x.shape[0]))
            cell = _load_cell(out, ckpt.name, spec, fp) if out is not None and main else None
            cell = rdist.broadcast_object(cell)
            if cell is None:
                bar.set_postfix_str(f"{ckpt.name} {spec.label}")
                cell = attack_cell_sharded(
                    model,
                    attack,
                    x,
                    y,
                    eps,
                    batch_size=grid.batch_size,
                    device=device,
                    progress=progress,
                    desc=f"{ckpt.name} {spec.label}",
                )
                computed += 1
                if out is not None and main:
                    _save_cell(out, ckpt.name, spec, fp, cell)
            else:
                reused += 1
                logger.info("reusing finished cell %s / %s", ckpt.name, spec.label)
            total_evals += cell.grad_evals
            steps = (
                int(params.get("steps", 1))
                * int(params.get("restarts", 1))
                * (int(params.get("binary_search_steps", 1)))
            )
            per_eps = (
                len([e for e in eps if e > 0]) if attack.kind is AttackKind.FIXED_BUDGET else 1
            )
            naive_evals += int(x.shape[0]) * per_eps * steps
            by_norm.setdefault(attack.norm.value, []).append((spec, attack, cell))
            records.append(
                CellRecord(
                    ckpt.name,
                    spec.name,
                    spec.backend,
                    attack.norm.value,
                    attack.kind,
                    bool(getattr(type(attack), "gradient_free", False)),
                    cell,
                )
            )
            rows.extend(_rows(ckpt, spec.name, spec.backend, attack.norm.value, cell))
            if cell.min_norm is not None:
                min_frames.append(
                    make_min_norms(
                        ckpt.name, spec.name, spec.backend, cell.min_norm, cell.clean_correct
                    )
                )
            bar.update(1)
            if out is not None and main:
                write_results(pd.DataFrame(rows), out)  # after every finished cell
        for norm, cells in by_norm.items():
            wc = worst_case([c for _, _, c in cells])
            backend = "+".join(sorted({s.backend for s, _, _ in cells}))
            rows.extend(_rows(ckpt, WORST_CASE, backend, norm, wc))
        clean = int(by_norm[next(iter(by_norm))][0][2].clean_correct.sum())
        warning = accuracy_warning(
            ckpt.name, ckpt.meta, ckpt.info.num_classes, clean, int(x.shape[0])
        )
        if warning is not None:
            logger.warning("%s", warning)
        clean_checks.append(
            {
                "checkpoint": ckpt.name,
                "clean_correct": clean,
                "n": int(x.shape[0]),
                "recorded_test_correct": ckpt.meta.get("test_correct"),
                "recorded_test_n": ckpt.meta.get("test_n"),
                "warning": warning,
            }
        )
        model.to("cpu")
    bar.close()
    results = pd.DataFrame(rows)
    # The order the results files use (schema, then the optional columns, then any others).
    ordered = [c for c in RESULT_COLUMNS + OPTIONAL_COLUMNS if c in results.columns]
    results = results[ordered + [c for c in results.columns if c not in ordered]]
    min_norms = pd.concat(min_frames, ignore_index=True) if min_frames else pd.DataFrame()
    security = min_norm_table(records)
    if out is not None and main:
        write_results(results, out)
        if not min_norms.empty:
            write_min_norms(out, min_norms)
        write_min_norm_table(out, security)
    return GridRun(
        results=results,
        min_norms=min_norms,
        grad_evals=total_evals,
        naive_grad_evals=naive_evals,
        cells_computed=computed,
        cells_reused=reused,
        clean_checks=clean_checks,
        epsilon_warnings=eps_warnings,
        cells=records,
        security=security,
    )


def grid_evidence(
    grid_run: GridRun, checkpoints: Sequence[LoadedCheckpoint], grid: GridConfig
) -> dict[str, Any]:
    """The sidecar fields every grid run records: checkpoints, invariants, work, seeds, provenance.

    Shared by ``rbs attack`` and ``rbs run`` so both sidecars carry the same evidence.
    """
    from evaluations.record.metrics import check_invariants, pgd_vs_fgsm
    from robustbench_sparse.provenance import provenance

    return {
        "checkpoints": [
            {
                "name": c.name,
                "path": str(c.path),
                "weights_sha256": c.meta.get("weights_sha256"),
                "clean_accuracy": c.meta.get("clean_accuracy"),
            }
            for c in checkpoints
        ],
        "attack_seeds": {s.name: s.build().params().get("seed") for s in grid.attacks},
        "invariants": check_invariants(grid_run.results),
        "pgd_vs_fgsm": pgd_vs_fgsm(grid_run.results),
        "clean_checks": grid_run.clean_checks,
        "epsilon_warnings": grid_run.epsilon_warnings,
        "work": {
            "grad_evals": grid_run.grad_evals,
            "naive_grad_evals": grid_run.naive_grad_evals,
            "cells_computed": grid_run.cells_computed,
            "cells_reused": grid_run.cells_reused,
        },
        **provenance(resolve_device(grid.device)),
    }
