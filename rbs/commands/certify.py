"""``rbs certify``: certified robustness (randomized smoothing, interval bound propagation).

The loading options are ``rbs attack``'s (``--dataset``, ``--data-root``, ``--arch``, ...); the
work is :func:`rbs.certify_job.run_certify_command`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rbs.arch_flags import ARCH_KWARGS_HELP, TRUST_ARCH_HELP, parse_arch_kwargs
from rbs.commands.common import NORMALIZE_HELP, STATE_DICT_KEY_HELP, command_line, parse_eps


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="certified robustness: randomized smoothing (L2) or IBP (Linf)",
        description="Certify checkpoints: randomized smoothing (Cohen et al. 2019: certified "
        "accuracy at L2 radii, abstentions, per-example radius) or interval bound propagation "
        "(Gowal et al. 2018: verified accuracy per Linf eps). Writes certified.csv, "
        "certify/<checkpoint>@<method>.csv and certify.json into --out. See docs/certified.md.",
    )
    p.add_argument("checkpoints", nargs="+", type=Path, metavar="CKPT", help="checkpoints")
    g = p.add_argument_group("everyday")
    g.add_argument("--method", choices=("smoothing", "ibp"), required=True)
    g.add_argument("--out", type=Path, required=True, help="results directory")
    g.add_argument("--sigma", type=float, help="smoothing: noise std in [0,1] pixel units")
    g.add_argument("--n0", type=int, default=100, help="smoothing: selection samples (100)")
    g.add_argument("--n", type=int, default=10_000, help="smoothing: estimation samples (10000)")
    g.add_argument("--alpha", type=float, default=0.001, help="failure probability (0.001)")
    g.add_argument("--radii", help="smoothing: L2 radii, e.g. 0,0.25,0.5 (default 0..1.5 by 0.25)")
    g.add_argument("--eps", help="ibp: Linf eps, e.g. 0.05,0.1 or 8/255 (default 0.05,0.1)")
    g.add_argument("--limit", type=int, help="certify N class-balanced test examples")
    g.add_argument("--json", action="store_true", help="print one JSON object per checkpoint")
    g.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    m = p.add_argument_group("more")
    m.add_argument("--batch-size", type=int, default=1000, help="noisy copies per pass (1000)")
    m.add_argument("--seed", type=int, default=0, help="smoothing noise seed (0)")
    m.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    m.add_argument("--dataset", help="override the checkpoint's dataset")
    m.add_argument("--data-root", help="where torchvision datasets live")
    m.add_argument("--download", action="store_true")
    m.add_argument("--image-size", type=int, help="imagefolder: resize the test images to S x S")
    m.add_argument("--arch", help="architecture of a plain .pt/.pth state dict (with --dataset)")
    m.add_argument("--arch-kwargs", help=ARCH_KWARGS_HELP)
    m.add_argument("--trust-arch", action="store_true", help=TRUST_ARCH_HELP)
    m.add_argument("--normalize", help=NORMALIZE_HELP)
    m.add_argument("--state-dict-key", metavar="KEY", help=STATE_DICT_KEY_HELP)
    p.set_defaults(handler=cmd_certify)


def cmd_certify(args: argparse.Namespace) -> int:
    from rbs.attack_job import AttackRunRequest
    from rbs.certify_job import CertifySettings, run_certify_command, summary

    grid: dict[str, Any] = {}
    if args.radii:
        grid["radii"] = tuple(parse_eps(args.radii, "--radii"))
    if args.eps:
        grid["epsilons"] = tuple(parse_eps(args.eps, "--eps"))
    settings = CertifySettings(
        method=args.method,
        sigma=args.sigma,
        n0=args.n0,
        n=args.n,
        alpha=args.alpha,
        batch_size=args.batch_size,
        seed=args.seed,
        limit=args.limit,
        device=args.device,
        **grid,
    )
    request = AttackRunRequest(
        checkpoints=tuple(args.checkpoints),
        attacks=(),
        limit=args.limit,
        device=args.device,
        dataset=args.dataset,
        data_root=args.data_root,
        download=args.download,
        image_size=args.image_size,
        arch=args.arch,
        arch_kwargs=parse_arch_kwargs(args.arch_kwargs),
        trust_arch=args.trust_arch,
        normalize=args.normalize,
        state_dict_key=args.state_dict_key,
        report=False,
    )
    df = run_certify_command(
        request,
        settings,
        args.out,
        overwrite=args.overwrite,
        command=command_line(getattr(args, "argv", None)),
    )
    if args.json:
        for obj in summary(df, settings):
            print(json.dumps(obj))
    else:
        print(f"results: {Path(args.out) / 'certified.csv'}")
    return 0
