"""sparsity.base: the Sparsifier base (hooks with no-op defaults) and its PrunedLayer records."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    Granularity,
    PrunedLayer,
    Sparsifier,
    SparsityConfig,
    TrainingContext,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.Flatten(),
        nn.Linear(6 * 4 * 4, 3),
    )


def _config(**kw: object) -> SparsityConfig:
    base: dict[str, object] = {"target": 0.5, "granularity": Granularity.WINDOW, "end": 0.0}
    base.update(kw)
    return SparsityConfig(**base)  # type: ignore[arg-type]


def _context(model: nn.Module) -> TrainingContext:
    def batches(seed: int) -> list[tuple[Tensor, Tensor]]:
        g = torch.Generator().manual_seed(seed)
        return [(torch.rand(2, 3, 4, 4, generator=g), torch.tensor([0, 1]))]

    def loss(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return nn.functional.cross_entropy(net(x), y)

    return TrainingContext(model, batches, loss, seed=0)


# ------------------------------------------------------------------------------ PrunedLayer
def test_pruned_layer_masks_weight_gradient_state_and_channels() -> None:
    conv = nn.Conv2d(2, 3, 3)
    bn = nn.BatchNorm2d(3)
    assert conv.bias is not None
    layer = PrunedLayer.create("conv.weight", conv.weight, [conv.bias, bn.weight])
    assert layer.module_name == "conv" and layer.mask.all() and len(layer.hooks) == 3
    mask = torch.ones_like(layer.mask)
    mask[1] = False  # filter 1 entirely pruned
    mask[0, 0, 0, 0] = False
    layer.set_mask(mask)
    assert torch.equal(layer.mask, mask) and torch.equal(layer.pruned, ~mask)
    assert torch.equal(layer.fmask, mask.float())
    with torch.no_grad():
        conv.weight.fill_(-1.0)  # negative weights: pruning must leave +0.0, never -0.0
    layer.apply()
    layer.apply_channels()
    assert (conv.weight[~mask] == 0).all() and not torch.signbit(conv.weight[~mask]).any()
    assert (conv.weight[mask] == -1.0).all()
    assert conv.bias[1] == 0 and bn.weight[1] == 0 and bn.weight[0] == 1  # dead channel only
    opt = torch.optim.SGD([conv.weight, conv.bias], lr=0.1, momentum=0.9)
    (conv(torch.rand(1, 2, 3, 3)).sum() + conv.bias.sum()).backward()
    assert conv.weight.grad is not None and (conv.weight.grad[~mask] == 0).all()
    opt.step()
    layer.mask_optimizer_state(opt)
    layer.mask_channel_state(opt)
    assert (opt.state[conv.weight]["momentum_buffer"][~mask] == 0).all()
    assert opt.state[conv.bias]["momentum_buffer"][1] == 0
    layer.remove_hooks()
    assert layer.hooks == []
    conv.weight.grad = None
    conv(torch.rand(1, 2, 3, 3)).sum().backward()
    assert (conv.weight.grad[~mask] != 0).any()  # no hook any more


def test_pruned_layer_falls_back_to_masked_fill_for_non_contiguous_weights() -> None:
    weight = nn.Parameter(torch.randn(4, 3).t())  # (3, 4), not contiguous
    layer = PrunedLayer.create("w", weight)
    mask = torch.rand(3, 4) > 0.5
    layer.set_mask(mask)
    layer.apply()
    assert (weight[~mask] == 0).all() and torch.equal(weight[mask], weight.detach()[mask])


# ------------------------------------------------------------------------------ Sparsifier
def test_base_hooks_are_no_ops() -> None:
    model = _net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sp = Sparsifier(_config(), steps_per_epoch=2)
    sp.prepare(model)
    assert sp.pruned_names == ["2.weight"]  # first conv and classifier dense by default
    assert list(sp.layers) == sp.pruned_names and list(sp.weights) == sp.pruned_names
    assert not sp.mask_update_due(0) and sp.sparsity_at(5) == 0.5
    layer = sp.layers["2.weight"]
    assert torch.equal(sp.update_mask(layer, 0.5), layer.mask)
    assert sp.channel_params(model, "2.weight") == []
    assert sp.on_train_start(_context(model)) is False
    assert sp.on_batch_start(_context(model)) is False
    sp.on_epoch_end(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(4):
        sp.step(opt)
    assert sp.step_count == 4 and sp.update_count == 0 and sp.current_sparsity == 0.0
    assert all(m.all() for m in sp.masks.values())
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_on_train_end_freezes_an_unfinished_schedule(caplog: pytest.LogCaptureFixture) -> None:
    sp = CampfireSparsifier(_config(start=0.0, end=3.0), steps_per_epoch=2)
    sp.prepare(_net())
    assert not sp.frozen
    with caplog.at_level(logging.WARNING, logger="robustbench_sparse"):
        sp.on_train_end(2)
    assert sp.frozen and "freezing masks" in caplog.text
    caplog.clear()
    sp.on_train_end(2)  # already frozen: silent
    assert caplog.text == ""


class _EveryOtherStep(Sparsifier):
    """A toy method: on even steps, prune the smallest weights of each layer (unstructured)."""

    def mask_update_due(self, step: int) -> bool:
        return step % 2 == 0

    def sparsity_at(self, step: int) -> float:
        return min(0.1 * step, self.config.target)

    def update_mask(self, layer: PrunedLayer, sparsity: float) -> Tensor:
        keep = round(layer.param.numel() * (1 - sparsity))
        order = layer.param.detach().abs().flatten().argsort(descending=True, stable=True)
        mask = torch.zeros(layer.param.numel(), dtype=torch.bool)
        mask[order[:keep]] = True
        return mask.reshape(layer.param.shape) & layer.mask


def test_a_subclass_only_implements_the_hooks() -> None:
    model = _net()
    sp = _EveryOtherStep(_config(end=2.0), steps_per_epoch=2)  # end_step = 4: frozen from t=4
    sp.prepare(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    counts = []
    for _ in range(6):
        model(torch.rand(2, 3, 4, 4)).sum().backward()
        opt.step()
        sp.step(opt)
        counts.append(sp.update_count)
    assert counts == [0, 1, 1, 2, 2, 2] and sp.frozen and sp.current_sparsity == 0.4
    weight = dict(model.named_parameters())["2.weight"]
    mask = sp.masks["2.weight"]
    assert (weight[~mask] == 0).all() and int((~mask).sum()) == round(0.4 * weight.numel())


def test_old_format_state_dict_still_loads() -> None:
    # The sparsifier state as checkpoints written before the per-layer records hold it (v1).
    model = _net()
    mask = torch.ones(6, 4, 3, 3, dtype=torch.bool)
    mask[:, :, 0, :] = False
    state = {
        "version": 1,
        "step": 17,
        "frozen": True,
        "sparsity": 0.5,
        "steps_per_epoch": 2,
        "config": _config().to_dict(),
        "masks": {"2.weight": mask},
    }
    sp = CampfireSparsifier(_config(), steps_per_epoch=2)
    sp.prepare(model)
    sp.load_state_dict(state)
    assert sp.step_count == 17 and sp.frozen and sp.current_sparsity == 0.5
    assert torch.equal(sp.masks["2.weight"], mask)
    assert (dict(model.named_parameters())["2.weight"][~mask] == 0).all()
    saved = sp.state_dict()
    assert set(saved) == set(state) and saved["masks"]["2.weight"].dtype == torch.bool
    assert {k: v for k, v in saved.items() if k != "masks"} == {
        k: v for k, v in state.items() if k != "masks"
    }
    with pytest.raises(UserError, match="version"):
        sp.load_state_dict({**state, "version": 2})


def test_prepare_twice_and_step_before_prepare_are_errors() -> None:
    sp = Sparsifier(_config(), steps_per_epoch=1)
    with pytest.raises(RuntimeError, match=r"Sparsifier\.prepare\(model\) first"):
        sp.step()
    sp.prepare(_net())
    with pytest.raises(RuntimeError, match="already called"):
        sp.prepare(_net())
    with pytest.raises(UserError, match="integer"):
        Sparsifier(_config(), steps_per_epoch=True)
