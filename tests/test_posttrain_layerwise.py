"""The layer fit: it lowers a layer's output error and never changes its mask."""

from __future__ import annotations

import torch
from torch import nn

from robustbench_sparse.posttrain.layerwise import LayerFit, capture_io, fit_layer, output_error


def test_capture_io_returns_the_modules_input_and_output() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 3)).eval()
    x = torch.rand(5, 1, 8, 8)
    ins, outs = capture_io(model, "2", x, batch_size=2)
    with torch.no_grad():
        hidden = model[1](model[0](x))
        assert torch.allclose(ins, hidden) and torch.allclose(outs, model[2](hidden), atol=1e-6)


def test_fit_lowers_the_error_and_keeps_the_mask_bit_identical() -> None:
    torch.manual_seed(0)
    dense = nn.Conv2d(4, 6, 3, padding=1)
    sparse = nn.Conv2d(4, 6, 3, padding=1)
    sparse.load_state_dict(dense.state_dict())
    mask = torch.rand_like(dense.weight) > 0.6
    with torch.no_grad():
        sparse.weight.mul_(mask)
    # correlated channels (as in real feature maps): kept weights can stand in for pruned ones;
    # on white inputs the masked dense weights are already the least-squares fit
    z = nn.functional.interpolate(torch.randn(64, 1, 3, 3), size=(6, 6), mode="bilinear")
    x = z.repeat(1, 4, 1, 1) + 0.1 * torch.randn(64, 4, 6, 6)
    with torch.no_grad():
        y = dense(x)
    before_mask = mask.clone()
    zeros_before = (sparse.weight == 0).clone()
    before = output_error(sparse, x[48:], y[48:])
    fit = LayerFit(iterations=2, samples_per_iteration=200, batch_size=16, lr=1e-2, bias_lr=1e-2)
    fit_layer(sparse, mask, x[:48], y[:48], fit, torch.Generator().manual_seed(0))
    after = output_error(sparse, x[48:], y[48:])
    assert after < 0.5 * before  # held-out examples
    assert torch.equal(mask, before_mask)
    assert bool((sparse.weight[~mask] == 0).all())
    assert torch.equal(sparse.weight == 0, zeros_before | (sparse.weight == 0))
    assert fit.steps == 2 * 13
