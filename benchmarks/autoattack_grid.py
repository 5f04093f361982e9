"""AutoAttack over an epsilon grid: native ``autoattack`` (nested survivors) vs pyautoattack per eps.

One process, one model, the same examples and the same grid for both contenders, both through
``attacks.get_attack`` (same template, verification and re-classification):

* ``native``    – ``get_attack("autoattack")``: APGD-CE -> APGD-T -> FAB-T -> Square on the grid
                  engine (each stage on the still-robust, each eps on the previous eps' survivors);
* ``reference`` – ``get_attack("autoattack", backend="autoattack")``: one
                  ``pyautoattack.AutoAttack(version="standard")`` and ``run_standard_evaluation``
                  per epsilon (the plain way a user runs AutoAttack on a grid).

Both models are wrapped in the same counter, so ``grad evals`` (examples forwarded with a gradient)
and ``forwards`` (every example forwarded) are measured the same way for both. The native run also
reports its work as a ratio of the survivors' work bound (``details["work_ratio"]``: gradient
evaluations / the gradient work its stages would do on the entering survivors without early stop).

    python benchmarks/autoattack_grid.py --checkpoint /work/runs/default/checkpoints/dense
    python benchmarks/autoattack_grid.py --mnist ../shared/data/mnist-t10k

``--mnist`` trains a small CNN on the first 8,000 MNIST *test* images (only t10k is on disk;
seeded, ~1 min) and attacks held-out images from the last 2,000.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from attacks import get_attack
from attacks.backends.counting import GradCounter
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model

LINF_EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]  # default digits / MNIST Linf grid


def _digits(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_dataset("digits", augment=False)
    xs = torch.stack([data.test[i][0] for i in range(min(n, len(data.test)))])  # type: ignore[arg-type]
    ys = torch.tensor([int(data.test[i][1]) for i in range(xs.shape[0])])
    return xs, ys


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist(root: Path, n: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, str]:
    images = torch.from_numpy(_idx(root / "t10k-images-idx3-ubyte.gz").copy()).float() / 255.0
    labels = torch.from_numpy(_idx(root / "t10k-labels-idx1-ubyte.gz").copy()).long()
    images = images.unsqueeze(1)  # (10000, 1, 28, 28)
    x_train, y_train = images[:8000], labels[:8000]
    x_test, y_test = images[8000 : 8000 + n], labels[8000 : 8000 + n]
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1, mean=(0.1307,), std=(0.3081,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(600):
        idx = torch.randint(0, 8000, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x_test, y_test, "small_cnn trained 600x64 on MNIST t10k[:8000]"


def compare(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: list[float], repeats: int
) -> dict[str, Any]:
    """Interleaved repeats of both contenders; medians, robust accuracy, work."""
    contenders = {
        "native": get_attack("autoattack"),
        "reference": get_attack("autoattack", backend="autoattack"),
    }
    out: dict[str, Any] = {}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for key, attack in contenders.items():
            counter = GradCounter(model)
            t0 = time.perf_counter()
            res = attack(counter, x, y, epsilons=eps)
            times[key].append(time.perf_counter() - t0)
            out[key] = {
                "robust_accuracy": res.robust_accuracy(),
                "grad_evals": counter.count,
                "forwards": counter.forwards,
            }
            if key == "native" and res.details is not None:
                d = res.details
                out[key]["work_ratio"] = d["work_ratio"]
                out[key]["survivor_bound"] = d["survivor_bound"]
                out[key]["stages"] = d["stages"]
                out[key]["stage_broken"] = d["stage_broken"]
                out[key]["stage_grad_evals"] = d["stage_grad_evals"]
                out[key]["stage_forwards"] = d["stage_forwards"]
                out[key]["stage_seconds"] = d["stage_seconds"]
    for key in contenders:
        out[key]["median_s"] = statistics.median(times[key])
        out[key]["times_s"] = times[key]
    nat, ref = out["native"]["robust_accuracy"], out["reference"]["robust_accuracy"]
    out["max_native_minus_reference_points"] = max(
        100 * (a - b) for a, b in zip(nat, ref, strict=True)
    )
    out["time_ratio"] = out["reference"]["median_s"] / out["native"]["median_s"]
    return out


def _print(label: str, eps: list[float], n: int, res: dict[str, Any]) -> None:
    print(f"\n## {label}: {n} examples, Linf eps {eps}")
    print(
        f"{'contender':<11}{'median s':>10}{'grad evals':>13}{'forwards':>13}   robust acc per eps"
    )
    for key in ("native", "reference"):
        r = res[key]
        accs = " ".join(f"{100 * a:5.1f}" for a in r["robust_accuracy"])
        print(f"{key:<11}{r['median_s']:>10.1f}{r['grad_evals']:>13,}{r['forwards']:>13,}   {accs}")
    print(
        f"time ratio {res['time_ratio']:.1f}x; native - reference max "
        f"{res['max_native_minus_reference_points']:+.1f} points; native work / survivors' bound "
        f"{res['native'].get('work_ratio', float('nan')):.2f}"
    )
    if "stages" in res["native"]:
        for s, name in enumerate(res["native"]["stages"]):
            print(
                f"  {name:<8} broke {res['native']['stage_broken'][s]} "
                f"grad evals {res['native']['stage_grad_evals'][s]:,} "
                f"forwards {res['native']['stage_forwards'][s]:,} "
                f"seconds {res['native']['stage_seconds'][s]:.1f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", action="append", default=[], help="checkpoint dir (repeat)")
    parser.add_argument("--mnist", type=Path, help="folder with the MNIST t10k IDX files")
    parser.add_argument("--n", type=int, default=200, help="examples per model")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report: dict[str, Any] = {"eps": LINF_EPS, "n": args.n, "repeats": args.repeats, "runs": {}}
    if args.checkpoint:
        from robustbench_sparse.checkpoint import load_checkpoint

        x, y = _digits(args.n)
        for path in args.checkpoint:
            model = load_checkpoint(path).model.eval()
            res = compare(model, x, y, LINF_EPS, args.repeats)
            label = f"digits {Path(path).name}"
            report["runs"][label] = res
            _print(label, LINF_EPS, x.shape[0], res)
            sys.stdout.flush()
            if args.json:  # after every model: a stopped run keeps what it finished
                args.json.write_text(json.dumps(report, indent=1))
    if args.mnist:
        model, x, y, how = _mnist(args.mnist, args.n)
        res = compare(model, x, y, LINF_EPS, args.repeats)
        res["model"] = how
        report["runs"]["mnist"] = res
        _print(f"MNIST ({how}; held-out t10k[8000:])", LINF_EPS, x.shape[0], res)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
