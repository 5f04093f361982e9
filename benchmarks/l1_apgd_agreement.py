"""L1 APGD: the native l1-APGD (``apgd-ce-l1``, ``apgd-t-l1``) vs pyautoattack's at equal iterations.

Croce & Hein, "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers", ICML
2021; the reference is the authors' code (PyPI ``pyautoattack``, ``APGDAttack`` /
``APGDAttack_targeted`` with ``norm="L1"``). Both run the same iterations, restarts, targets and
``use_largereps`` (native ``larger_eps``) on the same model and the same test examples, one
epsilon at a time, with several seeds (the random starts differ between the two, so single runs
differ by a few examples); robust accuracy is counted on all examples (clean-misclassified count
as broken). The native result passes through the :class:`~attacks.base.Attack` template, so every
adversarial it counts is verified inside its L1 ball and ``[0, 1]``; the reference's largest L1
perturbation is printed as a check.

The model: ``small_cnn`` trained on the digits training split (the embedded default dataset,
8x8 images; seeded, a few seconds), attacked on the first ``--n`` test digits.

    python benchmarks/l1_apgd_agreement.py                 # 200 digits, 100 iterations, 3 seeds
    python benchmarks/l1_apgd_agreement.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attacks import get_attack
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model

#: (native name, larger_eps, targets) per contender pair; targets only for APGD-T
CONFIGS: list[tuple[str, bool, int]] = [
    ("apgd-ce-l1", False, 0),
    ("apgd-ce-l1", True, 0),
    ("apgd-t-l1", True, 5),
]


def train_digits_model(steps: int = 400) -> tuple[nn.Module, Any]:
    """``small_cnn`` trained on the digits training split (Adam, batch 64, seeded)."""
    data = load_dataset("digits", augment=False)
    xs = torch.stack([data.train[i][0] for i in range(len(data.train))])  # type: ignore[arg-type]
    ys = torch.tensor([int(data.train[i][1]) for i in range(len(data.train))])  # type: ignore[arg-type]
    torch.manual_seed(0)
    info = data.info
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(ys), (64,), generator=g)
        loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def _native(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: tuple[str, bool, int],
    steps: int,
    seed: int,
) -> float:
    name, larger, targets = cfg
    kw: dict[str, Any] = {"steps": steps, "restarts": 1, "larger_eps": larger, "seed": seed}
    if targets:
        kw["n_target_classes"] = targets
    result = get_attack(name, **kw)(model, x, y, epsilons=[eps])
    return float((~result.success[0]).float().mean())


def _reference(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    cfg: tuple[str, bool, int],
    steps: int,
    seed: int,
) -> tuple[float, float]:
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    _, larger, targets = cfg
    common: dict[str, Any] = {
        "n_iter": steps,
        "norm": "L1",
        "n_restarts": 1,
        "eps": eps,
        "seed": seed,
        "use_largereps": larger,
        "device": x.device,
    }
    if targets:
        attack: Any = APGDAttack_targeted(model, n_target_classes=targets, **common)
    else:
        attack = APGDAttack(model, loss="ce", **common)
    adv = attack.perturb(x.clone(), y.clone())
    with torch.no_grad():
        acc = float((model(adv).argmax(1) == y).float().mean())
    max_l1 = float((adv.detach() - x).abs().flatten(1).sum(1).max())
    return acc, max_l1


def compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    steps: int,
    seeds: list[int],
) -> list[dict[str, Any]]:
    """One row per (config, eps): robust accuracy (%) of both, mean over seeds, and the gap."""
    rows = []
    for cfg in CONFIGS:
        for e in eps:
            nat = [100 * _native(model, x, y, e, cfg, steps, s) for s in seeds]
            ref_runs = [_reference(model, x, y, e, cfg, steps, s) for s in seeds]
            ref = [100 * a for a, _ in ref_runs]
            rows.append(
                {
                    "attack": cfg[0],
                    "larger_eps": cfg[1],
                    "targets": cfg[2],
                    "eps": e,
                    "native": statistics.mean(nat),
                    "reference": statistics.mean(ref),
                    "gap": statistics.mean(nat) - statistics.mean(ref),
                    "native_runs": nat,
                    "reference_runs": ref,
                    "reference_max_l1": max(m for _, m in ref_runs),
                }
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="test digits attacked")
    parser.add_argument("--steps", type=int, default=100, help="APGD iterations (both)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eps", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--tolerance", type=float, default=1.0, help="points; exit 1 above")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, data = train_digits_model(args.train_steps)
    n = min(args.n, len(data.test))
    x = torch.stack([data.test[i][0] for i in range(n)])  # type: ignore[arg-type]  # (n, 1, 8, 8)
    y = torch.tensor([int(data.test[i][1]) for i in range(n)])  # type: ignore[arg-type]
    with torch.no_grad():
        clean = 100 * float((model(x).argmax(1) == y).float().mean())
    print(
        f"small_cnn on digits: clean {clean:.1f} % on {n} test digits; {args.steps} iterations, "
        f"1 restart, seeds {args.seeds}; robust accuracy %, mean over seeds"
    )
    rows = compare(model, x, y, args.eps, args.steps, args.seeds)
    print(
        f"{'attack':11} {'larger_eps':10} {'targets':7} {'eps':>5} {'native':>7} "
        f"{'pyautoattack':>12} {'gap':>6} {'ref max L1':>10}"
    )
    for r in rows:
        print(
            f"{r['attack']:11} {r['larger_eps']!s:10} {r['targets'] or '-'!s:7} {r['eps']:5g} "
            f"{r['native']:7.2f} {r['reference']:12.2f} {r['gap']:+6.2f} "
            f"{r['reference_max_l1']:10.4f}"
        )
    worst = max(abs(r["gap"]) for r in rows)
    print(f"largest |gap|: {worst:.2f} points (tolerance {args.tolerance:g})")
    if args.json:
        args.json.write_text(json.dumps({"clean": clean, "n": n, "rows": rows}, indent=2))
    return 0 if worst <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
