"""``campfire-ga`` (robustbench_sparse.sparsity.methods.campfire_ga): GA on Campfire's top-k.

Invariants: while the ramp runs, pruned positions get ``alpha`` times the gradient of the
masked weight (Campfire's plain hook gives 0); the model always holds ``W ⊙ m`` with exact
zeros; a weight pruned at one update comes back at a later one when its latent value grew (a
monotone mask would keep it pruned); at ``end`` the masks freeze with Campfire's structure, GA
ends and pruned gradients are zero again; in ``fit`` the checkpointable model is an ordinary
masked one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, kept_per_group
from robustbench_sparse.sparsity.methods import CampfireGASparsifier, create_sparsifier
from robustbench_sparse.train_job import run_train_job
from robustbench_sparse.training import build_optimizer
from tests.core_helpers import (
    WIDTH,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_job,
    tiny_train_config,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model() -> nn.Module:
    torch.manual_seed(0)
    info = tiny_digits().info
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )


def _prepared(**changes: object) -> tuple[nn.Module, CampfireGASparsifier]:
    kwargs: dict[str, object] = {
        "target": 0.5,
        "method": "campfire-ga",
        "granularity": "window",
        "start": 0.0,
        "end": 2.0,
        "update_every": 1,
    }
    kwargs.update(changes)
    model = _model()
    sp = create_sparsifier(SparsityConfig(**kwargs), steps_per_epoch=2)  # type: ignore[arg-type]
    assert isinstance(sp, CampfireGASparsifier)
    sp.prepare(model)
    return model, sp


def _x() -> torch.Tensor:
    data = tiny_digits().train
    return torch.stack([data[i][0] for i in range(16)])


def test_config_labels_and_refuses_nm() -> None:
    config = SparsityConfig(target=0.5, method="campfire-ga", granularity="channel")  # type: ignore[arg-type]
    assert config.label == "channel-ga" and config.granularity is Granularity.CHANNEL
    with pytest.raises(UserError, match="nm works with method campfire only"):
        SparsityConfig(target=0.6, method="campfire-ga", granularity="nm")  # type: ignore[arg-type]


def test_pruned_positions_get_alpha_times_the_gradient() -> None:
    model, sp = _prepared(initial=0.5)  # pruned from t = 0 (start = 0, initial 0.5)
    name = sp.pruned_names[0]
    layer = sp.layers[name]
    assert bool((~layer.mask).any())
    assert bool((layer.param.detach()[~layer.mask] == 0).all())
    plain = create_model("small_cnn", num_classes=10, in_channels=1, width=WIDTH)
    plain.load_state_dict(model.state_dict())  # W ⊙ m, no hooks
    model(_x()).square().sum().backward()
    plain(_x()).square().sum().backward()
    g, g_plain = layer.param.grad, plain.get_parameter(name).grad
    assert g is not None and g_plain is not None
    m = layer.mask
    assert torch.allclose(g[m], g_plain[m], rtol=1e-5, atol=1e-8)
    assert torch.allclose(g[~m], sp.alpha * g_plain[~m], rtol=1e-5, atol=1e-8)
    assert sp.alpha == pytest.approx(0.75) and bool((g[~m] != 0).any())


def test_a_pruned_weight_returns_when_its_latent_value_grows() -> None:
    model, sp = _prepared(initial=0.5, end=4.0)
    name = sp.pruned_names[0]
    layer = sp.layers[name]
    pruned_at = tuple(int(i) for i in (~layer.mask).nonzero()[0])
    optimizer = build_optimizer(model, tiny_train_config())
    sp.attach_optimizer(optimizer, 0.0)
    optimizer.zero_grad()
    model(_x()).sum().backward()
    # make the optimizer push that pruned latent weight far up: its gradient is -1e3
    assert layer.param.grad is not None
    layer.param.grad.zero_()
    layer.param.grad[pruned_at] = -1e3
    optimizer.step()
    sp.step(optimizer)  # t = 1: an update (update_every 1) ranks the latent weights afresh
    assert bool(layer.mask[pruned_at]) and float(layer.param.detach()[pruned_at]) > 1.0
    for kernel_mask in layer.mask.reshape(-1, layer.mask.shape[-2] * layer.mask.shape[-1]):
        assert int(kernel_mask.sum()) == int(layer.mask[0, 0].sum())  # still n_w per window


def test_masks_freeze_at_end_with_campfire_structure_and_ga_ends() -> None:
    model, sp = _prepared(end=1.0)  # end_step 2
    optimizer = build_optimizer(model, tiny_train_config())
    sp.attach_optimizer(optimizer, 5e-4)
    for step in range(4):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(_x()), torch.arange(16) % 10).backward()
        optimizer.step()
        sp.step(optimizer)
        if step == 1:
            sp.on_epoch_end(0)
    assert sp.frozen and not sp.latent_active and sp.alpha == 0.0
    for name, layer in sp.layers.items():
        w = layer.param.detach()
        assert torch.equal(w[~layer.mask], torch.zeros_like(w[~layer.mask]))
        if w.ndim == 4 and w.shape[-1] == 3:
            n_w = kept_per_group(9, 0.5)
            assert bool((layer.mask.reshape(-1, 9).sum(dim=1) == n_w).all()), name
    optimizer.zero_grad()
    model(_x()).square().sum().backward()
    for layer in sp.layers.values():  # the ordinary hooks are back: no gradient when pruned
        assert layer.param.grad is not None
        assert bool((layer.param.grad[~layer.mask] == 0).all())


def test_fit_writes_an_ordinary_masked_checkpoint(tmp_path: object) -> None:
    job = tiny_job(0.7, "window", epochs=3, start=0.0, end=2.0)
    job = dataclasses.replace(
        job,
        sparsity=dataclasses.replace(job.sparsity, method="campfire-ga"),  # type: ignore[arg-type]
    )
    ck = run_train_job(job, tmp_path / "ga", progress=False)  # type: ignore[operator]
    assert ck.meta["granularity"] == "window-ga" and ck.meta["masks_frozen"] is True
    state, masks = read_weights_file(tmp_path / "ga")  # type: ignore[operator]
    assert masks
    for name, mask in masks.items():
        assert torch.equal(state[name][~mask], torch.zeros_like(state[name][~mask]))
    # GA changed the run: plain Campfire on the same job ends elsewhere (same structure, other
    # weights / masks), so the annealed gradients were active during the ramp
    plain = dataclasses.replace(job, sparsity=dataclasses.replace(job.sparsity, method="campfire"))  # type: ignore[arg-type]
    run_train_job(plain, tmp_path / "plain", progress=False)  # type: ignore[operator]
    state_p, _ = read_weights_file(tmp_path / "plain")  # type: ignore[operator]
    assert any(not torch.equal(state[k], state_p[k]) for k in masks)
