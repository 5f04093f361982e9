"""Training-step time and attack throughput with and without a CPU-heavy neighbour, per thread count.

Why: with torch's default (one intra-op thread per visible core) a training step on a loaded 2-core
machine took 1.8-2.5 s instead of 0.23 s (issue 15). Each configuration runs in a fresh worker
process (``--threads N``; ``0`` = torch's default), blocks of configurations are interleaved
``--rounds`` times so drift hits all alike, and medians are compared:

* ``train``: one optimizer step of the default job's model (small_cnn on digits, batch 64);
* ``attack``: PGD-20 (native, L∞, one epsilon) on ``--attack-n`` digits test images, examples/s.

The neighbour is ``--neighbours`` pure-Python busy loops (one core each), started before and
stopped after each contended block. Run under the project's CPU lock, e.g.::

    flock /tmp/rbs-cpu.lock python benchmarks/contention.py --rounds 3

Prints a Markdown table (medians, and the contended / quiet ratio per thread count) for
BENCHMARKS.md.

``--main-job`` instead times a reduced main job end to end (``rbs run`` with ``--epochs`` and
``--limit`` cut down, fresh output directory each time) per thread count, quiet and contended.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

BUSY = "while True:\n    pass\n"


def _worker(threads: int, steps: int, attack_n: int, attack_repeats: int) -> dict[str, Any]:
    import torch
    from torch import nn

    from attacks import get_attack
    from robustbench_sparse.datasets import load_dataset
    from robustbench_sparse.models import create_model_for

    if threads > 0:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    data = load_dataset("digits")
    info = data.info
    model = create_model_for("small_cnn", info)
    xs = torch.stack([data.train[i][0] for i in range(64)])  # (64, 1, 8, 8)
    ys = torch.tensor([int(data.train[i][1]) for i in range(64)])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    step_times = []
    model.train()
    for i in range(steps + 5):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(model(xs), ys).backward()
        opt.step()
        if i >= 5:  # warm-up excluded
            step_times.append(time.perf_counter() - t0)
    model.eval()
    xt = torch.stack([data.test[i][0] for i in range(attack_n)])
    yt = torch.tensor([int(data.test[i][1]) for i in range(attack_n)])
    attack = get_attack("pgd", steps=20)
    rates = []
    for _ in range(attack_repeats):
        t0 = time.perf_counter()
        attack(model, xt, yt, epsilons=[0.1])
        rates.append(attack_n / (time.perf_counter() - t0))
    return {
        "threads": torch.get_num_threads(),
        "train_step_s": statistics.median(step_times),
        "attack_ex_per_s": statistics.median(rates),
    }


def _run_worker(args: argparse.Namespace, threads: int) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--threads",
        str(threads),
        "--steps",
        str(args.steps),
        "--attack-n",
        str(args.attack_n),
        "--attack-repeats",
        str(args.attack_repeats),
    ]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def _main_job(args: argparse.Namespace, threads: int, out: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    cmd = [sys.executable, "-m", "robustbench_sparse", "-q", "run", "--out", out, "--overwrite"]
    cmd += ["--epochs", str(args.epochs), "--limit", str(args.limit)]
    if threads:
        cmd += ["--threads", str(threads)]
    else:
        env["RBS_THREADS"] = str(len(os.sched_getaffinity(0)))  # torch's own default
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--thread-counts", default="1,0", help="0 = torch's default")
    parser.add_argument("--neighbours", type=int, default=1, help="busy-loop processes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--attack-n", type=int, default=100)
    parser.add_argument("--attack-repeats", type=int, default=3)
    parser.add_argument("--main-job", action="store_true", help="time a reduced `rbs run`")
    parser.add_argument("--epochs", type=int, default=5, help="--main-job: epochs per model")
    parser.add_argument("--limit", type=int, default=100, help="--main-job: test examples")
    parser.add_argument("--out", default="runs/contention", help="--main-job: scratch directory")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.threads, args.steps, args.attack_n, args.attack_repeats)))
        return

    counts = [int(c) for c in args.thread_counts.split(",")]
    samples: dict[tuple[int, bool], list[dict[str, Any]]] = {}
    for _ in range(args.rounds):
        for contended in (False, True):
            procs = []
            if contended:
                procs = [
                    subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.neighbours)
                ]
                time.sleep(0.5)
            try:
                for t in counts:
                    if args.main_job:
                        wall = _main_job(args, t, f"{args.out}/t{t}")
                        sample = {"threads": t or len(os.sched_getaffinity(0)), "wall_s": wall}
                    else:
                        sample = _run_worker(args, t)
                    samples.setdefault((t, contended), []).append(sample)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait()

    def med(t: int, contended: bool, key: str) -> float:
        return statistics.median(s[key] for s in samples[(t, contended)])

    print(
        f"CPU: {platform.processor() or platform.machine()}, usable CPUs "
        f"{len(os.sched_getaffinity(0))}, neighbours {args.neighbours} busy loop(s), "
        f"{args.rounds} rounds\n"
    )
    if args.main_job:
        print(
            f"reduced main job: rbs run --epochs {args.epochs} --limit {args.limit}\n\n"
            "| torch threads | quiet wall (s) | contended wall (s) | contended / quiet |\n"
            "|---|---:|---:|---:|"
        )
        for t in counts:
            label = f"{samples[(t, False)][0]['threads']}" + (" (torch default)" if t == 0 else "")
            q, c = med(t, False, "wall_s"), med(t, True, "wall_s")
            print(f"| {label} | {q:.1f} | {c:.1f} | {c / q:.2f}x |")
        return
    print(
        "| torch threads | train step quiet (ms) | train step contended (ms) | ratio "
        "| PGD-20 quiet (ex/s) | PGD-20 contended (ex/s) | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for t in counts:
        actual = samples[(t, False)][0]["threads"]
        label = f"{actual}" + (" (torch default)" if t == 0 else "")
        q, c = med(t, False, "train_step_s"), med(t, True, "train_step_s")
        aq, ac = med(t, False, "attack_ex_per_s"), med(t, True, "attack_ex_per_s")
        print(
            f"| {label} | {1000 * q:.1f} | {1000 * c:.1f} | {c / q:.2f}x "
            f"| {aq:.0f} | {ac:.0f} | {aq / ac:.2f}x |"
        )


if __name__ == "__main__":
    main()
