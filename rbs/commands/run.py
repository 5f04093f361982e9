"""``rbs run``: an experiment config -> ``plan_experiment`` -> ``run_experiment``.

The configuration is the experiment TOML (:data:`rbs.run_job.RUN_SCHEMA`): the shipped default <
CONFIG / ``--config`` / ``--recipe`` < ``--set`` and the flags below, each an alias of one key. A
protocol given on the command line replaces the config's ``[attack]`` protocol, attack list and
parameters.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.arch_flags import ARCH_KWARGS_HELP, parse_arch_kwargs
from rbs.commands.common import (
    add_nproc,
    checked_protocol,
    command_line,
    launch_torchrun,
    protocol_help,
)
from rbs.overrides import Alias, add_aliases, add_config_flags, command_line_layer
from robustbench_sparse.config import deep_merge
from robustbench_sparse.errors import UserError

#: the flags most runs use; ``rbs run --help`` lists them first
EVERYDAY = (
    Alias("--epochs", "train.epochs", "override the training epochs of every model", type=int),
    Alias(
        "--limit",
        "attack.limit",
        "attack only N test examples (class-balanced, fixed seed)",
        type=int,
    ),
    Alias(
        "--protocol",
        "attack.protocol",
        protocol_help("replaces the config's [attack] protocol / attacks (default: the config's)"),
    ),
)
MORE = (
    Alias("--device", "train.device", "training device: auto, cpu, cuda"),
    Alias(
        "--masking",
        "attack.masking",
        "black-box gradient-masking probe: sample (default: a budgeted sample; AutoAttack's own "
        "Square stage where the grid runs it), full (every survivor at every epsilon) or off",
        metavar="full|sample|off",
    ),
    Alias(
        "--arch",
        "model.arch",
        "every model's architecture: a name (see `rbs models`) or your own package.module:Class",
    ),
    Alias("--arch-kwargs", "model.kwargs", ARCH_KWARGS_HELP, convert=parse_arch_kwargs),
)
#: every flag of ``rbs run`` that sets a config key
ALIASES = (*EVERYDAY, *MORE)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "run",
        help="the main job: train dense + Campfire models, attack them, report",
        description="Train a dense baseline and Campfire models, attack each with FGSM, PGD and "
        "C&W over the default grids, and write checkpoints, results, figures and the report. "
        "Without CONFIG the shipped default (digits, small_cnn) runs. Re-running resumes. "
        "Flags and --set override the config; every flag in brackets sets that config key.",
    )
    g = p.add_argument_group("everyday")
    g.add_argument(
        "config",
        nargs="?",
        help="experiment TOML or recipe name (default: the shipped "
        "evaluations/configs/default.toml, experiment 'digits-campfire', the same as recipe "
        "digits-smallcnn)",
    )
    g.add_argument(
        "--config", dest="config_flag", metavar="CONFIG", help="the same as the CONFIG argument"
    )
    add_config_flags(g, "", "models.targets=[0.7]", config=False)
    g.add_argument("--out", type=Path, default=Path("runs/default"), help="output directory")
    add_aliases(g, EVERYDAY)
    p._action_groups.insert(0, p._action_groups.pop())  # everyday first in --help
    p.add_argument("--recipe", help="a shipped recipe (see `rbs recipes`)")
    add_nproc(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_aliases(p, MORE)
    p.add_argument("--print-default-config", action="store_true", help="print it and exit")
    p.set_defaults(handler=cmd_run)


def cmd_run(args: argparse.Namespace) -> int:
    from rbs.run_job import RUN_SCHEMA, default_config_text, plan_experiment, run_experiment
    from robustbench_sparse import distributed as rdist

    if args.print_default_config:
        print(default_config_text(), end="")
        return 0
    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    config = _experiment_config(args)
    layer = command_line_layer(args, ALIASES, RUN_SCHEMA)
    given = layer.get("attack", {})
    protocol = checked_protocol(given.pop("protocol", None), "attacks" in given)
    if "attacks" in given and isinstance(config.get("attack"), dict):
        config["attack"].pop("protocol", None)  # the command line's attack list replaces it
    plan = plan_experiment(deep_merge(config, layer), protocol=protocol)
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


def _experiment_config(args: argparse.Namespace) -> dict[str, Any]:
    """CONFIG (a TOML file or a recipe name), ``--config`` or ``--recipe``; else the default."""
    from rbs.run_job import default_config
    from robustbench_sparse.config import load_toml
    from robustbench_sparse.recipes import load_recipe, recipe_names

    if args.config_flag:
        if args.config and args.config != args.config_flag:
            raise UserError("give CONFIG or --config, not both")
        args.config = args.config_flag
    if args.recipe and args.config:
        raise UserError("give CONFIG or --recipe, not both")
    if args.recipe:
        return load_recipe(args.recipe)
    if args.config:
        if not Path(args.config).exists() and args.config in recipe_names():
            return load_recipe(args.config)  # a recipe name given as CONFIG
        return load_toml(Path(args.config))
    return default_config()
