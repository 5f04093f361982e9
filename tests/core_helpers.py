"""Shared helpers for the core (config / training / checkpoint / train_job / cli) tests.

Everything is tiny and CPU-only: ``small_cnn`` at width 0.25 on a 300-example subset of sklearn's
8x8 digits (bundled, no download), a few epochs of about 10 optimizer steps each.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file

from robustbench_sparse.checkpoint import MASK_PREFIX, WEIGHTS_FILE
from robustbench_sparse.datasets import DatasetSplits, load_dataset
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.train_job import DataConfig, TrainJob
from robustbench_sparse.training import TrainConfig

TRAIN_LIMIT = 300
TEST_LIMIT = 150
BATCH_SIZE = 32  # -> 10 optimizer steps per epoch on 300 examples
WIDTH = 0.25


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread for the duration (tiny tensors; the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def tiny_digits() -> DatasetSplits:
    """The digits subset every tiny job trains on (cached; datasets are read-only)."""
    return load_dataset(
        "digits", train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT, augment=False, seed=0
    )


def tiny_train_config(epochs: int = 3, seed: int = 0, **changes: object) -> TrainConfig:
    """Fast CPU optimisation settings."""
    kwargs: dict[str, object] = {
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "lr": 0.05,
        "warmup_epochs": 0.5,
        "device": "cpu",
        "amp": False,
        "seed": seed,
    }
    kwargs.update(changes)
    return TrainConfig(**kwargs)  # type: ignore[arg-type]


def tiny_job(
    target: float = 0.0,
    granularity: str = "window",
    *,
    epochs: int = 3,
    start: float = 0.5,
    end: float = 2.0,
    update_every: int = 3,
    seed: int = 0,
    name: str | None = None,
) -> TrainJob:
    """A tiny digits job; the prune window [start, end] lies inside the epochs."""
    return TrainJob(
        data=DataConfig(
            dataset="digits", train_limit=TRAIN_LIMIT, test_limit=TEST_LIMIT, augment=False
        ),
        arch="small_cnn",
        arch_kwargs=(("width", WIDTH),),
        train=tiny_train_config(epochs=epochs, seed=seed),
        sparsity=SparsityConfig(
            target=target,
            granularity=Granularity(granularity),
            start=start,
            end=end,
            update_every=update_every,
        ),
        name=name,
    )


def read_weights_file(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state, masks) read straight from ``out_dir/checkpoint.safetensors`` on disk."""
    tensors = load_file(str(out_dir / WEIGHTS_FILE))
    masks = {k[len(MASK_PREFIX) :]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: v for k, v in tensors.items() if not k.startswith(MASK_PREFIX)}
    return state, masks


def assert_tensors_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Same keys, dtypes, shapes and bitwise-equal values."""
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].shape == b[key].shape, key
        assert torch.equal(a[key], b[key]), f"tensor {key} differs"


def method_job(method: str, target: float = 0.7, **sparsity: object) -> TrainJob:
    """A tiny digits job pruned by ``method`` (campfire, gmp, random, grasp, filter)."""
    base = tiny_job(target, "window")
    cfg = dataclasses.replace(base.sparsity, method=method, **sparsity)  # type: ignore[arg-type]
    return dataclasses.replace(base, sparsity=cfg)


def inspect_json(out_dir: Path) -> dict[str, object]:
    """``rbs inspect --json DIR`` parsed (the report is recomputed from the weights on disk)."""
    import io
    import json
    from contextlib import redirect_stdout

    from rbs.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["inspect", str(out_dir), "--json"]) == 0
    result: dict[str, object] = json.loads(buf.getvalue())
    return result
