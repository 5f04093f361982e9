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
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch.utils.data import Dataset

from attacks import Attack, Norm
from attacks.contracts import epsilon_unit_warnings
from evaluations.engine.attack_settings import attack_settings
from evaluations.engine.cell_attack import attack_cell_sharded, evaluation_tensors
from evaluations.engine.data_checks import accuracy_warning, check_input_shape
from evaluations.engine.spec import AttackSpec, GridConfig
from evaluations.engine.transfer import (
    TransferPlan,
    TransferSource,
    example_indices,
    saved_from_cell,
    transfer_cell,
)
from evaluations.record.adversarials import (
    KeptAdversarials,
    adversarials_path,
    load_adversarials,
    save_adversarials,
)
from evaluations.record.cells import (
    CellOutcome,
    CellRecord,
    cell_rows,
    load_cell,
    save_cell,
    worst_case,
)
from evaluations.record.metrics import WORST_CASE, check_invariants, pgd_vs_fgsm
from evaluations.record.results import (
    OPTIONAL_COLUMNS,
    RESULT_COLUMNS,
    TRANSFER_FROM,
    TRANSFER_INCLUDED,
    make_min_norms,
    write_min_norms,
    write_results,
)
from evaluations.record.security import min_norm_table, write_min_norm_table
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError
from robustbench_sparse.progress import progress_bar
from robustbench_sparse.provenance import provenance
from robustbench_sparse.sparsity.methods import filter_sparsity_figures
from robustbench_sparse.threads import rebalance

logger = logging.getLogger(__name__)


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
    transfer: TransferPlan | None = None,
) -> GridRun:
    """Attack every checkpoint with every attack over its epsilon grid; see the module docstring.

    ``data`` is the test set (or a mapping dataset name -> test set when checkpoints differ).
    With ``out_dir`` every finished cell is persisted and the results files are rewritten after
    each cell; cells already finished with the same fingerprint are reused. ``transfer``: save
    adversarials, craft on one checkpoint and score the others, score saved adversarials
    (:mod:`evaluations.engine.transfer`; the grid's attacks may then be empty).
    """
    plan = transfer if transfer is not None else TransferPlan()
    names = [c.name for c in checkpoints]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"checkpoint names must be unique (duplicated: {', '.join(dup)})")
    if not checkpoints:
        raise UserError("no checkpoints to attack")
    attacks = [(spec, spec.build()) for spec in grid.attacks]
    if not attacks and not plan.sources:
        raise UserError("no attacks configured")
    checkpoints = plan.ordered(checkpoints)  # a transfer source first
    main = rdist.is_main()  # under DDP only rank 0 reads/writes cells and shows progress
    tally = _Tally(
        out=Path(out_dir) if out_dir is not None else None,
        main=main,
        progress=progress and main,
        device=resolve_device(grid.device),
        plan=plan,
    )
    cache = _check_data(checkpoints, data, grid, attacks, tally)
    bar = progress_bar(
        total=len(checkpoints) * len(attacks),
        desc="attack grid",
        disable=not tally.progress,
        unit="cell",
    )
    for ckpt in checkpoints:
        key = ckpt.info.name
        if key not in cache:
            cache[key] = evaluation_tensors(_dataset_for(data, key), grid.limit)
        examples = example_indices(_dataset_for(data, key), grid.limit)
        _attack_checkpoint(ckpt, (*cache[key], examples), grid, attacks, tally, bar)
    bar.close()
    return _finish_grid(tally)


@dataclass
class _Tally:
    """What :func:`run_grid` accumulates over its cells (one object instead of ten locals)."""

    out: Path | None
    main: bool
    progress: bool
    device: torch.device
    rows: list[dict[str, Any]] = field(default_factory=list)
    min_frames: list[pd.DataFrame] = field(default_factory=list)
    grad_evals: int = 0
    naive_grad_evals: int = 0
    computed: int = 0
    reused: int = 0
    clean_checks: list[dict[str, Any]] = field(default_factory=list)
    records: list[CellRecord] = field(default_factory=list)
    eps_warnings: list[str] = field(default_factory=list)
    plan: TransferPlan = field(default_factory=TransferPlan)
    # the transfer source's adversarials (TransferPlan.source), once its cells are done
    sources: list[TransferSource] = field(default_factory=list)


def _dataset_for(data: Dataset[Any] | Mapping[str, Dataset[Any]], key: str) -> Dataset[Any]:
    return data[key] if isinstance(data, Mapping) else data


def _check_data(
    checkpoints: Sequence[LoadedCheckpoint],
    data: Dataset[Any] | Mapping[str, Dataset[Any]],
    grid: GridConfig,
    attacks: list[tuple[AttackSpec, Attack]],
    tally: _Tally,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every checkpoint's data is checked before any attack runs; the epsilon-unit warnings are
    logged once per grid (and recorded in the sidecar). Returns the tensors per dataset name."""
    cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for ckpt in checkpoints:
        key = ckpt.info.name
        if key not in cache:
            cache[key] = evaluation_tensors(_dataset_for(data, key), grid.limit)
        if cache[key][0].shape[0] == 0:  # like --limit 0: nothing to attack is an error
            raise UserError(f"dataset '{key}' has no test examples to attack")
        check_input_shape(ckpt.name, ckpt.meta, key, cache[key][0])
        for _, attack in attacks:  # a loss that needs more classes: before any attack runs
            attack.check_classes(ckpt.info.num_classes)
        dim = math.prod(cache[key][0].shape[1:])
        for grid_norm in sorted({a.norm for _, a in attacks}, key=lambda nm: nm.value):
            for message in epsilon_unit_warnings(grid.epsilons(grid_norm, key), grid_norm, dim):
                if message not in tally.eps_warnings:  # once per grid, recorded in the sidecar
                    logger.warning("%s", message)
                    tally.eps_warnings.append(message)
    return cache


def _cell(
    ckpt: LoadedCheckpoint,
    model: torch.nn.Module,
    spec: AttackSpec,
    attack: Attack,
    xy: tuple[torch.Tensor, torch.Tensor],
    eps: list[float],
    grid: GridConfig,
    tally: _Tally,
    bar: Any,
) -> tuple[CellOutcome, str, bool]:
    """One cell: reuse the finished one with the same fingerprint, else attack and store it.

    Returns ``(cell, fingerprint, computed)``. A checkpoint that keeps its adversarials
    (:meth:`TransferPlan.keeps`) reuses a cell only together with its saved adversarials.
    """
    x, y = xy
    keep = tally.plan.keeps(ckpt.name)
    fp = _fingerprint(ckpt, spec, attack.params(), eps, int(x.shape[0]))
    out = tally.out
    cell = load_cell(out, ckpt.name, spec.label, fp) if out is not None and tally.main else None
    if cell is not None and keep and out is not None:
        cell.adversarials = _saved_kept(out, ckpt.name, spec.label, fp)
        cell = cell if cell.adversarials is not None else None  # needed: attack again
    cell = rdist.broadcast_object(cell)
    if cell is not None:
        tally.reused += 1
        logger.info("reusing finished cell %s / %s", ckpt.name, spec.label)
        return cell, fp, False
    bar.set_postfix_str(f"{ckpt.name} {spec.label}")
    rebalance()  # the automatic thread count follows the machine's load, cell by cell
    cell = attack_cell_sharded(
        model,
        attack,
        x,
        y,
        eps,
        batch_size=grid.batch_size,
        device=tally.device,
        progress=tally.progress,
        desc=f"{ckpt.name} {spec.label}",
        keep_adversarials=keep,
    )
    tally.computed += 1
    if out is not None and tally.main:
        save_cell(out, ckpt.name, spec.label, fp, cell)
    return cell, fp, True


def _saved_kept(out: Path, checkpoint: str, label: str, fp: str) -> KeptAdversarials | None:
    """The adversarials saved with a finished cell (``None``: none, damaged or another cell's)."""
    path = adversarials_path(out, checkpoint, label)
    if not path.is_file():
        return None
    try:
        saved = load_adversarials(path)
    except UserError as exc:
        logger.warning("ignoring saved adversarials: %s", exc)
        return None
    return saved.kept if saved.fingerprint == fp else None


def _attack_checkpoint(
    ckpt: LoadedCheckpoint,
    xye: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grid: GridConfig,
    attacks: list[tuple[AttackSpec, Attack]],
    tally: _Tally,
    bar: Any,
) -> None:
    """Every attack on one checkpoint, its transfer cells, its worst case per norm, its clean
    check. ``xye``: the examples (N, C, H, W), labels (N,), indices into the test split (N,)."""
    x, y, _ = xye
    model = ckpt.model.to(tally.device).eval()
    by_norm: dict[str, list[tuple[str, CellOutcome]]] = {}
    for spec, attack in attacks:
        eps = grid.epsilons(attack.norm, ckpt.info.name)
        cell, fp, computed = _cell(ckpt, model, spec, attack, (x, y), eps, grid, tally, bar)
        # What the attack ran on this model's class count (a cascade's stages and restarts, a
        # substitution for few classes), next to its parameters in the rows.
        cell.params = {**cell.params, **attack.settings_for(ckpt.info.num_classes)}
        tally.grad_evals += cell.grad_evals
        tally.naive_grad_evals += attack.nominal_grid_gradients(int(x.shape[0]), eps)
        by_norm.setdefault(attack.norm.value, []).append((spec.backend, cell))
        kind = bool(getattr(type(attack), "gradient_free", False))
        tally.records.append(
            CellRecord(
                ckpt.name, spec.name, spec.backend, attack.norm.value, attack.kind, kind, cell
            )
        )
        tally.rows.extend(cell_rows(ckpt, spec.name, spec.backend, attack.norm.value, cell))
        if cell.min_norm is not None:
            tally.min_frames.append(
                make_min_norms(
                    ckpt.name, spec.name, spec.backend, cell.min_norm, cell.clean_correct
                )
            )
        if cell.adversarials is not None:
            _kept(ckpt, (spec, attack.norm.value), cell, fp, computed, xye, tally)
        bar.update(1)
        if tally.out is not None and tally.main:
            write_results(pd.DataFrame(tally.rows), tally.out)  # after every finished cell
    transferred = _transfer_cells(ckpt, model, xye, grid, tally, by_norm)
    joined = {norm for norm, _ in transferred} if tally.plan.in_worst_case else set()
    for norm, cells in by_norm.items():
        wc = worst_case([c for _, c in cells])
        if norm in joined:  # said in the rows (the report's caption reads it)
            wc.params = {"over": f"all attacks of this norm, {TRANSFER_INCLUDED}"}
        backend = "+".join(sorted({b for b, _ in cells}))
        tally.rows.extend(cell_rows(ckpt, WORST_CASE, backend, norm, wc))
    first = next((c for cells in by_norm.values() for _, c in cells), None) or transferred[0][1]
    clean = int(first.clean_correct.sum())
    tally.clean_checks.append(_clean_check(ckpt, clean, len(first.clean_correct)))
    model.to("cpu")


def _kept(
    ckpt: LoadedCheckpoint,
    attack: tuple[AttackSpec, str],
    cell: CellOutcome,
    fp: str,
    computed: bool,
    xye: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    tally: _Tally,
) -> None:
    """A cell's kept adversarials: written next to the cells (when new), and a transfer source
    when ``ckpt`` is the one to craft on."""
    spec, norm = attack
    saved = saved_from_cell(ckpt, (spec.name, spec.backend, norm), cell, fp, xye[:2], xye[2])
    if computed and tally.out is not None and tally.main:
        saved.path = save_adversarials(adversarials_path(tally.out, ckpt.name, spec.label), saved)
    if ckpt.name == tally.plan.source:
        tally.sources.append(TransferSource(saved, xye[0], xye[1]))


def _transfer_cells(
    ckpt: LoadedCheckpoint,
    model: torch.nn.Module,
    xye: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    grid: GridConfig,
    tally: _Tally,
    by_norm: dict[str, list[tuple[str, CellOutcome]]],
) -> list[tuple[str, CellOutcome]]:
    """Score ``ckpt`` on every transfer source but its own; rows ``<attack> from <source>``.

    Returns the (norm, cell) of every transfer cell.

    With :attr:`TransferPlan.in_worst_case` the cells join ``by_norm`` (the worst case).
    """
    plan = tally.plan
    own = [] if ckpt.name == plan.source else tally.sources
    cells = []
    for src in [*own, *plan.sources]:
        saved = src.saved
        if saved.dataset != ckpt.info.name:
            raise UserError(
                f"{saved.path or saved.source}: adversarials of dataset {saved.dataset!r} cannot "
                f"score checkpoint {ckpt.name!r} ({ckpt.info.name})"
            )
        cell = transfer_cell(model, src, batch_size=grid.batch_size, device=tally.device)
        cells.append((saved.norm, cell))
        tally.rows.extend(
            cell_rows(ckpt, src.label, saved.backend, saved.norm, cell, transfer_from=saved.source)
        )
        if plan.in_worst_case:
            _check_joinable(src, xye[2], grid.epsilons(Norm(saved.norm), ckpt.info.name))
            by_norm.setdefault(saved.norm, []).append((saved.backend, cell))
    if cells and tally.out is not None and tally.main:
        write_results(pd.DataFrame(tally.rows), tally.out)
    return cells


def _check_joinable(src: TransferSource, examples: torch.Tensor, eps: list[float]) -> None:
    """A transfer cell joins the worst case only over the grid's examples and epsilons."""
    saved = src.saved
    if not torch.equal(saved.examples, examples) or list(saved.epsilons) != eps:
        raise UserError(
            f"--transfer-in-worst-case: the adversarials of {saved.source} ({saved.attack}) "
            "cover other examples or epsilons than this grid; use the same --limit and "
            "epsilons, or leave transfer out of the worst case"
        )


def _clean_check(ckpt: LoadedCheckpoint, clean: int, n: int) -> dict[str, Any]:
    """Clean accuracy on the grid's examples next to what the checkpoint recorded (warns if low)."""
    warning = accuracy_warning(ckpt.name, ckpt.meta, ckpt.info.num_classes, clean, n)
    if warning is not None:
        logger.warning("%s", warning)
    return {
        "checkpoint": ckpt.name,
        "clean_correct": clean,
        "n": n,
        "recorded_test_correct": ckpt.meta.get("test_correct"),
        "recorded_test_n": ckpt.meta.get("test_n"),
        "warning": warning,
    }


def _finish_grid(tally: _Tally) -> GridRun:
    """Order the results table, build the minimum-norm tables, write the files (rank 0)."""
    results = pd.DataFrame(tally.rows)
    # The order the results files use (schema, then the optional columns, then any others).
    ordered = [c for c in RESULT_COLUMNS + OPTIONAL_COLUMNS if c in results.columns]
    results = results[ordered + [c for c in results.columns if c not in ordered]]
    if TRANSFER_FROM in results.columns:  # white-box rows: "" (as the files have it)
        results[TRANSFER_FROM] = results[TRANSFER_FROM].fillna("").astype(str)
    min_frames = tally.min_frames
    min_norms = pd.concat(min_frames, ignore_index=True) if min_frames else pd.DataFrame()
    security = min_norm_table(tally.records)
    if tally.out is not None and tally.main:
        write_results(results, tally.out)
        if not min_norms.empty:
            write_min_norms(tally.out, min_norms)
        write_min_norm_table(tally.out, security)
    return GridRun(
        results=results,
        min_norms=min_norms,
        grad_evals=tally.grad_evals,
        naive_grad_evals=tally.naive_grad_evals,
        cells_computed=tally.computed,
        cells_reused=tally.reused,
        clean_checks=tally.clean_checks,
        epsilon_warnings=tally.eps_warnings,
        cells=tally.records,
        security=security,
    )


def grid_evidence(
    grid_run: GridRun, checkpoints: Sequence[LoadedCheckpoint], grid: GridConfig
) -> dict[str, Any]:
    """The sidecar fields every grid run records: checkpoints, invariants, work, seeds, provenance.

    Shared by ``rbs attack`` and ``rbs run`` so both sidecars carry the same evidence.
    """

    return {
        # per attack: parameters, restarts, targets, stages and few-class substitutions
        "attacks": attack_settings(grid.attacks, checkpoints),
        "checkpoints": [
            {
                "name": c.name,
                "path": str(c.path),
                "weights_sha256": c.meta.get("weights_sha256"),
                "clean_accuracy": c.meta.get("clean_accuracy"),
                # a plain state dict: the normalization it was given (assumed or --normalize)
                # and the entry its weights came from (--state-dict-key)
                **(
                    {
                        "source": "plain-state-dict",
                        "normalization": c.meta.get("normalization"),
                        "state_dict_key": c.meta.get("state_dict_key"),
                    }
                    if c.meta.get("source") == "plain-state-dict"
                    else {}
                ),
                # whole zero filters: filter sparsity and the weights thinning removes, named
                "filter_sparsity": (
                    filter_sparsity_figures(c.model, c.info.input_shape)
                    if c.granularity == "filter"
                    else None
                ),
                # a thinned model: module -> recorded widths (thin export, filtersketch)
                "thin_widths": (c.meta.get("thin") or {}).get("widths"),
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
