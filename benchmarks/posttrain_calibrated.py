"""Layer-wise calibration (``rbs prune --method calibrated``) on digits: clean and PGD accuracy of
each ablation at the same masks, per seed (issue 26, research notes' T5).

Per seed: ``rbs train`` a dense ``small_cnn`` (10 epochs, lr 0.05, batch 32), then ``rbs prune`` it
at ``--sparsity`` four ways -- magnitude only (``correct=false tune=false``), + weight correction
(``tune=false``), + calibration on training images, + calibration on fractal images -- plus
``--granularity window`` with and without calibration; then ``rbs attack`` every checkpoint with
PGD-20 (Linf ``--eps``) on ``--limit`` test images. Prints one markdown row per checkpoint.

    OMP_NUM_THREADS=1 python benchmarks/posttrain_calibrated.py --seeds 0,1,2 --out runs/bench-cal
    OMP_NUM_THREADS=1 python benchmarks/posttrain_calibrated.py --seeds 0 --epochs 1 --limit 30 \\
        --iterations 1 --out /tmp/bench-cal     # a smoke run (a minute)

The full run (3 seeds) takes about 20 CPU-minutes (training 30 s, each calibrated prune 40-55 s,
the attacks about a minute per seed on one core).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
from pathlib import Path

from rbs.cli import main

_MAGNITUDE = ["--option", "correct=false", "--option", "tune=false"]
VARIANTS: dict[str, list[str]] = {
    "magnitude": _MAGNITUDE,
    "correction": ["--option", "tune=false"],
    "calibrated": [],
    "fractal": ["--calibration-data", "fractal"],
    "window-magnitude": ["--granularity", "window", *_MAGNITUDE],
    "window-calibrated": ["--granularity", "window"],
}


def _run(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the table alone on stdout
        code = main(["-q", *argv])
    if code != 0:
        raise SystemExit(f"failed ({code}): rbs {' '.join(argv)}")


def main_bench() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--sparsity", default="0.7")
    parser.add_argument("--eps", default="0.1", help="PGD Linf budget")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--limit", type=int, default=300, help="attacked test images")
    parser.add_argument("--iterations", type=int, default=30, help="calibrated option iterations")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    print("| seed | model | achieved | clean (test split) | PGD-20 clean / robust (n) |")
    print("|---|---|---:|---:|---|")
    for seed in args.seeds.split(","):
        root = args.out / f"seed{seed}"
        dense = root / "dense"
        if not (dense / "checkpoint.json").is_file():
            _run(
                [
                    *("train", "--dataset", "digits", "--epochs", str(args.epochs)),
                    *("--lr", "0.05", "--batch-size", "32", "--seed", seed, "--device", "cpu"),
                    *("--out", str(dense)),
                ]
            )
        checkpoints = [dense]
        for name, extra in VARIANTS.items():
            out = root / name
            if not (out / "checkpoint.json").is_file():
                _run(
                    [
                        *("prune", str(dense), "--method", "calibrated"),
                        *("--sparsity", args.sparsity, "--seed", seed),
                        *("--option", f"iterations={args.iterations}", *extra),
                        *("--out", str(out), "--overwrite"),
                    ]
                )
            checkpoints.append(out)
        results = root / "attack"
        argv = ["attack", "--attack", "pgd", "--eps", f"0,{args.eps}", "--limit", str(args.limit)]
        for ckpt in checkpoints:
            argv += ["--checkpoint", str(ckpt)]
        _run([*argv, "--out", str(results), "--no-report", "--overwrite"])
        rows = [r for r in csv.DictReader((results / "results.csv").open()) if r["attack"] == "pgd"]
        for ckpt in checkpoints:
            meta = json.loads((ckpt / "checkpoint.json").read_text())
            robust = [r for r in rows if r["checkpoint"] == ckpt.name and float(r["epsilon"]) > 0]
            achieved = meta.get("sparsity_report", {}).get("achieved_pruned", 0.0)
            r = robust[0]
            print(
                f"| {seed} | {ckpt.name} | {achieved:.1%} | {meta['clean_accuracy']:.1%} | "
                f"{float(r['clean_accuracy']):.1%} / {float(r['robust_accuracy']):.1%} ({r['n']}) |"
            )


if __name__ == "__main__":
    main_bench()
