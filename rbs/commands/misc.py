"""The small subcommands: ``rbs inspect``, ``models``, ``plot``, ``report`` and ``recipes``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rbs.arch_flags import parse_arch_kwargs
from rbs.commands.common import add_normalize, add_plain_state_dict_flags, add_state_dict_key
from robustbench_sparse.errors import UserError


# --------------------------------------------------------------------------------------- inspect
def add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="per-layer sparsity and accuracy of a checkpoint")
    p.add_argument(
        "checkpoint", type=Path, help="checkpoint directory, .safetensors, or .pt/.pth state dict"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    add_plain_state_dict_flags(p, "dataset of a plain state dict (gives the class count)")
    p.add_argument("--data-root", help="where the dataset lives (imagefolder: its class folders)")
    add_normalize(p)
    add_state_dict_key(p)
    p.set_defaults(handler=cmd_inspect)


def cmd_inspect(args: argparse.Namespace) -> int:
    from robustbench_sparse.checkpoint import load_checkpoint

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
    meta = ckpt.meta
    # Recomputed from the weights just loaded from disk, not copied from the JSON (a plain state
    # dict: granularity detected from its zeros).
    report = ckpt.sparsity_report()
    from robustbench_sparse.sparsity.methods import filter_sparsity_figures

    # Whole zero filters: the filter sparsity and the (larger) share of weights thinning removes.
    filtered = "filter" in (ckpt.granularity, report.granularity)
    figures = filter_sparsity_figures(ckpt.model, ckpt.info.input_shape) if filtered else None
    if args.json:
        out = {
            "name": ckpt.name,
            "arch": meta["arch"],
            "dataset": meta["dataset"],
            "granularity": ckpt.granularity,
            "sparsity_target": ckpt.sparsity_target,
            "clean_accuracy": meta.get("clean_accuracy"),
            "test_correct": meta.get("test_correct"),
            "test_n": meta.get("test_n"),
            "sparsity_report": report.to_dict(),
            "filter_sparsity": figures,
            # a thinned model (rbs export --format thin, rbs prune --method filtersketch)
            "thin_widths": (meta.get("thin") or {}).get("widths"),
        }
        if meta.get("source") == "plain-state-dict":
            out["normalization"] = meta.get("normalization")
            out["state_dict_key"] = meta.get("state_dict_key")
        print(json.dumps(out, indent=2))
        return 0
    print(f"{ckpt.name}: {meta['arch']} on {meta['dataset']}, granularity {ckpt.granularity}")
    if meta.get("source") == "plain-state-dict":
        from robustbench_sparse.state_dicts import describe_normalization

        applied, how = describe_normalization(meta.get("normalization") or {})
        key = meta.get("state_dict_key")
        entry = f" (entry {key!r})" if key else ""
        print(f"plain state dict{entry}: inputs normalized with {applied}")
        print(f"  {how}")
    print(report.format_table())
    if (meta.get("thin") or {}).get("widths"):
        print(f"thinned: {len(meta['thin']['widths'])} modules rebuilt at recorded widths")
    if figures is not None:
        print(
            f"filter sparsity (masked filters / filters): {figures['filter_sparsity']:.2%} "
            f"({figures['filters_masked']}/{figures['filters']})"
        )
        removed = figures["thinned_removed"]
        said = "not computed (cannot be thinned)" if removed is None else f"{removed:.2%}"
        print(f"weights removed by thinning (of conv/linear weights): {said}")
    acc = meta.get("clean_accuracy")
    if acc is not None:
        print(f"clean test accuracy: {acc:.4f} ({meta.get('test_correct')}/{meta.get('test_n')})")
    return 0


# ---------------------------------------------------------------------------------------- models
def add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list registered model names")
    p.set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from robustbench_sparse.datasets import list_datasets
    from robustbench_sparse.models import list_models

    print(
        "models:   "
        + ", ".join(list_models())
        + ", tv:<any torchvision classifier>, <package.module>:<Class> (your own, see README)"
    )
    print("datasets: " + ", ".join(list_datasets()))
    return 0


# ------------------------------------------------------------------------------ plot / report
def add_plot_report(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw the figures of a results directory")
    p.add_argument("results", type=Path)
    p.set_defaults(handler=cmd_plot)
    p = sub.add_parser("report", help="write report.md and report.html for a results directory")
    p.add_argument("results", type=Path)
    p.set_defaults(handler=cmd_report)


def results_dir(path: Path) -> Path:
    if (path / "results" / "results.csv").is_file():
        return path / "results"  # an `rbs run` output directory
    if not (path / "results.csv").is_file() and not (path / "results.parquet").is_file():
        raise UserError(f"{str(path)!r} holds no results.csv; run `rbs attack` or `rbs run` first")
    return path


def cmd_plot(args: argparse.Namespace) -> int:
    from evaluations.present.plots import plot_all

    paths = plot_all(results_dir(args.results))
    for path in paths:
        print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evaluations.present.report import write_report

    md, html = write_report(results_dir(args.results))
    print(f"report: {html}\n        {md}")
    return 0


# --------------------------------------------------------------------------------------- recipes
def add_recipes(sub: Any) -> None:
    p = sub.add_parser(
        "recipes",
        help="list the shipped experiment recipes (or print one)",
        description="List the shipped recipes with their expected runtime and hardware; with "
        "NAME print that recipe's TOML (run it with `rbs run --recipe NAME`).",
    )
    p.add_argument("name", nargs="?", help="print this recipe's TOML")
    p.set_defaults(handler=cmd_recipes)


def cmd_recipes(args: argparse.Namespace) -> int:
    from robustbench_sparse.recipes import DEFAULT_RECIPE, list_recipes, recipe_text

    if args.name:
        print(recipe_text(args.name), end="")
        return 0
    for r in list_recipes():
        default = " (default)" if r.name == DEFAULT_RECIPE else ""
        print(f"{r.name}{default}\n  {r.description}\n  runtime:  {r.runtime}")
        print(f"  hardware: {r.hardware}")
    return 0
