"""Gradient-masking checks: a rounding model raises the flags and Square beats the white-box
attacks on it; the healthy tiny CNN raises none; the pure checks on synthetic outcomes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import Tensor, nn

from attacks import AttackKind, get_attack
from evaluations.engine.cell_attack import attack_cell
from evaluations.engine.masking import (
    CHECKS,
    MaskingInputs,
    batch_dependence_check,
    black_box_check,
    convergence_from_cells,
    convergence_from_results,
    gradient_check,
    masking_fingerprint,
    probe_batch_dependence,
    probe_gradients,
    probe_randomness,
    randomness_check,
    run_checks,
    unbounded_budget,
    unbounded_check,
)
from evaluations.engine.protocols import MaskingProbes
from evaluations.record.cells import CellOutcome, CellRecord
from tests.attack_helpers import digits

EPS = [0.0, 0.1, 0.2, 0.3]
N = 100
PROBES = MaskingProbes(examples=N, black_box_params=(("n_queries", 500),))
CPU = torch.device("cpu")


class Rounding(nn.Module):
    """Input quantization to 4 levels: zero gradient almost everywhere (shattered gradients)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(x * 3) / 3


class Noisy(nn.Module):
    """Gaussian noise in every forward pass, also in eval mode (a randomized defence)."""

    def forward(self, x: Tensor) -> Tensor:
        return x + 0.05 * torch.randn_like(x)


def _cells(model: nn.Module, name: str) -> list[CellRecord]:
    d = digits()
    x, y = d.x[:N], d.y[:N]
    out = []
    for attack_name, params in (("pgd", {}), ("square", {"n_queries": 500})):
        attack = get_attack(attack_name, **params)
        cell = attack_cell(model, attack, x, y, EPS, batch_size=N, device=CPU)
        free = bool(getattr(type(attack), "gradient_free", False))
        out.append(CellRecord(name, attack_name, "native", "linf", attack.kind, free, cell))
    return out


@pytest.fixture(scope="module")
def masked() -> tuple[nn.Module, list[CellRecord]]:
    model = nn.Sequential(Rounding(), digits().model).eval()
    return model, _cells(model, "rounded")


def test_square_is_flagged_gradient_free() -> None:
    assert getattr(type(get_attack("square")), "gradient_free", False)
    assert not getattr(type(get_attack("pgd")), "gradient_free", False)


def test_rounding_model_raises_the_flags(masked: tuple[nn.Module, list[CellRecord]]) -> None:
    model, cells = masked
    d = digits()
    report = run_checks([MaskingInputs("rounded", model, d.x[:N], d.y[:N])], cells, None, PROBES)
    assert set(report["checks"]) == set(CHECKS)
    checks = report["checks"]
    assert checks["zero_gradients"]["flagged"] is True
    assert checks["black_box_beats_white_box"]["flagged"] is True
    assert checks["black_box_beats_white_box"]["count"] > 0
    assert checks["randomness"]["flagged"] is False  # rounding is deterministic
    assert {"zero_gradients", "black_box_beats_white_box"} <= set(report["flags"])


def test_square_lowers_the_robust_accuracy_of_the_rounding_model(
    masked: tuple[nn.Module, list[CellRecord]],
) -> None:
    _, cells = masked
    pgd, square = (c.outcome.robust.mean(axis=1) for c in cells)  # (K,) each
    assert pgd[0] == square[0]  # eps 0: both equal clean accuracy
    assert (square[1:] < pgd[1:]).all()  # the black-box attack is stronger at every eps > 0


def test_healthy_model_raises_no_flag() -> None:
    d = digits()
    cells = _cells(d.model, "healthy")
    report = run_checks([MaskingInputs("healthy", d.model, d.x[:N], d.y[:N])], cells, None, PROBES)
    assert report["flags"] == [], report["checks"]
    assert report["checks"]["unbounded_budget"]["flagged"] is False
    assert report["checks"]["not_converged"]["flagged"] is None  # not a thorough run


def test_randomized_model_is_flagged() -> None:
    d = digits()
    model = nn.Sequential(Noisy(), d.model).eval()
    torch.manual_seed(0)
    probe = probe_randomness(model, d.x[:50])
    assert probe["max_logit_diff"] > 0
    assert randomness_check([{"checkpoint": "noisy", **probe}])["flagged"] is True
    assert probe_randomness(d.model, d.x[:50])["max_logit_diff"] == 0


class BatchMean(nn.Module):
    """Subtracts half the batch mean: every output depends on the other examples of the batch."""

    def forward(self, x: Tensor) -> Tensor:
        return x - 0.5 * x.mean(dim=0, keepdim=True)


def _batch_stats_cnn() -> nn.Module:
    """The digits CNN with its BatchNorm computing batch statistics in eval mode too."""
    model = digits().model
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = nn.BatchNorm2d(bn.num_features, track_running_stats=False)
    stats.load_state_dict({"weight": bn.weight, "bias": bn.bias})
    layers = [stats if m is bn else m for m in model.children()]
    return nn.Sequential(*layers).eval()


@pytest.mark.parametrize("kind", ["batch-mean", "batch-norm"])
def test_model_using_batch_statistics_in_eval_is_flagged(kind: str) -> None:
    d = digits()
    model = (
        nn.Sequential(BatchMean(), d.model).eval() if kind == "batch-mean" else _batch_stats_cnn()
    )
    probe = probe_batch_dependence(model, d.x[:60])
    assert probe["n"] == 60 and probe["alone"] == 32
    assert probe["max_logit_diff"] > 0.1  # predictions may or may not flip: the logits move
    check = batch_dependence_check([{"checkpoint": kind, **probe}])
    assert check["flagged"] is True and kind in check["detail"]
    assert not model.training  # the probe leaves the mode as it found it


@pytest.mark.parametrize("n", [1, 7, 60])
def test_normal_model_is_not_flagged_for_batch_dependence(n: int) -> None:
    d = digits()
    probe = probe_batch_dependence(d.model, d.x[:n])
    assert probe["changed"] == 0 and probe["alone"] == min(n, 32)
    assert probe["max_logit_diff"] <= 1e-4 * max(1.0, probe["logit_scale"])
    assert batch_dependence_check([{"checkpoint": "cnn", **probe}])["flagged"] is False


def test_batch_dependence_check_thresholds() -> None:
    row = {"checkpoint": "m", "n": 50, "alone": 32, "changed": 0, "logit_scale": 20.0}
    assert batch_dependence_check([{**row, "max_logit_diff": 1e-5}])["flagged"] is False
    assert batch_dependence_check([{**row, "max_logit_diff": 0.05}])["flagged"] is True
    assert batch_dependence_check([{**row, "max_logit_diff": float("inf")}])["flagged"] is True
    assert batch_dependence_check([{**row, "max_logit_diff": 0.0, "changed": 1}])["flagged"]
    assert batch_dependence_check([])["flagged"] is None


def test_gradient_probe_counts_zero_and_nonfinite() -> None:
    d = digits()
    rounded = nn.Sequential(Rounding(), d.model).eval()
    assert probe_gradients(rounded, d.x[:20], d.y[:20]) == {"n": 20, "zero": 20, "nonfinite": 0}
    healthy = probe_gradients(d.model, d.x[:20], d.y[:20])
    assert healthy["zero"] == 0 and healthy["nonfinite"] == 0
    rows = [{"checkpoint": "m", "n": 200, "zero": 2, "nonfinite": 0}]
    assert gradient_check(rows)["flagged"] is False  # 1 % is tolerated
    rows[0]["nonfinite"] = 1
    assert gradient_check(rows)["flagged"] is True


def test_unbounded_budget_and_check() -> None:
    assert unbounded_budget("linf", (1, 8, 8)) == 1.0
    assert unbounded_budget("l2", (1, 8, 8)) == 8.0  # diameter of [0, 1]^64
    assert unbounded_budget("l1", (1, 8, 8)) == 64.0  # L1 diameter
    row = {"checkpoint": "m", "norm": "linf", "attack": "pgd", "epsilon": 1.0, "n": 100}
    assert unbounded_check([{**row, "robust": 1}])["flagged"] is False
    assert unbounded_check([{**row, "robust": 9}])["flagged"] is True
    assert unbounded_check([])["flagged"] is None


def _record(attack: str, robust: list[list[bool]], *, free: bool = False) -> CellRecord:
    rob = np.array(robust)
    cell = CellOutcome(
        epsilons=[0.0, 0.1],
        clean_correct=rob[0].copy(),
        robust=rob,
        norms=np.zeros(rob.shape),
        min_norm=None,
        seconds=0.0,
        grad_evals=0,
        params={},
    )
    return CellRecord("m", attack, "native", "linf", AttackKind.FIXED_BUDGET, free, cell)


def test_black_box_check_counts_white_box_survivors_only() -> None:
    ones = [True] * 50
    pgd = _record("pgd", [ones, [True] * 10 + [False] * 40])
    # Square breaks 5 of PGD's 10 survivors and 20 examples PGD already broke
    sq = _record("square", [ones, [False] * 5 + [True] * 25 + [False] * 20], free=True)
    result = black_box_check([pgd, sq])
    assert result["flagged"] is True and result["count"] == 5
    assert black_box_check([pgd])["flagged"] is None  # no gradient-free attack ran


def test_cascade_square_stage_counts_as_black_box() -> None:
    ones = [True] * 50
    aa = _record("autoattack", [ones, [True] * 10 + [False] * 40])
    aa.outcome.black_box_broken = np.array([[False] * 50, [False] * 40 + [True] * 10])
    result = black_box_check([aa])
    assert result["flagged"] is True and result["count"] == 10


def test_convergence_within_a_thorough_run_and_across_runs() -> None:
    n = 200
    base = _record("autoattack", [[True] * n, [True] * 100 + [False] * 100])
    same = _record("autoattack-plus", [[True] * n, [True] * 98 + [False] * 102])
    assert convergence_from_cells([base, same])["flagged"] is False
    lower = _record("autoattack-plus", [[True] * n, [True] * 60 + [False] * 140])
    assert convergence_from_cells([base, lower])["flagged"] is True
    assert convergence_from_cells([base])["flagged"] is None

    def frame(robust: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "checkpoint": ["m"],
                "attack": ["worst_case"],
                "norm": ["linf"],
                "epsilon": [0.1],
                "n": [n],
                "robust_correct": [robust],
            }
        )

    assert convergence_from_results(frame(100), frame(97))["flagged"] is False
    assert convergence_from_results(frame(100), frame(70))["flagged"] is True


def _fingerprint_inputs(**change: object) -> str:
    from types import SimpleNamespace

    results = pd.DataFrame(
        {
            "checkpoint": ["dense", "dense"],
            "attack": ["pgd", "pgd"],
            "backend": ["native", "native"],
            "norm": ["linf", "linf"],
            "epsilon": [0.0, 0.1],
            "n": [50, 50],
            "robust_correct": [change.get("robust", 48), 20],
            "params": ["{}", "{}"],
        }
    )
    ckpt = SimpleNamespace(name="dense", meta={"weights_sha256": change.get("sha", "ab")}, path="p")
    grid = SimpleNamespace(limit=change.get("limit", 50), seed=change.get("seed", 0))
    probes = change.get("probes", MaskingProbes())
    return masking_fingerprint(
        SimpleNamespace(results=results),  # type: ignore[arg-type]
        [ckpt],  # type: ignore[list-item]
        grid,  # type: ignore[arg-type]
        None,
        probes,  # type: ignore[arg-type]
        50,
        str(change.get("mode", "full")),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"sha": "cd"},  # other weights
        {"robust": 47},  # another cell outcome
        {"limit": 60},  # other examples
        {"probes": MaskingProbes(examples=100)},
        {"probes": MaskingProbes(black_box_params=(("n_queries", 5000),))},
        {"mode": "sample"},  # --masking
        {"seed": 1},  # the sampled probe's draw
    ],
)
def test_masking_fingerprint_changes_with_what_the_checks_depend_on(
    change: dict[str, object],
) -> None:
    assert _fingerprint_inputs() == _fingerprint_inputs()  # deterministic
    assert _fingerprint_inputs(**change) != _fingerprint_inputs()
