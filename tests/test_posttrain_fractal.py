"""Data-free fractal calibration images: IFS probabilities, the fill rule, determinism, range."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustbench_sparse.posttrain.fractal import MIN_FILL, fractal_images, ifs_system, render_ifs


def test_ifs_probabilities_sum_to_one_and_follow_the_determinants() -> None:
    rng = np.random.Generator(np.random.PCG64(0))
    for _ in range(20):
        params, probs = ifs_system(rng)
        assert 2 <= len(params) <= 7 and params.shape[1] == 6
        assert probs.sum() == pytest.approx(1.0)
        det = np.abs(params[:, 0] * params[:, 3] - params[:, 1] * params[:, 2])
        assert np.allclose(probs, det / det.sum())
        assert (np.abs(params) <= 1).all()


def test_accepted_categories_fill_at_least_a_fifth_of_the_canvas() -> None:
    from robustbench_sparse.posttrain import fractal

    rng = np.random.Generator(np.random.PCG64(3))
    for _ in range(3):
        params, probs = fractal._category(rng, 64)
        canvas = render_ifs(params, probs, 64, np.random.Generator(np.random.PCG64(9)))
        assert canvas is not None and canvas.shape == (64, 64)
        assert canvas.mean() >= MIN_FILL * 0.9  # another orbit of the same system


def test_images_are_deterministic_in_the_seed_and_in_range() -> None:
    a = fractal_images(27, (3, 16, 16), seed=5)
    assert a.shape == (27, 3, 16, 16) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, fractal_images(27, (3, 16, 16), seed=5))
    assert not torch.equal(a, fractal_images(27, (3, 16, 16), seed=6))
    assert float(a.std()) > 0.05  # not blank
    assert fractal_images(2, (1, 8, 8), seed=0).shape == (2, 1, 8, 8)
