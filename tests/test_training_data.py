"""training.data: the seeded validation hold-out, the per-epoch loader, the DDP layout."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from robustbench_sparse.errors import UserError
from robustbench_sparse.training.data import distributed_layout, train_loader, validation_split
from tests.core_helpers import tiny_train_config


def test_validation_split_is_seeded_disjoint_and_covers_the_training_set() -> None:
    a = validation_split(300, 0.1, seed=0)
    assert len(a.val_indices) == 30 and len(a.train_indices) == 270
    assert set(a.val_indices).isdisjoint(a.train_indices)
    assert sorted(a.val_indices + a.train_indices) == list(range(300))
    assert validation_split(300, 0.1, seed=0) == a  # same seed, same split
    assert validation_split(300, 0.1, seed=1).val_indices != a.val_indices
    before = torch.random.get_rng_state()
    validation_split(300, 0.1, seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched
    rec = a.record()
    assert rec["n_val"] == 30 and rec["seed"] == 0 and rec["fraction"] == 0.1
    assert (
        rec["val_indices_sha256"]
        != validation_split(300, 0.1, seed=1).record()["val_indices_sha256"]
    )
    none = validation_split(10, 0.0, seed=0)
    assert none.val_indices == [] and none.train_indices == list(range(10))
    with pytest.raises(UserError, match="leaves none to train on"):
        validation_split(1, 0.5, seed=0)
    with pytest.raises(UserError, match="validation fraction must be in"):
        tiny_train_config(val_fraction=0.9)


def test_train_loader_order_depends_on_the_seed_only() -> None:
    data = TensorDataset(torch.arange(20).float().reshape(20, 1), torch.zeros(20, dtype=torch.long))
    cfg = tiny_train_config(batch_size=4)

    def order(seed: int) -> list[float]:
        loader = train_loader(data, cfg, shuffle=True, seed=seed, epoch=3)
        return [float(v) for x, _ in loader for v in x.flatten()]

    before = torch.random.get_rng_state()
    assert order(7) == order(7)  # same seed, same order
    assert order(7) != order(8)
    assert sorted(order(7)) == [float(i) for i in range(20)]  # every example once
    assert torch.equal(torch.random.get_rng_state(), before)  # its own generator
    plain = train_loader(data, cfg, shuffle=False, seed=0)
    assert [float(v) for x, _ in plain for v in x.flatten()] == [float(i) for i in range(20)]


def test_distributed_layout_of_a_single_process() -> None:
    cfg = tiny_train_config(batch_size=32, lr=0.05, scale_lr=True)
    layout = distributed_layout(cfg, 270)
    assert layout["world_size"] == 1 and layout["effective_batch_size"] == 32
    assert layout["steps_per_epoch"] == 9  # ceil(270 / 32)
    assert layout["effective_lr"] == 0.05 and layout["sync_bn"] is False
    assert distributed_layout(cfg, 0)["steps_per_epoch"] == 1
