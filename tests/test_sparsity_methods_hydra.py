"""HYDRA (robustbench_sparse.sparsity.methods.hydra): scores learned with frozen weights, then fixed.

Invariants: weights are not changed by score learning (only masked); every parameter's
``requires_grad`` and the model's mode are restored; the masks have the target sparsity and, when
constrained, Campfire's structure; the straight-through estimator moves the scores; inside ``fit``
the masks are learned at ``start`` and frozen for the fine-tuning, with pruned weights exactly zero.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from robustbench_sparse.adversarial import AdversarialConfig
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, kept_per_group
from robustbench_sparse.sparsity.masks import compute_mask
from robustbench_sparse.sparsity.methods import HydraSparsifier, create_sparsifier
from robustbench_sparse.sparsity.methods.hydra import initial_scores
from robustbench_sparse.train_job import run_train_job
from robustbench_sparse.training import fit
from tests.core_helpers import (
    WIDTH,
    assert_tensors_identical,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_job,
    tiny_train_config,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    with single_thread():
        yield


def _model() -> nn.Module:
    torch.manual_seed(0)
    info = tiny_digits().info
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )


def _batches(k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    data = tiny_digits().train
    xs, ys = zip(*(data[i] for i in range(64)), strict=True)
    x, y = torch.stack(xs), torch.tensor(ys)
    return [(x[:32], y[:32]), (x[32:], y[32:])]


def _ce(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(net(x), y)


def test_initial_scores_rank_like_the_weights() -> None:
    w = torch.randn(8, 4, 3, 3)
    s = initial_scores(w)
    # a positive multiple of w: same signs, same magnitude order
    assert torch.equal(torch.sign(s), torch.sign(w))
    assert torch.equal(torch.argsort(s.abs().flatten()), torch.argsort(w.abs().flatten()))
    assert float(s.abs().max()) == pytest.approx((6.0 / 36) ** 0.5)


@pytest.mark.parametrize("granularity", ["unstructured", "window", "channel"])
def test_learn_scores_installs_structured_masks_and_leaves_weights_alone(
    granularity: str,
) -> None:
    model = _model()
    config = SparsityConfig(
        target=0.7, granularity=Granularity(granularity), method="hydra", start=0.0, end=0.0
    )  # type: ignore[arg-type]
    sp = create_sparsifier(config, steps_per_epoch=2)
    assert isinstance(sp, HydraSparsifier)
    sp.prepare(model)
    assert sp.scores_due and not sp.frozen
    params = dict(model.named_parameters())
    before = {n: p.detach().clone() for n, p in params.items()}
    flags = {n: p.requires_grad for n, p in params.items()}
    model.eval()
    sp.learn_scores(model, _batches, _ce, seed=0)
    assert sp.frozen and not sp.scores_due and sp.current_sparsity == 0.7
    assert not model.training and {n: p.requires_grad for n, p in params.items()} == flags
    masks = sp.masks
    for name, p in params.items():
        if name in masks:
            m = masks[name]
            assert torch.equal(p.detach()[m], before[name][m])  # kept weights untouched
            assert bool((p.detach()[~m] == 0).all())
            if granularity == "window" and p.shape[-1] == 3:
                assert set(m.reshape(-1, 9).sum(1).tolist()) == {kept_per_group(9, 0.7)}
            if granularity == "channel" and p.shape[-1] == 3:
                per_filter = m.reshape(p.shape[0], p.shape[1], 9).any(-1).sum(1)
                assert len(set(per_filter.tolist())) == 1
        else:
            assert torch.equal(p.detach(), before[name]), name


def test_scores_move_away_from_the_magnitude_mask() -> None:
    model = _model()
    config = SparsityConfig(
        target=0.7, granularity=Granularity.UNSTRUCTURED, method="hydra", hydra_score_lr=5.0
    )  # type: ignore[arg-type]
    sp = create_sparsifier(config, steps_per_epoch=2)
    sp.prepare(model)
    params = dict(model.named_parameters())
    magnitude = {
        n: compute_mask(params[n].detach(), 0.7, Granularity.UNSTRUCTURED) for n in sp.pruned_names
    }
    sp.learn_scores(model, _batches, _ce, seed=0)
    assert any(not torch.equal(sp.masks[n], magnitude[n]) for n in magnitude)


def test_fit_learns_scores_at_start_then_fine_tunes_with_frozen_masks() -> None:
    sparsity = SparsityConfig(
        target=0.7, granularity=Granularity.WINDOW, method="hydra", start=1.0, end=1.0
    )  # type: ignore[arg-type]
    masks_per_epoch: list[dict[str, torch.Tensor]] = []

    from robustbench_sparse.training import Checkpointer

    def save_last(model: nn.Module, sparsifier: Any, history: Any, state: Any) -> None:
        masks_per_epoch.append(sparsifier.masks)

    result = fit(
        _model(),
        tiny_digits(),
        tiny_train_config(epochs=3),
        sparsity,
        checkpointer=Checkpointer(save_last=save_last),
        progress=False,
        adversarial=AdversarialConfig(method="fast", eps=0.1),  # type: ignore[arg-type]
    )
    assert [h.masks_frozen for h in result.history] == [False, True, True]
    assert bool(
        torch.stack([m.all() for m in masks_per_epoch[0].values()]).all()
    )  # dense pre-train
    for name, mask in masks_per_epoch[2].items():
        assert torch.equal(mask, masks_per_epoch[1][name])
    params = dict(result.model.named_parameters())
    for name, mask in masks_per_epoch[2].items():
        assert bool((params[name].detach()[~mask] == 0).all())


def test_hydra_run_is_reproducible_and_labelled(tmp_path: Any) -> None:
    job = tiny_job(0.7, "unstructured", epochs=2, start=1.0, end=1.0)
    job = dataclasses.replace(job, sparsity=dataclasses.replace(job.sparsity, method="hydra"))  # type: ignore[arg-type]
    a = run_train_job(job, tmp_path / "a", progress=False)
    run_train_job(job, tmp_path / "b", progress=False)
    assert a.meta["granularity"] == "hydra" and a.meta["method"] == "hydra"
    for x, y in zip(
        read_weights_file(tmp_path / "a"), read_weights_file(tmp_path / "b"), strict=True
    ):
        assert_tensors_identical(x, y)
