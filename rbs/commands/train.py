"""``rbs train``: flags -> one :class:`~robustbench_sparse.train_job.TrainJob` -> its training."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.commands.common import add_nproc, bool_flag, launch_torchrun, parse_float, parse_floats
from robustbench_sparse.errors import UserError


def add_parser(sub: Any) -> None:
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
    bool_flag(g, "nesterov", "Nesterov momentum (SGD)")
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--lr-schedule", choices=["constant", "cosine", "step", "multistep"])
    g.add_argument("--warmup-epochs", type=float)
    g.add_argument("--milestones", help="comma-separated epochs for --lr-schedule multistep")
    g.add_argument("--gamma", type=float, help="LR decay factor for step/multistep")
    g.add_argument("--label-smoothing", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    bool_flag(g, "amp", "mixed precision on CUDA (default on)")
    g = p.add_argument_group("Campfire sparsity")
    g.add_argument("--sparsity", type=float, help="target sparsity in [0, 1); 0 = dense")
    g.add_argument("--granularity", choices=["window", "channel", "combined", "unstructured"])
    g.add_argument("--initial-sparsity", type=float)
    g.add_argument("--prune-start", type=float, help="epoch where pruning starts")
    g.add_argument("--prune-end", type=float, help="epoch where masks freeze")
    g.add_argument("--update-every", type=int, help="optimizer steps between mask updates")
    g.add_argument("--include", action="append", help="prune only layers matching (fnmatch)")
    g.add_argument("--exclude", action="append", help="never prune layers matching (fnmatch)")
    bool_flag(g, "prune-first-conv", "also prune the first conv (default: dense)")
    bool_flag(g, "prune-classifier", "also prune the classifier (default: dense)")
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
    add_nproc(g)
    bool_flag(g, "sync-bn", "DDP: SyncBatchNorm across processes (default off)")
    bool_flag(g, "scale-lr", "DDP: lr x number of processes, linear scaling (default off)")
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.config import load_toml
    from robustbench_sparse.train_job import run_train_job, train_job_from_config

    launched = launch_torchrun(args)
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
        milestones = [parse_float(v, "--milestones") for v in args.milestones.split(",")]
    job = train_job_from_config(
        config,
        data_overrides={
            "dataset": args.dataset,
            "data_root": args.data_root,
            "download": args.download,
            "train_limit": args.train_limit,
            "test_limit": args.test_limit,
            "image_size": args.image_size,
            "mean": parse_floats(args.mean, "--mean"),
            "std": parse_floats(args.std, "--std"),
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
            "eps": parse_float(args.adv_eps, "--adv-eps") if args.adv_eps else None,
            "steps": args.adv_steps,
            "step_size": (
                parse_float(args.adv_step_size, "--adv-step-size") if args.adv_step_size else None
            ),
            "rel_step_size": (
                parse_float(args.adv_rel_step_size, "--adv-rel-step-size")
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
