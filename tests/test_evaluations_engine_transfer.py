"""Tests for :mod:`evaluations.engine.transfer` and the grid's transfer plan.

Two tiny digits checkpoints (dense, window-70; tests/eval_helpers.py). One grid crafts FGSM and
PGD on dense with ``save`` and ``source="dense"`` and scores window-70; the tests check the files,
the transfer rows (exact identities between counts), that saved adversarials reload to the same
robust accuracy, and that every kind of mismatched file is refused in one line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from attacks import Norm, verify_adversarials
from evaluations.engine.grid import GridRun, run_grid
from evaluations.engine.spec import GridConfig
from evaluations.engine.transfer import (
    TransferPlan,
    check_saved,
    example_indices,
    source_from_file,
    transfer_label,
)
from evaluations.record.adversarials import (
    KeptAdversarials,
    find_adversarial_files,
    load_adversarials,
    save_adversarials,
)
from evaluations.record.metrics import WORST_CASE, check_invariants
from evaluations.record.results import TRANSFER_FROM, read_results
from robustbench_sparse.checkpoint import LoadedCheckpoint, load_checkpoint
from robustbench_sparse.datasets import load_split
from robustbench_sparse.errors import UserError
from tests.eval_helpers import build_checkpoints, single_thread, small_grid

LIMIT = 40


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> list[LoadedCheckpoint]:
    dirs = build_checkpoints(tmp_path_factory.mktemp("ckpts"))
    return [load_checkpoint(p) for p in dirs.values()]  # dense, window-70


@pytest.fixture(scope="module")
def data() -> Any:
    return load_split("digits", "test", limit=60)  # a Subset of the split: indices matter


@pytest.fixture(scope="module")
def grid() -> GridConfig:
    return small_grid(("fgsm", "pgd"), limit=LIMIT, batch_size=25, l2=None)


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def run(ckpts: list[LoadedCheckpoint], data: Any, grid: GridConfig, out: Path) -> GridRun:
    # window-70 first: the source is attacked first whatever the order
    plan = TransferPlan(save=True, source="dense")
    return run_grid(ckpts[::-1], data, grid, out_dir=out, progress=False, transfer=plan)


def test_saved_files_hold_verified_adversarials_of_their_source(
    run: GridRun, ckpts: list[LoadedCheckpoint], data: Any, out: Path
) -> None:
    files = find_adversarial_files(out)
    assert [f.relative_to(out).as_posix() for f in files] == [
        f"adversarials/{c}/{a}@native.safetensors"
        for c in ("dense", "window-70")
        for a in ("fgsm", "pgd")
    ]
    models = {c.name: c.model.eval() for c in ckpts}
    test = load_split("digits", "test")
    for path in files:
        saved = load_adversarials(path)
        assert saved.weights_sha256 == next(
            c.meta["weights_sha256"] for c in ckpts if c.name == saved.source
        )
        assert torch.equal(saved.examples, example_indices(data, LIMIT))
        src = source_from_file(path, test)  # the whole split: indices map back
        kept = saved.kept
        eps = torch.tensor(saved.epsilons, dtype=torch.float64)[kept.eps_index]
        assert verify_adversarials(kept.adversarials, src.x[kept.position], eps, Norm.LINF).all()
        with torch.no_grad():
            pred = models[saved.source](kept.adversarials).argmax(1)
        assert (pred != src.y[kept.position]).all()
        # as many as the white-box row counts as broken among clean-correct examples
        rows = run.results[
            (run.results["checkpoint"] == saved.source) & (run.results["attack"] == saved.attack)
        ]
        broken = (rows["clean_correct"] - rows["robust_correct"]).tolist()
        assert np.bincount(kept.eps_index.numpy(), minlength=len(rows)).tolist() == broken


def test_transfer_rows_name_their_source_and_add_up(run: GridRun) -> None:
    df = run.results
    transfer = df[df[TRANSFER_FROM] != ""]
    assert set(transfer["checkpoint"]) == {"window-70"}  # dense is not scored on itself
    assert set(transfer["attack"]) == {transfer_label(a, "dense") for a in ("fgsm", "pgd")}
    assert set(transfer[TRANSFER_FROM]) == {"dense"} and (transfer["grad_evals"] == 0).all()
    white = df[(df["checkpoint"] == "window-70") & (df["attack"] == "pgd")]
    for attack, rows in transfer.groupby("attack"):
        assert rows["clean_correct"].tolist() == white["clean_correct"].tolist()
        params = __import__("json").loads(rows["params"].iloc[0])
        moved = np.asarray(params["transferred"])
        assert (moved <= np.asarray(params["source_broken"])).all()
        # robust = clean-correct minus the transferred adversarials that fool it, exactly
        assert (rows["robust_correct"].to_numpy() == rows["clean_correct"].to_numpy() - moved).all()
        assert rows["robust_correct"].iloc[0] == rows["clean_correct"].iloc[0], attack  # eps 0
    assert all(check["passed"] for check in check_invariants(df).values())


def test_worst_case_stays_white_box(run: GridRun) -> None:
    df = run.results
    for ckpt in ("dense", "window-70"):
        rows = df[(df["checkpoint"] == ckpt) & (df[TRANSFER_FROM] == "")]
        wc = rows[rows["attack"] == WORST_CASE]["robust_correct"].to_numpy()
        single = [rows[rows["attack"] == a]["robust_correct"].to_numpy() for a in ("fgsm", "pgd")]
        assert wc.tolist() == np.minimum.accumulate(np.minimum(*single)).tolist()
    assert {r.attack for r in run.cells} == {"fgsm", "pgd"}  # masking checks see white-box only


def test_results_file_round_trips_the_column(run: GridRun, out: Path) -> None:
    back = read_results(out)
    assert back[TRANSFER_FROM].tolist() == run.results[TRANSFER_FROM].fillna("").tolist()
    csv = read_results(out / "results.csv")
    assert csv[TRANSFER_FROM].tolist() == back[TRANSFER_FROM].tolist()


def test_saved_adversarials_reload_to_the_same_robust_accuracy(
    run: GridRun, ckpts: list[LoadedCheckpoint], out: Path, grid: GridConfig
) -> None:
    test = load_split("digits", "test")
    for ckpt in ckpts:
        files = find_adversarial_files(out / "adversarials" / ckpt.name)
        plan = TransferPlan(sources=tuple(source_from_file(f, test) for f in files))
        again = run_grid(
            [ckpt], test, dataclasses.replace(grid, attacks=()), progress=False, transfer=plan
        ).results
        assert WORST_CASE not in set(again["attack"])  # no white-box attack: no worst case
        for attack in ("fgsm", "pgd"):
            first = run.results[
                (run.results["checkpoint"] == ckpt.name)
                & (run.results["attack"] == attack)
                & (run.results[TRANSFER_FROM] == "")
            ]
            second = again[again["attack"] == transfer_label(attack, ckpt.name)]
            cols = ["epsilon", "n", "clean_correct", "robust_correct"]
            pd.testing.assert_frame_equal(
                first[cols].reset_index(drop=True), second[cols].reset_index(drop=True)
            )


def test_resume_reuses_cells_with_their_adversarials_and_can_join_the_worst_case(
    run: GridRun, ckpts: list[LoadedCheckpoint], data: Any, grid: GridConfig, out: Path
) -> None:
    plan = TransferPlan(save=True, source="dense", in_worst_case=True)
    again = run_grid(ckpts, data, grid, out_dir=out, progress=False, transfer=plan)
    assert again.cells_computed == 0 and again.cells_reused == 4
    df = again.results
    target = df[df["checkpoint"] == "window-70"]
    wc = target[target["attack"] == WORST_CASE].set_index("epsilon")["robust_correct"]
    for attack, rows in target[target["attack"] != WORST_CASE].groupby("attack"):
        assert (wc <= rows.set_index("epsilon")["robust_correct"]).all(), attack
    before = run.results
    old = before[(before["checkpoint"] == "window-70") & (before["attack"] == WORST_CASE)]
    assert (wc.to_numpy() <= old["robust_correct"].to_numpy()).all()
    # saved adversarials over other epsilons (or examples) cannot join the worst case
    src = source_from_file(
        out / "adversarials/dense/pgd@native.safetensors", load_split("digits", "test")
    )
    joined = TransferPlan(in_worst_case=True, sources=(src,))
    for other in (
        small_grid(("fgsm",), limit=LIMIT, linf=(0.0, 0.1), l2=None),
        small_grid(("fgsm",), limit=LIMIT - 1, l2=None),
    ):
        with pytest.raises(UserError, match="other examples or epsilons"):
            run_grid(ckpts[1:], data, other, progress=False, transfer=joined)


def test_a_source_that_is_not_a_checkpoint_is_refused(
    ckpts: list[LoadedCheckpoint], data: Any, grid: GridConfig
) -> None:
    with pytest.raises(UserError, match="transfer source 'nope' is not among the checkpoints"):
        run_grid(ckpts, data, grid, progress=False, transfer=TransferPlan(source="nope"))


def _refusal(run: GridRun, out: Path, tmp_path: Path, change: str) -> str:
    """Change one thing of dense's saved PGD file and return the one-line refusal."""
    saved = load_adversarials(out / "adversarials" / "dense" / "pgd@native.safetensors")
    kept = saved.kept
    if change == "labels":
        saved.labels = (saved.labels + 1) % 10
    elif change == "examples":
        saved.examples = saved.examples + 1
    elif change == "outside the ball":
        adv = kept.adversarials.clone()
        adv[0] = torch.where(adv[0] > 0.5, adv[0] - 0.4, adv[0] + 0.4)  # moved 0.4 in Linf
        saved.kept = KeptAdversarials(kept.position, kept.eps_index, adv)
    elif change == "out of range":
        saved.examples = saved.examples + 10_000
    elif change == "dataset":
        saved.dataset = "mnist"
    path = save_adversarials(tmp_path / f"{change}.safetensors", saved)
    with pytest.raises(UserError) as info:
        src = source_from_file(path, load_split("digits", "test"))
        check_saved(src.saved, src.x, src.y, "digits")
    text = str(info.value)
    assert "\n" not in text and str(path) in text
    return text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("labels", "labels differ from the digits test split"),
        ("examples", "differ from the digits test split"),
        ("outside the ball", "outside \\[0, 1\\] or their linf ball"),
        ("out of range", "the digits test split has 450 examples"),
        ("dataset", "made on dataset 'mnist', not 'digits'"),
    ],
)
def test_mismatched_saved_adversarials_are_refused(
    run: GridRun, out: Path, tmp_path: Path, change: str, message: str
) -> None:
    import re

    assert re.search(message, _refusal(run, out, tmp_path, change))
