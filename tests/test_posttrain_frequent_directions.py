"""Frequent Directions (robustbench_sparse.posttrain.frequent_directions): the error bound of the
variant implemented (Ghashami et al. 2016, shrink by the ℓ-th squared singular value), and the two
sloppy sketches it must not be: "keep the ℓ largest filters" and the reference code's early stop.

The reference ``sketch_matrix`` (lmbxmu/FilterSketch) is a script, not an installable package, so
its tail-drop behaviour is re-derived below (a few lines of the loop's control flow, not its code)
to show the case where it matters.
"""

from __future__ import annotations

import pytest
import torch

from robustbench_sparse.posttrain.frequent_directions import frequent_directions


def _gram_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``AᵀA - BᵀB`` in float64, ``(d, d)``."""
    a64, b64 = a.double(), b.double()
    return a64.T @ a64 - b64.T @ b64


def _spectral(m: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(m, ord=2))


@pytest.mark.parametrize(
    ("n", "d", "ell", "seed"),
    [(64, 100, 10, 0), (200, 30, 8, 1), (128, 1152, 38, 2), (16, 144, 9, 3), (50, 50, 1, 4)],
)
def test_bound_on_random_matrices(n: int, d: int, ell: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=gen) * torch.rand(n, 1, generator=gen)  # rows of mixed norm
    b = frequent_directions(a, ell)
    assert b.shape == (ell, d) and b.dtype == a.dtype
    err = _gram_error(a, b)
    fro_a, fro_b = float(a.double().square().sum()), float(b.double().square().sum())
    tol = 1e-6 * fro_a
    # ‖AᵀA − BᵀB‖₂ ≤ (‖A‖_F² − ‖B‖_F²)/ℓ ≤ ‖A‖_F²/ℓ
    assert _spectral(err) <= (fro_a - fro_b) / ell + tol
    assert _spectral(err) <= fro_a / ell + tol
    # never over-estimates a direction: AᵀA − BᵀB is positive semi-definite
    assert float(torch.linalg.eigvalsh(err).min()) >= -tol
    # and no rank-ℓ matrix can do better than σ_{ℓ+1}(A)²
    sigma = torch.linalg.svdvals(a.double())
    if ell < sigma.numel():
        assert _spectral(err) >= float(sigma[ell]) ** 2 - tol


def _svd_sketch(a: torch.Tensor, ell: int) -> torch.Tensor:
    """The textbook loop: a buffer of ℓ rows, an SVD of it whenever a row meets a full buffer."""
    b = torch.zeros(ell, a.shape[1], dtype=torch.float64)
    filled = 0
    for row in a.double():
        if filled == ell:
            _, s, vh = torch.linalg.svd(b, full_matrices=False)
            squared = torch.zeros(ell, dtype=torch.float64)
            squared[: s.numel()] = s.square()  # σ_ℓ = 0 when d < ℓ
            shrunk = (squared[: s.numel()] - squared[ell - 1]).clamp_min(0).sqrt()
            filled = int((shrunk > 1e-9 * shrunk[0]).sum())
            b = torch.zeros_like(b)
            b[:filled] = shrunk[:filled, None] * vh[:filled]
        b[filled] = row
        filled += 1
    return b


@pytest.mark.parametrize(
    ("n", "d", "ell", "seed"), [(40, 30, 7, 0), (64, 9, 16, 1), (33, 200, 12, 2)]
)
def test_gram_implementation_equals_the_svd_loop(n: int, d: int, ell: int, seed: int) -> None:
    """The coefficient / Gram-matrix bookkeeping gives the sketch of the plain SVD loop: the same
    Gram matrix BᵀB (the rows themselves are unique only up to a rotation among equal σ)."""
    a = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    b, want = frequent_directions(a, ell), _svd_sketch(a, ell)
    scale = float(a.square().sum())
    assert torch.allclose(b.T @ b, want.T @ want, atol=1e-9 * scale)


def test_low_rank_input_is_sketched_exactly() -> None:
    """Rank r = 5 < ℓ = 8: every shrink subtracts σ_ℓ² = 0, so BᵀB = AᵀA (a sketch that shrinks by
    a positive amount, e.g. the reference's σ²_{ℓ/2+1} with ℓ/2 < r, loses energy here)."""
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(40, 5, generator=gen, dtype=torch.float64) @ torch.randn(
        5, 20, generator=gen, dtype=torch.float64
    )  # (40, 20), rank 5
    b = frequent_directions(a, 8)
    assert torch.allclose(b.T @ b, a.T @ a, atol=1e-9, rtol=1e-9)


def test_top_l_by_norm_violates_the_bound_on_correlated_filters() -> None:
    """16 near-copies of one large filter and 16 smaller, mutually orthogonal ones: keeping the 8
    largest rows keeps 8 copies, misses half the large direction's energy and all the others."""
    gen = torch.Generator().manual_seed(6)
    d, ell = 64, 8
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]  # (d, d)
    big = 10.0 * basis[0] + 0.01 * torch.randn(16, d, generator=gen, dtype=torch.float64)
    small = 3.0 * basis[1:17]  # (16, d)
    a = torch.cat([big, small])  # (32, d)
    fro = float(a.square().sum())
    top = a[a.norm(dim=1).argsort(descending=True)[:ell]]  # the sloppy sketch
    sloppy = _spectral(_gram_error(a, top))
    ours = _spectral(_gram_error(a, frequent_directions(a, ell)))
    assert ours <= fro / ell * (1 + 1e-9)
    assert sloppy > 3 * fro / ell  # violated by a wide margin (about 800 vs a bound of 218)


def _tail_dropping_sketch(a: torch.Tensor, ell: int) -> torch.Tensor:
    """The reference's control flow: once the buffer is full, stop when fewer than ℓ//2 rows
    remain (those rows never reach the sketch); shrink by σ²_{ℓ//2+1}."""
    b = torch.zeros(ell, a.shape[1], dtype=torch.float64)
    filled, half = 0, ell // 2
    for i in range(a.shape[0]):
        if filled == ell:
            if a.shape[0] - i < half:
                break
            _, s, vh = torch.linalg.svd(b, full_matrices=False)
            shrunk = (s.square() - s[half].square()).clamp_min(0).sqrt()
            b = shrunk[:, None] * vh
            filled = half
        b[filled] = a[i].double()
        filled += 1
    return b


def test_every_row_reaches_the_sketch() -> None:
    """K = 16 filters, ℓ = 9 (ResNet-56's first stage at rate 0.6): at the buffer-full step for
    row 14 only 2 < ℓ/2 rows remain. Give those two a direction no other filter has: the
    reference's early stop loses it and breaks the bound; this sketch keeps it."""
    gen = torch.Generator().manual_seed(7)
    d, ell = 144, 9
    basis = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))[0]
    head = torch.randn(14, 20, generator=gen, dtype=torch.float64) @ basis[1:21] / 20**0.5
    tail = 3.0 * basis[0].repeat(2, 1)  # (2, d): the only filters along basis[0]
    a = torch.cat([head, tail])  # (16, d)
    fro = float(a.square().sum())
    dropped = _spectral(_gram_error(a, _tail_dropping_sketch(a, ell)))
    b = frequent_directions(a, ell)
    assert dropped > fro / ell  # the quirk violates the bound here
    assert _spectral(_gram_error(a, b)) <= fro / ell * (1 + 1e-9)
    assert float((b.double() @ basis[0]).norm()) > 1.0  # the tail direction survives


def test_short_input_is_returned_padded() -> None:
    a = torch.arange(12.0).reshape(3, 4)
    b = frequent_directions(a, 5)
    assert torch.equal(b[:3], a) and torch.equal(b[3:], torch.zeros(2, 4))


def test_is_deterministic() -> None:
    a = torch.randn(30, 17, generator=torch.Generator().manual_seed(8))
    assert torch.equal(frequent_directions(a, 6), frequent_directions(a, 6))


@pytest.mark.parametrize(("shape", "ell"), [((3, 4, 5), 2), ((6, 4), 0)])
def test_rejects_bad_arguments(shape: tuple[int, ...], ell: int) -> None:
    with pytest.raises(ValueError):
        frequent_directions(torch.zeros(shape), ell)
