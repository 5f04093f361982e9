"""``rbs train``: config layers -> one :class:`~robustbench_sparse.train_job.TrainJob` -> training.

The configuration is ``[data] [model] [train] [sparsity] [adversarial]`` and ``name``
(:data:`~robustbench_sparse.train_job.TRAIN_SCHEMA`): the dataset's defaults < ``--config`` (or
``--recipe``) < ``--set`` and the flags below, each an alias of one key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rbs.arch_flags import ARCH_KWARGS_HELP, parse_arch_kwargs
from rbs.commands.common import add_nproc, launch_torchrun, parse_float, parse_floats
from rbs.overrides import Alias, add_aliases, add_config_flags, command_line_layer
from robustbench_sparse.errors import UserError

_BOOL = argparse.BooleanOptionalAction


def _floats(text: str, flag: str) -> list[float] | None:
    return parse_floats(text, flag)


def _number(text: str, flag: str) -> float | None:
    """``"8/255"`` -> a float (an empty value: unset)."""
    return parse_float(text, flag) if text else None


def _milestones(text: str, flag: str) -> list[float] | None:
    return [parse_float(v, flag) for v in text.split(",")] if text else None


#: the flags most runs use; ``rbs train --help`` lists them first
EVERYDAY = (
    Alias("--dataset", "data.dataset", "digits (default), mnist, fashion-mnist, cifar10, ..."),
    Alias(
        "--arch",
        "model.arch",
        "model name (see `rbs models`) or your own package.module:Class (imported from "
        "PYTHONPATH); default small_cnn",
    ),
    Alias("--arch-kwargs", "model.kwargs", ARCH_KWARGS_HELP, convert=parse_arch_kwargs),
    Alias("--epochs", "train.epochs", type=int),
    Alias("--batch-size", "train.batch_size", type=int),
    Alias("--lr", "train.lr", type=float),
    Alias("--seed", "train.seed", type=int),
    Alias("--device", "train.device", "auto (default), cpu, cuda, cuda:N"),
    Alias("--sparsity", "sparsity.target", "target sparsity in [0, 1); 0 = dense", type=float),
    Alias(
        "--granularity",
        "sparsity.granularity",
        choices=("window", "channel", "combined", "unstructured", "nm"),
    ),
    Alias(
        "--method",
        "sparsity.method",
        "pruning method (default campfire; see docs/ARCHITECTURE.md, pruning methods)",
        choices=(
            "campfire",
            "gmp",
            "random",
            "grasp",
            "filter",
            "hydra",
            "tost",
            "autosparse",
            "campfire-ga",
        ),
    ),
)
NAME = (Alias("--name", "name", "checkpoint name (default: the --out directory name)"),)
DATA = (
    Alias("--data-root", "data.data_root", "where torchvision datasets live"),
    Alias("--download", "data.download", "allow downloading", action="store_true"),
    Alias("--train-limit", "data.train_limit", "use at most N training examples", type=int),
    Alias(
        "--test-limit",
        "data.test_limit",
        "use N test examples (class-balanced, fixed seed)",
        type=int,
    ),
    Alias(
        "--image-size",
        "data.image_size",
        "imagefolder: resize to S x S (default: the images' own size, if uniform)",
        type=int,
    ),
    Alias(
        "--mean",
        "data.mean",
        "imagefolder: per-channel mean, e.g. 0.49,0.48,0.45 (default: computed on the "
        "training split)",
        convert=_floats,
    ),
    Alias("--std", "data.std", "imagefolder: per-channel std (with --mean)", convert=_floats),
    Alias(
        "--augment",
        "data.augment",
        "training augmentation: auto (default: cifar crop-flip, svhn crop, imagefolder crop-flip, "
        "digits/mnist none), none, crop, crop-flip; flips are wrong for digits and text",
        choices=("auto", "none", "crop", "crop-flip"),
    ),
)
OPTIMISATION = (
    Alias("--optimizer", "train.optimizer", choices=("sgd", "adam", "adamw")),
    Alias("--momentum", "train.momentum", type=float),
    Alias("--nesterov", "train.nesterov", "Nesterov momentum (SGD)", action=_BOOL),
    Alias("--weight-decay", "train.weight_decay", type=float),
    Alias(
        "--lr-schedule", "train.lr_schedule", choices=("constant", "cosine", "step", "multistep")
    ),
    Alias("--warmup-epochs", "train.warmup_epochs", type=float),
    Alias(
        "--milestones",
        "train.milestones",
        "comma-separated epochs for --lr-schedule multistep",
        convert=_milestones,
    ),
    Alias("--gamma", "train.gamma", "LR decay factor for step/multistep", type=float),
    Alias("--label-smoothing", "train.label_smoothing", type=float),
    Alias("--amp", "train.amp", "mixed precision on CUDA (default on)", action=_BOOL),
)
SPARSITY = (
    Alias(
        "--nm",
        "sparsity.nm",
        "N:M of --granularity nm: keep N of every M input channels (default 2:4)",
    ),
    Alias("--initial-sparsity", "sparsity.initial", type=float),
    Alias("--prune-start", "sparsity.start", "epoch where pruning starts", type=float),
    Alias("--prune-end", "sparsity.end", "epoch where masks freeze", type=float),
    Alias(
        "--update-every", "sparsity.update_every", "optimizer steps between mask updates", type=int
    ),
    Alias("--include", "sparsity.include", "prune only layers matching (fnmatch)", action="append"),
    Alias(
        "--exclude", "sparsity.exclude", "never prune layers matching (fnmatch)", action="append"
    ),
    Alias(
        "--prune-first-conv",
        "sparsity.prune_first_conv",
        "also prune the first conv (default: dense)",
        action=_BOOL,
    ),
    Alias(
        "--prune-classifier",
        "sparsity.prune_classifier",
        "also prune the classifier (default: dense)",
        action=_BOOL,
    ),
    Alias(
        "--random-distribution",
        "sparsity.random_distribution",
        "layer-wise densities of --method random (default uniform)",
        choices=("uniform", "erk"),
    ),
    Alias(
        "--grasp-batches", "sparsity.grasp_batches", "batches GraSP scores on (default 4)", type=int
    ),
    Alias(
        "--hydra-score-epochs",
        "sparsity.hydra_score_epochs",
        "passes HYDRA learns its scores for (default 1)",
        type=int,
    ),
    Alias(
        "--hydra-score-lr",
        "sparsity.hydra_score_lr",
        "HYDRA score learning rate (default 0.1)",
        type=float,
    ),
    Alias(
        "--ga-alpha0",
        "sparsity.ga_alpha0",
        "--method autosparse / campfire-ga: initial gradient-annealing alpha (default 0.75)",
        type=float,
    ),
    Alias(
        "--ga-alpha-reset",
        "sparsity.ga_alpha_reset",
        "--method autosparse: alpha is 0 from epoch R x --prune-end on (default 0.9)",
        type=float,
    ),
    Alias(
        "--autosparse-threshold-init",
        "sparsity.autosparse_threshold_init",
        "--method autosparse: initial threshold logit s, threshold sigmoid(s) (default -5)",
        type=float,
    ),
    Alias(
        "--autosparse-threshold",
        "sparsity.autosparse_threshold",
        "--method autosparse: one threshold per layer (default) or per output channel",
        choices=("layer", "channel"),
    ),
    Alias(
        "--autosparse-threshold-decay",
        "sparsity.autosparse_threshold_decay",
        "--method autosparse: the thresholds' weight decay, STR's sparsity knob (default: "
        "--weight-decay)",
        type=float,
    ),
    Alias(
        "--autosparse-search-runs",
        "sparsity.autosparse_search_runs",
        "--method autosparse: up to N extra trainings search the thresholds' weight decay "
        "until the achieved sparsity is within --autosparse-tolerance of --sparsity "
        "(default 0: off)",
        type=int,
    ),
    Alias(
        "--autosparse-tolerance",
        "sparsity.autosparse_tolerance",
        "--method autosparse search: accepted |achieved - target| (default 0.02)",
        type=float,
    ),
    Alias(
        "--mask-from",
        "sparsity.mask_from",
        "--method tost: train this checkpoint's masks (same --arch; same --seed = LTH rewinding)",
    ),
    Alias(
        "--tost-mask",
        "sparsity.tost_mask",
        "--method tost without --mask-from: campfire (--granularity at init, default) or random",
        choices=("campfire", "random"),
    ),
    Alias(
        "--tost-activation",
        "sparsity.tost_activation",
        "--method tost: ghost activation annealed into ReLU by --prune-end (default swish)",
        choices=("swish", "softplus", "gelu", "relu"),
    ),
)
ADVERSARIAL = (
    Alias(
        "--adversarial",
        "adversarial.method",
        "none (default, standard training), pgd (Madry), trades (Zhang), fast (FGSM-RS, Wong), "
        "gaussian (noise for randomized smoothing, Cohen; with --noise-sigma), "
        "ibp (interval bound propagation, Gowal; linf)",
        choices=("none", "pgd", "trades", "fast", "gaussian", "ibp"),
    ),
    Alias("--adv-norm", "adversarial.norm", "training threat model norm", choices=("linf", "l2")),
    Alias(
        "--noise-sigma",
        "adversarial.sigma",
        "--adversarial gaussian: noise std in [0,1] pixel units, e.g. 0.25",
        convert=_number,
    ),
    Alias(
        "--adv-eps",
        "adversarial.eps",
        "training budget in [0,1] pixel units, e.g. 0.1 or 8/255",
        convert=_number,
    ),
    Alias("--adv-steps", "adversarial.steps", "PGD / TRADES ascent steps (default 10)", type=int),
    Alias(
        "--adv-step-size",
        "adversarial.step_size",
        "absolute step size, e.g. 2/255",
        convert=_number,
    ),
    Alias(
        "--adv-rel-step-size",
        "adversarial.rel_step_size",
        "step size relative to eps (default pgd/trades 2.5/steps, fast 1.25)",
        convert=_number,
    ),
    Alias(
        "--trades-beta", "adversarial.trades_beta", "TRADES trade-off beta (default 6)", type=float
    ),
    Alias(
        "--adv-eps-warmup",
        "adversarial.eps_warmup_epochs",
        "epochs of linear eps warm-up (default 0)",
        type=float,
    ),
    Alias(
        "--ibp-warmup",
        "adversarial.ibp_warmup_epochs",
        "--adversarial ibp: nominal-only epochs before the eps ramp (default 0)",
        type=float,
    ),
    Alias(
        "--ibp-kappa",
        "adversarial.ibp_kappa",
        "--adversarial ibp: final weight of the nominal loss; 1 -> this over the ramp (default 0.5)",
        type=float,
    ),
    Alias(
        "--adv-bn-mode",
        "adversarial.bn_mode",
        "BatchNorm while crafting (default train)",
        choices=("train", "eval"),
    ),
    Alias(
        "--adv-val-steps",
        "adversarial.val_steps",
        "PGD steps of the robust validation accuracy",
        type=int,
    ),
    Alias(
        "--val-fraction",
        "train.val_fraction",
        "training examples held out for best/ selection (default 0.1; 0 = no best/)",
        type=float,
    ),
)
SCALE_OUT = (
    Alias(
        "--sync-bn",
        "train.sync_bn",
        "DDP: SyncBatchNorm across processes (default off)",
        action=_BOOL,
    ),
    Alias(
        "--scale-lr",
        "train.scale_lr",
        "DDP: lr x number of processes, linear scaling (default off)",
        action=_BOOL,
    ),
)
#: every flag of ``rbs train`` that sets a config key
ALIASES = (*EVERYDAY, *NAME, *DATA, *OPTIMISATION, *SPARSITY, *ADVERSARIAL, *SCALE_OUT)

_GROUPS = (
    ("data", DATA),
    ("optimisation", OPTIMISATION),
    ("Campfire sparsity", SPARSITY),
    ("adversarial training (docs/ARCHITECTURE.md, adversarial training)", ADVERSARIAL),
)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a dense or Campfire-sparse checkpoint",
        description="Train one checkpoint. Flags and --set override --config, which overrides "
        "the per-dataset defaults. Every flag in brackets sets that config key. --sparsity 0 "
        "trains the dense baseline.",
    )
    g = p.add_argument_group("everyday")
    add_config_flags(
        g,
        "TOML file with [data] [model] [train] [sparsity] [adversarial] (and name = ...)",
        "sparsity.target=0.7",
    )
    g.add_argument("--out", type=Path, required=True, help="output directory")
    add_aliases(g, EVERYDAY)
    p._action_groups.insert(0, p._action_groups.pop())  # everyday first in --help
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    add_aliases(p, NAME)
    for title, aliases in _GROUPS:
        add_aliases(p.add_argument_group(title), aliases)
    g = p.add_argument_group("recipes and scale-out (torchrun DDP)")
    g.add_argument("--recipe", help="take [data] [model] [train] [sparsity] from a shipped recipe")
    add_nproc(g)
    add_aliases(g, SCALE_OUT)
    p.set_defaults(handler=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from robustbench_sparse import distributed as rdist
    from robustbench_sparse.train_job import TRAIN_SCHEMA, run_train_job, train_job_from_config

    launched = launch_torchrun(args)
    if launched is not None:
        return launched
    config = _config_file(args)
    job = train_job_from_config(config, command_line_layer(args, ALIASES, TRAIN_SCHEMA))
    ckpt = run_train_job(job, args.out, overwrite=args.overwrite, resume=args.resume)
    if rdist.is_main():
        _print_summary(args.out, ckpt.meta)
    return 0


def _config_file(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--config`` file or the ``--recipe``'s training sections (``{}``: neither)."""
    from robustbench_sparse.config import load_toml

    if args.recipe and args.config:
        raise UserError("give --config or --recipe, not both")
    if args.recipe:
        from robustbench_sparse.recipes import load_recipe, training_sections

        return training_sections(load_recipe(args.recipe))
    return load_toml(args.config) if args.config else {}


def _print_summary(out: Path, meta: dict[str, Any]) -> None:
    report = meta.get("sparsity_report") or {}
    print(
        f"checkpoint: {out}  ({meta['arch']} on {meta['dataset']}, {meta['granularity']})\n"
        f"clean test accuracy: {meta['clean_accuracy']:.4f} "
        f"({meta['test_correct']}/{meta['test_n']})"
    )
    augmentation = meta.get("augmentation") or {}
    if augmentation:
        off = "" if augmentation.get("applied") == "none" else "; --augment none turns it off"
        print(f"training augmentation: {augmentation.get('description')}{off}")
    if meta["granularity"] != "dense":
        print(
            f"sparsity: target {meta['sparsity_target']:.3f}, achieved "
            f"{report.get('achieved_pruned', 0.0):.4f} of the {report.get('numel_pruned', 0):,} "
            f"weights in pruned layers; {report.get('achieved_all', 0.0):.4f} of all "
            f"{report.get('numel_all', 0):,} conv/linear weights"
        )
