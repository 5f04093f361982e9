"""``rbs prune CKPT --method NAME --sparsity S --out DIR``: post-training pruning of a checkpoint.

Maps its flags to one :class:`~robustbench_sparse.posttrain.job.PruneJob` and one call of
:func:`~robustbench_sparse.posttrain.job.run_prune_job`; the methods are the registry
:data:`~robustbench_sparse.posttrain.POST_TRAINING_METHODS`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.arch_flags import parse_arch_kwargs, parse_scalar
from rbs.commands.common import (
    add_normalize,
    add_plain_state_dict_flags,
    add_state_dict_key,
    parse_float,
)
from robustbench_sparse.errors import UserError

__all__ = ["add_parser", "cmd_prune", "parse_options"]


def _methods_help() -> str:
    from robustbench_sparse.posttrain import POST_TRAINING_METHODS

    return "; ".join(
        f"{name} (granularity {', '.join(m.granularities)}; data: {m.data})"
        for name, m in POST_TRAINING_METHODS.items()
    )


def add_parser(sub: Any) -> None:
    """Add the ``prune`` subcommand."""
    p = sub.add_parser(
        "prune",
        help="post-training pruning of a trained dense checkpoint (no training loop)",
        description="Load a trained dense checkpoint, prune or transform it with a post-training "
        "method and write an ordinary checkpoint that rbs attack, inspect, cost and export read "
        "(masks, achieved vs target sparsity, the method's settings and per-layer report in "
        "checkpoint.json).",
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory, .safetensors, or .pt/.pth")
    p.add_argument("--method", required=True, help=f"post-training method: {_methods_help()}")
    p.add_argument(
        "--sparsity",
        required=True,
        type=lambda t: parse_float(t, "--sparsity"),
        help="target sparsity in (0, 1) of the pruned layers' weights",
    )
    p.add_argument("--out", type=Path, required=True, help="directory of the new checkpoint")
    p.add_argument(
        "--granularity",
        help="structure of the masks (default: the method's first; see --method)",
    )
    p.add_argument(
        "--calibration",
        type=int,
        default=300,
        metavar="N",
        help="calibration images (default 300)",
    )
    p.add_argument(
        "--calibration-data",
        choices=("train", "fractal"),
        default="train",
        help="train: a seeded subset of the dataset's training split (default); fractal: "
        "data-free IFS fractal images generated from the seed",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method setting, repeatable (calibrated: iterations, samples_per_iteration, "
        "batch_size, lr, bias_lr, correct, tune, holdout; filtersketch: finetune_epochs, lr, "
        "batch_size, mask_granularity, mask_sparsity)",
    )
    p.add_argument("--seed", type=int, default=0, help="seeds the calibration data and tuning")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    p.add_argument("--name", help="checkpoint name (default: the --out directory name)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    p.add_argument("--data-root", help="where the dataset lives (default: the recorded root)")
    add_plain_state_dict_flags(p, "dataset of a plain state dict")
    add_normalize(p)
    add_state_dict_key(p)
    p.set_defaults(handler=cmd_prune)


def parse_options(items: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "tune=false"]`` -> ``{"lr": 0.0001, "tune": False}``.

    Raises:
        UserError: an item without ``=`` or a key given twice.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise UserError(f"--option {item!r}: expected KEY=VALUE, e.g. --option lr=1e-4")
        if key in out:
            raise UserError(f"--option {key!r} is given twice")
        out[key] = parse_scalar(raw)
    return out


def cmd_prune(args: argparse.Namespace) -> int:
    """Handle ``rbs prune``."""
    from robustbench_sparse.posttrain import PostTrainConfig, get_post_training_method
    from robustbench_sparse.posttrain.job import PruneJob, run_prune_job

    method = get_post_training_method(args.method)
    config = PostTrainConfig(
        method.name,
        args.sparsity,
        args.granularity or method.granularities[0],
        args.seed,
        args.device,
        parse_options(args.option),
    )
    job = PruneJob(
        source=args.checkpoint,
        out=args.out,
        config=config,
        calibration=args.calibration,
        calibration_data=args.calibration_data,
        data_root=args.data_root,
        overwrite=args.overwrite,
        name=args.name,
        load={
            "arch": args.arch,
            "dataset": args.dataset,
            "arch_kwargs": parse_arch_kwargs(args.arch_kwargs),
            "normalize": args.normalize,
            "state_dict_key": args.state_dict_key,
            "trust_arch": args.trust_arch,
        },
    )
    out = run_prune_job(job)
    print(out)
    return 0
