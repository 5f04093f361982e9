"""Whole ``rbs attack`` processes, native vs torchattacks backend, and the share of the
gradient-masking probes (issue 30).

Each contender is one ``rbs attack`` subprocess on the same checkpoint, examples and epsilon grid
(``--overwrite`` into its own directory); contenders alternate repeat by repeat, so machine noise
hits all alike, and medians are reported; ``--masking sample,full`` adds the masking mode as a
second axis (``full`` = the probes before issue 30). From every run's ``results.json``: the attack grid's
time (``compute_seconds.attacks``), the probes' time (``masking.seconds``) and the masking mode.
Printed per backend: median wall time of the process, of the grid and of the probes, the probes'
share of the grid time (goal <= 25 % under ``--masking sample``), and the wall-time ratio
torchattacks / native (goal >= 2x).

    python benchmarks/masking_share.py --checkpoint runs/default/checkpoints/window-70
    python benchmarks/masking_share.py --checkpoint CKPT --masking sample,full   # before/after
    python benchmarks/masking_share.py --protocol standard --backends native --masking sample,full \
        --limit 30 --eps 0,0.1,0.2   # standard: AutoAttack's own Square vs a second Square pass
    python benchmarks/masking_share.py --smoke                             # tiny, seconds

Defaults: ``--attack pgd`` over 7 Linf epsilons on 450 test examples, 3 repeats, 1 thread.
Without ``--checkpoint`` (``--smoke``) a small_cnn is trained on digits for 1 epoch first.
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

DEFAULT_EPS = "0,0.05,0.1,0.15,0.2,0.25,0.3"
BACKENDS = ("native", "torchattacks")


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RBS_THREADS"):
        env[key] = str(threads)
    env["TQDM_DISABLE"] = "1"
    return env


def _rbs(args: list[str], env: dict[str, str]) -> float:
    """Run ``rbs ARGS`` (this interpreter), return its wall time in seconds; raise on failure."""
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "rbs.cli", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"rbs {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return wall


def _train(out: Path, env: dict[str, str]) -> Path:
    """A small_cnn trained on digits for 1 epoch (the --smoke checkpoint)."""
    args = ["train", "--dataset", "digits", "--arch", "small_cnn", "--epochs", "1"]
    _rbs([*args, "--out", str(out), "--overwrite"], env)
    return out


def attack_args(
    a: argparse.Namespace, checkpoint: Path, backend: str, mode: str, out: Path
) -> list[str]:
    """The ``rbs attack`` command line of one contender (``mode`` "": rbs's default)."""
    args = ["attack", "--checkpoint", str(checkpoint), "--eps", a.eps, "--limit", str(a.limit)]
    if a.protocol:
        args += ["--protocol", a.protocol]
    for name in a.attack:
        args += ["--attack", name]
    args += ["--backend", backend, "--no-report", "--overwrite", "--out", str(out)]
    if mode:
        args += ["--masking", mode]
    return args


def measure(a: argparse.Namespace, checkpoint: Path, work: Path) -> dict[str, Any]:
    """Alternate the contenders (backend x masking mode) ``a.repeats`` times; per contender
    ``"backend/mode"`` the lists of measured seconds."""
    env = _env(a.threads)
    pairs = [(b, m) for m in a.masking for b in a.backends]
    runs: dict[str, dict[str, list[float]]] = {}
    modes: dict[str, str] = {}
    for _ in range(a.repeats):
        for backend, mode in pairs:
            out = work / f"{backend}-{mode or 'default'}"
            wall = _rbs(attack_args(a, checkpoint, backend, mode, out), env)
            side = json.loads((out / "results.json").read_text(encoding="utf-8"))
            key = f"{backend}/{mode or 'default'}"
            r = runs.setdefault(key, {"wall": [], "attacks": [], "masking": []})
            r["wall"].append(wall)
            r["attacks"].append(float(side["compute_seconds"]["attacks"]))
            r["masking"].append(float(side["masking"]["seconds"]))
            modes[key] = str(side["masking"].get("mode", "full"))
    return {"runs": runs, "modes": modes}


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Medians per contender, the probes' share of the grid and the wall ratio vs native with
    the same masking mode."""
    out: dict[str, Any] = {}
    for key, r in res["runs"].items():
        med: dict[str, Any] = {k: statistics.median(v) for k, v in r.items()}
        med["masking_share_of_attacks"] = med["masking"] / med["attacks"] if med["attacks"] else 0
        med["mode"] = res["modes"][key]
        out[key] = med
    for key, med in out.items():
        native = out.get(f"native/{key.split('/', 1)[1]}")
        if native is not None:
            med["wall_ratio_vs_native"] = med["wall"] / native["wall"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="checkpoint directory (default: train one)")
    p.add_argument("--attack", action="append", help="rbs attack --attack (default: pgd)")
    p.add_argument("--protocol", help="rbs attack --protocol (instead of --attack)")
    p.add_argument("--eps", default=DEFAULT_EPS, help=f"Linf grid (default {DEFAULT_EPS})")
    p.add_argument("--limit", type=int, default=450, help="test examples (default 450)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--masking",
        default="",
        help="comma-separated --masking modes to compare, e.g. sample,full (default: rbs's own)",
    )
    p.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    p.add_argument("--smoke", action="store_true", help="tiny: 30 examples, 3 eps, 1 repeat")
    p.add_argument("--json", type=Path, help="also write the medians here")
    a = p.parse_args()
    a.attack = a.attack or ([] if a.protocol else ["pgd"])
    a.backends = [b for b in a.backends.split(",") if b]
    a.masking = [m.strip() for m in a.masking.split(",")] if a.masking else [""]
    if any(m not in ("", "full", "sample", "off") for m in a.masking):
        p.error(f"--masking: modes are full, sample, off (got {a.masking})")
    if a.smoke:
        a.limit, a.eps, a.repeats = 30, "0,0.1,0.2", 1
    with tempfile.TemporaryDirectory(prefix="masking_share_") as tmp:
        work = Path(tmp)
        ckpt = a.checkpoint or _train(work / "ckpt", _env(a.threads))
        res = measure(a, ckpt, work)
    med = summary(res)
    print(
        f"rbs attack {' '.join('--attack ' + n for n in a.attack)} --eps {a.eps} "
        f"--limit {a.limit}; {a.repeats} repeat(s), {a.threads} thread(s), medians"
    )
    print(
        f"{'contender':>21} {'mode':>7} {'wall s':>8} {'grid s':>8} {'probes s':>9} "
        f"{'probes/grid':>12} {'wall/native':>12}"
    )
    for backend, m in med.items():
        print(
            f"{backend:>21} {m['mode']:>7} {m['wall']:8.2f} {m['attacks']:8.2f} "
            f"{m['masking']:9.2f} {m['masking_share_of_attacks']:11.0%} "
            f"{m.get('wall_ratio_vs_native', float('nan')):11.2f}x"
        )
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "args": vars(a) | {"checkpoint": str(a.checkpoint)},
                    "medians": med,
                    "runs": res["runs"],
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    main()
