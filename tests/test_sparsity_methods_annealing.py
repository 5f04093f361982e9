"""Gradient Annealing and the STR soft threshold (robustbench_sparse.sparsity.methods.annealing).

Faithfulness (issue 26): the annealed ReLU on a fixed vector (forward ``[0,0,0,0,.5,1,2]``,
backward ``[a,a,a,a,1,1,1]``; a plain ReLU fails); with ``alpha = 0`` the soft threshold equals
STR's ``sign(W) relu(|W| - sigmoid(s))`` written with plain autograd, values and gradients; the
alpha schedule at epochs 0..89 of ``T = 100`` equals AutoSparse's preset values (computed in the
research note from PQuantML's torch formula; a compounding schedule fails at epoch 25).
"""

from __future__ import annotations

import math

import pytest
import torch

from robustbench_sparse.sparsity.methods.annealing import annealed_relu, ga_alpha, soft_threshold


def test_annealed_relu_forward_and_gradient_on_the_reference_vector() -> None:
    alpha = 0.4
    x = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0], requires_grad=True)
    y = annealed_relu(x, alpha)
    y.sum().backward()
    assert y.tolist() == [0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 2.0]
    assert x.grad is not None
    assert torch.equal(x.grad, torch.tensor([alpha] * 4 + [1.0] * 3))  # float32 alpha
    # a plain ReLU (the sloppy version) gives 0 where x <= 0: the test above tells them apart
    x2 = x.detach().clone().requires_grad_(True)
    torch.relu(x2).sum().backward()
    assert x2.grad is not None and x2.grad.tolist()[:4] == [0.0] * 4


def test_annealed_relu_scales_the_incoming_gradient() -> None:
    x = torch.tensor([-1.0, 1.0], requires_grad=True)
    (annealed_relu(x, 0.25) * torch.tensor([3.0, 5.0])).sum().backward()
    assert x.grad is not None and x.grad.tolist() == [0.75, 5.0]


def test_soft_threshold_with_alpha_zero_is_str() -> None:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3) * 0.1
    for shape in ((1, 1), (4, 1)):
        s = torch.randn(*shape) - 2.5
        w1, s1 = w.clone().requires_grad_(True), s.clone().requires_grad_(True)
        w2, s2 = w.clone().requires_grad_(True), s.clone().requires_grad_(True)
        ours = soft_threshold(w1, s1, 0.0)
        flat = w2.reshape(4, -1)
        ref = (torch.sign(flat) * torch.relu(flat.abs() - torch.sigmoid(s2))).reshape(w.shape)
        g = torch.randn_like(w)
        (ours * g).sum().backward()
        (ref * g).sum().backward()
        assert torch.equal(ours, ref + 0.0)
        assert w1.grad is not None and w2.grad is not None and torch.equal(w1.grad, w2.grad)
        assert s1.grad is not None and s2.grad is not None
        assert torch.allclose(s1.grad, s2.grad, rtol=1e-6, atol=1e-7)


def test_soft_threshold_shrinks_kept_weights_and_writes_positive_zeros() -> None:
    w = torch.tensor([[-0.3, -0.01, 0.02, 0.5]])
    s = torch.full((1, 1), math.log(0.05 / 0.95))  # sigmoid(s) = 0.05
    out = soft_threshold(w, s, 0.5)
    assert out[0].tolist() == pytest.approx([-0.25, 0.0, 0.0, 0.45])
    assert not torch.signbit(out[0, 1])  # +0.0, not -0.0 (sign(-0.01) * 0)


def test_channel_thresholds_apply_per_output_channel() -> None:
    w = torch.full((2, 1, 1, 2), 0.1)
    s = torch.tensor([[-10.0], [10.0]])  # channel 0: tiny threshold, channel 1: 0.99995
    out = soft_threshold(w, s, 0.0)
    assert bool((out[0] > 0).all()) and bool((out[1] == 0).all())
    with pytest.raises(ValueError, match="does not fit"):
        soft_threshold(w, torch.zeros(3, 1), 0.0)


def test_threshold_gradient_carries_alpha_where_everything_is_masked() -> None:
    w = torch.tensor([[0.01, 0.02]])
    s = torch.zeros(1, 1, requires_grad=True)  # threshold 0.5: both masked
    soft_threshold(w, s, 0.0).sum().backward()
    assert s.grad is not None and float(s.grad) == 0.0
    s.grad = None
    soft_threshold(w, s, 0.5).sum().backward()  # GA: the masked weights still move s
    assert s.grad is not None and float(s.grad) != 0.0


# epoch -> alpha for alpha0 = 0.75, T = 100, reset at 90 (research note, AutoSparse section T2)
PRESET = {0: 0.75, 10: 0.7439, 25: 0.7144, 50: 0.375, 75: 0.1098, 89: 0.0222}


@pytest.mark.parametrize(("epoch", "expected"), sorted(PRESET.items()))
def test_alpha_follows_the_paper_schedule(epoch: int, expected: float) -> None:
    assert ga_alpha(epoch, 0.75, 100, 90) == pytest.approx(expected, abs=6e-5)


def test_alpha_is_zero_from_the_reset_on_and_not_compounded() -> None:
    assert ga_alpha(90, 0.75, 100, 90) == 0.0
    assert ga_alpha(99, 0.75, 100, 90) == 0.0
    assert ga_alpha(90, 0.75, 100, 0.9 * 100) == 0.0  # 0.9 * 100 is not exactly 90 in floats
    # a compounding schedule (alpha <- alpha * decay(t) every epoch) is far below at epoch 25
    compounded = 0.75
    for t in range(1, 26):
        compounded *= ga_alpha(t, 1.0, 100, 90)
    assert abs(compounded - PRESET[25]) > 0.1
    with pytest.raises(ValueError, match="horizon"):
        ga_alpha(0, 0.75, 0, 90)
