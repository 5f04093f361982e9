"""Native Square Attack (score-based black-box), Linf and L2, on the epsilon-grid engine.

Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box adversarial
attack via random search", ECCV 2020 (arXiv 1912.00049); the fourth stage of AutoAttack
"standard". Written from the paper and checked against the original code as packaged by
``pyautoattack`` (``square.py``). It uses logits only (no gradients), which makes it the
gradient-masking probe: a model that only *hides* its gradients is still broken by Square.

Random search on the margin loss ``z_y − max_{j≠y} z_j`` (minimized; negative = misclassified):

* **Linf**: start at vertical stripes ``x ± eps`` (one random sign per example, channel and
  column); every iteration redraws one random ``s × s`` square (all channels) to ``x ± eps``
  with one random sign per channel, and keeps the candidate if the margin decreases.
* **L2**: start from a 5 × 5 grid of ``s × s`` blocks carrying the paper's centred pattern
  ``η`` with random signs, rescaled to norm eps; every iteration moves the perturbation mass of a
  second random square into a first one, where a new ``η`` pattern is added (the paper's
  Algorithm 3), and the whole perturbation is rescaled to norm eps.
* The square side follows the paper's ``p`` schedule: ``s = round(sqrt(p · H·W))`` with
  ``p = p_init`` halved at iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000
  (``rescale_schedule=True`` stretches these marks to ``n_queries``; AutoAttack does not).

Differences from the reference code, all in the paper's spirit: each example draws its own square
positions (the reference shares one position per batch, so its result depends on which other
examples are in the batch), positions cover the whole image (the reference never draws the last
row/column), and all draws come from a local generator seeded with ``seed`` (no global RNG).

Budget: ``n_queries`` iterations per example and restart, plus one query for the start; an
example stops being queried as soon as it is misclassified. Over an epsilon grid the engine's
:func:`attacks.engine.nested_grid` attacks only the survivors of the previous epsilon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from attacks.base import Attack, AttackInputError, AttackKind, FixedBudgetOutput
from attacks.engine import EpsRun, nested_grid
from attacks.norms import Norm, clip_to_ball, perturbation_norm
from attacks.params import check, check_positive_int, check_seed, is_number
from attacks.tensors import generator_or_global, per_row

__all__ = ["NativeSquare", "NativeSquareL2", "SquareParams", "SquareRun", "square_attack"]

#: iterations (for 10,000 queries) after which p is halved once more (paper, Appendix; AutoAttack)
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


@dataclass(frozen=True)
class SquareParams:
    """Square Attack parameters; defaults are AutoAttack "standard"'s (``p_init=0.8``, 5,000 queries).

    The paper tunes ``p_init`` per dataset and norm and uses 10,000 queries; AutoAttack fixes
    0.8 for every norm and dataset with 5,000 queries, and so do we.
    """

    n_queries: int = 5000
    p_init: float = 0.8
    rescale_schedule: bool = False
    restarts: int = 1
    seed: int | None = 0

    def __post_init__(self) -> None:
        check_positive_int("n_queries", self.n_queries)
        check(
            is_number(self.p_init) and 0 < self.p_init <= 1,
            f"p_init must be in (0, 1] (got {self.p_init!r})",
        )
        check(isinstance(self.rescale_schedule, bool), "rescale_schedule must be a bool")
        check_positive_int("restarts", self.restarts)
        check_seed(self.seed)

    def nominal_gradients(self) -> int:
        """``restarts`` per example and epsilon: the grid's nominal count (Square has no steps).

        Square computes no gradient (``grad_evals`` is 0); its work is up to ``1 + n_queries``
        forward queries per example and restart (``details["forward_evals"]``).
        """
        return self.restarts

    def nominal_forwards(self) -> int:
        """No progress estimate (0)."""
        return 0

    def p_at(self, it: int) -> float:
        """Fraction ``p`` of the image a square covers at iteration ``it`` (0-based)."""
        if self.rescale_schedule:
            it = int(it / self.n_queries * 10000)
        halvings = sum(it > mark for mark in P_SCHEDULE)
        return self.p_init / 2**halvings


@dataclass
class SquareRun:
    """Outcome of :func:`square_attack` on m examples at one budget per row."""

    adversarials: Tensor  # (m, ...) inside the ball and [0, 1]
    broken: Tensor  # bool (m,): margin <= 0 at the returned point
    queries: Tensor  # (m,) forward passes spent per example (int64)


def _margin(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """``z_y − max_{j≠y} z_j`` per example (m,), one forward pass."""
    with torch.no_grad():
        logits = model(x)
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], -math.inf).amax(dim=1)
    return true - others


def _square_mask(pos_h: Tensor, pos_w: Tensor, s: int, h: int, w: int) -> Tensor:
    """Bool (m, 1, h, w): the s × s square at (pos_h, pos_w) of each example."""
    ar_h = torch.arange(h, device=pos_h.device)
    ar_w = torch.arange(w, device=pos_h.device)
    rows = (ar_h >= pos_h[:, None]) & (ar_h < pos_h[:, None] + s)  # (m, h)
    cols = (ar_w >= pos_w[:, None]) & (ar_w < pos_w[:, None] + s)  # (m, w)
    return (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)


def _window_index(pos_h: Tensor, pos_w: Tensor, s: int) -> tuple[Tensor, Tensor, Tensor]:
    """Advanced indices (m,1,1), (m,s,1), (m,1,s) selecting each example's s × s square."""
    ar = torch.arange(s, device=pos_h.device)
    ii = torch.arange(pos_h.shape[0], device=pos_h.device)[:, None, None]
    return ii, (pos_h[:, None] + ar)[:, :, None], (pos_w[:, None] + ar)[:, None, :]


def _get_window(t: Tensor, idx: tuple[Tensor, Tensor, Tensor]) -> Tensor:
    """(m, c, h, w) -> (m, c, s, s): each example's own square."""
    ii, rr, cc = idx
    return t[ii, :, rr, cc].permute(0, 3, 1, 2)  # indexing gives (m, s, s, c)


def _set_window(t: Tensor, idx: tuple[Tensor, Tensor, Tensor], value: Tensor) -> None:
    """Write ``value`` (m, c, s, s) into each example's square of ``t`` (m, c, h, w) in place."""
    ii, rr, cc = idx
    t[ii, :, rr, cc] = value.permute(0, 2, 3, 1)


def _rectangle(hh: int, ww: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """The paper's centred pattern on an hh × ww rectangle, unit L2 norm (hh may be 0).

    Cell value: ``Σ_{k=d}^{K−1} 1/(k+1)²`` where d is the Chebyshev distance to the centre
    ``(hh//2, ww//2)`` and ``K = max(hh, ww)//2 + 1`` (nested squares of weight 1/(k+1)²).
    """
    if hh == 0 or ww == 0:
        return torch.zeros(hh, ww, device=device, dtype=dtype)
    big_k = max(hh // 2 + 1, ww // 2 + 1)
    weights = 1.0 / torch.arange(1, big_k + 1, device=device, dtype=dtype) ** 2  # (K,)
    suffix = weights.flip(0).cumsum(0).flip(0)  # (K,) Σ_{k>=d} w_k
    di = (torch.arange(hh, device=device) - hh // 2).abs()
    dj = (torch.arange(ww, device=device) - ww // 2).abs()
    dist = torch.maximum(di[:, None], dj[None, :])  # (hh, ww) Chebyshev distance
    pattern = suffix[dist]
    return pattern / pattern.square().sum().sqrt()


def _eta(s: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(s, s) the paper's η: a positive upper half and a negative lower half, unit L2 norm."""
    top = _rectangle(s // 2, s, device, dtype)
    bottom = -_rectangle(s - s // 2, s, device, dtype)
    eta = torch.cat((top, bottom), dim=0)
    return eta / eta.square().sum().sqrt().clamp_min(1e-12)


def _random_eta(m: int, s: int, like: Tensor, gen: torch.Generator | None) -> Tensor:
    """(m, 1, s, s): η, transposed for a random half of the examples."""
    eta = _eta(s, like.device, like.dtype)
    flip = torch.rand(m, generator=gen, device=like.device) < 0.5
    return torch.where(flip[:, None, None], eta.t(), eta).unsqueeze(1)


def _signs(shape: tuple[int, ...], like: Tensor, gen: torch.Generator | None) -> Tensor:
    bits = torch.randint(0, 2, shape, generator=gen, device=like.device)
    return (bits * 2 - 1).to(like.dtype)


def _positions(m: int, limit: int, like: Tensor, gen: torch.Generator | None) -> Tensor:
    """(m,) uniform integer positions in [0, limit]."""
    return torch.randint(0, limit + 1, (m,), generator=gen, device=like.device)


def _to_norm(delta: Tensor, eps: Tensor) -> Tensor:
    """Rescale each row of ``delta`` (m, ...) to L2 norm ``eps`` (m,)."""
    return delta * per_row(eps / perturbation_norm(delta, Norm.L2).clamp_min(1e-12), delta)


def _init_l2(x: Tensor, eps: Tensor, gen: torch.Generator | None) -> Tensor:
    """The paper's L2 start: 5 × 5 blocks of η with random signs, rescaled to norm eps."""
    m, c, h, w = x.shape
    s = max(h // 5, 1)
    delta = torch.zeros_like(x)
    nb_h, nb_w = min(5, h // s), min(5, w // s)
    off_h, off_w = (h - s * nb_h) // 2, (w - s * nb_w) // 2
    eta = _eta(s, x.device, x.dtype)
    for i in range(nb_h):  # at most 25 blocks, each vectorized over examples and channels
        for j in range(nb_w):
            r, q = off_h + i * s, off_w + j * s
            delta[:, :, r : r + s, q : q + s] += eta * _signs((m, c, 1, 1), x, gen)
    return clip_to_ball(x + _to_norm(delta, eps), x, eps, Norm.L2)


def square_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: Tensor,
    *,
    norm: Norm,
    params: SquareParams,
    gen: torch.Generator | None,
) -> SquareRun:
    """One Square Attack run on ``x`` (m, C, H, W) with per-row budgets ``eps`` (m,).

    Queries the model ``1 + n_queries`` times per example at most; examples leave the batch as
    soon as their margin is <= 0. Draws come from ``gen`` only.
    """
    if x.ndim != 4:
        raise AttackInputError(
            f"the Square attack needs images of shape (N, C, H, W) (got shape {tuple(x.shape)})"
        )
    m, c, h, w = x.shape
    if norm is Norm.LINF:
        stripes = _signs((m, c, 1, w), x, gen)
        best = clip_to_ball(x + per_row(eps, x) * stripes, x, eps, norm)
    else:
        best = _init_l2(x, eps, gen)
    margin = _margin(model, best, y)  # (m,)
    queries = torch.ones(m, dtype=torch.long, device=x.device)
    for it in range(params.n_queries):
        active = (margin > 0).nonzero().squeeze(1)
        if active.numel() == 0:
            break
        xa, ba, ea, ya = x[active], best[active], eps[active], y[active]
        a = active.numel()
        p = params.p_at(it)
        if norm is Norm.LINF:
            s = min(max(round(math.sqrt(p * h * w)), 1), h, w)
            mask = _square_mask(_positions(a, h - s, x, gen), _positions(a, w - s, x, gen), s, h, w)
            step = 2 * per_row(ea, xa) * _signs((a, c, 1, 1), x, gen)
            cand = clip_to_ball(ba + mask * step, xa, ea, norm)
        else:
            s = max(round(math.sqrt(p * h * w)), 3)
            s = min(s + 1 if s % 2 == 0 else s, h, w)
            cand = _l2_candidate(xa, ba, ea, s, gen)
        new_margin = _margin(model, cand, ya)
        queries[active] += 1
        improved = new_margin < margin[active]
        keep = active[improved]
        best[keep] = cand[improved]
        margin[keep] = new_margin[improved]
    return SquareRun(adversarials=best, broken=margin <= 0, queries=queries)


def _l2_candidate(
    x: Tensor, best: Tensor, eps: Tensor, s: int, gen: torch.Generator | None
) -> Tensor:
    """The paper's L2 proposal (Algorithm 3) for every row of ``x`` (a, c, h, w)."""
    a, c, h, w = x.shape
    delta = best - x
    ph1, pw1 = _positions(a, h - s, x, gen), _positions(a, w - s, x, gen)
    ph2, pw2 = _positions(a, h - s, x, gen), _positions(a, w - s, x, gen)
    win1, win2 = _window_index(ph1, pw1, s), _window_index(ph2, pw2, s)
    union = _square_mask(ph1, pw1, s, h, w) | _square_mask(ph2, pw2, s, h, w)  # (a, 1, h, w)
    old = _get_window(delta, win1)  # (a, c, s, s)
    old_norm = old.square().sum(dim=(2, 3), keepdim=True).sqrt()  # (a, c, 1, 1)
    img_norm = per_row(perturbation_norm(delta, Norm.L2), x)  # (a, 1, 1, 1)
    union_norm = (delta * union).square().sum(dim=(2, 3), keepdim=True).sqrt()  # (a, c, 1, 1)
    new = _random_eta(a, s, x, gen) * _signs((a, c, 1, 1), x, gen) + old / (1e-12 + old_norm)
    budget = ((per_row(eps, x) ** 2 - img_norm**2).clamp_min(0) / c + union_norm**2).sqrt()
    new = new / (1e-12 + new.square().sum(dim=(2, 3), keepdim=True).sqrt()) * budget
    _set_window(delta, win2, torch.zeros_like(new))
    _set_window(delta, win1, new)
    return clip_to_ball(x + _to_norm(delta, eps), x, eps, Norm.L2)


class _SquareBase(SquareParams, Attack):
    kind: ClassVar[AttackKind] = AttackKind.FIXED_BUDGET
    restarts_in_run: ClassVar[bool] = True  # restarts inside each epsilon, on the still-robust
    backend: ClassVar[str] = "native"
    gradient_free: ClassVar[bool] = True  # logits only: the gradient-masking probe

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, epsilons: list[float]
    ) -> FixedBudgetOutput:
        gen = generator_or_global(self.seed, x.device)
        queries = [0]

        def attack_at(xs: Tensor, ys: Tensor, e: float, prev: Tensor | None) -> EpsRun:
            eps = torch.full((xs.shape[0],), e, dtype=xs.dtype, device=xs.device)
            out = xs.clone()
            broken = torch.zeros(xs.shape[0], dtype=torch.bool, device=xs.device)
            for _ in range(self.restarts):  # restarts attack the still-robust only
                todo = (~broken).nonzero().squeeze(1)
                if todo.numel() == 0:
                    break
                run = square_attack(
                    model, xs[todo], ys[todo], eps[todo], norm=self.norm, params=self, gen=gen
                )
                queries[0] += int(run.queries.sum())
                out[todo] = run.adversarials
                broken[todo] = run.broken
            return EpsRun(adversarials=out, broken=broken, grad_evals=0)

        run = nested_grid(x, y, epsilons, attack_at)
        return FixedBudgetOutput(
            adversarials=run.adversarials, grad_evals=0, details={"forward_evals": queries[0]}
        )


@dataclass(frozen=True, repr=False)
class NativeSquare(_SquareBase):
    """Square Attack, Linf, fixed budget (5,000 queries per example and epsilon, survivors only)."""

    name: ClassVar[str] = "square"
    norm: ClassVar[Norm] = Norm.LINF


@dataclass(frozen=True, repr=False)
class NativeSquareL2(_SquareBase):
    """Square Attack, L2, fixed budget (5,000 queries per example and epsilon, survivors only)."""

    name: ClassVar[str] = "square-l2"
    norm: ClassVar[Norm] = Norm.L2
