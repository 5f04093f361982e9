"""``rbs attack``: config layers -> one :class:`~rbs.attack_job.AttackRunRequest` -> one attack run.

The configuration is ``[attack] [epsilons] [data] [model]`` (:data:`rbs.attack_job.ATTACK_SCHEMA`):
the request's defaults < ``--config`` < ``--set`` and the flags below, each an alias of one key.
A protocol or an attack list given on the command line replaces the config file's choice.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.arch_flags import ARCH_KWARGS_HELP, TRUST_ARCH_HELP, parse_arch_kwargs
from rbs.commands.common import (
    NORMALIZE_HELP,
    STATE_DICT_KEY_HELP,
    add_nproc,
    attack_help,
    backend_help,
    checked_protocol,
    command_line,
    launch_torchrun,
    parse_eps,
    protocol_help,
)
from rbs.overrides import Alias, add_aliases, add_config_flags, command_line_layer, parse_value
from robustbench_sparse.config import deep_merge
from robustbench_sparse.errors import UserError


def _eps(text: str, flag: str) -> list[float] | None:
    return parse_eps(text, flag) if text else None


def _params(texts: list[str], flag: str) -> dict[str, dict[str, Any]]:
    """``["pgd.steps=40", ...]`` -> ``{"pgd": {"steps": 40}}``."""
    params: dict[str, dict[str, Any]] = {}
    for text in texts:
        attack, key, value = parse_param(text)
        params.setdefault(attack, {})[key] = value
    return params


def parse_param(text: str) -> tuple[str, str, Any]:
    """``"pgd.steps=40"`` -> ``("pgd", "steps", 40)`` (the value read as TOML, as ``--set``)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--param {text!r}: expected ATTACK.KEY=VALUE, e.g. pgd.steps=40")
    key, raw = text.split("=", 1)
    attack, name = key.split(".", 1)
    return attack, name, parse_value(raw)


#: the flags most runs use; ``rbs attack --help`` lists them first
EVERYDAY = (
    Alias(
        "--checkpoint",
        "attack.checkpoints",
        "repeatable",
        type=Path,
        action="append",
    ),
    Alias("--attack", "attack.attacks", attack_help(), action="append"),
    Alias(
        "--protocol",
        "attack.protocol",
        protocol_help("default: quick, or the hand-picked --attack list (not both)"),
    ),
    Alias(
        "--eps",
        "epsilons.linf",
        "Linf grid, comma-separated, fractions allowed: 0,2/255,8/255",
        convert=_eps,
    ),
    Alias("--eps-l2", "epsilons.l2", "L2 grid, comma-separated", convert=_eps),
    Alias(
        "--eps-l1",
        "epsilons.l1",
        "L1 grid, comma-separated (adds AutoAttack L1 to --protocol standard)",
        convert=_eps,
    ),
    Alias(
        "--limit",
        "attack.limit",
        "evaluate N test examples (class-balanced, fixed seed)",
        type=int,
    ),
)
MORE = (
    Alias("--backend", "attack.backend", backend_help()),
    Alias(
        "--param",
        "attack.params",
        "ATTACK.KEY=VALUE, e.g. pgd.steps=40",
        action="append",
        convert=_params,
    ),
    Alias(
        "--masking",
        "attack.masking",
        "black-box gradient-masking probe: sample (default: a budgeted sample; AutoAttack's own "
        "Square stage where the grid runs it), full (every survivor at every epsilon) or off",
        metavar="full|sample|off",
    ),
    Alias("--batch-size", "attack.batch_size", "default 500", type=int),
    Alias("--device", "attack.device", "cpu (default), cuda, auto"),
    Alias("--dataset", "data.dataset", "override the checkpoint's dataset"),
    Alias("--data-root", "data.data_root", "where torchvision datasets live"),
    Alias("--download", "data.download", action="store_true"),
    Alias(
        "--image-size",
        "data.image_size",
        "imagefolder: resize the test images to S x S (default: the size the checkpoint was "
        "trained at; needed when they are of mixed sizes)",
        type=int,
    ),
    Alias(
        "--arch",
        "model.arch",
        "architecture of a plain .pt/.pth state dict (with --dataset); your own "
        "package.module:Class also lets checkpoints that record it be rebuilt",
    ),
    Alias("--arch-kwargs", "model.kwargs", ARCH_KWARGS_HELP, convert=parse_arch_kwargs),
    Alias("--trust-arch", "model.trust_arch", TRUST_ARCH_HELP, action="store_true"),
    Alias("--normalize", "model.normalize", NORMALIZE_HELP),
    Alias("--state-dict-key", "model.state_dict_key", STATE_DICT_KEY_HELP, metavar="KEY"),
    Alias(
        "--no-report",
        "attack.report",
        "skip figures and report (sets it to false)",
        action="store_const",
        extra={"const": False},
    ),
)
#: common corruptions (rbs.corruptions_job; docs/certified.md)
CORRUPTIONS = (
    Alias(
        "--corruption",
        "corruptions.names",
        "with --protocol corruptions: run only this corruption (repeatable; default: the 15 of "
        "Hendrycks & Dietterich 2019)",
        action="append",
    ),
    Alias(
        "--extra-corruptions",
        "corruptions.extra",
        "with --protocol corruptions: add the 4 held-out corruptions (speckle_noise, "
        "gaussian_blur, spatter, saturate)",
        action="store_true",
    ),
)
#: transfer attacks and saved adversarials (rbs.transfer_job; docs/attacks.md)
TRANSFER = (
    Alias(
        "--save-adversarials",
        "attack.save_adversarials",
        "write each cell's verified adversarials to OUT/adversarials/ (safetensors)",
        action="store_true",
    ),
    Alias(
        "--adversarials",
        "attack.adversarials",
        "score the checkpoints on adversarials saved by --save-adversarials (a results "
        "directory or file; repeatable); without --attack/--protocol nothing else runs",
        type=Path,
        action="append",
        metavar="DIR",
    ),
    Alias(
        "--transfer-from",
        "attack.transfer_from",
        "craft the grid's attacks on this checkpoint and score every other --checkpoint on its "
        "adversarials (rows '<attack> from <name>')",
        type=Path,
        metavar="CKPT",
    ),
    Alias(
        "--transfer-in-worst-case",
        "attack.transfer_in_worst_case",
        "let transfer rows join the per-example worst case (default: white-box only)",
        action="store_true",
    ),
)
#: every flag of ``rbs attack`` that sets a config key
ALIASES = (*EVERYDAY, *MORE, *TRANSFER, *CORRUPTIONS)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "attack",
        help="attack checkpoints over an epsilon grid",
        description="Attack one or more checkpoints with FGSM / PGD / C&W over epsilon grids and "
        "write a tidy results table. Re-running the same command resumes. Flags and --set "
        "override --config; every flag in brackets sets that config key.",
    )
    g = p.add_argument_group("everyday")
    add_config_flags(
        g, "TOML file with [attack] [epsilons] [data] [model]", 'epsilons.linf=[0,"8/255"]'
    )
    g.add_argument("--out", type=Path, required=True, help="results directory")
    add_aliases(g, EVERYDAY)
    p._action_groups.insert(0, p._action_groups.pop())  # everyday first in --help
    add_aliases(p, MORE)
    add_aliases(p.add_argument_group("transfer and saved adversarials"), TRANSFER)
    add_aliases(p.add_argument_group("common corruptions"), CORRUPTIONS)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    add_nproc(p)
    p.set_defaults(handler=cmd_attack)


def cmd_attack(args: argparse.Namespace) -> int:
    from rbs.attack_job import ATTACK_SCHEMA, request_from_config, run_attack_command
    from robustbench_sparse import distributed as rdist

    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    layer = command_line_layer(args, ALIASES, ATTACK_SCHEMA)
    request = request_from_config(_over_config_file(args.config, layer))
    outcome = run_attack_command(
        request,
        args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        command=command_line(getattr(args, "argv", None)),
    )
    if not rdist.is_main():
        return 0
    print(f"results: {outcome.results_dir / outcome.results_file}")
    if outcome.report_html is not None:
        print(f"report:  {outcome.report_html}")
    return 0


def _over_config_file(path: str | None, layer: dict[str, Any]) -> dict[str, Any]:
    """The command line's ``layer`` over the ``--config`` file.

    The command line's protocol (or attack list) replaces the file's attack list (or protocol).
    """
    from robustbench_sparse.config import load_toml

    given = layer.get("attack", {})
    checked_protocol(given.get("protocol"), "attacks" in given)
    config = load_toml(path) if path else {}
    table = config.get("attack")
    if isinstance(table, dict):
        if "protocol" in given:
            table.pop("attacks", None)
        if "attacks" in given:
            table.pop("protocol", None)
    return deep_merge(config, layer)
