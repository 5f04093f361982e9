"""Architectures from the user's own code: ``arch = "package.module:ClassName"``.

The module is imported from the Python path (``PYTHONPATH``) only when a name of this form is
given to :func:`~robustbench_sparse.models.create_model` (by ``--arch``, a ``[model] arch`` key,
or a caller). A checkpoint records the name, but
:func:`~robustbench_sparse.checkpoint.load_checkpoint` imports it only when the user names it
again or opts in (``trust_arch``): loading an untrusted checkpoint never runs code.

The class (or any callable returning an ``nn.Module``) gets ``num_classes`` and ``in_channels``
when its signature names them, plus the user's keyword arguments; it receives normalized inputs of
shape ``(N, C, H, W)`` (the product wraps it in :class:`~robustbench_sparse.models.NormalizedModel`)
and must return logits of shape ``(N, num_classes)``, which :func:`check_logits_shape` verifies on
a zero batch. Every mistake (no such module or class, keywords that do not fit, wrong output) is a
one-line :class:`~robustbench_sparse.errors.UserError`.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import logging
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustbench_sparse.errors import UserError

__all__ = [
    "PLACEHOLDER",
    "build_user_model",
    "check_logits_shape",
    "is_import_path",
    "source_record",
    "user_builder",
    "warn_if_source_changed",
]

logger = logging.getLogger(__name__)

PLACEHOLDER = "<package.module>:<Class>"
"""How the form is shown in the list of valid architecture names."""

_IDENT = r"[A-Za-z_]\w*"
_IMPORT_PATH = re.compile(rf"{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*")


def is_import_path(name: str) -> bool:
    """True for ``package.module:ClassName`` (dotted identifiers on both sides of one colon)."""
    return _IMPORT_PATH.fullmatch(name) is not None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _import_module(name: str, module_name: str) -> Any:
    importlib.invalidate_caches()  # a module written since the interpreter started
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UserError(
                f"arch {name!r}: no module named {missing!r} on the Python path; add the folder "
                "that holds it to PYTHONPATH (e.g. PYTHONPATH=/path/to/code rbs ...)"
            ) from None
        raise UserError(
            f"arch {name!r}: importing {module_name!r} failed ({_one_line(exc)})"
        ) from exc
    except Exception as exc:  # the user's module raised while importing: their code, one line
        raise UserError(
            f"arch {name!r}: importing {module_name!r} failed ({_one_line(exc)})"
        ) from exc


def _shown(file: str | None) -> str | None:
    """A module's file as shown in a message: relative to the working directory when inside it."""
    if not file:
        return None
    path = Path(file).resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _module_classes(module: Any) -> list[str]:
    """The ``nn.Module`` subclasses ``module`` defines itself (not those it imports)."""
    return sorted(
        n
        for n, obj in vars(module).items()
        if inspect.isclass(obj)
        and issubclass(obj, nn.Module)
        and getattr(obj, "__module__", None) == module.__name__
    )


def _resolve_target(name: str) -> Callable[..., Any]:
    """Import ``package.module`` and return ``ClassName`` (dotted: a nested attribute)."""
    module_name, _, attr = name.partition(":")
    module = _import_module(name, module_name)
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            found = _module_classes(module)
            defines = (
                f"it defines {', '.join(found)}" if found else "it defines no torch.nn.Module class"
            )
            where = _shown(getattr(module, "__file__", None)) or module_name
            raise UserError(
                f"arch {name!r}: module {module_name!r} ({where}) has no {attr!r}; {defines}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise UserError(f"arch {name!r} is a {type(target).__name__}, not a torch.nn.Module class")
    return target  # type: ignore[no-any-return]


def _signature(target: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(target)
    except (TypeError, ValueError):  # some builtins and C extensions have none
        return None


def build_user_model(
    name: str, *, num_classes: int, in_channels: int, kwargs: Mapping[str, Any]
) -> nn.Module:
    """Import ``name`` (``package.module:ClassName``) and build it.

    ``num_classes`` and ``in_channels`` are passed where the signature names them; ``kwargs`` are
    checked against the signature before anything is built.

    Raises:
        UserError: no such module or class, a keyword the class does not take (or a required one
            missing), ``num_classes`` / ``in_channels`` among ``kwargs``, a constructor that
            raises, or a result that is not an ``nn.Module``.
    """
    target = _resolve_target(name)
    given = dict(kwargs)
    sig = _signature(target)
    for key, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if key in given:
            raise UserError(
                f"arch {name!r}: {key} comes from the dataset ({value}); drop it from the kwargs"
            )
        if sig is not None and key in sig.parameters:
            given[key] = value
    if sig is not None:
        try:
            sig.bind(**given)
        except TypeError as exc:
            takes = ", ".join(p for p in sig.parameters if p != "self") or "no arguments"
            raise UserError(
                f"arch {name!r} cannot be built with kwargs {dict(kwargs)}: {exc} (it takes: {takes})"
            ) from None
    try:
        net = target(**given)
    except Exception as exc:  # the user's constructor: their code, one line
        raise UserError(f"arch {name!r} failed to build ({_one_line(exc)})") from exc
    if not isinstance(net, nn.Module):
        raise UserError(f"arch {name!r} returned a {type(net).__name__}, not a torch.nn.Module")
    return net


def user_builder(name: str) -> Callable[..., nn.Module]:
    """A registry builder ``(*, num_classes, in_channels, **kwargs) -> nn.Module`` for ``name``.

    The module is imported at once, so a missing module or class fails here.
    """
    _resolve_target(name)

    def build(*, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
        return build_user_model(
            name, num_classes=num_classes, in_channels=in_channels, kwargs=kwargs
        )

    return build


def check_logits_shape(
    model: nn.Module, name: str, input_shape: Sequence[int], num_classes: int
) -> None:
    """Run ``model`` on a zero batch of shape ``(2, *input_shape)`` and check it returns ``(2, num_classes)``.

    ``input_shape`` is ``(C, H, W)`` in pixels; the model runs in eval mode without gradients and
    keeps its mode. Nothing random is drawn and no BatchNorm statistic changes.

    Raises:
        UserError: the forward pass fails, or returns something other than a
            ``(N, num_classes)`` tensor.
    """
    x = torch.zeros((2, *(int(s) for s in input_shape)))  # (2, C, H, W)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the user's forward: their code, one line
        raise UserError(
            f"arch {name!r} fails on a batch of shape {tuple(x.shape)} ({_one_line(exc)}); "
            f"it must take {'x'.join(str(s) for s in input_shape)} inputs of this dataset"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UserError(
            f"arch {name!r} returns a {type(out).__name__}, not a (N, {num_classes}) tensor of "
            "logits; return the logits alone"
        )
    if tuple(out.shape) != (2, num_classes):
        raise UserError(
            f"arch {name!r} returns shape {tuple(out.shape)} for a batch of 2, not (N, num_classes) "
            f"= (2, {num_classes}); give the class a num_classes argument or fix its classifier"
        )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def source_record(name: str) -> dict[str, Any]:
    """What a checkpoint records of a user architecture's code: module, file and its SHA-256.

    ``{}`` when ``name`` is not an import path or its module is not imported (nothing is imported
    here).
    """
    if not is_import_path(name):
        return {}
    module_name, _, attr = name.partition(":")
    module = sys.modules.get(module_name)
    if module is None:
        return {}
    file = getattr(module, "__file__", None)
    record: dict[str, Any] = {"module": module_name, "object": attr, "file": None, "sha256": None}
    if file and Path(file).is_file():
        record["file"] = str(Path(file).resolve())
        record["sha256"] = _sha256(Path(file))
    return record


def warn_if_source_changed(name: str, recorded: Mapping[str, Any] | None) -> None:
    """Log a warning when the imported module's file differs from what a checkpoint recorded."""
    if not recorded or not recorded.get("sha256"):
        return
    now = source_record(name)
    if now.get("sha256") and now["sha256"] != recorded["sha256"]:
        logger.warning(
            "arch %s: %s has changed since the checkpoint was written (recorded %s); the weights "
            "still load, but the code that runs them is not the code that trained them",
            name,
            now.get("file"),
            recorded.get("file"),
        )
