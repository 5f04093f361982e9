"""Tests for :mod:`evaluations.engine.grid`: the checkpoints x attacks x epsilons harness.

Two tiny digits checkpoints (dense, window-70) are trained once per module; the attacks use small
settings (PGD 5 steps, C&W 20 x 3). Every test asserts an invariant on exact counts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal

import evaluations.engine.cell_attack as cell_attack_mod
import evaluations.engine.grid as grid_mod
import evaluations.engine.spec as spec_mod
from attacks import Norm, get_attack, verify_adversarials
from evaluations.engine.grid import GridRun, run_grid
from evaluations.engine.spec import AttackSpec, GridConfig
from evaluations.record.cells import CellOutcome
from evaluations.record.metrics import WORST_CASE, check_invariants
from evaluations.record.results import RESULT_COLUMNS, read_results, validate_results
from robustbench_sparse.checkpoint import LoadedCheckpoint, load_checkpoint
from robustbench_sparse.datasets import balanced_subset, load_split
from robustbench_sparse.errors import UserError
from tests.eval_helpers import (
    CW_PARAMS,
    L2_EPS,
    LINF_EPS,
    PGD_PARAMS,
    build_checkpoints,
    single_thread,
    small_grid,
    without_timing,
)

LIMIT = 40
BATCH = 25  # 40 examples -> batches of 25 and 15
ATTACK_NORMS = {"fgsm": "linf", "pgd": "linf", "cw": "l2"}


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpt_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_checkpoints(tmp_path_factory.mktemp("ckpts"))


@pytest.fixture(scope="module")
def ckpts(ckpt_dirs: dict[str, Path]) -> list[LoadedCheckpoint]:
    return [load_checkpoint(p) for p in ckpt_dirs.values()]


@pytest.fixture(scope="module")
def data() -> Any:
    return load_split("digits", "test", limit=60)


@pytest.fixture(scope="module")
def xy(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    subset = balanced_subset(data, LIMIT)  # the examples run_grid evaluates under limit=LIMIT
    xs, ys = zip(*(subset[i] for i in range(LIMIT)), strict=True)
    return torch.stack(xs).float(), torch.as_tensor(ys).long()


@pytest.fixture(scope="module")
def grid_run(ckpts: list[LoadedCheckpoint], data: Any) -> GridRun:
    return run_grid(ckpts, data, small_grid(limit=LIMIT, batch_size=BATCH), progress=False)


@pytest.fixture(scope="module")
def stored(
    ckpts: list[LoadedCheckpoint], data: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, GridRun]:
    """An uninterrupted run with ``out_dir`` (the reference for the resume tests)."""
    out = tmp_path_factory.mktemp("grid_out")
    run = run_grid(
        ckpts, data, small_grid(limit=LIMIT, batch_size=BATCH), out_dir=out, progress=False
    )
    return out, run


def _counts(df: pd.DataFrame, ckpt: str, attack: str, norm: str) -> np.ndarray:
    rows = df[(df.checkpoint == ckpt) & (df.attack == attack) & (df.norm == norm)]
    return rows.sort_values("epsilon")["robust_correct"].to_numpy(np.int64)


# ----------------------------------------------------------------------------- table shape


def test_one_row_per_checkpoint_attack_norm_epsilon(grid_run: GridRun) -> None:
    df = grid_run.results
    validate_results(df)
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert not df.duplicated(["checkpoint", "attack", "backend", "norm", "epsilon"]).any()
    expected: set[tuple[str, str, str, float]] = set()
    for ckpt in ("dense", "window-70"):
        for attack, norm in ATTACK_NORMS.items():
            eps = LINF_EPS if norm == "linf" else L2_EPS
            expected |= {(ckpt, attack, norm, e) for e in eps}
        expected |= {(ckpt, WORST_CASE, "linf", e) for e in LINF_EPS}
        expected |= {(ckpt, WORST_CASE, "l2", e) for e in L2_EPS}
    got = {(r.checkpoint, r.attack, r.norm, r.epsilon) for r in df.itertuples()}
    assert got == expected
    assert len(df) == len(expected) == 2 * (5 * 4)
    assert (df["n"] == LIMIT).all()
    assert set(df["backend"]) == {"native"}


def test_identity_columns_come_from_the_checkpoint(
    grid_run: GridRun, ckpts: list[LoadedCheckpoint]
) -> None:
    df = grid_run.results
    for ckpt in ckpts:
        rows = df[df.checkpoint == ckpt.name]
        assert set(rows["arch"]) == {"small_cnn"}
        assert set(rows["dataset"]) == {"digits"}
        assert set(rows["granularity"]) == {ckpt.granularity}
        assert set(rows["sparsity_target"]) == {ckpt.sparsity_target}
        assert set(rows["sparsity_achieved"]) == {ckpt.sparsity_achieved}
    dense = df[df.checkpoint == "dense"]
    sparse = df[df.checkpoint == "window-70"]
    assert set(dense["granularity"]) == {"dense"} and set(sparse["granularity"]) == {"window"}
    assert 0.6 < float(sparse["sparsity_achieved"].iloc[0]) < 0.8


def test_params_column_records_attack_parameters(grid_run: GridRun) -> None:
    df = grid_run.results
    pgd = json.loads(df[df.attack == "pgd"]["params"].iloc[0])
    cw = json.loads(df[df.attack == "cw"]["params"].iloc[0])
    assert pgd["steps"] == PGD_PARAMS["steps"]
    assert cw["steps"] == CW_PARAMS["steps"]
    assert cw["binary_search_steps"] == CW_PARAMS["binary_search_steps"]


# ----------------------------------------------------------------------------- invariants


def test_robust_at_eps0_equals_clean_for_every_attack(
    grid_run: GridRun, ckpts: list[LoadedCheckpoint], xy: tuple[torch.Tensor, torch.Tensor]
) -> None:
    df = grid_run.results
    x, y = xy
    for ckpt in ckpts:
        with torch.no_grad():
            clean = int((ckpt.model(x).argmax(1) == y).sum())
        rows = df[df.checkpoint == ckpt.name]
        assert (rows["clean_correct"] == clean).all(), ckpt.name
        zero = rows[rows.epsilon == 0]
        assert len(zero) == 5  # fgsm, pgd, cw, worst_case linf, worst_case l2
        assert (zero["robust_correct"] == clean).all()
        assert (zero["success_rate"] == 0).all()
    for check in grid_run.clean_checks:
        assert check["n"] == LIMIT
        assert check["recorded_test_n"] == 60


def test_attacks_break_something(grid_run: GridRun) -> None:
    df = grid_run.results
    top = df[(df.epsilon == max(LINF_EPS)) & (df.attack == "pgd")]
    assert (top["robust_correct"] < top["clean_correct"]).all()


def test_worst_case_monotone_and_below_every_attack(grid_run: GridRun) -> None:
    df = grid_run.results
    for ckpt in ("dense", "window-70"):
        for norm, attacks in (("linf", ["fgsm", "pgd"]), ("l2", ["cw"])):
            wc = _counts(df, ckpt, WORST_CASE, norm)
            assert np.all(np.diff(wc) <= 0), (ckpt, norm, wc)
            per_attack = np.stack([_counts(df, ckpt, a, norm) for a in attacks])
            assert np.all(wc <= per_attack.min(axis=0)), (ckpt, norm, wc, per_attack)
    checks = check_invariants(df)
    assert checks and all(c["passed"] for c in checks.values()), checks


def test_worst_case_rows_equal_recomputation_from_stored_cells(
    stored: tuple[Path, GridRun],
) -> None:
    out, run = stored
    df = run.results
    for ckpt in ("dense", "window-70"):
        cells = {}
        for attack in ("fgsm", "pgd"):
            with np.load(out / "cells" / ckpt / f"{attack}@native.npz") as z:
                cells[attack] = (z["robust"].astype(bool), z["clean_correct"].astype(bool))
        robust = cells["fgsm"][0] & cells["pgd"][0]  # (K, N)
        robust = np.logical_and.accumulate(
            robust, axis=0
        )  # broken at eps_j -> broken at eps_k>=eps_j
        np.testing.assert_array_equal(_counts(df, ckpt, WORST_CASE, "linf"), robust.sum(axis=1))
        for attack, (rob, clean) in cells.items():
            np.testing.assert_array_equal(_counts(df, ckpt, attack, "linf"), rob.sum(axis=1))
            assert not (rob & ~clean[None, :]).any()  # robust implies clean-correct


def test_min_norms_consistent_with_cw_rows(grid_run: GridRun) -> None:
    mins = grid_run.min_norms
    assert set(mins["attack"]) == {"cw"}
    df = grid_run.results
    for ckpt in ("dense", "window-70"):
        m = mins[mins.checkpoint == ckpt].sort_values("example")
        assert len(m) == LIMIT
        clean = m["clean_correct"].to_numpy(bool)
        norm = m["min_norm"].to_numpy(np.float64)
        assert np.all(norm[~clean] == 0)  # misclassified: broken with delta = 0
        assert np.all(norm[clean] > 0)
        expected = [int(np.sum(clean & ~(norm <= e))) for e in L2_EPS]
        np.testing.assert_array_equal(_counts(df, ckpt, "cw", "l2"), expected)


def test_grad_evals_and_naive_counts(grid_run: GridRun) -> None:
    df = grid_run.results
    single = df[df.attack != WORST_CASE]
    per_cell = single.groupby(["checkpoint", "attack"])["grad_evals"].agg(["nunique", "first"])
    assert (per_cell["nunique"] == 1).all()
    assert (per_cell["first"] > 0).all()
    assert grid_run.grad_evals == int(per_cell["first"].sum())
    # naive = examples x positive eps (fixed budget) x steps x restarts x binary-search steps
    n_pos = len([e for e in LINF_EPS if e > 0])
    naive_one = LIMIT * n_pos * 1 + LIMIT * n_pos * PGD_PARAMS["steps"]
    naive_one += LIMIT * CW_PARAMS["steps"] * CW_PARAMS["binary_search_steps"]
    assert grid_run.naive_grad_evals == 2 * naive_one
    assert 0 < grid_run.grad_evals <= grid_run.naive_grad_evals
    wc = df[(df.attack == WORST_CASE) & (df.norm == "linf")]
    for ckpt in ("dense", "window-70"):
        expected = int(per_cell.loc[(ckpt, "fgsm"), "first"] + per_cell.loc[(ckpt, "pgd"), "first"])
        assert set(wc[wc.checkpoint == ckpt]["grad_evals"]) == {expected}


@pytest.mark.parametrize("attack", ["pgd", "cw"])
def test_counted_adversarials_are_verified_and_match_a_rerun(
    attack: str,
    grid_run: GridRun,
    ckpts: list[LoadedCheckpoint],
    xy: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Re-run the attack batch by batch: every success is a verified, misclassified adversarial."""
    ckpt = ckpts[0]
    x, y = xy
    params = PGD_PARAMS if attack == "pgd" else CW_PARAMS
    att = get_attack(attack, backend="native", **params)
    norm = Norm.LINF if attack == "pgd" else Norm.L2
    eps = list(LINF_EPS if attack == "pgd" else L2_EPS)
    robust_counts = np.zeros(len(eps), dtype=np.int64)
    for s in range(0, LIMIT, BATCH):
        xb, yb = x[s : s + BATCH], y[s : s + BATCH]
        result = att(ckpt.model, xb, yb, epsilons=eps)
        assert result.success.shape == (len(eps), xb.shape[0])
        for k, e in enumerate(eps):
            adv = result.adversarials[k]
            ok = verify_adversarials(adv, xb, e, norm)
            with torch.no_grad():
                wrong = ckpt.model(adv).argmax(1) != yb
            assert bool(ok.all()), f"unverified adversarial at eps {e}"
            torch.testing.assert_close(result.success[k], ok & wrong, rtol=0, atol=0)
        robust_counts += (~result.success).sum(dim=1).numpy()
    np.testing.assert_array_equal(
        _counts(grid_run.results, ckpt.name, attack, norm.value), robust_counts
    )


def test_mapping_of_datasets_gives_the_same_table(
    ckpts: list[LoadedCheckpoint], data: Any, grid_run: GridRun
) -> None:
    grid = small_grid(("fgsm",), limit=LIMIT, batch_size=BATCH)
    by_name = run_grid(ckpts, {"digits": data}, grid, progress=False).results
    plain = grid_run.results
    ref = plain[plain.attack == "fgsm"]
    mine = by_name[by_name.attack == "fgsm"]
    assert_frame_equal(without_timing(mine), without_timing(ref))


# ----------------------------------------------------------------------------- user errors


def test_checkpoint_names_must_be_unique(ckpts: list[LoadedCheckpoint], data: Any) -> None:
    with pytest.raises(UserError, match=r"unique.*dense"):
        run_grid([ckpts[0], ckpts[0]], data, small_grid(("fgsm",), limit=5), progress=False)


def test_no_checkpoints_or_attacks_is_a_user_error(
    ckpts: list[LoadedCheckpoint], data: Any
) -> None:
    with pytest.raises(UserError, match="no checkpoints"):
        run_grid([], data, small_grid(("fgsm",), limit=5), progress=False)
    with pytest.raises(UserError, match="no attacks"):
        run_grid(ckpts, data, GridConfig(attacks=(), limit=5), progress=False)


# ----------------------------------------------------------------------------- files + resume


def test_out_dir_files(stored: tuple[Path, GridRun]) -> None:
    out, run = stored
    assert run.cells_computed == 6 and run.cells_reused == 0
    for name in ("results.csv", "results.parquet", "min_norms.parquet"):
        assert (out / name).is_file(), name
    for ckpt in ("dense", "window-70"):
        for attack in ("fgsm", "pgd", "cw"):
            meta = json.loads((out / "cells" / ckpt / f"{attack}@native.json").read_text())
            assert len(meta["fingerprint"]) == 64 and meta["grad_evals"] > 0
            assert (out / "cells" / ckpt / f"{attack}@native.npz").is_file()
    assert_frame_equal(without_timing(read_results(out)), without_timing(run.results))


def test_rerun_reuses_every_cell(
    stored: tuple[Path, GridRun], ckpts: list[LoadedCheckpoint], data: Any
) -> None:
    out, ref = stored
    again = run_grid(
        ckpts, data, small_grid(limit=LIMIT, batch_size=BATCH), out_dir=out, progress=False
    )
    assert again.cells_computed == 0 and again.cells_reused == 6
    assert again.grad_evals == ref.grad_evals
    assert_frame_equal(again.results, ref.results)  # seconds too: they come from the cells


def _copy_dir(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_removed_cell_is_the_only_one_recomputed(
    stored: tuple[Path, GridRun], ckpts: list[LoadedCheckpoint], data: Any, tmp_path: Path
) -> None:
    ref_dir, ref = stored
    out = _copy_dir(ref_dir, tmp_path / "out")
    (out / "cells" / "window-70" / "pgd@native.json").unlink()
    run = run_grid(
        ckpts, data, small_grid(limit=LIMIT, batch_size=BATCH), out_dir=out, progress=False
    )
    assert run.cells_computed == 1 and run.cells_reused == 5
    assert_frame_equal(without_timing(run.results), without_timing(ref.results))
    assert_frame_equal(without_timing(read_results(out)), without_timing(read_results(ref_dir)))
    assert (out / "cells" / "window-70" / "pgd@native.json").is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_unreadable_cell_is_recomputed(
    damage: str,
    stored: tuple[Path, GridRun],
    ckpts: list[LoadedCheckpoint],
    data: Any,
    tmp_path: Path,
) -> None:
    ref_dir, ref = stored
    out = _copy_dir(ref_dir, tmp_path / "out")
    npz = out / "cells" / "dense" / "fgsm@native.npz"
    raw = npz.read_bytes()
    npz.write_bytes(b"not a zip file" if damage == "garbage" else raw[: len(raw) // 2])
    run = run_grid(
        ckpts, data, small_grid(limit=LIMIT, batch_size=BATCH), out_dir=out, progress=False
    )
    assert run.cells_computed == 1 and run.cells_reused == 5
    assert_frame_equal(without_timing(run.results), without_timing(ref.results))


def test_changed_parameters_invalidate_only_their_cells(
    stored: tuple[Path, GridRun], ckpts: list[LoadedCheckpoint], data: Any, tmp_path: Path
) -> None:
    ref_dir, ref = stored
    out = _copy_dir(ref_dir, tmp_path / "out")
    grid = small_grid(limit=LIMIT, batch_size=BATCH)
    specs = tuple(
        AttackSpec("pgd", "native", (("steps", 3),)) if s.name == "pgd" else s for s in grid.attacks
    )
    changed = GridConfig(
        attacks=specs,
        linf_epsilons=grid.linf_epsilons,
        l2_epsilons=grid.l2_epsilons,
        batch_size=BATCH,
        limit=LIMIT,
    )
    run = run_grid(ckpts, data, changed, out_dir=out, progress=False)
    assert run.cells_computed == 2 and run.cells_reused == 4  # pgd of both checkpoints
    pgd = run.results[run.results.attack == "pgd"]
    assert all(json.loads(p)["steps"] == 3 for p in pgd["params"])
    other = run.results[~run.results.attack.isin(["pgd", WORST_CASE])]
    ref_other = ref.results[~ref.results.attack.isin(["pgd", WORST_CASE])]
    assert_frame_equal(without_timing(other), without_timing(ref_other))
    # A different epsilon grid changes every cell of that norm.
    grid2 = dataclasses.replace(changed, l2_epsilons=(0.0, 1.0))
    run2 = run_grid(ckpts, data, grid2, out_dir=out, progress=False)
    assert run2.cells_computed == 2 and run2.cells_reused == 4  # cw of both checkpoints


def test_interrupted_run_keeps_finished_cells_and_resumes(
    stored: tuple[Path, GridRun],
    ckpts: list[LoadedCheckpoint],
    data: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Kill the grid in its third cell: two cells and their rows are on disk; a re-run finishes."""
    _, ref = stored
    out = tmp_path / "out"
    real = cell_attack_mod.attack_cell
    calls = {"n": 0}

    def interrupting(*args: Any, **kwargs: Any) -> CellOutcome:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(cell_attack_mod, "attack_cell", interrupting)
    grid = small_grid(limit=LIMIT, batch_size=BATCH)
    with pytest.raises(KeyboardInterrupt):
        run_grid(ckpts, data, grid, out_dir=out, progress=False)
    partial = read_results(out)  # written after every finished cell
    assert set(partial["attack"]) == {"fgsm", "pgd"} and set(partial["checkpoint"]) == {"dense"}
    assert len(list((out / "cells").rglob("*.json"))) == 2
    monkeypatch.setattr(cell_attack_mod, "attack_cell", real)
    run = run_grid(ckpts, data, grid, out_dir=out, progress=False)
    assert run.cells_computed == 4 and run.cells_reused == 2
    assert_frame_equal(without_timing(run.results), without_timing(ref.results))
    assert_frame_equal(without_timing(read_results(out)), without_timing(ref.results))


def test_progress_moves_inside_one_long_batch(
    ckpts: list[LoadedCheckpoint],
    xy: tuple[torch.Tensor, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A C&W cell in one batch reports progress per optimisation step, not only at the end."""
    positions: list[int] = []

    class Recorder:
        n = 0

        def __init__(self, **_: Any) -> None:
            pass

        def update(self, k: int) -> None:
            self.n += k
            positions.append(self.n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(cell_attack_mod, "progress_bar", Recorder)
    x, y = xy
    attack = get_attack("cw", steps=10, binary_search_steps=2)
    model = ckpts[0].model
    cell_attack_mod.attack_cell(
        model,
        attack,
        x,
        y,
        [0.0, 0.5],
        batch_size=len(x),
        device=torch.device("cpu"),
        progress=True,
    )
    assert positions[-1] == len(x)
    assert any(0 < p < len(x) for p in positions), positions  # moved before the batch ended
    assert not model._forward_hooks  # the progress hook is removed afterwards


# ----------------------------------------------------------------------------- issue 14 contracts


def _outside_the_ball_attack() -> Any:
    """A fixed-budget attack that returns half of its points outside the eps ball (a bug)."""
    from dataclasses import dataclass
    from typing import ClassVar

    from attacks import Attack, AttackKind, FixedBudgetOutput

    @dataclass(frozen=True, repr=False)
    class OutsideBall(Attack):
        name: ClassVar[str] = "fgsm"
        norm: ClassVar[Norm] = Norm.LINF
        kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
        backend: ClassVar[str] = "native"

        def _run(
            self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: list[float]
        ) -> FixedBudgetOutput:
            bad = (torch.arange(len(x)) % 2 == 0).reshape(-1, 1, 1, 1)
            advs = torch.stack([torch.where(bad, 1.0 - x, x) for _ in epsilons])
            return FixedBudgetOutput(adversarials=advs, grad_evals=0)

    return OutsideBall()


def test_failed_verifications_mark_the_cell_unreliable(
    ckpts: list[LoadedCheckpoint],
    data: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from evaluations.present.report import write_report
    from evaluations.record.results import read_results, write_sidecar

    good = run_grid(ckpts[:1], data, small_grid(("fgsm",), limit=20), progress=False).results
    assert (good["verify_failed"] == 0).all() and not good["unreliable"].any()
    monkeypatch.setattr(spec_mod, "get_attack", lambda name, **kw: _outside_the_ball_attack())
    run = run_grid(
        ckpts[:1], data, small_grid(("fgsm",), limit=20), out_dir=tmp_path, progress=False
    )
    df = run.results
    cell = df[df.attack == "fgsm"].sort_values("epsilon")
    clean = int(cell["clean_correct"].iloc[0])
    # eps = 0 is never attacked; above it every other clean-correct example failed verification.
    assert cell["verify_failed"].tolist()[0] == 0
    assert all(v >= clean // 2 > 0 for v in cell["verify_failed"].tolist()[1:])
    assert cell["unreliable"].all()
    assert df[df.attack == WORST_CASE]["unreliable"].all()  # inherited by the worst case
    stored = read_results(tmp_path)  # the columns survive the files
    assert stored["unreliable"].dtype == bool and stored["unreliable"].all()
    assert stored["verify_failed"].dtype == np.int64
    write_sidecar(tmp_path, {"epsilon_warnings": []})
    md, _ = write_report(tmp_path)
    assert "UNRELIABLE" in md.read_text() and "dense / fgsm (native)" in md.read_text()


def test_empty_test_set_is_a_user_error(ckpts: list[LoadedCheckpoint]) -> None:
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 8, 8), torch.zeros(0).long())
    with pytest.raises(UserError, match="dataset 'digits' has no test examples to attack"):
        run_grid(ckpts[:1], empty, small_grid(("fgsm",), limit=None), progress=False)


def test_epsilon_unit_warning_logged_once_per_grid_and_recorded(
    ckpts: list[LoadedCheckpoint], data: Any, caplog: pytest.LogCaptureFixture
) -> None:
    grid = small_grid(("fgsm", "cw"), limit=6, batch_size=2, linf=[0, 8], l2=[0, 9.0])
    with caplog.at_level(logging.WARNING):
        run = run_grid(ckpts, data, grid, progress=False)
    said = [r.getMessage() for r in caplog.records if "did you mean" in r.getMessage()]
    assert len(said) == 2  # one per norm, not per batch, attack or checkpoint
    assert run.epsilon_warnings == said
    linf, l2 = sorted(said, key=lambda m: not m.startswith("linf"))
    assert "linf epsilon 8 >= 1" in linf and "did you mean 8/255 = 0.03137" in linf
    assert "l2 epsilon 9 exceeds the diameter sqrt(64) = 8" in l2
    assert grid_mod.grid_evidence(run, ckpts, grid)["epsilon_warnings"] == said
    quiet = small_grid(("fgsm",), limit=4, linf=[0, 8 / 255])
    assert run_grid(ckpts[:1], data, quiet, progress=False).epsilon_warnings == []
