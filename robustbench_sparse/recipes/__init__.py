"""Shipped experiment recipes (package data): ``rbs recipes`` lists them, ``--recipe NAME`` runs one.

A recipe is an experiment config in the format of ``evaluations/configs/default.toml`` plus a
``[recipe]`` table stating what it is and what it costs::

    [recipe]
    description = "..."
    runtime = "..."     # expected wall time
    hardware = "..."    # what it needs

``digits-smallcnn`` is the default experiment (the same settings as the shipped default config).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

import tomllib

from robustbench_sparse.errors import UserError

DEFAULT_RECIPE = "digits-smallcnn"
_SUFFIX = ".toml"


@dataclass(frozen=True)
class Recipe:
    """One shipped recipe's name and its ``[recipe]`` table."""

    name: str
    description: str
    runtime: str
    hardware: str


def _files() -> dict[str, Any]:
    root = resources.files(__name__)
    return {
        entry.name[: -len(_SUFFIX)]: entry
        for entry in root.iterdir()
        if entry.is_file() and entry.name.endswith(_SUFFIX)
    }


def recipe_names() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(_files())


def recipe_text(name: str) -> str:
    """The TOML text of recipe ``name`` (unknown names fail listing the valid ones)."""
    files = _files()
    if name not in files:
        raise UserError(f"unknown recipe {name!r}; valid: {', '.join(sorted(files))}")
    return str(files[name].read_text("utf-8"))


def load_recipe(name: str) -> dict[str, Any]:
    """Recipe ``name`` parsed into an experiment config dict (``[recipe]`` table included)."""
    try:
        return tomllib.loads(recipe_text(name))
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - shipped files are tested
        raise UserError(f"recipe {name!r} is not valid TOML: {exc}") from None


def list_recipes() -> list[Recipe]:
    """Every shipped recipe with its description, expected runtime and hardware."""
    out = []
    for name in recipe_names():
        info = load_recipe(name).get("recipe", {})
        out.append(
            Recipe(
                name=name,
                description=str(info.get("description", "")),
                runtime=str(info.get("runtime", "unknown")),
                hardware=str(info.get("hardware", "unknown")),
            )
        )
    return out


def training_sections(config: dict[str, Any]) -> dict[str, Any]:
    """The parts of an experiment config that ``rbs train`` understands."""
    keys = ("data", "model", "train", "sparsity", "adversarial")
    return {k: config[k] for k in keys if k in config}
