"""``rbs attack``: flags -> one :class:`~rbs.attack_job.AttackRunRequest` -> one attack run."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.commands.common import (
    add_normalize,
    add_nproc,
    add_protocol,
    checked_protocol,
    command_line,
    launch_torchrun,
    parse_eps,
)
from robustbench_sparse.errors import UserError


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "attack",
        help="attack checkpoints over an epsilon grid",
        description="Attack one or more checkpoints with FGSM / PGD / C&W over epsilon grids and "
        "write a tidy results table. Re-running the same command resumes.",
    )
    p.add_argument("--checkpoint", action="append", type=Path, required=True, help="repeatable")
    p.add_argument("--attack", action="append", help="fgsm, pgd, pgd-l2, cw, ... (repeatable)")
    add_protocol(p, "default: quick, or the hand-picked --attack list (not both)")
    p.add_argument("--eps", help="Linf grid, comma-separated, fractions allowed: 0,2/255,8/255")
    p.add_argument("--eps-l2", help="L2 grid, comma-separated")
    p.add_argument("--backend", default="native", help="native (default), torchattacks, foolbox")
    p.add_argument(
        "--param", action="append", default=[], help="ATTACK.KEY=VALUE, e.g. pgd.steps=40"
    )
    p.add_argument(
        "--limit", type=int, help="evaluate N test examples (class-balanced, fixed seed)"
    )
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--dataset", help="override the checkpoint's dataset")
    p.add_argument("--data-root", help="where torchvision datasets live")
    p.add_argument("--download", action="store_true")
    p.add_argument("--arch", help="architecture of a plain .pt/.pth state dict (with --dataset)")
    add_normalize(p)
    p.add_argument("--out", type=Path, required=True, help="results directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-report", action="store_true", help="skip figures and report")
    add_nproc(p)
    p.set_defaults(handler=cmd_attack)


def parse_param(text: str) -> tuple[str, str, Any]:
    import tomllib

    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--param {text!r}: expected ATTACK.KEY=VALUE, e.g. pgd.steps=40")
    key, raw = text.split("=", 1)
    attack, name = key.split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return attack, name, value


def cmd_attack(args: argparse.Namespace) -> int:
    from rbs.attack_job import AttackRunRequest, run_attack_command
    from robustbench_sparse import distributed as rdist

    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    params: dict[str, dict[str, Any]] = {}
    for text in args.param:
        attack, key, value = parse_param(text)
        params.setdefault(attack, {})[key] = value
    request = AttackRunRequest(
        checkpoints=tuple(args.checkpoint),
        attacks=tuple(args.attack or ["fgsm", "pgd", "cw"]),
        protocol=checked_protocol(args.protocol, bool(args.attack)),
        backend=args.backend,
        params=params,
        linf_epsilons=parse_eps(args.eps, "--eps") if args.eps else None,
        l2_epsilons=parse_eps(args.eps_l2, "--eps-l2") if args.eps_l2 else None,
        limit=args.limit,
        batch_size=args.batch_size,
        device=args.device,
        dataset=args.dataset,
        data_root=args.data_root,
        download=bool(args.download),
        arch=args.arch,
        normalize=args.normalize,
        report=not args.no_report,
    )
    outcome = run_attack_command(
        request,
        args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        command=command_line(getattr(args, "argv", None)),
    )
    if not rdist.is_main():
        return 0
    print(f"results: {outcome.results_dir / 'results.csv'}")
    if outcome.report_html is not None:
        print(f"report:  {outcome.report_html}")
    return 0
