"""``rbs speed``: measured inference latency of a checkpoint, masked vs thin vs CSR vs 2:4.

Registered by :mod:`rbs.cli` with :func:`add_speed_parser`; the handler loads the checkpoint and
makes one call of :func:`robustbench_sparse.speed.measure_speed`, then prints a table (or JSON).

    rbs speed CKPT [--device cpu|cuda] [--batch 1,32,256] [--repeats 7] [--json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rbs.commands.common import add_user_arch_flags

__all__ = ["add_speed_parser", "cmd_speed"]


def add_speed_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``speed`` subcommand to ``subparsers``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "speed",
        help="measure forward latency: masked vs thin (dead channels removed) vs CSR vs 2:4",
        description=(
            "Time forward passes of the checkpoint as trained (masked, dense engine), its thin "
            "form (exactly-zero channels removed; predicted speed-up = MAC ratio), a CSR sparse "
            "kernel (CPU; the negative control) and 2:4 semi-structured GEMMs (CUDA; layers of "
            "granularity nm). Medians of interleaved blocks after warm-up; every number carries "
            "device, versions, threads, batch and load average."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (or .safetensors / .rbsp)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default cpu")
    p.add_argument("--batch", default="1,32,256", help="batch sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=7, help="interleaved timing blocks (median)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_user_arch_flags(p)
    p.set_defaults(handler=cmd_speed)
    return p


def cmd_speed(args: argparse.Namespace) -> int:
    """Handle ``rbs speed``."""
    from rbs.commands.common import require_product_checkpoint
    from robustbench_sparse.checkpoint import load_checkpoint
    from robustbench_sparse.errors import UserError
    from robustbench_sparse.speed import batches_from, measure_speed

    if args.repeats < 1:
        raise UserError(f"--repeats must be >= 1, got {args.repeats}")
    batches = batches_from(args.batch)
    require_product_checkpoint(args.checkpoint, "speed")
    ckpt = load_checkpoint(args.checkpoint, arch=args.arch, trust_arch=args.trust_arch)
    shape = tuple(int(v) for v in ckpt.info.input_shape)
    result = measure_speed(
        ckpt.model, shape, device=args.device, batches=batches, repeats=args.repeats
    )
    result["checkpoint"] = str(args.checkpoint)
    result["input_shape"] = list(shape)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    env, info = result["environment"], result["info"]
    print(
        f"{ckpt.name}: {ckpt.meta.get('arch')} on {ckpt.meta.get('dataset')}, input {shape}; "
        f"{env['device']} ({env.get('gpu') or env['processor']}), torch {env['torch']}, "
        f"{env['threads']} threads, load {env['loadavg_1_5_15']}"
    )
    print(
        f"MACs per example: masked {info['macs_masked']:,}, thin {info['macs_thin']:,} "
        f"({info['channels_removed']} channels removed): predicted thin speed-up "
        f"{info['predicted_thin_speedup']:.2f}x by MACs (the layer-time prediction per batch, in "
        "brackets, keeps the time of layers that are not thinned)"
    )
    print(f"{'batch':>6}  {'variant':<10} {'median ms':>10} {'min..max ms':>16} {'vs masked':>10}")
    for r in result["records"]:
        spread = f"{1e3 * r['min_s']:.3g}..{1e3 * r['max_s']:.3g}"
        layer = r.get("predicted_speedup_layer_time")
        print(
            f"{r['batch']:>6}  {r['variant']:<10} {1e3 * r['median_s']:>10.3g} {spread:>16} "
            f"{r['speedup_vs_masked']:>9.2f}x" + (f" (predicted {layer:.2f}x)" if layer else "")
        )
    for name, why in info["skipped"].items():
        print(f"skipped {name}: {why}")
    if "2:4_fp16" in {r["variant"] for r in result["records"]}:
        print("2:4_fp16 is compared with gemm_fp16 (the same unfold + GEMM model, dense)")
    return 0
