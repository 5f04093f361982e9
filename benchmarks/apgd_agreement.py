"""APGD-CE / APGD-T agreement with the original AutoAttack on adversarially trained models.

The native ``apgd-ce`` / ``apgd-t`` (Linf) against pyautoattack's ``APGDAttack`` /
``APGDAttack_targeted`` (backend ``autoattack``, the authors' code) at equal steps, restarts and
targets, on the same examples, for several seeds; both through ``attacks.get_attack`` (same
template, verification and re-classification). Models are PGD-trained here, seeded:

* ``mnist``: the product's ``small_cnn`` PGD-AT at Linf 0.3 (PGD-``--at-steps``, eps ramped over the
  first 40 % of the steps) on MNIST *test* images ``1000:`` (only t10k is on disk), attacked on
  the first ``--n`` test images (held out from training);
* ``digits``: ``small_cnn`` PGD-AT at Linf 0.1 on the digits training split, attacked on its test
  split.

It also checks that pyautoattack's ``AutoAttack(version="custom", attacks=["apgd-ce"])`` (0.2's name for ``attacks_to_run``)
(which keeps its constructor's 5 restarts) gives exactly the numbers of
``--backend autoattack --attack apgd-ce --param apgd-ce.restarts=5``.

    python benchmarks/apgd_agreement.py --mnist ../shared/data/mnist-t10k --n 500 --seeds 0,1,2
    python benchmarks/apgd_agreement.py --n 60 --seeds 0 --steps 10 --train-steps 60   # smoke

Prints a Markdown table (robust accuracy in %, mean over seeds, and the largest per-seed
difference) and, with ``--json PATH``, writes every number.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks import get_attack
from robustbench_sparse.adversarial import AdversarialConfig, AdversarialMethod, craft
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model

MNIST_EPS = [0.1, 0.2, 0.3]
DIGITS_EPS = [0.05, 0.1, 0.15]


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def mnist_t10k(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The 10,000 MNIST test images (N, 1, 28, 28) in [0, 1] and labels (N,)."""
    x = torch.from_numpy(_idx(root / "t10k-images-idx3-ubyte.gz").copy()).float() / 255.0
    y = torch.from_numpy(_idx(root / "t10k-labels-idx1-ubyte.gz").copy()).long()
    return x.unsqueeze(1), y


def pgd_train(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, at_steps: int
) -> nn.Module:
    """PGD adversarial training (Madry et al. 2018) with the product's ``craft``: Adam 1e-3,
    batches of 128, ``steps`` optimizer steps, eps ramped linearly over the first 40 %."""
    config = AdversarialConfig(method=AdversarialMethod.PGD, eps=eps, steps=at_steps)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    ramp = max(1, int(0.4 * steps))
    for step in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        model.train()
        adv = craft(model, x[idx], y[idx], config, eps * min(1.0, (step + 1) / ramp))
        loss = nn.functional.cross_entropy(model(adv), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


def mnist_model(root: Path, n: int, steps: int, at_steps: int) -> tuple[nn.Module, Any, Any]:
    x, y = mnist_t10k(root)
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=(0.1307,), std=(0.3081,))
    return pgd_train(model, x[1000:], y[1000:], 0.3, steps, at_steps), x[:n], y[:n]


def digits_model(n: int, steps: int, at_steps: int) -> tuple[nn.Module, Any, Any]:
    data = load_dataset("digits", augment=False)

    def stack(split: Any, m: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        m = len(split) if m is None else min(m, len(split))
        return torch.stack([split[i][0] for i in range(m)]), torch.tensor(
            [int(split[i][1]) for i in range(m)]
        )

    x_train, y_train = stack(data.train)
    x_test, y_test = stack(data.test, n)
    torch.manual_seed(0)
    info = data.info
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std)
    return pgd_train(model, x_train, y_train, 0.1, steps, at_steps), x_test, y_test


def agreement(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    settings: list[tuple[str, dict[str, int]]],
    seeds: list[int],
) -> list[dict[str, Any]]:
    """Per (attack, params): robust accuracy per eps and seed, native and reference."""
    rows = []
    for name, params in settings:
        per: dict[str, list[list[float]]] = {"native": [], "reference": []}
        seconds = {"native": 0.0, "reference": 0.0}
        for seed in seeds:
            for backend, key in (("native", "native"), ("autoattack", "reference")):
                t0 = time.perf_counter()
                res = get_attack(name, backend=backend, seed=seed, **params)(
                    model, x, y, epsilons=[0.0, *eps]
                )
                seconds[key] += time.perf_counter() - t0
                per[key].append(res.robust_accuracy())
        rows.append({"attack": name, "params": params, "seeds": seeds, "seconds": seconds, **per})
    return rows


def custom_mode_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> bool:
    """pyautoattack ``version="custom"`` APGD-CE == the backend's apgd-ce with 5 restarts."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(
        model, norm="Linf", eps=eps, version="custom", attacks=["apgd-ce"], seed=0, device=x.device
    )
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=250)
    with torch.no_grad():
        custom = float((model(x_adv).argmax(1) == y).float().mean())
    ours = get_attack("apgd-ce", backend="autoattack", restarts=5, seed=0)(
        model, x, y, epsilons=[eps]
    )
    return round(custom * len(y)) == round(ours.robust_accuracy()[0] * len(y))  # same count


def table(label: str, eps: list[float], clean: float, rows: list[dict[str, Any]]) -> str:
    lines = [
        f"**{label}** (clean {100 * clean:.1f} %), robust accuracy % (mean over seeds "
        f"{rows[0]['seeds']}); largest per-seed |native - reference| in points",
        "",
        "| attack | steps | restarts | targets | "
        + " | ".join(f"ε={e:g} native / reference (max diff)" for e in eps)
        + " | s native / reference |",
        "|---|---:|---:|---:|" + "---|" * len(eps) + "---|",
    ]
    for r in rows:
        cells = []
        for k in range(1, len(eps) + 1):
            nat = [a[k] for a in r["native"]]
            ref = [a[k] for a in r["reference"]]
            diff = max(abs(a - b) for a, b in zip(nat, ref, strict=True))
            cells.append(
                f"{100 * statistics.mean(nat):.2f} / {100 * statistics.mean(ref):.2f} "
                f"({100 * diff:.1f})"
            )
        p = r["params"]
        lines.append(
            f"| {r['attack']} | {p['steps']} | {p.get('restarts', 1)} | "
            f"{p.get('n_target_classes', '–')} | "
            + " | ".join(cells)
            + f" | {r['seconds']['native']:.0f} / {r['seconds']['reference']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist", type=Path, default=Path("../shared/data/mnist-t10k"))
    ap.add_argument("--n", type=int, default=500, help="attacked test images per model")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=100, help="APGD iterations")
    ap.add_argument("--targets", type=int, default=9, help="APGD-T target classes")
    ap.add_argument("--train-steps", type=int, default=1500, help="PGD-AT optimizer steps")
    ap.add_argument("--at-steps", type=int, default=7, help="PGD steps while training")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = [
        ("apgd-ce", {"steps": args.steps, "restarts": 1}),
        ("apgd-ce", {"steps": args.steps, "restarts": 5}),
        ("apgd-t", {"steps": args.steps, "restarts": 1, "n_target_classes": args.targets}),
    ]
    models = {}
    if (args.mnist / "t10k-images-idx3-ubyte.gz").is_file():
        models["MNIST, small_cnn PGD-AT Linf 0.3"] = (
            mnist_model(args.mnist, args.n, args.train_steps, args.at_steps),
            MNIST_EPS,
        )
    else:
        print(f"(MNIST t10k not found at {args.mnist}: digits only)")
    models["digits, small_cnn PGD-AT Linf 0.1"] = (
        digits_model(args.n, args.train_steps, args.at_steps),
        DIGITS_EPS,
    )
    record: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "models": {}}
    for label, ((model, x, y), eps) in models.items():
        t0 = time.perf_counter()
        rows = agreement(model, x, y, eps, settings, seeds)
        clean = rows[0]["native"][0][0]
        same = custom_mode_check(model, x, y, eps[-1])
        print(table(f"{label}, {len(y)} test images", eps, clean, rows))
        print(
            f"\ncustom mode (5 restarts) == --param apgd-ce.restarts=5 reference: {same}; "
            f"{time.perf_counter() - t0:.0f} s\n"
        )
        record["models"][label] = {"eps": eps, "clean": clean, "rows": rows, "custom_mode": same}
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
