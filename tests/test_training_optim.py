"""training.optim: LR schedule factors (warmup, cosine, step, multistep) and optimizer groups."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.models import create_model_for
from robustbench_sparse.training.config import LRSchedule, OptimizerName, TrainConfig
from robustbench_sparse.training.optim import build_optimizer, lr_factor
from tests.core_helpers import WIDTH, single_thread, tiny_digits


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = tiny_digits().info
    return create_model_for("small_cnn", info, width=WIDTH)


def test_warmup_is_a_linear_ramp_reaching_one() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=2.0, lr_schedule=LRSchedule.COSINE)
    spe = 10
    ramp = [lr_factor(s, spe, cfg) for s in range(20)]
    assert ramp[0] == pytest.approx(1 / 20)
    assert ramp[-1] == pytest.approx(1.0)
    steps = [b - a for a, b in itertools.pairwise(ramp)]
    assert all(d == pytest.approx(1 / 20) for d in steps)
    # The schedule proper starts at 1 right after warmup.
    assert lr_factor(20, spe, cfg) == pytest.approx(1.0)


def test_fractional_warmup_never_exceeds_base_lr() -> None:
    # 0.5 epochs x 3 steps = 1.5 warmup steps: step 1 is still "in warmup" but must not overshoot.
    cfg = TrainConfig(epochs=4, warmup_epochs=0.5, lr_schedule=LRSchedule.CONSTANT)
    factors = [lr_factor(s, 3, cfg) for s in range(12)]
    assert max(factors) <= 1.0
    assert factors[0] < 1.0
    assert factors[-1] == 1.0


def test_cosine_endpoints_and_midpoint() -> None:
    cfg = TrainConfig(epochs=10, warmup_epochs=0.0, lr_schedule=LRSchedule.COSINE)
    spe = 7
    assert lr_factor(0, spe, cfg) == pytest.approx(1.0)
    assert lr_factor(5 * spe, spe, cfg) == pytest.approx(0.5)
    assert lr_factor(10 * spe, spe, cfg) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(12 * spe, spe, cfg) == pytest.approx(0.0, abs=1e-12)  # clamped
    values = [lr_factor(s, spe, cfg) for s in range(10 * spe + 1)]
    assert all(b <= a + 1e-15 for a, b in itertools.pairwise(values))


def test_cosine_after_warmup_spans_the_remaining_epochs() -> None:
    cfg = TrainConfig(epochs=6, warmup_epochs=2.0, lr_schedule=LRSchedule.COSINE)
    assert lr_factor(4 * 10, 10, cfg) == pytest.approx(0.5)  # halfway through epochs 2..6


def test_step_schedule() -> None:
    cfg = TrainConfig(
        epochs=10, warmup_epochs=0.0, lr_schedule=LRSchedule.STEP, step_size=3.0, gamma=0.1
    )
    spe = 4
    assert lr_factor(0, spe, cfg) == 1.0
    assert lr_factor(3 * spe - 1, spe, cfg) == 1.0
    assert lr_factor(3 * spe, spe, cfg) == pytest.approx(0.1)
    assert lr_factor(6 * spe, spe, cfg) == pytest.approx(0.01)
    assert lr_factor(9 * spe + 3, spe, cfg) == pytest.approx(0.001)


def test_multistep_schedule() -> None:
    cfg = TrainConfig(
        epochs=10,
        warmup_epochs=0.0,
        lr_schedule=LRSchedule.MULTISTEP,
        milestones=(2.0, 5.0),
        gamma=0.5,
    )
    spe = 5
    expected = {0: 1.0, 1: 1.0, 2: 0.5, 4: 0.5, 5: 0.25, 9: 0.25}
    for epoch, factor in expected.items():
        assert lr_factor(epoch * spe, spe, cfg) == pytest.approx(factor), epoch


def test_constant_schedule() -> None:
    cfg = TrainConfig(epochs=3, warmup_epochs=0.0, lr_schedule=LRSchedule.CONSTANT)
    assert {lr_factor(s, 2, cfg) for s in range(6)} == {1.0}


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        (OptimizerName.SGD, torch.optim.SGD),
        (OptimizerName.ADAM, torch.optim.Adam),
        (OptimizerName.ADAMW, torch.optim.AdamW),
    ],
)
def test_build_optimizer_groups(name: OptimizerName, cls: type) -> None:
    model = _model()
    model.net.fc.bias.requires_grad_(False)
    cfg = TrainConfig(optimizer=name, lr=0.01, weight_decay=1e-3, momentum=0.8, nesterov=False)
    opt = build_optimizer(model, cfg)
    assert type(opt) is cls
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim <= 1 for p in no_decay["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(grouped) == len(set(grouped)) and set(grouped) == trainable
    assert id(model.net.fc.bias) not in grouped
    assert all(g["lr"] == 0.01 for g in opt.param_groups)
    if name is OptimizerName.SGD:
        assert decay["momentum"] == 0.8 and decay["nesterov"] is False
