"""``rbs export``: write / verify the packed (compressed sparse) form of a checkpoint.

Registered by :mod:`rbs.cli` with :func:`add_export_parser`; the handler maps the
flags to one call of :mod:`robustbench_sparse.export` and prints sizes (packed, dense safetensors,
information bound, ratios).

    rbs export CKPT_DIR --format packed --out model.rbsp [--overwrite] [--signed-zeros] [--verify]
    rbs export CKPT_DIR --verify model.rbsp
    rbs export CKPT_DIR --format thin --out THIN_DIR [--overwrite]   (robustbench_sparse.thin_export)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rbs.commands.common import add_user_arch_flags, require_product_checkpoint
from robustbench_sparse.errors import UserError

__all__ = ["add_export_parser", "cmd_export"]

FORMATS = ("packed", "thin")


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``export`` subcommand to ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="write a compressed (packed) or thinned copy of a checkpoint, or verify one",
        description=(
            "packed: store Campfire-sparse layers as their kept values plus per-group position "
            "codes (ceil(log2 C(group, kept)) bits per group) and every other tensor as is; "
            "--verify reloads the packed file and checks it bit for bit against the checkpoint. "
            "thin: a checkpoint directory with every exactly-zero channel physically removed "
            "(dead filters, and residual channels dead in their whole coupled group), checked "
            "allclose to the masked model; it loads wherever a checkpoint loads."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (or its .safetensors file)")
    p.add_argument("--format", choices=FORMATS, default=None, help="export format")
    p.add_argument(
        "--out", type=Path, default=None, help="file to write (packed) or directory (thin)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument(
        "--signed-zeros",
        action="store_true",
        help="also store the sign of pruned -0.0 weights (bigger; bit-identical even for those)",
    )
    p.add_argument(
        "--verify",
        nargs="?",
        const=True,
        default=None,
        metavar="FILE",
        help="verify FILE against the checkpoint (alone), or the file just written (with --out)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_user_arch_flags(p)
    p.set_defaults(handler=cmd_export)
    return p


def _mib(n: float) -> str:
    return f"{n / 1024**2:.3f} MiB ({int(n):,} bytes)"


def cmd_export(args: argparse.Namespace) -> int:
    """Handle ``rbs export``; returns the exit status (1 if verification fails)."""
    from robustbench_sparse.export import compare_packed, pack_checkpoint, verify_packed

    verify = args.verify
    require_product_checkpoint(args.checkpoint, "export")
    if args.format == "thin":
        return _export_thin(args)
    out: dict[str, Any] = {"checkpoint": str(args.checkpoint)}
    if args.out is None and args.format is None and verify is None:
        raise UserError("nothing to do: pass --format packed --out FILE, and/or --verify FILE")
    if args.out is not None or args.format is not None:
        if args.format is None:
            raise UserError("--out needs --format packed")
        if args.out is None:
            raise UserError("--format packed needs --out FILE")
        if isinstance(verify, str):
            raise UserError("with --out, pass --verify without a file name (it checks --out)")
        stats = pack_checkpoint(
            args.checkpoint, args.out, overwrite=args.overwrite, signed_zeros=args.signed_zeros
        )
        out["packed"] = {"file": str(args.out), **stats.to_dict()}
        if not args.json:
            print(f"wrote {args.out}")
            print(f"  packed:               {_mib(stats.packed_bytes)}")
            print(f"  dense safetensors:    {_mib(stats.dense_bytes)}  (weights + bool masks)")
            print(f"  information bound:    {_mib(stats.bound_bytes)}")
            print(
                f"  packed / bound = {stats.ratio_to_bound:.3f}x, "
                f"packed / dense = {stats.ratio_to_dense:.3f}x"
            )
            for s in stats.layers:
                bound = (s.value_bits + s.bound_code_bits) / 8
                size = (s.value_bits + s.code_bits) / 8
                print(
                    f"  {s.name}: {s.encoding}, kept {s.kept}/{s.numel}, "
                    f"{size:,.0f} B payload vs bound {bound:,.0f} B"
                )
        target: Path | None = args.out if verify is True else None
    elif verify is True:
        raise UserError("--verify needs a FILE when no --out is given")
    else:
        target = Path(verify)
    status = 0
    if target is not None:
        report = compare_packed(args.checkpoint, target)
        ok = verify_packed(args.checkpoint, target)
        out["verify"] = {"file": str(target), "ok": ok, **vars(report)}
        if not args.json:
            if ok:
                note = (
                    f" ({report.negative_zeros:,} pruned -0.0 restored as +0.0; "
                    "use --signed-zeros to keep their sign)"
                    if report.negative_zeros
                    else ""
                )
                print(f"verified {target}: all {report.tensors} tensors bit-identical{note}")
            else:
                print(f"verification FAILED for {target}: differing {', '.join(report.mismatched)}")
        status = 0 if ok else 1
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return status


def _export_thin(args: argparse.Namespace) -> int:
    """``--format thin``: write the thinned checkpoint directory and print what was removed."""
    from robustbench_sparse.thin_export import export_thin_checkpoint

    if args.out is None:
        raise UserError("--format thin needs --out DIR")
    if args.verify is not None or args.signed_zeros:
        raise UserError("--verify and --signed-zeros apply to --format packed only")
    result = export_thin_checkpoint(
        args.checkpoint,
        args.out,
        overwrite=args.overwrite,
        arch=args.arch,
        trust_arch=args.trust_arch,
    )
    summary = {
        "checkpoint": str(args.checkpoint),
        "thin": {"dir": str(args.out), **result.summary()},
    }
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    removed = sum(result.removed.values())
    print(f"wrote {args.out}")
    print(
        f"  removed {removed} channels in {len(result.removed)} coupled groups; "
        f"parameters {result.params_before:,} -> {result.params_after:,}; "
        f"MACs per example {result.macs_before:,} -> {result.macs_after:,} "
        f"({result.macs_before / max(result.macs_after, 1):.2f}x fewer)"
    )
    print(f"  logits match the masked model (max |diff| {result.max_abs_diff:.2g})")
    if not removed:
        print(
            "  no channel is zero in every layer it couples (Campfire window/channel/combined "
            "keep a weight in every filter): the thin model is the masked one"
        )
    return 0
