"""Native Square Attack (attacks/square.py): schedule, invariants, nested grid, pyautoattack agreement."""

from __future__ import annotations

import itertools

import pytest
import torch

from attacks import AttackConfigError, AttackInputError, Norm, get_attack, perturbation_norm
from attacks import square as sq
from attacks.norms import clip_to_ball
from attacks.square import SquareParams, _eta, _rectangle
from tests.attack_helpers import Digits, digits

GRID = {Norm.LINF: [0.0, 0.1, 0.15, 0.3, 1.0], Norm.L2: [0.0, 0.5, 1.0, 2.0, 8.0]}
REF_EPS = {"square": [0.1, 0.15, 0.2], "square-l2": [0.5, 1.0, 1.5]}
QUERIES = 300


@pytest.fixture(scope="module")
def data() -> Digits:
    return digits()


def test_p_schedule_halves_at_the_papers_marks() -> None:
    p = SquareParams(p_init=0.8)
    assert [p.p_at(i) for i in (0, 10, 11, 50, 51, 500, 501, 4001, 8001)] == [
        0.8,
        0.8,
        0.4,
        0.4,
        0.2,
        0.8 / 8,
        0.8 / 16,
        0.8 / 128,
        0.8 / 512,
    ]
    stretched = SquareParams(p_init=0.8, n_queries=1000, rescale_schedule=True)
    assert stretched.p_at(5) == 0.4  # iteration 5 of 1,000 is iteration 50 of 10,000


def test_eta_pattern() -> None:
    for s in (1, 3, 5, 8):
        eta = _eta(s, torch.device("cpu"), torch.float64)
        assert eta.shape == (s, s)
        assert float(eta.square().sum()) == pytest.approx(1.0)
        assert bool((eta[: s // 2] >= 0).all() and (eta[s // 2 :] <= 0).all())
    rect = _rectangle(3, 5, torch.device("cpu"), torch.float64)
    assert int(rect.argmax()) == 2 + 5 * 1  # the centre (1, 2) carries the largest weight


@pytest.mark.parametrize("name", ["square", "square-l2"])
def test_invariants(data: Digits, name: str) -> None:
    queries = 100
    attack = get_attack(name, n_queries=queries)
    assert getattr(type(attack), "gradient_free", False) is True
    eps = GRID[attack.norm]
    x, y = data.x[:80], data.y[:80]
    result = attack(data.model, x, y, epsilons=eps)
    clean = (data.model(x).argmax(1) == y).float().mean().item()
    acc = result.robust_accuracy()
    assert acc[0] == pytest.approx(clean)  # eps = 0: clean accuracy
    assert all(b <= a for a, b in itertools.pairwise(acc))  # nested grid: monotone
    assert acc[-1] < 0.1  # a budget that allows almost any image
    for k, e in enumerate(eps):
        adv = result.adversarials[k]
        assert bool(((adv >= 0) & (adv <= 1)).all())
        assert bool((perturbation_norm(adv - x, attack.norm) <= e * (1 + 1e-6) + 1e-6).all())
    assert result.grad_evals == 0  # black box: no gradients
    assert result.details is not None
    forwards = result.details["forward_evals"]
    n_correct = round(clean * x.shape[0])
    assert n_correct <= forwards <= (queries + 1) * n_correct * (len(eps) - 1)


def test_nested_grid_attacks_survivors_only(data: Digits) -> None:
    x, y = data.x[:80], data.y[:80]
    attack = get_attack("square", n_queries=50)
    result = attack(data.model, x, y, epsilons=[0.15, 0.3])
    early = result.success[0]
    assert bool(early.any())
    # An example broken at the smaller eps keeps that adversarial at the larger one.
    assert torch.equal(result.adversarials[1][early], result.adversarials[0][early])
    single = attack(data.model, x, y, epsilons=[0.15])
    survivors = int((~single.success[0]).sum())
    assert single.details is not None and result.details is not None
    extra = result.details["forward_evals"] - single.details["forward_evals"]
    assert extra <= survivors * (50 + 1)  # the second eps queried only the survivors


def test_seeded_without_global_rng_change(data: Digits) -> None:
    x, y = data.x[:40], data.y[:40]
    before = torch.random.get_rng_state()
    runs = [
        get_attack("square-l2", n_queries=30, seed=s)(data.model, x, y, epsilons=[0.5])
        for s in (5, 5, 6)
    ]
    assert torch.equal(torch.random.get_rng_state(), before)
    assert torch.equal(runs[0].adversarials, runs[1].adversarials)
    assert not torch.equal(runs[0].adversarials, runs[2].adversarials)


def test_restarts_attack_the_still_robust(data: Digits) -> None:
    x, y = data.x[:60], data.y[:60]
    one = get_attack("square", n_queries=20, restarts=1)(data.model, x, y, epsilons=[0.1, 0.15])
    three = get_attack("square", n_queries=20, restarts=3)(data.model, x, y, epsilons=[0.1, 0.15])
    assert one.details is not None and three.details is not None
    assert three.details["forward_evals"] > one.details["forward_evals"]
    # At the first eps the first restart is the same run on the same batch (same generator), and
    # later restarts only add broken examples. At later eps the survivors' batch differs (more were
    # broken at the first eps), so batched float rounding may differ and only the total is compared.
    assert bool((three.success[0] >= one.success[0]).all())
    assert int(three.success.sum()) >= int(one.success.sum())


def test_non_image_inputs_are_refused(data: Digits) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), data.model[-1])  # (N, 512) -> logits
    x = torch.rand(4, 32 * 4 * 4)
    with pytest.raises(AttackInputError, match=r"images of shape \(N, C, H, W\)"):
        get_attack("square", n_queries=5)(model, x, model(x).argmax(1), epsilons=[0.1])


def test_bad_parameters() -> None:
    with pytest.raises(AttackConfigError, match="p_init"):
        SquareParams(p_init=0.0)
    with pytest.raises(AttackConfigError, match="n_queries"):
        get_attack("square", n_queries=0)


def _reference_square(data: Digits, name: str, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    square = pytest.importorskip("pyautoattack.square")
    norm = "Linf" if name == "square" else "L2"
    accs = []
    for e in REF_EPS[name]:
        ref = square.SquareAttack(
            data.model, norm=norm, n_queries=QUERIES, eps=e, p_init=0.8, seed=0, resc_schedule=False
        )
        with torch.no_grad():
            adv = ref.perturb(x, y)
            accs.append(float((data.model(adv).argmax(1) == y).float().mean()))
    return accs


@pytest.mark.parametrize("name", ["square", "square-l2"])
def test_at_least_as_strong_as_pyautoattack(data: Digits, name: str) -> None:
    """Defaults (whole-image square positions, 5×5 L2 start) vs pyautoattack's Square.

    On 8×8 digits the reference never draws the last row/column, which matters with squares of
    side 7; measured (200 digits, 300 queries): native Linf 0.805/0.47/0.145 vs reference
    0.86-0.88/0.595-0.635/0.275-0.325 (seeds 0-2). One-sided: never above it by more than 3 points.
    """
    x, y = data.x[:200], data.y[:200]
    ref = _reference_square(data, name, x, y)
    native = get_attack(name, n_queries=QUERIES)(
        data.model, x, y, epsilons=REF_EPS[name]
    ).robust_accuracy()
    for a, r in zip(native, ref, strict=True):
        assert a <= r + 0.03, (native, ref)


@pytest.mark.parametrize("name", ["square", "square-l2"])
def test_agrees_with_pyautoattack_on_reference_draws(
    data: Digits, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the reference's position range and start layout, Square is the same random search.

    Different random draws: robust accuracy at each eps (one eps per run, as the reference)
    agrees within 0.10 = 2 standard errors of a difference of two independent proportions on 200
    examples at p = 0.5 (sqrt(2 · 0.25 / 200) = 0.05). Measured largest gap: 0.055.
    """

    def reference_positions(
        m: int, limit: int, like: torch.Tensor, gen: torch.Generator | None
    ) -> torch.Tensor:
        return torch.randint(0, max(limit, 1), (m,), generator=gen, device=like.device)

    def reference_l2_start(
        x: torch.Tensor, eps: torch.Tensor, gen: torch.Generator | None
    ) -> torch.Tensor:
        m, c, h, w = x.shape
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        off = (h - s * 5) // 2
        for i, j in itertools.product(range(h // s), range(w // s)):
            r, q = off + i * s, off + j * s
            if r + s <= h and q + s <= w:
                delta[:, :, r : r + s, q : q + s] += _eta(s, x.device, x.dtype) * sq._signs(
                    (m, c, 1, 1), x, gen
                )
        return clip_to_ball(x + sq._to_norm(delta, eps), x, eps, Norm.L2)

    monkeypatch.setattr(sq, "_positions", reference_positions)
    monkeypatch.setattr(sq, "_init_l2", reference_l2_start)
    x, y = data.x[:200], data.y[:200]
    ref = _reference_square(data, name, x, y)
    attack = get_attack(name, n_queries=QUERIES)
    native = [attack(data.model, x, y, epsilons=[e]).robust_accuracy()[0] for e in REF_EPS[name]]
    for a, r in zip(native, ref, strict=True):
        assert abs(a - r) <= 0.10, (native, ref)
