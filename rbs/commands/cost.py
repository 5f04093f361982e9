"""``rbs cost``: the hardware cost model of a checkpoint (MACs, imbalance, metadata, roofline).

Maps its flags to one call of :func:`robustbench_sparse.cost.model_cost` and prints the table
(:func:`robustbench_sparse.cost.format_cost`) or, with ``--json``, one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rbs.arch_flags import parse_arch_kwargs
from rbs.commands.common import add_normalize, add_plain_state_dict_flags, add_state_dict_key
from robustbench_sparse.errors import UserError

__all__ = ["add_parser", "cmd_cost", "parse_input_shape"]


def add_parser(sub: Any) -> None:
    """Add the ``cost`` subcommand."""
    p = sub.add_parser(
        "cost",
        help="modelled hardware cost of a checkpoint: MACs, load imbalance, metadata, roofline",
        description="Per conv/linear layer and in total, per input example: MACs (dense, "
        "effective = zero weights skipped, compact = dead filters/channels removed, under 2:4), "
        "load imbalance (max/mean work) per accelerator mapping, position-metadata bits per "
        "format, weight/activation bytes and a roofline estimate on an illustrative "
        "accelerator. Exact counts and modelled numbers, nothing timed (docs/cost-model.md).",
    )
    p.add_argument(
        "checkpoint", type=Path, help="checkpoint directory, .safetensors, .rbsp or .pt/.pth"
    )
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="shape of one input example (default: the checkpoint's dataset)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--batch", type=int, default=256, help="large-batch regime of the roofline (default 256)"
    )
    p.add_argument("--mac-lanes", type=int, default=1024, help="modelled MAC lanes (1024)")
    p.add_argument("--clock-ghz", type=float, default=1.0, help="modelled clock in GHz (1.0)")
    p.add_argument("--bandwidth-gbs", type=float, default=25.6, help="modelled memory GB/s (25.6)")
    p.add_argument(
        "--value-bits", type=int, default=8, help="modelled bits per weight/activation (8)"
    )
    add_plain_state_dict_flags(p, "dataset of a plain state dict (gives the input shape)")
    p.add_argument("--data-root", help="where the dataset lives (imagefolder: its class folders)")
    add_normalize(p)
    add_state_dict_key(p)
    p.set_defaults(handler=cmd_cost)


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` -> ``(3, 32, 32)``.

    Raises:
        UserError: not three positive integers.
    """
    parts = [p.strip() for p in str(text).replace("x", ",").split(",")]
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise UserError(f"--input-shape must be three positive integers C,H,W, got {text!r}")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def cmd_cost(args: argparse.Namespace) -> int:
    """Handle ``rbs cost``."""
    from robustbench_sparse.checkpoint import load_checkpoint
    from robustbench_sparse.cost import AcceleratorSpec, format_cost, model_cost

    shape = parse_input_shape(args.input_shape) if args.input_shape else None
    spec = AcceleratorSpec(
        mac_lanes=args.mac_lanes,
        clock_ghz=args.clock_ghz,
        bandwidth_gbs=args.bandwidth_gbs,
        value_bits=args.value_bits,
    )
    ckpt = load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        dataset=args.dataset,
        arch_kwargs=parse_arch_kwargs(args.arch_kwargs),
        data_root=args.data_root,
        normalize=args.normalize,
        state_dict_key=args.state_dict_key,
        trust_arch=args.trust_arch,
    )
    input_shape = shape or tuple(ckpt.info.input_shape)
    if shape is not None and shape[0] != ckpt.info.input_shape[0]:
        raise UserError(
            f"--input-shape has {shape[0]} channels but {ckpt.name} takes "
            f"{ckpt.info.input_shape[0]}; change C"
        )
    cost = model_cost(ckpt.model, ckpt.masks, input_shape, spec=spec, batch=args.batch)
    if args.json:
        out = {
            "checkpoint": ckpt.name,
            "arch": ckpt.meta.get("arch"),
            "dataset": ckpt.meta.get("dataset"),
            "granularity": ckpt.granularity,
            "sparsity_target": ckpt.sparsity_target,
            **cost.to_dict(),
        }
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0
    print(
        f"{ckpt.name}: {ckpt.meta.get('arch')} on {ckpt.meta.get('dataset')}, "
        f"granularity {ckpt.granularity}"
    )
    print(format_cost(cost))
    return 0
