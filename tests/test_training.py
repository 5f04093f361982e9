"""training.loop: fit() on tiny digits (pruning, determinism, resume-free runs, best on validation)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn

import robustbench_sparse.training.epoch as training_module
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model_for
from robustbench_sparse.sparsity import Granularity, SparsityConfig, kept_per_group
from robustbench_sparse.training import (
    Checkpointer,
    EpochRecord,
    fit,
    validation_split,
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


# ------------------------------------------------------------------------------------ fit
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
def test_fit_trains_on_the_split_and_selects_best_on_validation_only() -> None:
    data = tiny_digits()
    seen: list[int] = []
    best_calls: list[tuple[int, float | None]] = []

    def save_best(model: nn.Module, sparsifier: Any, history: list[EpochRecord]) -> None:
        best_calls.append((history[-1].epoch, history[-1].val_accuracy))

    real_loader = training_module.train_loader

    def spy(dataset: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(len(dataset))
        return real_loader(dataset, *args, **kwargs)

    cfg = tiny_train_config(epochs=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training_module, "train_loader", spy)
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
