"""Flags and helpers shared by several subcommands (scale-out, normalization, protocol, numbers)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from attacks.params import parse_epsilon, parse_epsilon_list
from robustbench_sparse.errors import UserError

logger = logging.getLogger("robustbench_sparse")


NORMALIZE_HELP = (
    "plain state dicts: input normalization the network expects: dataset (default: the "
    "dataset's mean/std), none (raw [0,1] inputs), or MEAN,STD"
)


STATE_DICT_KEY_HELP = (
    "plain .pt/.pth files: the entry holding the weights, e.g. net, ema or model/ema "
    "(default: the one state dict the file holds)"
)


#: what ``rbs export`` / ``rbs speed`` read: checkpoint directories and the files inside them
_PRODUCT_CHECKPOINT_SUFFIXES = (".safetensors", ".json", ".rbsp")


def require_product_checkpoint(path: str | os.PathLike[str], command: str) -> None:
    """Refuse, in one line, anything but a checkpoint this product wrote, for commands without
    ``--arch``/``--dataset`` (``rbs export``, ``rbs speed``): a plain ``.pt`` state dict would
    otherwise get the loader's advice to pass flags these commands do not have. A path that does
    not exist is left to the loader's own message.

    Raises:
        UserError: ``path`` is a file other than ``.safetensors`` / ``.json`` / ``.rbsp``.
    """
    p = os.fspath(path)
    if not os.path.exists(p) or os.path.isdir(p) or p.endswith(_PRODUCT_CHECKPOINT_SUFFIXES):
        return
    raise UserError(
        f"rbs {command} reads checkpoints written by rbs train (a directory or its .safetensors); "
        f"{p} is not one. A plain .pt/.pth state dict is read by rbs inspect, rbs cost and "
        "rbs attack with --arch A --dataset D"
    )


def add_user_arch_flags(parser: Any) -> None:
    """``--arch`` / ``--trust-arch`` for commands that only rebuild checkpoints (``rbs export``,
    ``rbs speed``): a checkpoint of the user's own class is rebuilt only when named or trusted."""
    from rbs.arch_flags import TRUST_ARCH_HELP

    parser.add_argument(
        "--arch",
        help="your own package.module:Class, for a checkpoint that records it (rebuilding it "
        "imports that module)",
    )
    parser.add_argument("--trust-arch", action="store_true", help=TRUST_ARCH_HELP)


def add_plain_state_dict_flags(parser: Any, dataset_help: str) -> None:
    """``--arch``, ``--arch-kwargs``, ``--trust-arch`` and ``--dataset``: how a command that loads
    one checkpoint (inspect, cost, prune) rebuilds a plain .pt/.pth state dict or a user's class."""
    from rbs.arch_flags import ARCH_KWARGS_HELP, TRUST_ARCH_HELP

    parser.add_argument(
        "--arch",
        help="architecture of a plain .pt/.pth state dict (with --dataset); your own "
        "package.module:Class also lets a checkpoint that records it be rebuilt",
    )
    parser.add_argument("--arch-kwargs", metavar="KEY=VALUE,...", help=ARCH_KWARGS_HELP)
    parser.add_argument("--trust-arch", action="store_true", help=TRUST_ARCH_HELP)
    parser.add_argument("--dataset", help=dataset_help)


def add_normalize(parser: Any) -> None:
    parser.add_argument("--normalize", help=NORMALIZE_HELP)


def add_state_dict_key(parser: Any) -> None:
    """``--state-dict-key KEY`` (:data:`STATE_DICT_KEY_HELP`) for a command reading plain .pt files."""
    parser.add_argument("--state-dict-key", metavar="KEY", help=STATE_DICT_KEY_HELP)


def protocol_help(default: str) -> str:
    """The help of ``--protocol``: every shipped protocol (from the registry), then ``default``."""
    from evaluations.engine.protocols import PROTOCOLS

    names = "; ".join(f"{p.name} ({p.summary})" for p in PROTOCOLS.values())
    corruptions = "corruptions (15 common corruptions x severities 1-5 instead of attacks)"
    return f"evaluation protocol: {names}; {corruptions}; {default}"


def attack_help() -> str:
    """The help of ``--attack``: every registered attack of every backend (from the registry)."""
    from attacks import list_attacks, list_backends

    others = "; ".join(
        f"{b}: {', '.join(list_attacks(b))}" for b in list_backends() if b != "native"
    )
    return f"attack name, repeatable: {', '.join(list_attacks('native'))}; with --backend {others}"


def backend_help() -> str:
    """The help of ``--backend``: every registered backend (from the registry)."""
    from attacks import list_backends

    return f"where the attacks come from: {', '.join(list_backends())} (default: native)"


def checked_protocol(name: str | None, with_attacks: bool) -> str | None:
    """``--protocol NAME`` checked (one line listing the valid names); not with ``--attack``."""
    from evaluations.engine.protocols import get_protocol

    if name is None:
        return None
    if name != "corruptions":  # rbs.corruptions_job: no attacks
        get_protocol(name)  # one line listing the valid names
    if with_attacks:
        raise UserError("give --protocol or --attack, not both")
    return name


# ------------------------------------------------------------------------------- scale-out
def add_nproc(parser: Any) -> None:
    parser.add_argument(
        "--nproc",
        type=int,
        help="run N processes on this machine with torchrun (DDP: one per GPU, or CPU/gloo)",
    )


def strip_nproc(words: Sequence[str]) -> list[str]:
    """``words`` without ``--nproc N`` / ``--nproc=N`` (what torchrun re-runs)."""
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


def launch_torchrun(args: argparse.Namespace) -> int | None:
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
    words = strip_nproc(getattr(args, "argv", None) or sys.argv[1:])
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


# ------------------------------------------------------------------------------------ utils
def command_line(argv: Sequence[str] | None = None) -> str:
    """The command as typed: ``argv`` given to :func:`rbs.cli.main`, else ``sys.argv``."""
    import shlex

    words = list(argv) if argv is not None else sys.argv[1:]
    return "rbs " + " ".join(shlex.quote(a) for a in words)


def parse_eps(text: str, flag: str) -> list[float]:
    """``"0,2/255,8/255"`` -> a list of floats (fractions allowed; :mod:`attacks.params`)."""
    return parse_epsilon_list(text, what=flag)


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    """``"0.49,0.48,0.45"`` -> ``[0.49, 0.48, 0.45]``; ``None`` passes through."""
    if text is None:
        return None
    return [parse_float(v, flag) for v in text.split(",")]


def parse_float(text: str, flag: str) -> float:
    """A finite number from ``"0.1"`` or ``"8/255"``; anything else is a one-line user error."""
    return parse_epsilon(text, what=flag)
