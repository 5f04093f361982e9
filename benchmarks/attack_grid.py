"""Epsilon-grid attack benchmark: native engine vs a torchattacks per-eps loop vs foolbox ``epsilons=``.

One process, one model, the same examples and the same grid for every contender; calls are
interleaved repeat by repeat (so machine noise hits all alike) and ratios of medians are reported.
Contenders (all through ``attacks.get_attack``, i.e. the same template, verification and
re-classification; only ``_run`` differs):

* ``native``        – the grid engine (nested balls + per-example early stop), the default;
* ``native-plain``  – native PGD with ``nested=False, early_stop=False`` (all epsilons stacked);
* ``torchattacks``  – one ``torchattacks.PGD`` / ``FGSM`` object per epsilon;
* ``foolbox``       – ``foolbox.attacks.LinfPGD`` / ``FGSM`` with its ``epsilons=`` API.

    python benchmarks/attack_grid.py                       # Linf PGD-10 + FGSM, 6 eps, ratios
    python benchmarks/attack_grid.py --scaling             # + time vs #epsilons and vs #examples
    python benchmarks/attack_grid.py --memory              # + peak RSS vs #epsilons (subprocesses)
    python benchmarks/attack_grid.py --checkpoint DIR      # attack a saved checkpoint instead

Without ``--checkpoint`` a ``small_cnn`` is trained on ``digits`` in-process (seeded, ~10 s).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from attacks import Attack, get_attack
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.models import create_model_for

# The product's default digits Linf grid (robustbench_sparse.datasets.default_eps_grid).
DEFAULT_EPS = [0.0, 0.05, 0.1, 0.15, 0.2, 0.3]
PGD_BACKENDS = ["native", "native-plain", "torchattacks", "foolbox"]
FGSM_BACKENDS = ["native", "torchattacks", "foolbox"]


def _data(n: int) -> tuple[Any, torch.Tensor, torch.Tensor]:
    data = load_dataset("digits", augment=False)
    xs = torch.stack([data.test[i][0] for i in range(min(n, len(data.test)))])  # type: ignore[arg-type]
    ys = torch.tensor([int(data.test[i][1]) for i in range(xs.shape[0])])
    return data, xs, ys


def _model(checkpoint: str | None, data: Any) -> nn.Module:
    if checkpoint:
        from robustbench_sparse.checkpoint import load_checkpoint

        return load_checkpoint(checkpoint).model
    torch.manual_seed(0)
    info = data.info
    model = create_model_for("small_cnn", info)
    n = len(data.train)
    xs = torch.stack([data.train[i][0] for i in range(n)])
    ys = torch.tensor([int(data.train[i][1]) for i in range(n)])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(300):
        idx = torch.randint(0, n, (64,), generator=g)
        loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _make(attack: str, backend: str, steps: int) -> Attack:
    if attack == "fgsm":
        return get_attack("fgsm", backend=backend)
    if backend == "native-plain":
        return get_attack("pgd", steps=steps, nested=False, early_stop=False)
    if backend == "native-cold":
        return get_attack("pgd", steps=steps, warm_start=False)
    return get_attack("pgd", backend=backend, steps=steps)


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: list[float],
    *,
    steps: int,
    repeats: int,
    backends: dict[str, list[str]],
) -> dict[str, Any]:
    """Interleaved repeats; per (attack, backend): median seconds, robust accuracy, grad evals."""
    times: dict[tuple[str, str], list[float]] = {}
    acc: dict[tuple[str, str], list[float]] = {}
    evals: dict[tuple[str, str], int] = {}
    attacks = {(a, b): _make(a, b, steps) for a, bs in backends.items() for b in bs}
    for atk in attacks.values():  # warm-up (imports, allocator)
        atk(model, x[:8], y[:8], epsilons=eps)
    for _ in range(repeats):
        for key, atk in attacks.items():
            dt, res = _timed(lambda atk=atk: atk(model, x, y, epsilons=eps))
            times.setdefault(key, []).append(dt)
            acc.setdefault(key, res.robust_accuracy())  # seeded: identical every repeat
            evals[key] = int(res.grad_evals)
    return {
        "median_s": {f"{a}/{b}": statistics.median(t) for (a, b), t in times.items()},
        "robust_accuracy": {f"{a}/{b}": v for (a, b), v in acc.items()},
        "grad_evals": {f"{a}/{b}": v for (a, b), v in evals.items()},
    }


def _print_compare(res: dict[str, Any], eps: list[float], n: int, steps: int) -> None:
    med, acc, ev = res["median_s"], res["robust_accuracy"], res["grad_evals"]
    print(
        f"\n{n} examples, Linf eps {eps}, PGD-{steps} (rel_stepsize 0.125, random start) and FGSM"
    )
    print(f"{'attack/backend':<22}{'median s':>10}{'grad evals':>12}   robust accuracy per eps")
    for key in med:
        accs = " ".join(f"{a:.3f}" for a in acc[key])
        print(f"{key:<22}{med[key]:>10.3f}{ev[key]:>12,}   {accs}")
    for attack in ("pgd", "fgsm"):
        nat = f"{attack}/native"
        if nat not in med:
            continue
        for other in ("torchattacks", "foolbox", "native-plain", "native-cold"):
            key = f"{attack}/{other}"
            if key not in med:
                continue
            diff = max(a - b for a, b in zip(acc[nat], acc[key], strict=True))
            print(
                f"{attack}: {other} / native time = {med[key] / med[nat]:.2f}x; "
                f"max(native - {other}) robust acc = {diff * 100:+.1f} points"
            )


def scaling(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, repeats: int
) -> None:
    """Median time vs number of epsilons (n fixed) and vs number of examples (K fixed)."""
    grids = {
        1: [0.1],
        2: [0.05, 0.1],
        4: [0.05, 0.1, 0.15, 0.2],
        6: DEFAULT_EPS,
        12: [round(0.025 * i, 3) for i in range(1, 13)],
    }
    backends = {"pgd": ["native", "native-plain", "torchattacks"]}
    print(
        f"\ntime vs #epsilons ({x.shape[0]} examples, PGD-{steps}); seconds (median of {repeats})"
    )
    print(f"{'K':>4}" + "".join(f"{b:>15}" for b in backends["pgd"]) + f"{'engine evals':>15}")
    for k, grid in grids.items():
        r = compare(model, x, y, grid, steps=steps, repeats=repeats, backends=backends)
        row = "".join(f"{r['median_s'][f'pgd/{b}']:>15.3f}" for b in backends["pgd"])
        print(f"{k:>4}{row}{r['grad_evals']['pgd/native']:>15,}")
    print(f"\ntime vs #examples (K={len(DEFAULT_EPS)}, PGD-{steps}); seconds (median of {repeats})")
    print(f"{'n':>5}" + "".join(f"{b:>15}" for b in backends["pgd"]))
    for n in (x.shape[0] // 4, x.shape[0] // 2, x.shape[0]):
        r = compare(
            model, x[:n], y[:n], DEFAULT_EPS, steps=steps, repeats=repeats, backends=backends
        )
        print(f"{n:>5}" + "".join(f"{r['median_s'][f'pgd/{b}']:>15.3f}" for b in backends["pgd"]))


def _rss_child(args: argparse.Namespace) -> None:
    data, x, y = _data(args.n)
    model = _model(args.checkpoint, data)
    k = args.rss_child
    grid = [round(0.3 * (i + 1) / k, 4) for i in range(k)]
    attack = _make("pgd", args.rss_backend, args.steps)
    attack(model, x[:8], y[:8], epsilons=grid)  # warm-up: allocator, kernels
    # Reset the peak-RSS high-water mark (Linux: clear_refs 5), so setup and training don't count.
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    attack(model, x, y, epsilons=grid)
    print(json.dumps({"k": k, "before_kib": before, "after_kib": _status_kib("VmHWM")}))


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory(args: argparse.Namespace) -> None:
    """Peak RSS of one grid run per K, each in a fresh process (ru_maxrss is a high-water mark)."""
    print(f"\npeak RSS vs #epsilons ({args.n} examples, PGD-{args.steps}; fresh process per cell)")
    print(f"{'K':>4}{'backend':>14}{'RSS before MiB':>16}{'peak MiB':>10}{'growth MiB':>12}")
    print("(peak = VmHWM during the grid run after resetting it; growth = peak - RSS before)")
    for backend in ("native", "native-plain"):
        for k in (1, 4, 12, 24):
            cmd = [
                sys.executable,
                __file__,
                "--rss-child",
                str(k),
                "--rss-backend",
                backend,
                "--n",
                str(args.n),
                "--steps",
                str(args.steps),
                "--threads",
                str(args.threads),
            ]
            if args.checkpoint:
                cmd += ["--checkpoint", args.checkpoint]
            out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
            b, a = out["before_kib"] / 1024, out["after_kib"] / 1024
            print(f"{k:>4}{backend:>14}{b:>16.1f}{a:>10.1f}{a - b:>12.1f}")
    mib = args.n * 64 * 4 / 1024**2
    print(f"(one batch of adversarials here: {args.n} x 1 x 8 x 8 x 4 B = {mib:.2f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint dir (default: train one)")
    parser.add_argument("--n", type=int, default=400, help="test examples attacked")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--scaling", action="store_true")
    parser.add_argument("--memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="skip the timing comparison")
    parser.add_argument(
        "--cold-start", action="store_true", help="also time the engine with warm_start=False"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the comparison here")
    parser.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--rss-backend", default="native", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        _rss_child(args)
        return
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(
        f"machine: {platform.machine()} {platform.processor() or ''}, "
        f"{torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"python {platform.python_version()}, load average at start {' '.join(load)}"
    )
    if args.memory_only:
        memory(args)
        return
    data, x, y = _data(args.n)
    model = _model(args.checkpoint, data)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    print(
        f"model: {args.checkpoint or 'small_cnn trained on digits (seeded)'}, clean acc {clean:.3f}"
    )
    pgd = PGD_BACKENDS + (["native-cold"] if args.cold_start else [])
    res = compare(
        model,
        x,
        y,
        DEFAULT_EPS,
        steps=args.steps,
        repeats=args.repeats,
        backends={"pgd": pgd, "fgsm": FGSM_BACKENDS},
    )
    _print_compare(res, DEFAULT_EPS, x.shape[0], args.steps)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if args.scaling:
        scaling(model, x, y, steps=args.steps, repeats=max(1, args.repeats // 2))
    if args.memory:
        memory(args)


if __name__ == "__main__":
    main()
