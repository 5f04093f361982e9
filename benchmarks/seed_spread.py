"""Spread over training seeds of the default job's L∞ numbers (the figures quoted in the README).

One seed of the default job (``rbs run``) is one draw: a different seed, or the same seed with a
different thread count, changes the floats and moves worst-case robust accuracy by a few points
(issue 15). This runs the default job's models (dense + window/channel/combined at 50/70/90 %) for
each seed with the L∞ attacks only (FGSM + PGD-20, as in the default ``quick`` protocol; the L∞
worst case of the default job is over exactly these two, so its numbers are the same), and prints
mean ± sample standard deviation over the seeds of clean accuracy and of L∞ worst-case robust
accuracy at the discriminating budgets (:func:`evaluations.record.budgets.choose_budgets` on the first
seed), and of the difference to dense.

    flock /tmp/rbs-cpu.lock python benchmarks/seed_spread.py --seeds 0,1,2 --out-root runs/seeds

About 2 minutes per seed on one core of a 2-core CPU. Each seed's run directory is a normal
``rbs run`` output (report included), so it can be re-read or resumed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd

CONFIG = """\
# written by benchmarks/seed_spread.py: the default job, L-inf attacks only, seed {seed}
name = "digits-campfire-seed{seed}"
[data]
dataset = "digits"
[model]
arch = "small_cnn"
[train]
seed = {seed}
[sparsity]
update_every = 20
[models]
dense = true
targets = [0.5, 0.7, 0.9]
granularities = ["window", "channel", "combined"]
[attack]
attacks = ["fgsm", "pgd"]
backend = "native"
batch_size = 500
device = "cpu"
[attack.params.pgd]
steps = 20
rel_stepsize = 0.125
random_start = true
restarts = 1
"""


def _fmt(values: list[float]) -> str:
    mean = statistics.mean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def main() -> None:
    from attacks.params import format_epsilon
    from evaluations.record.budgets import choose_budgets
    from evaluations.record.metrics import WORST_CASE
    from evaluations.record.results import read_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-root", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--threads", type=int, default=None, help="passed to rbs run --threads")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    args.out_root.mkdir(parents=True, exist_ok=True)
    frames = {}
    for seed in seeds:
        cfg = args.out_root / f"seed{seed}.toml"
        cfg.write_text(CONFIG.format(seed=seed))
        cmd = [sys.executable, "-m", "robustbench_sparse", "-q", "run", str(cfg)]
        cmd += ["--out", str(args.out_root / f"seed{seed}")]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        subprocess.run(cmd, check=True)
        frames[seed] = read_results(args.out_root / f"seed{seed}" / "results")

    first = frames[seeds[0]]
    choice = choose_budgets(first)["linf"]
    eps_list = choice.epsilons
    rows = []
    for name in first["checkpoint"].unique():
        clean, wc, delta = [], {e: [] for e in eps_list}, {e: [] for e in eps_list}
        for df in frames.values():
            w = df[(df["attack"] == WORST_CASE) & (df["norm"] == "linf")]
            mine = w[w["checkpoint"] == name]
            dense = w[w["checkpoint"] == "dense"]
            clean.append(float(mine["clean_accuracy"].iloc[0]))
            for e in eps_list:
                a = float(mine.loc[(mine["epsilon"] - e).abs() < 1e-12, "robust_accuracy"].iloc[0])
                d = float(
                    dense.loc[(dense["epsilon"] - e).abs() < 1e-12, "robust_accuracy"].iloc[0]
                )
                wc[e].append(a)
                delta[e].append(a - d)
        row = {"checkpoint": name, "clean (%)": _fmt(clean)}
        for e in eps_list:
            row[f"worst case ε={format_epsilon(e, grid=choice.grid)} (%)"] = _fmt(wc[e])
        if name != "dense":
            row[f"Δ vs dense ε={format_epsilon(choice.anchor, grid=choice.grid)} (points)"] = _fmt(
                delta[choice.anchor]
            )
        rows.append(row)
    table = pd.DataFrame(rows).fillna("")
    print(f"seeds {seeds}; budgets chosen on seed {seeds[0]}: {choice.reason}\n")
    print("| " + " | ".join(table.columns) + " |")
    print("|" + "---|" * len(table.columns))
    for values in table.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in values) + " |")


if __name__ == "__main__":
    main()
