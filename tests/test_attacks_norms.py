"""attacks.norms: perturbation norms, projection into the ball, verification."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attacks.norms import (
    Norm,
    clip_to_ball,
    l1_box_projection,
    perturbation_norm,
    verify_adversarials,
)


def test_perturbation_norm_known_values() -> None:
    delta = torch.zeros(2, 1, 2, 2)
    delta[0, 0, 0, 0] = 3.0
    delta[0, 0, 1, 1] = -4.0
    assert perturbation_norm(delta, Norm.L2).tolist() == [5.0, 0.0]
    assert perturbation_norm(delta, Norm.LINF).tolist() == [4.0, 0.0]


def test_norm_parses_from_string() -> None:
    assert Norm("linf") is Norm.LINF
    assert Norm("l2") is Norm.L2


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4),
    c=st.integers(1, 3),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    norm=st.sampled_from(list(Norm)),
    eps=st.floats(0.0, 3.0, allow_nan=False),
    per_example=st.booleans(),
    scale=st.floats(0.0, 10.0, allow_nan=False),
    seed=st.integers(0, 2**16),
)
def test_clip_to_ball_always_inside_ball_and_bounds(
    n: int,
    c: int,
    h: int,
    w: int,
    norm: Norm,
    eps: float,
    per_example: bool,
    scale: float,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    x[x < 0.2] = 0.0  # exact bounds are common in images
    x[x > 0.8] = 1.0
    x_adv = x + scale * torch.randn(n, c, h, w, generator=g)
    e: float | torch.Tensor = eps
    if per_example:
        e = torch.rand(n, generator=g) * eps
    out = clip_to_ball(x_adv, x, e, norm)
    assert out.shape == x.shape
    assert bool(((out >= 0) & (out <= 1)).all())
    assert bool(verify_adversarials(out, x, e, norm).all())
    # projecting again changes nothing (within rounding)
    assert torch.allclose(clip_to_ball(out, x, e, norm), out, atol=1e-6)


def test_clip_to_ball_leaves_points_inside_untouched() -> None:
    x = torch.full((3, 1, 4, 4), 0.5)
    x_adv = x + 0.01
    assert torch.equal(clip_to_ball(x_adv, x, 0.1, Norm.LINF), x_adv)
    assert torch.equal(clip_to_ball(x_adv, x, 1.0, Norm.L2), x_adv)


def test_clip_to_ball_projects_l2_radially() -> None:
    x = torch.full((1, 1, 2, 2), 0.5)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] += 0.4
    out = clip_to_ball(x_adv, x, 0.1, Norm.L2)
    assert math.isclose(float(perturbation_norm(out - x, Norm.L2)), 0.1, rel_tol=1e-5)
    assert math.isclose(float(out[0, 0, 0, 0]), 0.6, rel_tol=1e-6)


def test_clip_to_ball_eps_zero_returns_x() -> None:
    x = torch.rand(4, 1, 3, 3)
    for norm in Norm:
        assert torch.equal(clip_to_ball(torch.rand(4, 1, 3, 3), x, 0.0, norm), x)


def test_clip_to_ball_rejects_wrong_eps_shape() -> None:
    x = torch.rand(4, 1, 3, 3)
    with pytest.raises(ValueError, match="eps must be"):
        clip_to_ball(x, x, torch.ones(3), Norm.LINF)


def test_verify_adversarials_rejects_out_of_ball_bounds_and_nan() -> None:
    x = torch.full((4, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[1, 0, 0, 0] = 0.7  # Linf 0.2 > 0.1
    adv[2, 0, 0, 0] = float("nan")
    x[3, 0, 0, 0] = 1.0
    adv[3, 0, 0, 0] = 1.05  # within eps but out of bounds
    ok = verify_adversarials(adv, x, 0.1, Norm.LINF)
    assert ok.tolist() == [True, False, False, False]


def test_verify_adversarials_tolerance_is_tight() -> None:
    x = torch.zeros(1, 1, 1, 2)
    adv = x.clone()
    adv[0, 0, 0, 0] = 0.1 + 1e-7
    assert bool(verify_adversarials(adv, x, 0.1, Norm.LINF).all())
    adv[0, 0, 0, 0] = 0.1 + 1e-4
    assert not bool(verify_adversarials(adv, x, 0.1, Norm.LINF).any())


def test_l1_norm_known_value_and_parse() -> None:
    delta = torch.tensor([[[[3.0, -4.0], [0.5, 0.0]]]])
    assert perturbation_norm(delta, Norm.L1).tolist() == [7.5]
    assert Norm("l1") is Norm.L1


def _brute_l1_box(x: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Bisection on the threshold of sign(v)·clip(|v| − λ, 0, room): an independent solver."""
    room = torch.where(v > 0, 1 - x, x)
    a = v.abs()
    if torch.minimum(a, room).sum() <= eps:
        return v.sign() * torch.minimum(a, room)
    lo, hi = 0.0, float(a.max())
    for _ in range(200):
        mid = (lo + hi) / 2
        if (a - mid).clamp_min(0).minimum(room).sum() > eps:
            lo = mid
        else:
            hi = mid
    return v.sign() * (a - hi).clamp_min(0).minimum(room)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eps", [0.3, 2.0, 7.5])
def test_l1_box_projection_equals_an_independent_solver(seed: int, eps: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 1, 6, 6, generator=gen, dtype=torch.float64)
    v = torch.randn(3, 1, 6, 6, generator=gen, dtype=torch.float64) * (0.2 + seed)
    got = l1_box_projection(x, v, eps)
    for i in range(3):
        want = _brute_l1_box(x[i].flatten(), v[i].flatten(), eps)
        assert torch.allclose(got[i].flatten(), want, atol=1e-9)
    assert (perturbation_norm(got, Norm.L1) <= eps + 1e-9).all()
    assert ((x + got) >= 0).all() and ((x + got) <= 1).all()


def test_l1_box_projection_is_the_nearest_point_of_the_set() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 20, generator=gen, dtype=torch.float64)
    v = torch.randn(4, 20, generator=gen, dtype=torch.float64)
    p = l1_box_projection(x, v, 1.5)
    best = (p - v).norm(dim=1)
    for _ in range(300):  # other points of the set are never closer to v
        q = l1_box_projection(x, p + 0.05 * torch.randn(p.shape, generator=gen).double(), 1.5)
        assert ((q - v).norm(dim=1) >= best - 1e-12).all()


def test_l1_box_projection_spends_no_budget_outside_the_box() -> None:
    # Pixel at 1.0 pushed up (cut off by the box) and one at 0.5 pushed up: the whole budget goes
    # to the second, where a ball projection followed by a clamp would waste half of it.
    x = torch.tensor([[1.0, 0.5]])
    v = torch.tensor([[1.0, 1.0]])
    assert l1_box_projection(x, v, 0.4).tolist() == [[0.0, pytest.approx(0.4)]]
    assert clip_to_ball(x + v, x, 0.4, Norm.L1).tolist() == [[1.0, pytest.approx(0.9)]]


def test_l1_box_projection_per_example_eps_and_zero() -> None:
    x = torch.full((2, 5), 0.5)
    v = torch.ones(2, 5)
    p = l1_box_projection(x, v, torch.tensor([0.0, 1.0]))
    assert p[0].abs().sum() == 0
    assert float(p[1].sum()) == pytest.approx(1.0)


def test_l1_box_projection_agrees_with_pyautoattack() -> None:
    ref = pytest.importorskip("pyautoattack.autopgd_base")
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(20, 1, 8, 8, generator=gen)
    v = torch.randn(20, 1, 8, 8, generator=gen)
    for eps in (0.5, 3.0, 12.0):
        want = v + ref.L1_projection(x, v, eps)
        assert torch.allclose(l1_box_projection(x, v, eps), want, atol=1e-4)


def test_verify_adversarials_knows_l1() -> None:
    x = torch.full((2, 1, 2, 2), 0.5)
    adv = x.clone()
    adv[0, 0, 0, 0] += 0.3
    adv[0, 0, 1, 1] -= 0.3  # L1 0.6, Linf 0.3
    adv[1, 0, 0, 0] += 0.4
    assert verify_adversarials(adv, x, 0.6, Norm.L1).tolist() == [True, True]
    assert verify_adversarials(adv, x, 0.5, Norm.L1).tolist() == [False, True]
    assert verify_adversarials(adv, x, 0.5, Norm.LINF).tolist() == [True, True]
