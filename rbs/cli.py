"""The ``rbs`` command line: the single composition root.

Each subcommand maps its flags to one library call. User errors (:class:`UserError`, attack input
and configuration errors) print one line to stderr and exit with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rbs.export_cli import add_export_parser
from robustbench_sparse import __version__
from robustbench_sparse.errors import UserError

logger = logging.getLogger("robustbench_sparse")

Handler = Callable[[argparse.Namespace], int]


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("robustbench_sparse", "attacks", "evaluations", "rbs"):
        logging.getLogger(name).setLevel(level)


def _bool_flag(parser: argparse.ArgumentParser, name: str, help_: str) -> None:
    parser.add_argument(
        f"--{name}", action=argparse.BooleanOptionalAction, default=None, help=help_
    )


# ----------------------------------------------------------------------------------------- train
def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a dense or Campfire-sparse checkpoint",
        description="Train one checkpoint. Flags override --config, which overrides the "
        "per-dataset defaults. --sparsity 0 trains the dense baseline.",
    )
    p.add_argument("--config", type=Path, help="TOML file with [data] [model] [train] [sparsity]")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--name", help="checkpoint name (default: the --out directory name)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", help="digits (default), mnist, fashion-mnist, cifar10, ...")
    g.add_argument("--data-root", help="where torchvision datasets live")
    g.add_argument("--download", action="store_true", default=None, help="allow downloading")
    g.add_argument("--train-limit", type=int, help="use at most N training examples")
    g.add_argument(
        "--test-limit", type=int, help="use N test examples (class-balanced, fixed seed)"
    )
    g.add_argument(
        "--image-size",
        type=int,
        help="imagefolder: resize to S x S (default: the images' own size, if uniform)",
    )
    g.add_argument(
        "--mean",
        help="imagefolder: per-channel mean, e.g. 0.49,0.48,0.45 (default: "
        "computed on the training split)",
    )
    g.add_argument("--std", help="imagefolder: per-channel std (with --mean)")
    g = p.add_argument_group("model")
    g.add_argument("--arch", help="model name (see `rbs models`); default small_cnn")
    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"])
    g.add_argument("--lr", type=float)
    g.add_argument("--momentum", type=float)
    _bool_flag(g, "nesterov", "Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-schedule", choices=["constant", "cosine", "step", "multistep"])
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--milestones", help="comma-separated epochs for --lr-schedule multistep")
    g.add_argument("--gamma", type=float, help="LR decay factor for step/multistep")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    _bool_flag(g, "amp", "mixed precision on CUDA (default on)")
    g = p.add_argument_group("Campfire sparsity")
    g.add_argument("--sparsity", type=float, help="target sparsity in [0, 1); 0 = dense")
    g.add_argument("--granularity", choices=["window", "channel", "combined", "unstructured"])
    g.add_argument("--initial-sparsity", type=float)
    g.add_argument("--prune-start", type=float, help="epoch where pruning starts")
    g.add_argument("--prune-end", type=float, help="epoch where masks freeze")
    g.add_argument("--update-every", type=int, help="optimizer steps between mask updates")
    g.add_argument("--include", action="append", help="prune only layers matching (fnmatch)")
    g.add_argument("--exclude", action="append", help="never prune layers matching (fnmatch)")
    _bool_flag(g, "prune-first-conv", "also prune the first conv (default: dense)")
    _bool_flag(g, "prune-classifier", "also prune the classifier (default: dense)")
    g.add_argument(
        "--method",
        choices=["campfire", "gmp", "random", "grasp", "filter", "hydra"],
        help="pruning method (default campfire; see docs/ARCHITECTURE.md, pruning methods)",
    )
    g.add_argument(
        "--random-distribution",
        choices=["uniform", "erk"],
        help="layer-wise densities of --method random (default uniform)",
    )
    g.add_argument("--grasp-batches", type=int, help="batches GraSP scores on (default 4)")
    g.add_argument(
        "--hydra-score-epochs", type=int, help="passes HYDRA learns its scores for (default 1)"
    )
    g.add_argument("--hydra-score-lr", type=float, help="HYDRA score learning rate (default 0.1)")
    g = p.add_argument_group("adversarial training (docs/ARCHITECTURE.md, adversarial training)")
    g.add_argument(
        "--adversarial",
        choices=["none", "pgd", "trades", "fast"],
        help="none (default, standard training), pgd (Madry), trades (Zhang), fast (FGSM-RS, Wong)",
    )
    g.add_argument("--adv-norm", choices=["linf", "l2"], help="training threat model norm")
    g.add_argument("--adv-eps", help="training budget in [0,1] pixel units, e.g. 0.1 or 8/255")
    g.add_argument("--adv-steps", type=int, help="PGD / TRADES ascent steps (default 10)")
    g.add_argument("--adv-step-size", help="absolute step size, e.g. 2/255")
    g.add_argument(
        "--adv-rel-step-size",
        help="step size relative to eps (default pgd/trades 2.5/steps, fast 1.25)",
    )
    g.add_argument("--trades-beta", type=float, help="TRADES trade-off beta (default 6)")
    g.add_argument("--adv-eps-warmup", type=float, help="epochs of linear eps warm-up (default 0)")
    g.add_argument(
        "--adv-bn-mode", choices=["train", "eval"], help="BatchNorm while crafting (default train)"
    )
    g.add_argument("--adv-val-steps", type=int, help="PGD steps of the robust validation accuracy")
    g.add_argument(
        "--val-fraction",
        type=float,
        help="training examples held out for best/ selection (default 0.1; 0 = no best/)",
    )
    g = p.add_argument_group("recipes and scale-out (torchrun DDP)")
    g.add_argument("--recipe", help="take [data] [model] [train] [sparsity] from a shipped recipe")
    _add_nproc(g)
    _bool_flag(g, "sync-bn", "DDP: SyncBatchNorm across processes (default off)")
    _bool_flag(g, "scale-lr", "DDP: lr x number of processes, linear scaling (default off)")
    p.set_defaults(handler=_cmd_train)


def _cmd_train(args: argparse.Namespace) -> int:
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.config import load_toml
    from robustbench_sparse.train_job import run_train_job, train_job_from_config

    launched = _launch_torchrun(args)
    if launched is not None:
        return launched
    if args.recipe and args.config:
        raise UserError("give --config or --recipe, not both")
    config = load_toml(args.config) if args.config else {}
    if args.recipe:
        from robustbench_sparse.recipes import load_recipe, training_sections

        config = training_sections(load_recipe(args.recipe))
    milestones = None
    if args.milestones:
        milestones = [_parse_float(v, "--milestones") for v in args.milestones.split(",")]
    job = train_job_from_config(
        config,
        data_overrides={
            "dataset": args.dataset,
            "data_root": args.data_root,
            "download": args.download,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "image_size": args.image_size,
            "mean": _parse_floats(args.mean, "--mean"),
            "std": _parse_floats(args.std, "--std"),
        },
        train_overrides={
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
            "lr": args.lr,
            "momentum": args.momentum,
            "nesterov": args.nesterov,
            "weight_decay": args.weight_decay,
            "lr_schedule": args.lr_schedule,
            "warmup_epochs": args.warmup_epochs,
            "milestones": milestones,
            "gamma": args.gamma,
            "label_smoothing": args.label_smoothing,
            "seed": args.seed,
            "device": args.device,
            "amp": args.amp,
            "sync_bn": args.sync_bn,
            "scale_lr": args.scale_lr,
            "val_fraction": args.val_fraction,
        },
        sparsity_overrides={
            "target": args.sparsity,
            "granularity": args.granularity,
            "initial": args.initial_sparsity,
            "start": args.prune_start,
            "end": args.prune_end,
            "update_every": args.update_every,
            "include": args.include,
            "exclude": args.exclude,
            "prune_first_conv": args.prune_first_conv,
            "prune_classifier": args.prune_classifier,
            "method": args.method,
            "random_distribution": args.random_distribution,
            "grasp_batches": args.grasp_batches,
            "hydra_score_epochs": args.hydra_score_epochs,
            "hydra_score_lr": args.hydra_score_lr,
        },
        adversarial_overrides={
            "method": args.adversarial,
            "norm": args.adv_norm,
            "eps": _parse_float(args.adv_eps, "--adv-eps") if args.adv_eps else None,
            "steps": args.adv_steps,
            "step_size": (
                _parse_float(args.adv_step_size, "--adv-step-size") if args.adv_step_size else None
            ),
            "rel_step_size": (
                _parse_float(args.adv_rel_step_size, "--adv-rel-step-size")
                if args.adv_rel_step_size
                else None
            ),
            "trades_beta": args.trades_beta,
            "eps_warmup_epochs": args.adv_eps_warmup,
            "bn_mode": args.adv_bn_mode,
            "val_steps": args.adv_val_steps,
        },
        arch=args.arch,
        name=args.name,
    )
    ckpt = run_train_job(job, args.out, overwrite=args.overwrite, resume=args.resume)
    if not rdist.is_main():
        return 0
    meta = ckpt.meta
    report = meta.get("sparsity_report") or {}
    print(
        f"checkpoint: {args.out}  ({meta['arch']} on {meta['dataset']}, {meta['granularity']})\n"
        f"clean test accuracy: {meta['clean_accuracy']:.4f} "
        f"({meta['test_correct']}/{meta['test_n']})"
    )
    if meta["granularity"] != "dense":
        print(
            f"sparsity: target {meta['sparsity_target']:.3f}, achieved "
            f"{report.get('achieved_pruned', 0.0):.4f} of the {report.get('numel_pruned', 0):,} "
            f"weights in pruned layers; {report.get('achieved_all', 0.0):.4f} of all "
            f"{report.get('numel_all', 0):,} conv/linear weights"
        )
    return 0


# --------------------------------------------------------------------------------------- inspect
def _add_inspect(sub: Any) -> None:
    p = sub.add_parser("inspect", help="per-layer sparsity and accuracy of a checkpoint")
    p.add_argument(
        "checkpoint", type=Path, help="checkpoint directory, .safetensors, or .pt/.pth state dict"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--arch", help="architecture of a plain .pt/.pth state dict (with --dataset)")
    p.add_argument("--dataset", help="dataset of a plain state dict (gives the class count)")
    p.add_argument("--data-root", help="where the dataset lives (imagefolder: its class folders)")
    _add_normalize(p)
    p.set_defaults(handler=_cmd_inspect)


def _add_normalize(parser: Any) -> None:
    parser.add_argument(
        "--normalize",
        help="plain state dicts: input normalization the network expects: dataset (default: "
        "the dataset's mean/std), none (raw [0,1] inputs), or MEAN,STD",
    )


def _cmd_inspect(args: argparse.Namespace) -> int:
    from robustbench_sparse.checkpoint import load_checkpoint

    ckpt = load_checkpoint(
        args.checkpoint,
        arch=args.arch,
        dataset=args.dataset,
        data_root=args.data_root,
        normalize=args.normalize,
    )
    meta = ckpt.meta
    # Recomputed from the weights just loaded from disk, not copied from the JSON (a plain state
    # dict: granularity detected from its zeros).
    report = ckpt.sparsity_report()
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
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{ckpt.name}: {meta['arch']} on {meta['dataset']}, granularity {ckpt.granularity}")
    print(report.format_table())
    acc = meta.get("clean_accuracy")
    if acc is not None:
        print(f"clean test accuracy: {acc:.4f} ({meta.get('test_correct')}/{meta.get('test_n')})")
    return 0


# ---------------------------------------------------------------------------------------- models
def _add_models(sub: Any) -> None:
    p = sub.add_parser("models", help="list registered model names")
    p.set_defaults(handler=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
    from robustbench_sparse.datasets import list_datasets
    from robustbench_sparse.models import list_models

    print("models:   " + ", ".join(list_models()) + ", tv:<any torchvision classifier>")
    print("datasets: " + ", ".join(list_datasets()))
    return 0


# ---------------------------------------------------------------------------------------- attack
def _add_attack(sub: Any) -> None:
    p = sub.add_parser(
        "attack",
        help="attack checkpoints over an epsilon grid",
        description="Attack one or more checkpoints with FGSM / PGD / C&W over epsilon grids and "
        "write a tidy results table. Re-running the same command resumes.",
    )
    p.add_argument("--checkpoint", action="append", type=Path, required=True, help="repeatable")
    p.add_argument("--attack", action="append", help="fgsm, pgd, pgd-l2, cw, ... (repeatable)")
    _add_protocol(p, "default: quick, or the hand-picked --attack list (not both)")
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
    _add_normalize(p)
    p.add_argument("--out", type=Path, required=True, help="results directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-report", action="store_true", help="skip figures and report")
    _add_nproc(p)
    p.set_defaults(handler=_cmd_attack)


def _add_protocol(parser: Any, default: str) -> None:
    parser.add_argument(
        "--protocol",
        help="evaluation protocol: quick (FGSM + PGD-20 + C&W), standard (+ AutoAttack, FMN), "
        f"thorough (+ AutoAttack plus, PGD-100 x 5); {default}",
    )


def _checked_protocol(name: str | None, with_attacks: bool) -> str | None:
    from evaluations.engine.protocols import get_protocol

    if name is None:
        return None
    get_protocol(name)  # one line listing the valid names
    if with_attacks:
        raise UserError("give --protocol or --attack, not both")
    return name


def _parse_param(text: str) -> tuple[str, str, Any]:
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


def _cmd_attack(args: argparse.Namespace) -> int:
    from rbs.attack_job import AttackRunRequest, run_attack_command
    from robustbench_sparse import distributed as rdist

    launched = _launch_torchrun(args)
    if launched is not None:
        return launched
    params: dict[str, dict[str, Any]] = {}
    for text in args.param:
        attack, key, value = _parse_param(text)
        params.setdefault(attack, {})[key] = value
    request = AttackRunRequest(
        checkpoints=tuple(args.checkpoint),
        attacks=tuple(args.attack or ["fgsm", "pgd", "cw"]),
        protocol=_checked_protocol(args.protocol, bool(args.attack)),
        backend=args.backend,
        params=params,
        linf_epsilons=_parse_eps(args.eps, "--eps") if args.eps else None,
        l2_epsilons=_parse_eps(args.eps_l2, "--eps-l2") if args.eps_l2 else None,
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
        command=_command_line(getattr(args, "argv", None)),
    )
    if not rdist.is_main():
        return 0
    print(f"results: {outcome.results_dir / 'results.csv'}")
    if outcome.report_html is not None:
        print(f"report:  {outcome.report_html}")
    return 0


# ------------------------------------------------------------------------------ plot / report
def _add_plot_report(sub: Any) -> None:
    p = sub.add_parser("plot", help="draw the figures of a results directory")
    p.add_argument("results", type=Path)
    p.set_defaults(handler=_cmd_plot)
    p = sub.add_parser("report", help="write report.md and report.html for a results directory")
    p.add_argument("results", type=Path)
    p.set_defaults(handler=_cmd_report)


def _results_dir(path: Path) -> Path:
    if (path / "results" / "results.csv").is_file():
        return path / "results"  # an `rbs run` output directory
    if not (path / "results.csv").is_file() and not (path / "results.parquet").is_file():
        raise UserError(f"{str(path)!r} holds no results.csv; run `rbs attack` or `rbs run` first")
    return path


def _cmd_plot(args: argparse.Namespace) -> int:
    from evaluations.present.plots import plot_all

    paths = plot_all(_results_dir(args.results))
    for path in paths:
        print(path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from evaluations.present.report import write_report

    md, html = write_report(_results_dir(args.results))
    print(f"report: {html}\n        {md}")
    return 0


# ------------------------------------------------------------------------------------------- run
def _add_run(sub: Any) -> None:
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
    _add_nproc(p)
    p.add_argument("--out", type=Path, default=Path("runs/default"), help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument(
        "--limit", type=int, help="attack only N test examples (class-balanced, fixed seed)"
    )
    _add_protocol(p, "replaces the config's [attack] protocol / attacks (default: the config's)")
    p.add_argument("--epochs", type=int, help="override the training epochs of every model")
    p.add_argument("--device", help="training device: auto, cpu, cuda")
    p.add_argument("--print-default-config", action="store_true", help="print it and exit")
    p.set_defaults(handler=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from rbs.run_job import default_config_text, plan_experiment, run_experiment
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.config import load_toml
    from robustbench_sparse.recipes import load_recipe, recipe_names

    if args.print_default_config:
        print(default_config_text(), end="")
        return 0
    launched = _launch_torchrun(args)
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
        protocol=_checked_protocol(args.protocol, False),
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
        command=_command_line(getattr(args, "argv", None)),
    )
    if not rdist.is_main():
        return 0
    print(f"results: {outcome.results_dir / 'results.csv'}")
    print(f"report:  {outcome.report_html}")
    print(f"         {outcome.report_md}")
    print(f"finished in {outcome.seconds:.0f}s")
    return 0


# --------------------------------------------------------------------------------------- recipes
def _add_recipes(sub: Any) -> None:
    p = sub.add_parser(
        "recipes",
        help="list the shipped experiment recipes (or print one)",
        description="List the shipped recipes with their expected runtime and hardware; with "
        "NAME print that recipe's TOML (run it with `rbs run --recipe NAME`).",
    )
    p.add_argument("name", nargs="?", help="print this recipe's TOML")
    p.set_defaults(handler=_cmd_recipes)


def _cmd_recipes(args: argparse.Namespace) -> int:
    from robustbench_sparse.recipes import DEFAULT_RECIPE, list_recipes, recipe_text

    if args.name:
        print(recipe_text(args.name), end="")
        return 0
    for r in list_recipes():
        default = " (default)" if r.name == DEFAULT_RECIPE else ""
        print(f"{r.name}{default}\n  {r.description}\n  runtime:  {r.runtime}")
        print(f"  hardware: {r.hardware}")
    return 0


# ------------------------------------------------------------------------------- scale-out
def _add_nproc(parser: Any) -> None:
    parser.add_argument(
        "--nproc",
        type=int,
        help="run N processes on this machine with torchrun (DDP: one per GPU, or CPU/gloo)",
    )


def _strip_nproc(words: Sequence[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--nproc":
            skip = True
        elif not word.startswith("--nproc="):
            out.append(word)
    return out


def _launch_torchrun(args: argparse.Namespace) -> int | None:
    """Re-run this very command under ``torchrun --standalone --nproc_per_node N``.

    Returns torchrun's exit status, or ``None`` when this process should do the work itself
    (no ``--nproc``, ``--nproc 1``, or already launched by torchrun).
    """
    import shlex
    import subprocess

    nproc = getattr(args, "nproc", None)
    if nproc is None:
        return None
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1 (got {nproc})")
    if "TORCHELASTIC_RUN_ID" in os.environ or "LOCAL_RANK" in os.environ:
        logger.warning("--nproc is ignored: this process was already started by torchrun")
        return None
    if nproc == 1:
        return None
    words = _strip_nproc(getattr(args, "argv", None) or sys.argv[1:])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "rbs",
        *words,
    ]
    logger.info("launching: %s", shlex.join(cmd))
    return subprocess.run(cmd, check=False).returncode


# ----------------------------------------------------------------------------------------- utils
def _command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``argv`` given to :func:`main`, else ``sys.argv``."""
    import shlex

    words = list(argv) if argv is not None else sys.argv[1:]
    return "rbs " + " ".join(shlex.quote(a) for a in words)


def _parse_eps(text: str, flag: str) -> list[float]:
    values = [_parse_float(v, flag) for v in text.split(",") if v.strip()]
    if not values:
        raise UserError(f"{flag}: empty epsilon list")
    return values


def _parse_floats(text: str | None, flag: str) -> list[float] | None:
    """``"0.49,0.48,0.45"`` -> ``[0.49, 0.48, 0.45]``; ``None`` passes through."""
    if text is None:
        return None
    return [_parse_float(v, flag) for v in text.split(",")]


def _parse_float(text: str, flag: str) -> float:
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UserError(f"{flag}: {text!r} is not a number (use e.g. 0.1 or 8/255)") from None
    if not math.isfinite(value):
        raise UserError(f"{flag}: {text!r} is not a finite number")
    return value


_EXTRA_COMMANDS: list[Callable[[Any], None]] = []


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser for all subcommands."""
    parser = argparse.ArgumentParser(
        prog="rbs",
        description="robustbench-sparse: train dense and Campfire structured-sparse CNNs and "
        "measure their adversarial robustness.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (
        _add_run,
        _add_train,
        _add_inspect,
        _add_attack,
        _add_plot_report,
        _add_models,
        _add_recipes,
        add_export_parser,
        *_EXTRA_COMMANDS,
    ):
        add(sub)
    for sp in sub.choices.values():
        for action in sp._actions:
            _case_insensitive_choices(action)
        sp.add_argument(
            "--threads",
            type=int,
            default=argparse.SUPPRESS,
            help="torch CPU threads (default: $RBS_THREADS, else half the usable CPUs, at least 1; "
            "see robustbench_sparse/threads.py)",
        )
    return parser


def _case_insensitive_choices(action: argparse.Action) -> None:
    """Let ``--granularity WINDOW`` mean ``window``: string choices match ignoring case."""
    choices = action.choices
    if not choices or action.type is not None or not all(isinstance(c, str) for c in choices):
        return
    by_lower = {str(c).lower(): str(c) for c in choices}

    def convert(text: str) -> str:
        return by_lower.get(text.lower(), text)

    convert.__name__ = action.dest  # argparse names the type in its error message
    action.type = convert


def _did_you_mean(parser: argparse.ArgumentParser, extra: Sequence[str], command: str) -> str:
    """``unrecognized arguments`` with the nearest option of the subcommand for each typo."""
    import difflib

    sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sp = sub_action.choices[command]
    options = [o for a in sp._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for word in extra:
        if word.startswith("-"):
            flag = word.split("=", 1)[0]
            close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
            if close:
                hints.append(f"{flag} -> did you mean {close[0]}?")
    message = f"unrecognized arguments: {' '.join(extra)}"
    return message + ("; " + "; ".join(hints) if hints else "")


def _user_error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UserError]
    try:
        from attacks import AttackConfigError, AttackInputError

        types += [AttackConfigError, AttackInputError]
    except ImportError:  # pragma: no cover - attacks is part of the distribution
        pass
    return tuple(types)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if args.command is None:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        # the subcommand's usage and the nearest flag, not the top-level usage
        sub_action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub_action.choices[args.command].error(_did_you_mean(parser, extra, args.command))
    if args.command is None:
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    args.argv = (
        [str(a) for a in argv] if argv is not None else sys.argv[1:]
    )  # recorded as the command
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.threads import apply_threads

    try:
        apply_threads(getattr(args, "threads", None))
        # Under torchrun (WORLD_SIZE > 1) every process joins the group here; only rank 0 logs
        # progress (the others log warnings and errors).
        with rdist.session():
            if not rdist.is_main():
                _setup_logging(0, True)
            return int(args.handler(args))
    except _user_error_types() as exc:
        if args.debug:
            raise
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    except KeyboardInterrupt:
        message = None
    # Printed once the exception (and the progress bars its frames hold) is released, so the
    # error is the last line on stderr.
    if message is None:
        hint = (
            "; re-run the same command to resume (finished work is kept)"
            if args.command in ("run", "attack")
            else ("; re-run with --resume to continue" if args.command == "train" else "")
        )
        print(f"rbs {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    print(f"rbs {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
