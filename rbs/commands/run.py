"""``rbs run``: an experiment config -> ``plan_experiment`` -> ``run_experiment``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.commands.common import (
    add_nproc,
    add_protocol,
    checked_protocol,
    command_line,
    launch_torchrun,
)
from robustbench_sparse.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: train dense + Campfire models, attack them, report",
        description="Train a dense baseline and Campfire models, attack each with FGSM, PGD and "
        "C&W over the default grids, and write checkpoints, results, figures and the report. "
        "Without CONFIG the shipped default (digits, small_cnn) runs. Re-running resumes.",
    )
    p.add_argument(
        "config",
        nargs="?",
        help="experiment TOML or recipe name (default: the shipped evaluations/configs/default.toml, "
        "experiment 'digits-campfire', the same as recipe digits-smallcnn)",
    )
    p.add_argument(
        "--config", dest="config_flag", metavar="CONFIG", help="the same as the CONFIG argument"
    )
    p.add_argument("--recipe", help="a shipped recipe (see `rbs recipes`)")
    add_nproc(p)
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--limit", type=int, help="attack only N test examples (class-balanced, fixed seed)"
    )
    add_protocol(p, "replaces the config's [attack] protocol / attacks (default: the config's)")
    p.add_argument("--epochs", type=int, help="override the training epochs of every model")
    p.add_argument("--device", help="training device: auto, cpu, cuda")
    p.add_argument("--print-default-config", action="store_true", help="print it and exit")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from rbs.run_job import default_config_text, plan_experiment, run_experiment
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.config import load_toml
    from robustbench_sparse.recipes import load_recipe, recipe_names

    if args.print_default_config:
        print(default_config_text(), end="")
        return 0
    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    if args.config_flag:
        if args.config and args.config != args.config_flag:
            raise UserError("give CONFIG or --config, not both")
        args.config = args.config_flag
    if args.recipe and args.config:
        raise UserError("give CONFIG or --recipe, not both")
    config: dict[str, Any] | None = None
    if args.recipe:
        config = load_recipe(args.recipe)
    elif args.config:
        if not Path(args.config).exists() and args.config in recipe_names():
            config = load_recipe(args.config)  # a recipe name given as CONFIG
        else:
            config = load_toml(Path(args.config))
    plan = plan_experiment(
        config,
        protocol=checked_protocol(args.protocol, False),
        overrides={
            "attack": {"limit": args.limit},
            "train": {"epochs": args.epochs, "device": args.device},
        },
    )
    outcome = run_experiment(
        plan,
        args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        command=command_line(getattr(args, "argv", None)),
    )
    if not rdist.is_main():
        return 0
    print(f"results: {outcome.results_dir / 'results.csv'}")
    print(f"report:  {outcome.report_html}")
    print(f"         {outcome.report_md}")
    print(f"finished in {outcome.seconds:.0f}s")
    return 0
