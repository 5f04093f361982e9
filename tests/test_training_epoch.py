"""training.epoch: one epoch over seeded batches, the sparsifier hooks around every step."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model_for
from robustbench_sparse.sparsity import CampfireSparsifier, Granularity, SparsityConfig
from robustbench_sparse.sparsity.base import TrainingContext
from robustbench_sparse.training.config import TrainConfig
from robustbench_sparse.training.epoch import MaskSync, TrainingRun, train_one_epoch
from robustbench_sparse.training.optim import build_optimizer, lr_factor
from tests.core_helpers import WIDTH, single_thread, tiny_digits, tiny_train_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


class _Spy(CampfireSparsifier):
    """Campfire recording the hook calls fit makes around each step."""

    def __init__(self, config: SparsityConfig, steps_per_epoch: int) -> None:
        super().__init__(config, steps_per_epoch)
        self.calls: list[str] = []

    def on_batch_start(self, context: TrainingContext) -> bool:
        self.calls.append("batch")
        return False

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.calls.append("step")
        super().step(optimizer)

    def on_epoch_end(self, epoch: int) -> None:
        self.calls.append(f"end {epoch}")


class _NaNLoss(nn.Module):
    def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, y) * float("nan")


def _run(config: TrainConfig, sparsifier: CampfireSparsifier | None = None) -> TrainingRun:
    data = tiny_digits()
    torch.manual_seed(0)
    model = create_model_for("small_cnn", data.info, width=WIDTH)
    steps = -(-len(data.train) // config.batch_size)  # type: ignore[arg-type]
    if sparsifier is not None:
        sparsifier.prepare(model)
    optimizer = build_optimizer(model, config)
    return TrainingRun(
        model=model,
        train_model=model,
        train_set=data.train,
        val_set=None,
        test_set=data.test,
        config=config,
        adv=None,
        device=torch.device("cpu"),
        use_amp=False,
        steps_per_epoch=steps,
        layout={"world_size": 1},
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, steps, config)
        ),
        scaler=torch.amp.GradScaler("cuda", enabled=False),
        criterion=nn.CrossEntropyLoss(),
        sparsifier=sparsifier,
        mask_sync=MaskSync(sparsifier),
        context=TrainingContext(model, lambda seed: [], lambda n, x, y: x.sum(), 0),
        checkpointer=None,
        progress=False,
    )


def test_one_epoch_counts_every_example_and_calls_the_hooks_in_order() -> None:
    config = tiny_train_config()
    sp = _Spy(SparsityConfig(target=0.5, granularity=Granularity.WINDOW, end=1.0), 10)
    run = _run(config, sp)
    totals = train_one_epoch(run, 0)
    n = len(run.train_set)  # type: ignore[arg-type]
    assert totals.seen == n and 0 <= totals.correct <= n and totals.loss_sum > 0
    assert totals.adv_correct == 0 and totals.eps == 0.0
    steps = run.steps_per_epoch
    assert sp.calls == ["batch", "step"] * steps + ["end 0"]
    assert sp.step_count == steps and run.model.training


def test_an_epoch_depends_on_the_seed_and_epoch_only() -> None:
    config = tiny_train_config()
    a, b = _run(config), _run(config)
    torch.manual_seed(123)  # the epoch re-seeds the global RNG itself
    ta = train_one_epoch(a, 2)
    tb = train_one_epoch(b, 2)
    assert (ta.loss_sum, ta.correct) == (tb.loss_sum, tb.correct)
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_a_diverged_epoch_is_a_user_error() -> None:
    run = _run(tiny_train_config())
    run.criterion = _NaNLoss()
    with pytest.raises(UserError, match="diverged at epoch 1"):
        train_one_epoch(run, 0)
