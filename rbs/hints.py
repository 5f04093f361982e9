"""Advice in error messages, worded for the command that shows it.

The library names the ``rbs train`` / ``rbs attack`` flag of a setting (``lower --prune-end``,
``pass --image-size S``); the same message can reach a command that sets it another way (``rbs
run`` takes ``[sparsity] end`` from its config or ``--set sparsity.end=...``). :func:`adapt_hint`
rewrites each flag the command lacks into the ``--set KEY=VALUE`` of the config key that flag
stands for, where the command's config accepts that key; flags it has are left as they are.
tests/test_rbs_hints.py checks that every flag named by a message a command can show is either
one of its options or rewritten here.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Mapping

from robustbench_sparse.config import ConfigSchema

__all__ = ["FLAG", "adapt_hint", "command_options", "config_keys", "flag_keys", "set_form"]

#: a ``--flag`` in a message (not a ``---`` rule, not part of a longer word)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# an upper-case placeholder after a flag: --image-size S, --data-root DIR
_PLACEHOLDER = re.compile(r" ([A-Z][A-Z_]*)\b")


def command_options(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """Subcommand -> every option string it accepts (the top-level ones included)."""
    top = {o for a in parser._actions for o in a.option_strings}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        name: top | {o for a in sp._actions for o in a.option_strings}
        for name, sp in sub.choices.items()
    }


def flag_keys() -> dict[str, str]:
    """``--flag`` -> the config key it sets (``"--prune-end"`` -> ``"sparsity.end"``), every command."""
    from rbs.commands import attack, run, train

    keys: dict[str, str] = {}
    for aliases in (train.ALIASES, attack.ALIASES, run.ALIASES):
        for alias in aliases:
            keys.setdefault(alias.flag, alias.key)
    return keys


def config_keys() -> dict[str, ConfigSchema]:
    """Subcommand -> the config schema its ``--set`` takes (commands with a config only)."""
    from rbs.attack_job import ATTACK_SCHEMA
    from rbs.run_job import RUN_SCHEMA
    from robustbench_sparse.train_job import TRAIN_SCHEMA

    return {"train": TRAIN_SCHEMA, "attack": ATTACK_SCHEMA, "run": RUN_SCHEMA}


def _accepts(schema: ConfigSchema, key: str) -> bool:
    section, _, name = key.partition(".")
    if not name:
        return key in schema.scalars
    if section not in schema.sections:
        return False
    keys = schema.sections[section]
    return keys is None or name in keys


def set_form(flag: str, command: str, keys: Mapping[str, str] | None = None) -> str | None:
    """``--set KEY`` for a ``flag`` that ``command`` lacks; ``None`` when its config has no such key."""
    key = (keys if keys is not None else flag_keys()).get(flag)
    schema = config_keys().get(command)
    if key is None or schema is None or not _accepts(schema, key):
        return None
    return f"--set {key}"


def adapt_hint(message: str, command: str, options: Iterable[str]) -> str:
    """``message`` with each flag ``command`` lacks rewritten as ``--set KEY=VALUE``.

    ``options`` are the command's option strings (:func:`command_options`). A placeholder after
    the flag becomes the value (``--image-size S`` -> ``--set data.image_size=S``), else ``...``.
    Flags without a config key the command accepts stay as they are.
    """
    have = set(options)
    if not FLAG.search(message):
        return message
    keys = flag_keys()

    def replace(match: re.Match[str]) -> str:
        flag = match.group(0)
        if flag in have:
            return flag
        form = set_form(flag, command, keys)
        if form is None:
            return flag
        return f"{form}=..."

    out = FLAG.sub(replace, message)
    # "--set data.image_size=... S" -> "--set data.image_size=S"
    return re.sub(r"=\.\.\." + _PLACEHOLDER.pattern, r"=\1", out)
