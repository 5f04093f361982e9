"""The ``rbs`` command line: the single composition root.

Each subcommand (a module of :mod:`rbs.commands`) maps its flags to one library call. User errors
(:class:`UserError`, attack input and configuration errors) print one line to stderr and exit with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rbs.commands import attack, certify, cost, misc, prune, run, train
from rbs.commands.common import strip_nproc as _strip_nproc  # noqa: F401 (tests import it here)
from rbs.export_cli import add_export_parser
from rbs.speed_cli import add_speed_parser
from robustbench_sparse import __version__
from robustbench_sparse.errors import UserError

logger = logging.getLogger("robustbench_sparse")

Handler = Callable[[argparse.Namespace], int]

#: the subcommands, in the order ``rbs --help`` lists them
_COMMANDS: tuple[Callable[[Any], Any], ...] = (
    run.add_parser,
    train.add_parser,
    prune.add_parser,
    misc.add_inspect,
    cost.add_parser,
    attack.add_parser,
    certify.add_parser,
    misc.add_plot_report,
    misc.add_models,
    misc.add_recipes,
    add_export_parser,
    add_speed_parser,
)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 0 else logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname).1s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("robustbench_sparse", "attacks", "evaluations", "rbs"):
        logging.getLogger(name).setLevel(level)


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
    for add in _COMMANDS:
        add(sub)
    for sp in sub.choices.values():
        for action in sp._actions:
            _case_insensitive_choices(action)
        sp.add_argument(
            "--threads",
            type=int,
            default=argparse.SUPPRESS,
            help="torch CPU threads, fixed (default: $RBS_THREADS, else all usable CPUs while other "
            "processes use under half a CPU and half of them otherwise, re-measured between cells "
            "and epochs; see robustbench_sparse/threads.py)",
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
    print(
        f"rbs {args.command}: error: {_for_command(parser, args.command, message)}", file=sys.stderr
    )
    return 2


def _for_command(parser: argparse.ArgumentParser, command: str, message: str) -> str:
    """The message with flags ``command`` lacks worded as its ``--set`` (:mod:`rbs.hints`)."""
    from rbs.hints import adapt_hint, command_options

    return adapt_hint(message, command, command_options(parser)[command])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
