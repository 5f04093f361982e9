"""The ``rbs`` subcommands: each module adds its parser and maps the flags to one library call.

:mod:`rbs.cli` registers them (``add_parser(subparsers)``); shared flag helpers live in
:mod:`rbs.commands.common`.
"""
