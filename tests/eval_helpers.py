"""Shared fixtures for the grid / runner / experiment / ``rbs attack`` tests.

Tiny checkpoints trained on sklearn's bundled digits (offline, CPU, a few seconds): one dense and one
Campfire window-0.7 ``small_cnn`` at width 0.25. Attacks use small settings so every module stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from evaluations.engine.spec import AttackSpec, GridConfig
from robustbench_sparse.checkpoint import LoadedCheckpoint
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.train_job import DataConfig, TrainJob, run_train_job
from robustbench_sparse.training import TrainConfig

TRAIN_LIMIT = 300
TEST_LIMIT = 60
EPOCHS = 3
#: Small attack settings: PGD 5 steps, C&W 20 steps x 3 binary-search steps.
PGD_PARAMS: dict[str, Any] = {"steps": 5}
CW_PARAMS: dict[str, Any] = {"steps": 20, "binary_search_steps": 3}
LINF_EPS = (0.0, 0.05, 0.1, 0.2)
L2_EPS = (0.0, 0.5, 1.0, 2.0)
#: Columns whose values legitimately change between two runs of the same grid.
TIMING_COLUMNS = ["seconds"]


@contextmanager
def single_thread() -> Iterator[None]:
    """Run the body with one torch thread (the test machine's cores are shared), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_job(name: str, target: float = 0.0, granularity: str = "window") -> TrainJob:
    """A tiny digits job: small_cnn width 0.25, 300 train / 60 test examples, 3 epochs, CPU."""
    return TrainJob(
        data=DataConfig(dataset="digits", train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT),
        arch="small_cnn",
        arch_kwargs=(("width", 0.25),),
        train=TrainConfig(
            epochs=EPOCHS, batch_size=32, lr=0.05, warmup_epochs=0.0, device="cpu", amp=False
        ),
        sparsity=SparsityConfig(
            target=target,
            granularity=Granularity(granularity),
            start=0.0,
            end=1.0,
            update_every=2,
        ),
        name=name,
    )


def build_checkpoints(root: Path) -> dict[str, Path]:
    """Train ``dense`` and ``window-70`` under ``root``; returns name -> checkpoint directory."""
    jobs = {"dense": train_job("dense"), "window-70": train_job("window-70", 0.7, "window")}
    paths: dict[str, Path] = {}
    for name, job in jobs.items():
        out = root / name
        run_train_job(job, out, progress=False)
        paths[name] = out
    return paths


def small_grid(
    attacks: Sequence[str] = ("fgsm", "pgd", "cw"),
    *,
    limit: int | None = 40,
    batch_size: int = 25,
    linf: Sequence[float] | None = LINF_EPS,
    l2: Sequence[float] | None = L2_EPS,
) -> GridConfig:
    """A :class:`GridConfig` with the small attack settings above (batches split the examples)."""
    params = {"pgd": PGD_PARAMS, "cw": CW_PARAMS}
    specs = tuple(
        AttackSpec(a, "native", tuple(sorted(params.get(a, {}).items()))) for a in attacks
    )
    return GridConfig(
        attacks=specs,
        linf_epsilons=tuple(linf) if linf is not None else None,
        l2_epsilons=tuple(l2) if l2 is not None else None,
        batch_size=batch_size,
        limit=limit,
        device="cpu",
    )


def without_timing(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` without the wall-time column, index reset (for comparing two runs' tables)."""
    return df.drop(columns=[c for c in TIMING_COLUMNS if c in df.columns]).reset_index(drop=True)


def checkpoint_names(ckpts: Sequence[LoadedCheckpoint]) -> list[str]:
    """Names of loaded checkpoints, in order."""
    return [c.name for c in ckpts]
