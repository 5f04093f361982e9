"""Measured vs predicted speed of pruned models on real engines (issue 25).

CPU (always):
  A. filter pruning at 50 % and 75 % (first conv dense, BatchNorm masked as `filter` leaves it)
     on small_cnn (width 2 unless --width): masked dense model vs its thin export
     (robustbench_sparse.thin), ratio of medians, interleaved, one process, against two
     predicted speed-ups: the whole-model MAC ratio masked / thin, and the layer-time prediction
     (robustbench_sparse.speed_prediction: each layer's measured masked time scaled by its own
     work ratio, so the dense first conv and the pooling keep their time). Goal at batch >= 16:
     measured >= 0.7x the layer-time prediction (both ratios are printed).
  B. the CSR negative control: one 3x3 conv (C = K = 128, 16x16, batch 16) with Campfire window /
     channel and 2:4 (nm) masks, as unfold + CSR SpMM (MKL) vs the dense conv.
GPU (only where CUDA exists; else said skipped):
  C. 2:4 GEMMs at ResNet-18/50 conv shapes (conv as unfold + GEMM, weights in (r, s, c) order,
     2:4 along the input channels = granularity nm), fp16: dense cuBLAS GEMM vs
     to_sparse_semi_structured (cuSPARSELt), and the cuDNN conv of the same layer for reference.
  D. whole model: resnet18 (ImageNet shape) with nm 2:4 masks, rbs speed's variants on CUDA.

    python benchmarks/sparse_speed.py [--threads 1] [--repeats 7] [--out sparse_speed.json]
    python benchmarks/sparse_speed.py --smoke      # tiny shapes, seconds: checks every path runs
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, compute_mask, create_sparsifier
from robustbench_sparse.speed import environment, interleaved_medians, measure_speed
from robustbench_sparse.speed_prediction import layer_time_prediction
from robustbench_sparse.thin import thin_model

R18_R50 = [  # name, K, C, kernel, H (= W), stride 1
    ("r18.layer1 3x3", 64, 64, 3, 56),
    ("r18.layer2 3x3", 128, 128, 3, 28),
    ("r18.layer3 3x3", 256, 256, 3, 14),
    ("r18.layer4 3x3", 512, 512, 3, 7),
    ("r50.layer1 1x1 in", 64, 256, 1, 56),
    ("r50.layer3 1x1 in", 256, 1024, 1, 14),
    ("r50.layer3 1x1 out", 1024, 256, 1, 14),
    ("r50.layer4 1x1 out", 2048, 512, 1, 7),
]


def part_a(args: argparse.Namespace, log: Any) -> None:
    """Filter pruning: masked vs thin, measured vs predicted."""
    shape = (3, 32, 32) if not args.smoke else (3, 8, 8)
    for target in (0.5, 0.75):
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=10, in_channels=3, width=args.width).eval()
        sp = create_sparsifier(SparsityConfig(target=target, method="filter", end=0.0), 1)
        sp.prepare(model)
        thin = thin_model(model, shape)
        predicted = thin.macs_before / thin.macs_after
        gen = torch.Generator().manual_seed(0)
        for batch in args.batches:
            x = torch.rand(batch, *shape, generator=gen)
            with torch.inference_mode():
                t = interleaved_medians(
                    {
                        "masked": lambda x=x, m=model: m(x),
                        "thin": lambda x=x, m=thin.model: m(x),
                    },
                    torch.device("cpu"),
                    repeats=args.repeats,
                    min_block_s=args.block,
                )
            measured = t["masked"]["median_s"] / t["thin"]["median_s"]
            fastest = t["masked"]["min_s"] / t["thin"]["min_s"]  # least disturbed blocks
            layer = layer_time_prediction(model, thin.model, x, repeats=args.repeats)
            log(
                {
                    "part": "A filter: masked vs thin (CPU)",
                    "filter_sparsity": target,
                    "batch": batch,
                    "predicted_speedup_mac_ratio": round(predicted, 3),
                    "predicted_speedup_layer_time": round(layer["predicted_speedup"], 3),
                    "unchanged_share_of_masked_time": round(layer["unchanged_share"], 3),
                    "measured_speedup": round(measured, 3),
                    "measured_over_predicted_mac_ratio": round(measured / predicted, 3),
                    "measured_over_predicted": round(measured / layer["predicted_speedup"], 3),
                    "measured_speedup_of_minimums": round(fastest, 3),
                    "masked_ms": round(1e3 * t["masked"]["median_s"], 3),
                    "thin_ms": round(1e3 * t["thin"]["median_s"], 3),
                }
            )


def part_b(args: argparse.Namespace, log: Any) -> None:
    """CSR SpMM vs the dense conv on Campfire and 2:4 masks: the negative control."""
    n, c, k, h = (16, 128, 128, 16) if not args.smoke else (2, 16, 16, 8)
    torch.manual_seed(0)
    x = torch.rand(n, c, h, h)
    w = torch.randn(k, c, 3, 3)
    cols = F.unfold(x, 3, padding=1).transpose(0, 1).reshape(c * 9, n * h * h).contiguous()
    masks = {
        "window 66.7 %": compute_mask(w, 0.7, Granularity.WINDOW),
        "channel 75 %": compute_mask(w, 0.75, Granularity.CHANNEL),
        "nm 2:4 (50 %)": compute_mask(w, 0.5, Granularity.NM),
        "unstructured 97 %": compute_mask(w, 0.97, Granularity.UNSTRUCTURED),
    }
    fns: dict[str, Any] = {"dense conv": lambda: F.conv2d(x, w, padding=1)}
    for name, mask in masks.items():
        with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            csr = (w * mask).reshape(k, -1).to_sparse_csr()  # (K, C*9) CSR, (c, r, s) columns
        ref = F.conv2d(x, w * mask, padding=1)
        got = torch.sparse.mm(csr, cols).reshape(k, n, h, h).transpose(0, 1)
        assert torch.allclose(ref, got, atol=1e-3), name
        fns[name] = lambda csr=csr: torch.sparse.mm(csr, cols)
    with torch.inference_mode():
        t = interleaved_medians(
            fns, torch.device("cpu"), repeats=args.repeats, min_block_s=args.block
        )
    base = t["dense conv"]["median_s"]
    for name in masks:
        log(
            {
                "part": "B CSR negative control (CPU, one 3x3 conv)",
                "mask": name,
                "shape": [k, c, 3, 3],
                "batch": n,
                "csr_speed_vs_dense_conv": round(base / t[name]["median_s"], 3),
            }
        )


def part_c(args: argparse.Namespace, log: Any, dev: torch.device) -> None:
    """CUDA: 2:4 semi-structured GEMM vs dense GEMM at ResNet-18/50 layer shapes.

    On a CPU (``--smoke`` only) the same code runs at tiny shapes in fp32 with the 2:4 operand
    replaced by the dense one: it checks the GEMM layout, not the speed.
    """
    from torch.sparse import to_sparse_semi_structured

    dry = dev.type != "cuda"
    dtype = torch.float32 if dry else torch.float16
    layers = [(nm, k // 16, c // 16, ks, 4) for nm, k, c, ks, _ in R18_R50[:3]] if dry else R18_R50
    for name, k, c, ks, h in layers:
        for n in args.batches:
            w = torch.randn(k, c, ks, ks, device=dev, dtype=dtype)
            w = w * compute_mask(w, 0.5, Granularity.NM)
            x = torch.randn(n, c, h, h, device=dev, dtype=dtype)
            w_rsc = w.permute(0, 2, 3, 1).reshape(k, -1).contiguous()  # (K, R*S*C)
            cols = F.unfold(x, ks, padding=ks // 2).reshape(n, c, ks * ks, -1)
            cols = cols.permute(2, 1, 0, 3).reshape(ks * ks * c, -1).contiguous()  # (R*S*C, N*P)
            part = "C 2:4 GEMM (CPU dry run: 2:4 operand dense)" if dry else "C 2:4 GEMM (CUDA)"
            rec: dict[str, Any] = {"part": part, "layer": name, "batch": n, "dtype": str(dtype)}
            conv = F.conv2d(x, w, padding=ks // 2)  # (N, K, H, W)
            as_conv = (w_rsc @ cols).reshape(k, n, h, h).transpose(0, 1)
            rec["gemm_vs_conv_max_abs_err"] = float((as_conv - conv).abs().max())
            try:
                ws = w_rsc if dry else to_sparse_semi_structured(w_rsc)
                err = float(((ws @ cols) - (w_rsc @ cols)).abs().max())
                t = interleaved_medians(
                    {
                        "cudnn_conv": lambda x=x, w=w, p=ks // 2: F.conv2d(x, w, padding=p),
                        "gemm_dense": lambda a=w_rsc, b=cols: a @ b,
                        "gemm_2to4": lambda a=ws, b=cols: a @ b,
                    },
                    dev,
                    repeats=args.repeats,
                    min_block_s=args.block,
                )
                rec["gemm_2to4_speedup"] = round(
                    t["gemm_dense"]["median_s"] / t["gemm_2to4"]["median_s"], 3
                )
                rec["cudnn_over_gemm_dense"] = round(
                    t["gemm_dense"]["median_s"] / t["cudnn_conv"]["median_s"], 3
                )
                rec["max_abs_err"] = err
            except RuntimeError as exc:
                rec["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            log(rec)


def part_d(args: argparse.Namespace, log: Any, dev: torch.device) -> None:
    """CUDA: a whole resnet18 with nm 2:4 masks through rbs speed's variants (CPU smoke: resnet20)."""
    torch.manual_seed(0)
    dry = dev.type != "cuda"
    arch, classes, shape = (
        ("resnet20", 10, (3, 16, 16)) if dry else ("resnet18", 1000, (3, 224, 224))
    )
    model = create_model(arch, num_classes=classes, in_channels=3).eval()
    sp = create_sparsifier(SparsityConfig(target=0.5, granularity="nm", end=0.0), 1)
    sp.prepare(model)
    result = measure_speed(
        model, shape, device=dev, batches=args.batches, repeats=args.repeats, min_block_s=args.block
    )
    for r in result["records"]:
        log({"part": f"D {arch} nm 2:4 whole model ({dev.type})", **r})
    log({"part": "D info", **result["info"]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--block", type=float, default=0.1, help="seconds per timed block")
    parser.add_argument("--width", type=float, default=2.0, help="small_cnn width (part A)")
    parser.add_argument("--batches", default="", help="batch sizes (default 16,32 CPU)")
    parser.add_argument("--out", default="", help="also write JSON lines here")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: checks every path")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.smoke:
        args.repeats, args.block, args.width = 1, 0.0, 0.25
    args.batches = [int(b) for b in args.batches.split(",")] if args.batches else [16, 32]
    if args.smoke:
        args.batches = [2]
    lines: list[dict[str, Any]] = []

    def log(rec: dict[str, Any]) -> None:
        lines.append(rec)
        print(json.dumps(rec), flush=True)

    log({"part": "environment", **environment(torch.device("cpu")), "argv": sys.argv[1:]})
    part_a(args, log)
    part_b(args, log)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        log({"part": "environment", **environment(cuda)})
        part_c(args, log, cuda)
        part_d(args, log, cuda)
    elif args.smoke:
        part_c(args, log, torch.device("cpu"))
        part_d(args, log, torch.device("cpu"))
    else:
        log({"part": "C/D", "skipped": "no CUDA device: the 2:4 GEMM and GPU model parts"})
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in lines)
    a = [r for r in lines if str(r.get("part", "")).startswith("A ")]
    big = [r for r in a if r["batch"] >= 16]
    worst = min((r["measured_over_predicted"] for r in big), default=float("nan"))
    worst_mac = min((r["measured_over_predicted_mac_ratio"] for r in big), default=float("nan"))
    print(
        f"# part A, batch >= 16: worst measured / layer-time prediction = {worst:.2f} (goal >= 0.70); "
        f"worst measured / MAC ratio = {worst_mac:.2f}"
    )


if __name__ == "__main__":
    main()
