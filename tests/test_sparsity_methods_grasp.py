"""grasp: GraSP scores -θ ⊙ (H g) by double backprop, global ranking, masks fixed at init."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.sparsity import SparsityConfig, create_sparsifier
from robustbench_sparse.sparsity.allocation import kept_count
from robustbench_sparse.sparsity.methods import GraspSparsifier
from robustbench_sparse.sparsity.methods.grasp import (
    global_keep_masks,
    grasp_scores,
    hessian_gradient_product,
)
from robustbench_sparse.train_job import run_train_job
from tests.core_helpers import inspect_json, method_job, single_thread, tiny_digits


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _smooth_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 4),
    ).double()


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.rand(6, 1, 6, 6, generator=gen, dtype=torch.float64), torch.arange(6) % 4)
        for _ in range(2)
    ]


def _grad_at(
    model: nn.Module, params: list[nn.Parameter], shift: list[torch.Tensor], temperature: float
) -> list[torch.Tensor]:
    with torch.no_grad():
        for p, s in zip(params, shift, strict=True):
            p.add_(s)
    loss = sum(nn.functional.cross_entropy(model(x) / temperature, y) for x, y in _batches())
    grads = torch.autograd.grad(loss, params)  # type: ignore[arg-type]
    with torch.no_grad():
        for p, s in zip(params, shift, strict=True):
            p.sub_(s)
    return [g.detach() for g in grads]


@pytest.mark.parametrize("temperature", [1.0, 200.0])
def test_hessian_gradient_product_matches_a_finite_difference(temperature: float) -> None:
    model = _smooth_net()
    params = [model[0].weight, model[3].weight]
    g, hg = hessian_gradient_product(model, params, _batches(), temperature)
    # g is the gradient of the summed loss
    for a, b in zip(
        g, _grad_at(model, params, [torch.zeros_like(p) for p in params], temperature), strict=True
    ):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-14)
    eps = 1e-4 / max(float(torch.cat([x.flatten() for x in g]).norm()), 1e-30)
    plus = _grad_at(model, params, [eps * x for x in g], temperature)
    minus = _grad_at(model, params, [-eps * x for x in g], temperature)
    scale = max(float(h.abs().max()) for h in hg)
    assert scale > 0
    for h, p_, m_ in zip(hg, plus, minus, strict=True):
        fd = (p_ - m_) / (2 * eps)
        assert torch.allclose(h, fd, rtol=1e-5, atol=1e-6 * scale)


def test_scores_are_minus_theta_times_hg_and_the_highest_are_removed() -> None:
    model = _smooth_net()
    names = ["0.weight", "3.weight"]
    scores = grasp_scores(model, names, _batches(), 200.0)
    params = dict(model.named_parameters())
    _, hg = hessian_gradient_product(model, [params[n] for n in names], _batches(), 200.0)
    for n, h in zip(names, hg, strict=True):
        assert torch.allclose(scores[n], -params[n].detach() * h)
    masks = global_keep_masks(scores, 0.6)
    kept = torch.cat([scores[n][masks[n]] for n in names])
    removed = torch.cat([scores[n][~masks[n]] for n in names])
    total = sum(s.numel() for s in scores.values())
    assert kept.numel() == kept_count(total, 0.4)
    assert kept.max() <= removed.min()  # global ranking: the highest scores go, across layers


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))  # type: ignore[no-any-return]


def test_calibrate_freezes_masks_and_leaves_bn_statistics_alone() -> None:
    torch.manual_seed(0)
    model = _BNNet()
    cfg = SparsityConfig(target=0.5, method="grasp", prune_first_conv=True, grasp_batches=2)
    sp = create_sparsifier(cfg, 4)
    assert isinstance(sp, GraspSparsifier)
    sp.prepare(model)
    assert not sp.frozen
    with pytest.raises(RuntimeError, match="calibrate"):
        sp.step()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(8, 1, 6, 6, generator=gen), torch.arange(8) % 10) for _ in range(5)]
    consumed: list[int] = []

    def feed() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i, b in enumerate(batches):
            consumed.append(i)
            yield b

    sp.calibrate(model, feed())
    assert consumed == [0, 1]  # grasp_batches
    assert sp.frozen and sp.current_sparsity == 0.5
    for k, v in stats.items():
        assert torch.equal(model.state_dict()[k], v), k
    masks = sp.masks
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == kept_count(total, 0.5)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert not params[n][~m].any()
    # the masks are the global ranking of the scores on those batches
    expected = global_keep_masks(grasp_scores(_fresh_net(), list(masks), batches[:2], 200.0), 0.5)
    assert all(torch.equal(expected[n], masks[n]) for n in masks)
    sp.calibrate(model, iter(batches))  # frozen: a no-op
    assert all(torch.equal(sp.masks[n], masks[n]) for n in masks)


def _fresh_net() -> nn.Module:
    """The model as it was before calibration zeroed weights (re-created from the same seed)."""
    torch.manual_seed(0)
    fresh = _BNNet()
    fresh.train()
    return fresh


def test_grasp_checkpoint_passes_inspect(tmp_path: Path) -> None:
    ckpt = run_train_job(method_job("grasp"), tmp_path / "g", progress=False, data=tiny_digits())
    assert ckpt.meta["method"] == "grasp" and ckpt.granularity == "grasp"
    history = ckpt.meta["history"]
    assert history[0]["masks_frozen"] and history[0]["sparsity"] == 0.7  # pruned at init
    out = inspect_json(tmp_path / "g")
    report = out["sparsity_report"]
    assert isinstance(report, dict) and report["granularity"] == "grasp"
    pruned = [layer for layer in report["layers"] if layer["pruned"]]
    assert all(layer["granularity"] == "grasp" for layer in pruned)
    numel = sum(layer["numel"] for layer in pruned)
    assert sum(layer["nnz"] for layer in pruned) <= kept_count(numel, 0.3)
    assert report["achieved_pruned"] == pytest.approx(0.7, abs=1e-3)
    # the allocation is global: layers end up at different sparsities
    assert len({round(layer["achieved"], 3) for layer in pruned}) > 1
