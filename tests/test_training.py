"""training: LR schedule factors, optimizer groups, TrainConfig validation, fit() on tiny digits."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import robustbench_sparse.training.loop as training_module
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model_for
from robustbench_sparse.sparsity import Granularity, SparsityConfig, kept_per_group
from robustbench_sparse.training import (
    Checkpointer,
    EpochRecord,
    LRSchedule,
    OptimizerName,
    TrainConfig,
    build_optimizer,
    default_prune_window,
    default_train_config,
    evaluate,
    fit,
    lr_factor,
    validation_split,
    with_overrides,
)
from tests.core_helpers import WIDTH, single_thread, tiny_digits, tiny_train_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = tiny_digits().info
    return create_model_for("small_cnn", info, width=WIDTH)


# ------------------------------------------------------------------------------- lr_factor
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


def test_string_schedule_and_optimizer_are_parsed() -> None:
    cfg = TrainConfig(optimizer="adam", lr_schedule="cosine", warmup_epochs=0.0, epochs=4)  # type: ignore[arg-type]
    assert cfg.optimizer is OptimizerName.ADAM
    assert cfg.lr_schedule is LRSchedule.COSINE
    assert lr_factor(2, 1, cfg) == pytest.approx(0.5)  # cosine, not a silent fall-through
    assert with_overrides(cfg, optimizer="sgd").optimizer is OptimizerName.SGD
    with pytest.raises(UserError, match="valid: sgd, adam, adamw"):
        TrainConfig(optimizer="rmsprop")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ optimizer
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


# ------------------------------------------------------------------------------ TrainConfig
@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch size"),
        ({"lr": 0.0}, "learning rate"),
        ({"lr": float("nan")}, "learning rate"),
        ({"lr": float("inf")}, "learning rate"),
        ({"weight_decay": -1e-4}, "weight decay"),
        ({"label_smoothing": 1.0}, "label smoothing"),
        ({"label_smoothing": -0.1}, "label smoothing"),
        ({"warmup_epochs": -1.0}, "warmup"),
        ({"epochs": 2, "warmup_epochs": 3.0}, "warmup"),
        ({"step_size": 0.0}, "step size"),
        ({"lr_schedule": "linear"}, "valid: constant, cosine, step, multistep"),
    ],
)
def test_train_config_validation(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        TrainConfig(**kwargs)


def test_defaults_and_overrides() -> None:
    assert default_train_config("digits").epochs == 30
    assert default_train_config("mnist").batch_size == 128
    assert default_train_config("unknown-dataset") == TrainConfig()
    assert default_prune_window(30) == (3.0, 15.0)
    assert default_prune_window(5) == (0.5, 2.5)
    cfg = with_overrides(TrainConfig(), epochs=7, lr=None)
    assert cfg.epochs == 7 and cfg.lr == TrainConfig().lr


# ------------------------------------------------------------------------------------ fit
def test_evaluate_counts_and_restores_mode() -> None:
    model = _model()
    model.train()
    loss, correct, n = evaluate(model, tiny_digits().test, device=torch.device("cpu"))
    assert n == len(tiny_digits().test)  # type: ignore[arg-type]
    assert 0 <= correct <= n and math.isfinite(loss) and loss > 0
    assert model.training


def test_fit_sparse_prunes_to_exact_zeros_and_freezes_masks() -> None:
    data = tiny_digits()
    cfg = tiny_train_config(epochs=4)
    sparsity = SparsityConfig(
        target=0.7, granularity=Granularity.WINDOW, start=0.5, end=2.0, update_every=3
    )
    masks_per_epoch: list[dict[str, torch.Tensor]] = []
    saved_states: list[dict[str, Any]] = []

    def save_last(model: nn.Module, sparsifier: Any, history: Any, state: Any) -> None:
        masks_per_epoch.append(sparsifier.masks)
        saved_states.append(state)

    model = _model()
    result = fit(
        model, data, cfg, sparsity, checkpointer=Checkpointer(save_last=save_last), progress=False
    )
    assert result.model is model and not model.training
    assert len(result.history) == 4 and [h.epoch for h in result.history] == [1, 2, 3, 4]
    assert all(isinstance(h, EpochRecord) for h in result.history)
    assert [h.masks_frozen for h in result.history] == [False, True, True, True]
    assert result.history[-1].sparsity == pytest.approx(0.7)
    assert result.sparsifier is not None and result.sparsifier.frozen
    assert result.test_n == len(data.test)  # type: ignore[arg-type]
    assert result.test_accuracy == result.test_correct / result.test_n
    assert result.best_epoch in (2, 3, 4)  # only epochs with final masks count as "best"

    params = dict(model.named_parameters())
    masks = result.sparsifier.masks
    assert sorted(masks) == [
        "net.conv2.0.weight",
        "net.conv3.0.weight",
        "net.conv4.0.weight",
        "net.conv5.0.weight",
    ]
    for name, mask in masks.items():
        weight = params[name].detach()
        assert torch.all(weight[~mask] == 0), name  # exactly zero, not merely small
        assert int(mask.sum()) < mask.numel()
        if weight.shape[-1] == 3:
            per_kernel = mask.reshape(-1, 9).sum(1)
            assert set(per_kernel.tolist()) == {kept_per_group(9, 0.7)}
    # Frozen: the masks at the end of epochs 2, 3 and 4 are the same tensors bit for bit.
    for later in masks_per_epoch[2:]:
        for name in masks:
            assert torch.equal(later[name], masks_per_epoch[1][name]), name
    # ... and they are monotone: nothing pruned after epoch 1 came back.
    for name in masks:
        assert not torch.any(masks[name] & ~masks_per_epoch[0][name])
    assert saved_states[-1]["history"][-1]["epoch"] == 4


def test_fit_dense_has_no_sparsifier() -> None:
    result = fit(_model(), tiny_digits(), tiny_train_config(epochs=1), None, progress=False)
    assert result.sparsifier is None
    assert len(result.history) == 1 and result.history[0].masks_frozen
    assert result.history[0].sparsity == 0.0


def test_fit_is_deterministic_on_cpu() -> None:
    data = tiny_digits()
    cfg = tiny_train_config(epochs=2, seed=3)
    sparsity = SparsityConfig(
        target=0.5, granularity=Granularity.COMBINED, start=0.2, end=1.5, update_every=2
    )
    runs = []
    for _ in range(2):
        result = fit(_model(seed=3), data, cfg, sparsity, progress=False)
        runs.append((result.model.state_dict(), result.sparsifier.masks, result.history))  # type: ignore[union-attr]
    (sd_a, masks_a, hist_a), (sd_b, masks_b, hist_b) = runs
    for key in sd_a:
        assert torch.equal(sd_a[key], sd_b[key]), key
    for key in masks_a:
        assert torch.equal(masks_a[key], masks_b[key]), key
    assert [h.train_loss for h in hist_a] == [h.train_loss for h in hist_b]


def test_fit_with_unfinished_schedule_freezes_at_the_end() -> None:
    # end beyond the epochs: fit itself tolerates it (run_train_job refuses it) and freezes.
    sparsity = SparsityConfig(target=0.7, start=0.0, end=5.0, update_every=2)
    result = fit(_model(), tiny_digits(), tiny_train_config(epochs=1), sparsity, progress=False)
    assert result.sparsifier is not None and result.sparsifier.frozen
    assert 0.0 < result.sparsifier.current_sparsity < 0.7


def test_fit_cuda_device_without_cuda_is_user_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    with pytest.raises(UserError, match="CUDA"):
        fit(_model(), tiny_digits(), tiny_train_config(epochs=1, device="cuda"), progress=False)


# ------------------------------------------------------------------ validation split (best/)
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


def test_fit_trains_on_the_split_and_selects_best_on_validation_only() -> None:
    data = tiny_digits()
    seen: list[int] = []
    best_calls: list[tuple[int, float | None]] = []

    def save_best(model: nn.Module, sparsifier: Any, history: list[EpochRecord]) -> None:
        best_calls.append((history[-1].epoch, history[-1].val_accuracy))

    real_loader = training_module._loader

    def spy(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(dataset))
        return real_loader(dataset, *args, **kwargs)

    cfg = tiny_train_config(epochs=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_module, "_loader", spy)
        result = fit(_model(), data, cfg, None, checkpointer=Checkpointer(save_best=save_best))
    split = validation_split(len(data.train), cfg.val_fraction, cfg.seed)  # type: ignore[arg-type]
    assert set(seen) == {len(split.train_indices)}  # the held-out examples are never trained on
    assert result.extra["validation"] == split.record()
    vals = [h.val_accuracy for h in result.history]
    assert all(v is not None for v in vals)
    # best/ is saved exactly when validation accuracy improves (ties keep the earlier epoch);
    # test accuracy plays no part.
    running, expected = -1.0, []
    for h in result.history:
        if h.val_accuracy is not None and h.val_accuracy > running:
            running = h.val_accuracy
            expected.append((h.epoch, h.val_accuracy))
    assert best_calls == expected and result.best_epoch == expected[-1][0]


def test_fit_without_validation_saves_no_best() -> None:
    calls: list[int] = []
    cfg = tiny_train_config(epochs=1, val_fraction=0.0)
    result = fit(
        _model(),
        tiny_digits(),
        cfg,
        None,
        checkpointer=Checkpointer(save_best=lambda *a: calls.append(1)),
        progress=False,
    )
    assert calls == [] and result.best_epoch == -1
    assert result.history[0].val_accuracy is None
