"""distributed: torchrun DDP training and sharded attack grids.

(a) the helpers of :mod:`robustbench_sparse.distributed` are no-ops / identities in one process;
(b) with two gloo processes (spawned in-process) identical masks verify and different ones raise
    ``RuntimeError`` on every rank; contiguous shards cover the examples in order;
(c) (slow) ``torchrun --nproc_per_node 2 -m rbs train`` on digits: exit 0, the
    checkpoint records ``world_size 2`` and the mask updates verified across ranks, and every
    kernel keeps exactly the same count of weights;
(d) (slow) a 2-process sharded ``attack`` writes the same results table as one process
    (``seconds`` aside).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rbs.cli import _strip_nproc, main
from robustbench_sparse import distributed as rdist
from robustbench_sparse.checkpoint import META_FILE
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import kept_per_group
from robustbench_sparse.training import Checkpointer, fit
from tests.core_helpers import (
    BATCH_SIZE,
    TEST_LIMIT,
    TRAIN_LIMIT,
    WIDTH,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_train_config,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------- (a) single process
def test_single_process_helpers_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not rdist.init_from_env()
    assert not rdist.is_initialized() and not rdist.is_distributed()
    assert rdist.rank() == 0 and rdist.world_size() == 1 and rdist.is_main()
    rdist.barrier()
    obj = {"a": [1, 2]}
    assert rdist.broadcast_object(obj) is obj
    assert rdist.all_gather_object(obj) == [obj]
    assert rdist.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert rdist.shard_range(10, unit=3) == (0, 10)
    assert rdist.on_main(lambda: 7) == 7
    with pytest.raises(UserError, match="boom"):
        rdist.on_main(lambda: (_ for _ in ()).throw(UserError("boom")))
    masks = {"w": torch.ones(2, 3, dtype=torch.bool)}
    assert rdist.verify_masks_identical(masks) is False  # nothing to compare against
    with rdist.session() as active:
        assert active is False
    assert rdist.run_description() == {"world_size": 1, "backend": None}


def test_mask_digests_are_deterministic_and_sensitive() -> None:
    a = {"b": torch.zeros(4, 9, dtype=torch.bool), "a": torch.ones(3, 3, dtype=torch.bool)}
    b = {k: v.clone() for k, v in reversed(list(a.items()))}
    assert rdist.mask_digests(a) == rdist.mask_digests(b)
    b["b"][2, 5] = True
    digests_a, digests_b = rdist.mask_digests(a), rdist.mask_digests(b)
    assert digests_a[0] == digests_b[0] and digests_a[1] != digests_b[1]  # sorted by name


def test_strip_nproc_keeps_every_other_word() -> None:
    words = ["-v", "train", "--nproc", "2", "--out", "x", "--nproc=3", "--epochs", "2"]
    assert _strip_nproc(words) == ["-v", "train", "--out", "x", "--epochs", "2"]


def test_resume_with_another_world_size_is_refused() -> None:
    state_holder: dict[str, Any] = {}

    def save_last(model: Any, sparsifier: Any, history: Any, state: dict[str, Any]) -> None:
        state_holder["state"] = state

    with single_thread():
        config = tiny_train_config(epochs=1)
        fit(
            _tiny_model(),
            tiny_digits(),
            config,
            checkpointer=Checkpointer(save_last=save_last),
            progress=False,
        )
        state = dict(state_holder["state"], world_size=2)
        with pytest.raises(UserError, match="2 process"):
            fit(
                _tiny_model(),
                tiny_digits(),
                tiny_train_config(epochs=2),
                checkpointer=Checkpointer(load_state=lambda: state),
                resume=True,
                progress=False,
            )


def _tiny_model() -> torch.nn.Module:
    from robustbench_sparse.models import create_model_for

    info = tiny_digits().info
    torch.manual_seed(0)
    return create_model_for("small_cnn", info, width=WIDTH)


# --------------------------------------------------------------- (b) two in-process gloo ranks
def _worker(rank: int, world: int, init_file: str, results: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        masks = {"conv.weight": torch.ones(4, 2, 3, 3, dtype=torch.bool)}
        masks["conv.weight"][0, 0, 0, 0] = False
        same = rdist.verify_masks_identical(masks)
        differ = {k: v.clone() for k, v in masks.items()}
        if rank == 1:
            differ["conv.weight"][3, 1, 2, 2] = False
        try:
            rdist.verify_masks_identical(differ)
            raised = ""
        except RuntimeError as exc:
            raised = str(exc)
        results.put(
            {
                "rank": rank,
                "same": same,
                "raised": raised,
                "shard": rdist.shard_range(10, unit=3),
                "gathered": rdist.all_gather_object(rank * 10),
                "sum": rdist.all_reduce_sum([rank, 1]),
                "bcast": rdist.broadcast_object(f"from {rank}"),
            }
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_verify_masks_and_shard(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    results = ctx.SimpleQueue()
    mp.start_processes(
        _worker,
        args=(2, str(tmp_path / "init"), results),
        nprocs=2,
        join=True,
        start_method="spawn",
    )
    got = sorted((results.get() for _ in range(2)), key=lambda r: r["rank"])
    for r in got:
        assert r["same"] is True
        assert "differ across ranks" in r["raised"] and "conv.weight" in r["raised"]
        assert r["gathered"] == [0, 10] and r["sum"] == [1.0, 2.0] and r["bcast"] == "from 0"
    # 10 examples in batches of 3 -> 4 batches, 2 per rank: [0, 6) and [6, 10).
    assert [r["shard"] for r in got] == [(0, 6), (6, 10)]


# ---------------------------------------------------------------- (c), (d) torchrun end to end
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "rbs",
        "-q",
        *args,
    ]
    return subprocess.run(
        cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def ddp_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("ddp")
    config = work / "tiny.toml"
    config.write_text(f"[model]\nwidth = {WIDTH}\n")
    out = work / "ck"
    proc = _torchrun(
        [
            "train",
            "--config",
            str(config),
            "--dataset",
            "digits",
            "--arch",
            "small_cnn",
            "--train-limit",
            str(TRAIN_LIMIT),
            "--test-limit",
            str(TEST_LIMIT),
            "--epochs",
            "3",
            "--batch-size",
            str(BATCH_SIZE // 2),
            "--lr",
            "0.1",
            "--sparsity",
            "0.7",
            "--granularity",
            "window",
            "--prune-start",
            "0.5",
            "--prune-end",
            "2",
            "--update-every",
            "3",
            "--val-fraction",
            "0",  # all 300 examples train: the step arithmetic below
            "--device",
            "cpu",
            "--no-amp",
            "--out",
            str(out),
        ],
        work,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_ddp_training_writes_a_verified_structured_checkpoint(ddp_checkpoint: Path) -> None:
    meta = json.loads((ddp_checkpoint / META_FILE).read_text())
    assert meta["kind"] == "final" and meta["epochs_completed"] == 3
    d = meta["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    assert d["per_rank_batch_size"] == BATCH_SIZE // 2
    assert d["effective_batch_size"] == BATCH_SIZE
    assert d["effective_lr"] == 0.1 and d["scale_lr"] is False
    # 300 examples / 2 ranks / 16 per batch -> 10 steps per epoch; mask updates at steps
    # 5, 8, ..., 20 (+ the end step) were each checksum-verified across the ranks.
    assert d["steps_per_epoch"] == 10
    assert d["masks_verified"] >= 4
    assert meta["masks_frozen"] is True
    assert not (ddp_checkpoint / "train_state.pt").exists()
    state, masks = read_weights_file(ddp_checkpoint)
    assert masks and all("module." not in k for k in list(state) + list(masks))
    counts = (state["net.conv2.0.weight"] != 0).reshape(-1, 9).sum(1)
    assert set(counts.tolist()) == {kept_per_group(9, 0.7)}
    for name, mask in masks.items():
        assert bool(((state[name] != 0) <= mask.bool()).all())  # pruned weights are exactly 0


@pytest.mark.slow
def test_sharded_attack_equals_single_process(ddp_checkpoint: Path, tmp_path: Path) -> None:
    attack = [
        "attack",
        "--checkpoint", str(ddp_checkpoint),
        "--attack", "fgsm",
        "--attack", "pgd",
        "--attack", "cw",
        "--param", "pgd.steps=5",
        "--param", "pgd.random_start=true",
        "--param", "cw.steps=10",
        "--param", "cw.binary_search_steps=2",
        "--limit", "100",
        "--batch-size", "30",
        "--no-report",
    ]  # fmt: skip
    proc = _torchrun([*attack, "--out", str(tmp_path / "sharded")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with single_thread():
        assert main(["-q", *attack, "--out", str(tmp_path / "single")]) == 0
    single = pd.read_csv(tmp_path / "single" / "results.csv").drop(columns=["seconds"])
    sharded = pd.read_csv(tmp_path / "sharded" / "results.csv").drop(columns=["seconds"])
    assert len(single) == 30  # 5 epsilons x (fgsm, pgd, cw and a worst case per norm)
    pd.testing.assert_frame_equal(single, sharded)
    assert (single["clean_correct"] > 0).all()
    assert (single.loc[single["attack"] == "pgd", "grad_evals"] > 0).all()
