"""CampfireSparsifier on a tiny CNN: pruned stays zero, state zeroed, freeze, selection, resume."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    Granularity,
    SparsityConfig,
    compute_mask,
)

STEPS_PER_EPOCH = 50


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Tiny tensors: intra-op threads only add contention (and are very slow on a busy 2-core box).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential()
        self.net.add_module("conv1", nn.Conv2d(3, 8, 3, padding=1))
        self.net.add_module("relu1", nn.ReLU())
        self.net.add_module("conv2", nn.Conv2d(8, 8, 3, padding=1))
        self.net.add_module("relu2", nn.ReLU())
        self.net.add_module("conv3", nn.Conv2d(8, 8, 1))
        self.net.add_module("pool", nn.AdaptiveAvgPool2d(1))
        self.net.add_module("flat", nn.Flatten())
        self.net.add_module("fc", nn.Linear(8, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]


OPTIMIZERS: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.05, amsgrad=True),
}


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g))
        for _ in range(n)
    ]


BATCHES = _batches(200)


def _config(**kw: object) -> SparsityConfig:
    base: dict[str, object] = {
        "target": 0.7,
        "granularity": Granularity.WINDOW,
        "start": 0.2,
        "end": 2.0,  # t1 = 100
        "update_every": 10,
    }
    base.update(kw)
    return SparsityConfig(**base)  # type: ignore[arg-type]


def _train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    sp: CampfireSparsifier,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    on_step: Callable[[int], None] | None = None,
) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sp.step(opt)
        if on_step is not None:
            on_step(sp.step_count)


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
@pytest.mark.parametrize("granularity", [Granularity.WINDOW, Granularity.COMBINED])
def test_pruned_weights_and_state_stay_zero(opt_name: str, granularity: Granularity) -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    dense_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = OPTIMIZERS[opt_name](list(model.parameters()))
    sp = CampfireSparsifier(_config(granularity=granularity), STEPS_PER_EPOCH)
    sp.prepare(model)
    assert sp.pruned_names == ["net.conv2.weight", "net.conv3.weight"]

    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def record(t: int) -> None:
        if t >= sp.end_step:
            snapshots[t] = sp.masks

    _train(model, opt, sp, BATCHES, record)

    assert sp.frozen
    assert sp.current_sparsity == 0.7
    params = dict(model.named_parameters())
    final = sp.masks
    for name, mask in final.items():
        param = params[name]
        assert (param[~mask] == 0.0).all()
        # +0.0 exactly (no -0.0): pruned positions are bit-identical zeros.
        assert not torch.signbit(param[~mask]).any()
        assert (param[mask] != 0.0).any()
        for value in opt.state[param].values():
            if isinstance(value, torch.Tensor) and value.shape == param.shape:
                assert (value[~mask] == 0.0).all()
    # masks never change after `end`
    for snap in snapshots.values():
        assert all(torch.equal(snap[n], final[n]) for n in final)
    # expected exact structure at the final target
    kernels = final["net.conv2.weight"].reshape(8, 8, 9).sum(-1)  # (K, C) kept per kernel
    if granularity is Granularity.WINDOW:
        assert (kernels == 3).all()  # 9 * 0.3 = 2.7 -> 3
    else:
        alive = kernels[kernels > 0]
        assert (alive == alive[0]).all()  # every kept kernel keeps the same count
        per_filter = (kernels > 0).sum(1)
        assert (per_filter == per_filter[0]).all()  # every filter keeps the same kernels
        report = sp.report()
        conv2 = next(layer for layer in report.layers if layer.name == "net.conv2.weight")
        assert abs(conv2.achieved - 0.7) < 0.1
    rows = final["net.conv3.weight"].reshape(8, 8).sum(1)
    assert (rows == rows[0]).all() and rows[0].item() == 2  # 8 * 0.3 = 2.4 -> 2
    # first conv and classifier are trained but never pruned
    for name in ("net.conv1.weight", "net.fc.weight"):
        assert not torch.equal(params[name], dense_before[name])
        assert (params[name] != 0).all()


def test_masks_update_only_on_schedule() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    opt = OPTIMIZERS["sgd"](list(model.parameters()))
    sp = CampfireSparsifier(_config(update_every=7), STEPS_PER_EPOCH)
    sp.prepare(model)
    assert (sp.start_step, sp.end_step) == (10, 100)
    changed: list[int] = []
    prev = sp.masks

    def record(t: int) -> None:
        nonlocal prev
        now = sp.masks
        if any(not torch.equal(now[n], prev[n]) for n in now):
            changed.append(t)
        prev = now

    _train(model, opt, sp, BATCHES[:120], record)
    due = {t for t in range(10, 101) if (t - 10) % 7 == 0} | {100}
    assert changed, "masks never changed"
    assert set(changed) <= due
    assert 100 in changed or sp.current_sparsity == 0.7
    assert max(changed) <= 100


def test_grad_hooks_zero_pruned_grads() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    sp = CampfireSparsifier(_config(start=0.0, end=0.0), STEPS_PER_EPOCH)  # one-shot at prepare
    sp.prepare(model)
    assert sp.frozen and sp.current_sparsity == 0.7
    x, y = BATCHES[0]
    nn.CrossEntropyLoss()(model(x), y).backward()
    params = dict(model.named_parameters())
    for name, mask in sp.masks.items():
        grad = params[name].grad
        assert grad is not None
        assert (grad[~mask] == 0).all() and (grad[mask] != 0).any()


def test_dense_target_is_a_no_op() -> None:
    torch.manual_seed(0)
    a, b = TinyCNN(), TinyCNN()
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = OPTIMIZERS["sgd"](list(a.parameters())), OPTIMIZERS["sgd"](list(b.parameters()))
    sp = CampfireSparsifier(SparsityConfig(), STEPS_PER_EPOCH)
    sp.prepare(a)
    assert sp.pruned_names == [] and sp.masks == {} and sp.current_sparsity == 0.0
    _train(a, opt_a, sp, BATCHES[:20])
    loss_fn = nn.CrossEntropyLoss()
    for x, y in BATCHES[:20]:
        opt_b.zero_grad()
        loss_fn(b(x), y).backward()
        opt_b.step()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        assert torch.equal(pa, pb), n
    assert sp.report().achieved_pruned == 0.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["net.conv2.weight", "net.conv3.weight"]),
        ({"prune_first_conv": True}, ["net.conv1.weight", "net.conv2.weight", "net.conv3.weight"]),
        ({"prune_classifier": True}, ["net.conv2.weight", "net.conv3.weight", "net.fc.weight"]),
        ({"include": ("net.conv2",)}, ["net.conv2.weight"]),
        ({"include": ("net.conv*",)}, ["net.conv2.weight", "net.conv3.weight"]),
        ({"exclude": ("*conv3",)}, ["net.conv2.weight"]),
        (
            {"include": ("net.*",), "exclude": ("net.conv2",), "prune_classifier": True},
            ["net.conv3.weight", "net.fc.weight"],
        ),
    ],
)
def test_layer_selection(kwargs: dict[str, object], expected: list[str]) -> None:
    sp = CampfireSparsifier(_config(**kwargs), STEPS_PER_EPOCH)
    sp.prepare(TinyCNN())
    assert sp.pruned_names == expected


@pytest.mark.parametrize("granularity", [Granularity.CHANNEL, Granularity.UNSTRUCTURED])
def test_resume_reproduces_masks_exactly(granularity: Granularity) -> None:
    cfg = _config(granularity=granularity)
    batches = BATCHES[:130]

    torch.manual_seed(1)
    init = TinyCNN().state_dict()

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer, CampfireSparsifier]:
        model = TinyCNN()
        model.load_state_dict(init)
        opt = OPTIMIZERS["adam"](list(model.parameters()))
        sp = CampfireSparsifier(cfg, STEPS_PER_EPOCH)
        sp.prepare(model)
        return model, opt, sp

    model_a, opt_a, sp_a = fresh()
    _train(model_a, opt_a, sp_a, batches)

    model_b, opt_b, sp_b = fresh()
    _train(model_b, opt_b, sp_b, batches[:57])  # interrupt mid-ramp, off the update grid
    saved = {
        "model": {k: v.clone() for k, v in model_b.state_dict().items()},
        "opt": opt_b.state_dict(),
        "sparsity": sp_b.state_dict(),
    }
    buffer = io.BytesIO()
    torch.save(saved, buffer)  # checkpoints never execute pickled code: weights_only must work
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model_c, opt_c, sp_c = fresh()
    model_c.load_state_dict(saved["model"])
    opt_c.load_state_dict(saved["opt"])
    sp_c.load_state_dict(saved["sparsity"])
    assert sp_c.step_count == 57 and not sp_c.frozen
    _train(model_c, opt_c, sp_c, batches[57:])

    assert sp_c.frozen and sp_c.step_count == sp_a.step_count
    masks_a, masks_c = sp_a.masks, sp_c.masks
    assert all(torch.equal(masks_a[n], masks_c[n]) for n in masks_a)
    for (n, pa), (_, pc) in zip(
        model_a.named_parameters(), model_c.named_parameters(), strict=True
    ):
        assert torch.equal(pa, pc), n


def test_load_state_dict_rejects_other_layers() -> None:
    sp = CampfireSparsifier(_config(), STEPS_PER_EPOCH)
    sp.prepare(TinyCNN())
    other = CampfireSparsifier(_config(include=("net.conv2",)), STEPS_PER_EPOCH)
    other.prepare(TinyCNN())
    with pytest.raises(UserError, match="does not match"):
        sp.load_state_dict(other.state_dict())


def test_freeze_stops_updates_and_misuse_errors() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    opt = OPTIMIZERS["sgd"](list(model.parameters()))
    sp = CampfireSparsifier(_config(start=0.0), STEPS_PER_EPOCH)
    with pytest.raises(RuntimeError):
        sp.step(opt)
    sp.prepare(model)
    _train(model, opt, sp, BATCHES[:30])
    sp.freeze()
    frozen_masks, frozen_sparsity = sp.masks, sp.current_sparsity
    assert 0.0 < frozen_sparsity < 0.7
    _train(model, opt, sp, BATCHES[30:120])
    assert sp.current_sparsity == frozen_sparsity
    assert all(torch.equal(frozen_masks[n], m) for n, m in sp.masks.items())
    with pytest.raises(UserError):
        CampfireSparsifier(_config(), 0)


def test_masks_match_one_shot_compute_mask_when_start_equals_end() -> None:
    torch.manual_seed(0)
    model = TinyCNN()
    w = model.net.conv2.weight.detach().clone()
    sp = CampfireSparsifier(_config(granularity=Granularity.CHANNEL, start=0.0, end=0.0), 10)
    sp.prepare(model)
    assert torch.equal(sp.masks["net.conv2.weight"], compute_mask(w, 0.7, Granularity.CHANNEL))
