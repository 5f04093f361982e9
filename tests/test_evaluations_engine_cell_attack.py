"""Tests for :mod:`evaluations.engine.cell_attack`: one cell's examples, batches and retries.

The end-to-end cell (progress inside a batch, out-of-memory retries through the CLI, sharding)
is covered by tests/test_evaluations_grid.py, tests/test_oom_retry.py and tests/test_distributed.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from attacks import Norm, get_attack, verify_adversarials
from evaluations.engine.cell_attack import (
    _smaller_batch,
    attack_cell,
    evaluation_tensors,
    is_out_of_memory,
)
from robustbench_sparse.errors import UserError


def _class_sorted(n_per_class: int = 6, classes: int = 3) -> TensorDataset:
    y = torch.arange(classes).repeat_interleave(n_per_class)  # class-sorted, like many test splits
    x = torch.rand(len(y), 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return TensorDataset(x, y)


def test_evaluation_tensors_takes_a_class_balanced_subset() -> None:
    data = _class_sorted()
    x, y = evaluation_tensors(data, 6)
    assert x.shape == (6, 1, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.long
    assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]  # not the first six (all class 0)
    again = evaluation_tensors(data, 6)
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])  # seeded
    x_all, y_all = evaluation_tensors(data, None)
    assert x_all.shape[0] == 18 and torch.equal(
        torch.sort(y_all).values, torch.sort(data.tensors[1]).values
    )


def test_empty_data_gives_empty_tensors() -> None:
    empty = TensorDataset(torch.zeros(0, 1, 4, 4), torch.zeros(0, dtype=torch.long))
    x, y = evaluation_tensors(empty, None)
    assert x.shape[0] == 0 and y.shape[0] == 0


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_smaller_batch_halves_once_then_refuses() -> None:
    cpu = torch.device("cpu")
    assert _smaller_batch(64, False, 64, cpu) == (32, True)
    with pytest.raises(UserError, match="even after retrying with 32"):
        _smaller_batch(32, True, 64, cpu)
    with pytest.raises(UserError, match="batch of 1 example"):
        _smaller_batch(1, False, 1, cpu)


def test_attack_cell_outcome_shapes_and_eps0_equals_clean() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = evaluation_tensors(_class_sorted(), None)
    cell = attack_cell(
        model,
        get_attack("fgsm"),
        x,
        y,
        [0.0, 0.1, 0.3],
        batch_size=5,  # 18 examples -> batches of 5, 5, 5, 3
        device=torch.device("cpu"),
    )
    assert cell.robust.shape == (3, 18) and cell.norms.shape == (3, 18)
    np.testing.assert_array_equal(cell.robust[0], cell.clean_correct)
    assert np.all(cell.norms <= np.array([[0.0], [0.1], [0.3]]) + 1e-6)
    assert cell.min_norm is None and cell.black_box_broken is None
    assert cell.verify_failed is not None and cell.verify_failed.tolist() == [0, 0, 0]


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_kept_adversarials_are_exactly_the_verified_breaks(attack: str) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = evaluation_tensors(_class_sorted(), None)
    eps = [0.0, 0.05, 0.2, 0.5]
    cell = attack_cell(
        model,
        get_attack(attack, **({"steps": 5} if attack == "pgd" else {})),
        x,
        y,
        eps,
        batch_size=5,  # positions must be offset per batch
        device=torch.device("cpu"),
        keep_adversarials=True,
    )
    kept = cell.adversarials
    assert kept is not None
    pos, k = kept.position, kept.eps_index
    # one adversarial per (eps, example) broken while clean-correct, none at eps 0
    broken = cell.clean_correct[None, :] & ~cell.robust  # (K, N)
    assert len(pos) == int(broken.sum()) > 0 and not bool((k == 0).any())
    assert broken[k.numpy(), pos.numpy()].all()
    e = torch.tensor(eps, dtype=torch.float64)[k]
    assert verify_adversarials(kept.adversarials, x[pos], e, Norm.LINF).all()
    with torch.no_grad():
        assert (model(kept.adversarials).argmax(1) != y[pos]).all()
    plain = attack_cell(
        model, get_attack("fgsm"), x, y, eps, batch_size=5, device=torch.device("cpu")
    )
    assert plain.adversarials is None
