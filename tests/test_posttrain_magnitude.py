"""Masks and weight correction of layer-wise calibration (Lazarevich et al. 2021), checked exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sparse.posttrain.magnitude import (
    correct_weights,
    normalised_global_masks,
    structured_masks,
)
from robustbench_sparse.sparsity.granularity import Granularity


def _toy() -> dict[str, torch.Tensor]:
    """Two layers with weight scales 1 and 100 and different shapes/tails."""
    g = torch.Generator().manual_seed(0)
    small = torch.randn(8, 4, 3, 3, generator=g)  # scale 1, Gaussian
    large = 100 * torch.randn(16, 8, 3, 3, generator=g) ** 3  # scale 100, heavy tails
    return {"a.weight": small, "b.weight": large}


def _expected_by_normalised_ranking(weights: dict[str, torch.Tensor], s: float) -> list[int]:
    """Per-layer pruned counts from sorting |w| / ||W||_2 of both layers together (numpy)."""
    flat = [w.numpy().ravel() for w in weights.values()]
    scores = np.concatenate([np.abs(f) / np.linalg.norm(f) for f in flat])
    layer = np.concatenate([np.full(f.size, i) for i, f in enumerate(flat)])
    pruned = layer[np.argsort(scores, kind="stable")[: int(s * scores.size)]]
    return [int((pruned == i).sum()) for i in range(len(flat))]


@pytest.mark.parametrize("s", [0.3, 0.5, 0.7])
def test_layer_sparsities_follow_the_layer_normalised_global_ranking(s: float) -> None:
    weights = _toy()
    masks = normalised_global_masks(weights, s)
    assert [int((~m).sum()) for m in masks.values()] == _expected_by_normalised_ranking(weights, s)
    got = [float((~m).sum()) / m.numel() for m in masks.values()]
    # non-uniform, and not what a raw-magnitude threshold gives (it empties the small layer)
    assert abs(got[0] - got[1]) > 0.05
    raw = np.sort(np.concatenate([w.abs().numpy().ravel() for w in weights.values()]))
    threshold = raw[int(s * raw.size)]
    raw_small = float((weights["a.weight"].abs().numpy() < threshold).mean())
    assert raw_small > 0.75 and abs(raw_small - got[0]) > 0.3
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == int(s * total)


def test_correction_formula_on_a_fixed_tensor() -> None:
    w = torch.tensor([[1.0, -2.0, 3.0, -4.0], [0.5, 0.25, -1.0, 2.0]])
    mask = torch.tensor([[False, False, True, True], [True, False, False, True]])
    out = correct_weights(w, mask)
    # channel 0 by hand: mean(w) = -0.5, var(w) = 7.5 - 0.25; sparse [0, 0, 3, -4]:
    # mean -0.25, var 25/4 - 1/16. v = sqrt(7.25 / 6.1875), m = -0.5 + 0.25 v
    v0 = np.sqrt(7.25) / (np.sqrt(6.1875) + 1e-9)
    m0 = -0.5 + 0.25 * v0
    # channel 1: w = [.5, .25, -1, 2]: mean 0.4375, E[w^2] = (0.25 + 0.0625 + 1 + 4) / 4;
    # sparse [.5, 0, 0, 2]: mean 0.625, E[s^2] = 4.25 / 4
    v1 = np.sqrt(5.3125 / 4 - 0.4375**2) / (np.sqrt(4.25 / 4 - 0.625**2) + 1e-9)
    m1 = 0.4375 - 0.625 * v1
    expected = torch.tensor(
        [[0.0, 0.0, 3 * v0 + m0, -4 * v0 + m0], [0.5 * v1 + m1, 0.0, 0.0, 2 * v1 + m1]],
        dtype=torch.float32,
    )
    assert torch.allclose(out, expected, atol=1e-6)
    assert bool((out[~mask] == 0).all())


def test_correction_of_a_conv_weight_is_per_output_channel() -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 2, 3, 3, generator=g)
    mask = structured_masks({"w": w}, 0.6, Granularity.WINDOW)["w"]
    out = correct_weights(w, mask)
    for k in range(3):  # channel k alone gives channel k's result
        alone = correct_weights(w[k : k + 1], mask[k : k + 1])
        assert torch.allclose(out[k : k + 1], alone)
    assert bool((out[~mask] == 0).all()) and out.dtype == w.dtype


def test_structured_masks_are_campfires_one_shot_masks() -> None:
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 3, 3, 3, generator=g)
    mask = structured_masks({"w": w}, 0.7, Granularity.WINDOW)["w"]
    assert bool((mask.reshape(12, 9).sum(dim=1) == 3).all())  # every 3x3 kernel keeps 3


def test_pruned_weights_are_positive_zeros() -> None:
    w = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -1.5, -2.5]])  # (w v + m) * mask: -0.0
    mask = torch.tensor([[True, False, False], [False, True, True]])
    out = correct_weights(w, mask)
    assert bool((torch.signbit(out[~mask]) == 0).all())
