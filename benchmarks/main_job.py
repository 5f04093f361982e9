"""The default main job (``rbs run --out DIR``), this tree vs an earlier commit, side by side
(issue 30: the same job in at most 0.6x of d4e9427's wall time).

Each contender is one whole ``rbs run`` process on the embedded default experiment (no config
file: the same models, grids, test examples and attacks), with the thread count each version
chooses by itself (``OMP_NUM_THREADS`` and ``RBS_THREADS`` removed from the environment). The
earlier commit runs from a ``git worktree`` in a temporary directory with this interpreter (its
CLI module is found there: ``robustbench_sparse.cli`` before the ``rbs`` package existed).
Contenders alternate repeat by repeat, so machine noise hits both alike; medians are reported.

From every run's ``results.json``: the report's breakdown (``compute_seconds``: training, attacks,
masking probes) and the thread counts used; and, against the baseline's first run, how many
result rows (checkpoint, attack, norm, epsilon) differ in robust accuracy, and by how much
(different thread counts may move an attack's float arithmetic, so a few examples can flip).

    python benchmarks/main_job.py --baseline d4e9427 --repeats 3 --json main_job.json
    python benchmarks/main_job.py --baseline d4e9427 --smoke     # tiny grid, a minute or two

Run it on a quiet machine: it takes about 2 x repeats x 10 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
KEY = ["checkpoint", "attack", "norm", "epsilon"]

# A tiny experiment both versions read (only keys the earlier config schema has too).
SMOKE_CONFIG = """\
name = "main-job-smoke"
[data]
dataset = "digits"
[model]
arch = "small_cnn"
[train]
seed = 0
epochs = 2
[models]
dense = true
targets = [0.7]
granularities = ["window"]
[attack]
protocol = "quick"
limit = 60
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "RBS_THREADS")}
    env["TQDM_DISABLE"] = "1"
    return env


def _cli_module(tree: Path) -> str:
    return "rbs.cli" if (tree / "rbs" / "cli.py").is_file() else "robustbench_sparse.cli"


def _run(tree: Path, out: Path, config: Path | None) -> dict[str, Any]:
    """One ``rbs run`` in ``tree``; returns wall time, the breakdown and the thread record."""
    args = [sys.executable, "-m", _cli_module(tree), "run", "--out", str(out), "--overwrite"]
    if config is not None:
        args += ["--config", str(config)]
    t0 = time.perf_counter()
    done = subprocess.run(args, cwd=tree, env=_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} (in {tree}) failed:\n{done.stderr[-3000:]}")
    sidecar = json.loads((out / "results" / "results.json").read_text())  # rbs run: OUT/results/
    last = (sidecar.get("invocations") or [{}])[-1]
    return {
        "wall_seconds": wall,
        "compute_seconds": sidecar.get("compute_seconds", {}),
        "threads": last.get("threads"),
        "thread_policy": last.get("thread_policy"),
        "device": last.get("device"),
    }


def _differences(base: Path, other: Path) -> dict[str, Any]:
    """Rows whose robust accuracy differs between two results tables, and the largest gap."""
    import pandas as pd

    a = pd.read_csv(base / "results" / "results.csv").set_index(KEY)["robust_accuracy"]
    b = pd.read_csv(other / "results" / "results.csv").set_index(KEY)["robust_accuracy"]
    both = a.index.intersection(b.index)
    gap = (a.loc[both] - b.loc[both]).abs()
    return {
        "rows": len(both),
        "rows_only_in_one": len(a.index.symmetric_difference(b.index)),
        "rows_differing": int((gap > 0).sum()),
        "max_abs_difference": float(gap.max()) if len(gap) else 0.0,
    }


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(float(r["compute_seconds"].get(key) or 0.0) for r in runs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--baseline", default="d4e9427", help="git commit to compare with")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--smoke", action="store_true", help="a tiny experiment instead of the default")
    p.add_argument("--json", type=Path, help="write the figures here")
    a = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rbs-main-job-") as tmp:
        work = Path(tmp)
        old = work / "baseline"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "-f", str(old), a.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        config = None
        if a.smoke:
            config = work / "smoke.toml"
            config.write_text(SMOKE_CONFIG)
        trees = {"baseline": old, "this tree": ROOT}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        diffs: list[dict[str, Any]] = []
        try:
            for r in range(a.repeats):
                for name, tree in trees.items():
                    out = work / f"{name.replace(' ', '-')}-{r}"
                    runs[name].append(_run(tree, out, config))
                    print(
                        f"repeat {r + 1}: {name}: {runs[name][-1]['wall_seconds']:.1f} s",
                        flush=True,
                    )
                diffs.append(_differences(work / "baseline-0", work / f"this-tree-{r}"))
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True
            )

    base_wall = statistics.median(r["wall_seconds"] for r in runs["baseline"])
    print(f"\nbaseline {a.baseline} vs this tree, medians of {a.repeats} (alternating)")
    print("| contender | wall s | training s | attacks s | masking s | threads | wall / baseline |")
    print("|---|---:|---:|---:|---:|---|---:|")
    table = {}
    for name, rs in runs.items():
        wall = statistics.median(r["wall_seconds"] for r in rs)
        row = {
            "wall_seconds": wall,
            "training": _median(rs, "training"),
            "attacks": _median(rs, "attacks"),
            "masking": _median(rs, "masking"),
            "threads": sorted({str(r["threads"]) for r in rs}),
            "ratio": wall / base_wall,
            "runs": rs,
        }
        table[name] = row
        print(
            f"| {name} | {wall:.1f} | {row['training']:.1f} | {row['attacks']:.1f} | "
            f"{row['masking']:.1f} | {','.join(row['threads'])} | {row['ratio']:.2f}x |"
        )
    print(f"\nresult rows vs the baseline's first run: {diffs}")
    if a.json:
        figures = {"baseline": a.baseline, "repeats": a.repeats, "smoke": a.smoke}
        figures |= {"contenders": table, "differences": diffs}
        a.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
