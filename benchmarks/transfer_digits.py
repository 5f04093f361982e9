"""Transfer from dense to window-70 on digits: do the dense model's PGD adversarials fool the
Campfire window-70 model trained the same way? (Vora et al. 2023 ask it of pruned models.)

Trains two ``small_cnn`` (width 0.5) on the embedded digits data set with the same seed and
settings, dense and Campfire window at 70 %, then runs one grid: native PGD (L∞, 20 steps) on
both, crafted on dense and scored on window-70 (``TransferPlan(source="dense")``, the engine
behind ``rbs attack --transfer-from``). Prints per epsilon:

* white-box robust accuracy of each model and window-70's accuracy on dense's adversarials;
* the transfer success rate: of the examples dense's PGD broke (verified adversarials) that
  window-70 classifies correctly when clean, the fraction the same adversarial also fools
  (``transferred / source_broken`` in the transfer rows' params).

About 1-2 minutes on one CPU thread::

    OMP_NUM_THREADS=1 python benchmarks/transfer_digits.py --out /tmp/transfer-digits
    OMP_NUM_THREADS=1 python benchmarks/transfer_digits.py --out /tmp/transfer-digits --full-budget

The same through the CLI, with the checkpoints it trains::

    rbs attack --checkpoint OUT/window-70 --transfer-from OUT/dense --attack pgd \\
        --param pgd.steps=20 --eps 0,0.05,0.1,0.15,0.2 --save-adversarials --out OUT/attack
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from evaluations.engine.grid import run_grid
from evaluations.engine.spec import AttackSpec, GridConfig
from evaluations.engine.transfer import TransferPlan
from evaluations.record.results import TRANSFER_FROM
from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.datasets import load_split
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.train_job import DataConfig, TrainJob, run_train_job
from robustbench_sparse.training import TrainConfig

EPS = (0.0, 0.05, 0.1, 0.15, 0.2)


def _job(name: str, target: float, epochs: int) -> TrainJob:
    return TrainJob(
        data=DataConfig(dataset="digits"),
        arch="small_cnn",
        arch_kwargs=(("width", 0.5),),
        train=TrainConfig(epochs=epochs, batch_size=64, lr=0.05, device="cpu", amp=False),
        sparsity=SparsityConfig(
            target=target, granularity=Granularity.WINDOW, start=0.0, end=epochs / 2
        ),
        name=name,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="PGD steps")
    parser.add_argument("--limit", type=int, default=None, help="test examples (default all)")
    parser.add_argument(
        "--full-budget",
        action="store_true",
        help="PGD with nested=False, early_stop=False: adversarials that use the whole budget "
        "(the default stops at the first misclassified iterate: barely adversarial points)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    dirs = {}
    for name, target in (("dense", 0.0), ("window-70", 0.7)):
        dirs[name] = args.out / name
        run_train_job(_job(name, target, args.epochs), dirs[name], resume=True, progress=False)
    ckpts = [load_checkpoint(d) for d in dirs.values()]
    pgd: dict[str, object] = {"steps": args.steps}
    if args.full_budget:
        pgd.update(nested=False, early_stop=False)
    grid = GridConfig(
        attacks=(AttackSpec("pgd", "native", tuple(sorted(pgd.items()))),),
        linf_epsilons=EPS,
        batch_size=500,
        limit=args.limit,
    )
    test = load_split("digits", "test")
    run = run_grid(
        ckpts,
        test,
        grid,
        out_dir=args.out / ("attack-full" if args.full_budget else "attack"),
        progress=False,
        transfer=TransferPlan(save=True, source="dense"),
    )
    df = run.results
    rows = []
    transfer = df[df[TRANSFER_FROM] == "dense"]
    params = json.loads(transfer["params"].iloc[0])
    for k, eps in enumerate(EPS):

        def acc(ckpt: str, attack: str, e: float = eps) -> float:
            sel = df[(df["checkpoint"] == ckpt) & (df["attack"] == attack) & (df["epsilon"] == e)]
            return float(sel["robust_accuracy"].iloc[0])

        broken, moved = params["source_broken"][k], params["transferred"][k]
        rows.append(
            {
                "eps": eps,
                "dense_white_box": acc("dense", "pgd"),
                "window70_white_box": acc("window-70", "pgd"),
                "window70_on_dense_adversarials": acc("window-70", "pgd from dense"),
                "source_broken": broken,
                "transferred": moved,
                "transfer_rate": moved / broken if broken else None,
            }
        )
    clean = {c.name: float(df[df["checkpoint"] == c.name]["clean_accuracy"].iloc[0]) for c in ckpts}
    summary = {"n": int(df["n"].iloc[0]), "clean": clean, "pgd": pgd, "rows": rows}
    print(json.dumps(summary, indent=2))
    print("\n| eps | dense PGD | window-70 PGD | window-70 on dense's | transfer rate |")
    print("|---|---|---|---|---|")
    for r in rows:
        rate = "-" if r["transfer_rate"] is None else f"{100 * r['transfer_rate']:.1f} %"
        print(
            f"| {r['eps']:g} | {100 * r['dense_white_box']:.1f} | "
            f"{100 * r['window70_white_box']:.1f} | "
            f"{100 * r['window70_on_dense_adversarials']:.1f} | "
            f"{rate} ({r['transferred']}/{r['source_broken']}) |"
        )


if __name__ == "__main__":
    main()
