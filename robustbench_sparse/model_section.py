"""The ``[model]`` section of a training config: the architecture and its constructor keywords.

``[model]`` holds ``arch`` (a registered name, ``tv:<name>`` or the user's own
``package.module:ClassName``) and the keywords its constructor takes, either as keys of the section
(``width = 0.5``) or as a ``kwargs`` table (``kwargs = {width = 0.5}``, which ``--arch-kwargs``
sets). The layers (config file, command line) are merged key by key, each over the one before.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model_for, is_user_arch
from robustbench_sparse.models.user_arch import user_builder

if TYPE_CHECKING:
    from robustbench_sparse.datasets import DatasetInfo

__all__ = [
    "DEFAULT_ARCH",
    "KWARGS_KEY",
    "RESERVED",
    "check_arch_kwargs",
    "check_user_arch",
    "model_section",
]

DEFAULT_ARCH = "small_cnn"
KWARGS_KEY = "kwargs"
#: what the dataset (or the checkpoint) decides, never a constructor keyword of the user's
RESERVED = ("num_classes", "in_channels", "mean", "std", "input_shape")


def check_arch_kwargs(kwargs: Mapping[str, Any]) -> None:
    """Refuse constructor keywords that the dataset sets (:data:`RESERVED`).

    Raises:
        UserError: naming the first such keyword.
    """
    for key in RESERVED:
        if key in kwargs:
            raise UserError(
                f"arch kwargs: {key!r} comes from the dataset, not from the kwargs; drop it"
            )


def check_user_arch(arch: str, kwargs: Mapping[str, Any], info: DatasetInfo) -> None:
    """Build the user's own ``arch`` once for ``info`` (import, keywords, logits shape), so that a
    mistake is refused before an output directory is touched; registered names are left alone.

    An ``imagefolder``'s placeholder info (before its folders are read) gets the import checked
    only.

    Raises:
        UserError: as :func:`~robustbench_sparse.models.create_model` for a user architecture.
    """
    if not is_user_arch(arch):
        return
    if info.name == "imagefolder" and info.stats_source == "published":  # placeholder: no folders
        user_builder(arch)
        return
    create_model_for(arch, info, **dict(kwargs))


def _flattened(table: Mapping[str, Any]) -> dict[str, Any]:
    """One layer's ``[model]`` with its ``kwargs`` table folded into the section's own keys."""
    flat = dict(table)
    kwargs = flat.pop(KWARGS_KEY, None)
    if kwargs is None:
        return flat
    if not isinstance(kwargs, Mapping):
        raise UserError(
            f"[model] {KWARGS_KEY} must be a table of keywords, e.g. {{width = 0.5}}; got {kwargs!r}"
        )
    for key in kwargs:
        if key == "arch":
            raise UserError("[model] kwargs: 'arch' is not a keyword; set [model] arch (--arch)")
        if key in flat:
            raise UserError(f"[model] sets {key!r} both as a key and in kwargs; give it once")
    return {**flat, **kwargs}


def model_section(tables: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """``(arch, constructor keywords)`` from ``[model]`` tables, lowest precedence first.

    Raises:
        UserError: ``kwargs`` that is not a table, a keyword given twice in one layer, an
            ``arch`` that is not a string.
    """
    merged: dict[str, Any] = {}
    for table in tables:
        merged.update(_flattened(table))
    arch = merged.pop("arch", DEFAULT_ARCH)
    if not isinstance(arch, str) or not arch:
        raise UserError(f"[model] arch must be a model name, got {arch!r}")
    check_arch_kwargs(merged)
    return arch, merged
