"""What an attack accepts: the input contracts every attack and backend checks before any work.

:class:`attacks.base.Attack` calls these from its template method, so native attacks and library
backends (torchattacks, foolbox, ...) refuse the same mistakes with the same messages, before a
single gradient is computed:

* **inputs** ``x``: a floating-point tensor ``(N, ...)`` (``N = 0`` allowed), finite, in ``[0, 1]``;
  any floating dtype is accepted and cast to the model's dtype (:func:`model_dtype`);
* **labels** ``y``: integer class indices of shape ``(N,)`` in ``[0, num_classes)``
  (:func:`check_label_values` runs once the model's class count is known);
* **model outputs**: a floating-point tensor ``(N, num_classes)`` with ``num_classes >= 2``,
  finite on the clean inputs (:func:`check_logits`); a model returning a tuple or dict is wrapped
  with :func:`attacks.wrappers.select_output`;
* **epsilons**: a non-empty ascending sequence of finite numbers ``>= 0``; budgets that look like
  the wrong unit (an Linf epsilon ``>= 1`` on ``[0, 1]`` inputs, an L2 epsilon above the input
  diameter ``sqrt(d)``) get a warning (:func:`epsilon_unit_warnings`), not an error.

Every violation raises :class:`AttackInputError` (a ``ValueError``; the ``rbs`` CLI prints it as one
line and exits with status 2) whose message names the contract and what was found.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from attacks.norms import Norm

__all__ = [
    "DLR_HINT",
    "FEW_CLASS_SUBSTITUTE",
    "TARGETED_DLR_HINT",
    "AttackInputError",
    "check_label_values",
    "check_logits",
    "epsilon_unit_warnings",
    "model_dtype",
    "validate_epsilons",
    "validate_inputs",
]

_CONTRACT = "a floating-point tensor of shape (N, num_classes)"


class AttackInputError(ValueError):
    """The inputs, labels, epsilons or model outputs given to an attack are invalid."""


#: why an attack on the DLR loss refuses a model with fewer than 3 classes, and what to run instead
#: (the end of :meth:`attacks.base.Attack.check_classes`' one-line message)
DLR_HINT = (
    "the DLR loss (Croce & Hein 2020, eq. 6) needs a 3rd class; use apgd-ce, or autoattack "
    "(--protocol standard), which substitutes the targeted cross-entropy ({apgd_t_ce}) on few classes"
)
#: the same for the targeted DLR loss of APGD-T (4 classes)
TARGETED_DLR_HINT = (
    "the targeted DLR loss (Croce & Hein 2020, eq. 7) needs a 4th class; use {apgd_t_ce} (targeted "
    "cross-entropy), or autoattack (--protocol standard), which substitutes it on few classes"
)


#: the targeted cross-entropy APGD of each norm: what :data:`DLR_HINT` / :data:`TARGETED_DLR_HINT`
#: name as ``{apgd_t_ce}`` (:meth:`attacks.base.Attack.check_classes` fills it in)
FEW_CLASS_SUBSTITUTE = {"linf": "apgd-t-ce", "l2": "apgd-t-ce-l2", "l1": "apgd-t-ce-l1"}


def validate_epsilons(epsilons: Sequence[float]) -> list[float]:
    """The epsilon grid as floats; refuses empty, non-numeric, negative, non-finite, unsorted."""
    if isinstance(epsilons, (str, bytes)) or not isinstance(epsilons, Sequence):
        if isinstance(epsilons, Tensor) and epsilons.ndim == 1:
            epsilons = epsilons.tolist()
        else:
            raise AttackInputError(
                f"epsilons must be a sequence of floats (got {type(epsilons).__name__})"
            )
    try:
        eps = [float(e) for e in epsilons]
    except (TypeError, ValueError) as err:
        raise AttackInputError(f"epsilons must be numbers (got {list(epsilons)!r})") from err
    if not eps:
        raise AttackInputError("epsilons must contain at least one value")
    if not all(math.isfinite(e) and e >= 0 for e in eps):
        raise AttackInputError(f"epsilons must be finite and >= 0 (got {eps})")
    if any(b < a for a, b in pairwise(eps)):
        raise AttackInputError(f"epsilons must be sorted ascending (got {eps})")
    return eps


def _range(t: Tensor) -> str:
    if t.numel() == 0:
        return "no values"
    return f"values in [{t.min().item():g}, {t.max().item():g}]"


def validate_inputs(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Check the shapes and dtypes of ``x`` (N, ...) and ``y`` (N,); return detached copies.

    Label *values* are checked by :func:`check_label_values` once the class count is known.
    Returns ``x`` unchanged in dtype and ``y`` as int64.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        found = f"dtype {x.dtype}" if isinstance(x, Tensor) else type(x).__name__
        raise AttackInputError(
            f"inputs must be a floating-point torch.Tensor of shape (N, C, H, W) (got {found})"
        )
    if x.ndim < 2:
        raise AttackInputError(f"inputs must have a batch dimension (got shape {tuple(x.shape)})")
    n = x.shape[0]
    if not isinstance(y, Tensor):
        raise AttackInputError(
            f"labels must be a tensor of {n} integer class indices (got {type(y).__name__})"
        )
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] > 1:
        raise AttackInputError(
            f"labels must be class indices of shape ({n},), not one-hot or probabilities "
            f"(got shape {tuple(y.shape)}, dtype {y.dtype}); pass y.argmax(dim=1)"
        )
    if y.shape != (n,):
        raise AttackInputError(f"labels must be a tensor of shape ({n},) (got {tuple(y.shape)})")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        hint = ""
        if y.is_floating_point() and bool(torch.all(y == y.round()).item()):
            hint = "; convert them with y.long()"
        raise AttackInputError(
            f"labels must be integer class indices (got dtype {y.dtype}, {_range(y.double())})"
            + hint
        )
    # detach + clone: never alias or autograd-track the caller's tensors (also lifts
    # tensors created under torch.inference_mode into normal tensors).
    x = x.detach().clone()
    y = y.detach().clone().long()
    if n > 0 and x[0].numel() == 0:
        raise AttackInputError(f"inputs have no features (got shape {tuple(x.shape)})")
    if x.numel() == 0:
        return x, y
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise AttackInputError(f"inputs must be finite (got {bad} NaN/inf values)")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise AttackInputError(
            f"inputs must lie in [0, 1] (got min {lo:.4g}, max {hi:.4g}); attacks work in "
            "pixel space – put normalization inside the model"
        )
    return x, y


def _describe(out: Any) -> str:
    if isinstance(out, Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, dict):
        return f"a dict with keys {sorted(map(str, out))}"
    if isinstance(out, (tuple, list)):
        parts = ", ".join(
            f"{tuple(o.shape)}" if isinstance(o, Tensor) else type(o).__name__ for o in out[:4]
        )
        more = ", ..." if len(out) > 4 else ""
        return f"a {type(out).__name__} of {len(out)} elements ({parts}{more})"
    return f"a {type(out).__name__}"


def check_logits(out: Any, n: int) -> Tensor:
    """Return ``out`` if it is a float tensor ``(n, num_classes)``, ``num_classes >= 2``.

    Raises :class:`AttackInputError` naming the contract, what the model returned and the fix
    (:func:`attacks.wrappers.select_output` for tuples and dicts).
    """
    found = _describe(out)
    if isinstance(out, (tuple, list, dict)):
        example = "'logits'" if isinstance(out, dict) else "0"
        raise AttackInputError(
            f"the model must return {_CONTRACT} (got {found}); wrap it with "
            f"attacks.wrappers.select_output(model, {example}) to choose the logits"
        )
    if not isinstance(out, Tensor):
        raise AttackInputError(f"the model must return {_CONTRACT} (got {found})")
    if not out.is_floating_point():
        raise AttackInputError(f"the model must return {_CONTRACT} of logits (got {found})")
    if out.ndim != 2:
        raise AttackInputError(
            f"the model must return {_CONTRACT} (got {found} for {n} inputs); reshape the "
            "logits inside the model (e.g. flatten or squeeze the extra dimensions)"
        )
    if out.shape[0] != n:
        raise AttackInputError(
            f"the model must return {_CONTRACT} with one row per input (got {found} for {n} inputs)"
        )
    if out.shape[1] < 2:
        raise AttackInputError(
            f"the model must return {_CONTRACT} with num_classes >= 2 (got {found}); a "
            "single-logit binary classifier needs two logits, e.g. torch.cat([-z, z], dim=1)"
        )
    return out


def check_clean_logits_finite(logits: Tensor) -> None:
    """Refuse a model whose logits on the clean inputs contain NaN or inf (per example)."""
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        raise AttackInputError(
            f"the model returns non-finite logits (NaN/inf) on {bad} of {logits.shape[0]} clean "
            "inputs; no attack result on it would mean anything – fix the model (e.g. guard "
            "sqrt/log/division against 0) before attacking it"
        )


def check_label_values(y: Tensor, num_classes: int) -> None:
    """Refuse labels outside ``[0, num_classes)``, saying what was found (and 1-based hints)."""
    if y.numel() == 0:
        return
    lo, hi = int(y.min()), int(y.max())
    if lo >= 0 and hi < num_classes:
        return
    hint = ""
    if lo >= 1 and hi == num_classes:
        hint = "; they look 1-based: pass y - 1"
    raise AttackInputError(
        f"labels must be class indices in [0, {num_classes}) for this {num_classes}-class "
        f"model (got values in [{lo}, {hi}]){hint}"
    )


def model_dtype(model: nn.Module, default: torch.dtype) -> torch.dtype:
    """The floating dtype the attack runs in: the model's first floating parameter or buffer.

    A model without floating parameters or buffers runs in ``default`` (the inputs' dtype).
    """
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return default


def epsilon_unit_warnings(epsilons: Sequence[float], norm: Norm, dim: int) -> list[str]:
    """Messages for budgets that look like the wrong unit on ``[0, 1]`` inputs of ``dim`` values.

    An Linf epsilon ``>= 1`` allows every image in ``[0, 1]`` (any input becomes reachable); an L2
    epsilon above the input diameter ``sqrt(dim)`` (the largest L2 distance between two points of
    ``[0, 1]^dim``) and an L1 epsilon above ``dim`` (the L1 diameter) do the same. All usually
    mean a budget on the 0..255 scale, e.g. ``8`` for ``8/255``. Returns one message per offending epsilon (empty when all are plausible).
    """
    messages: list[str] = []
    diameter = math.sqrt(max(dim, 1))
    for e in epsilons:
        if norm is Norm.LINF and e >= 1.0:
            messages.append(
                f"linf epsilon {e:g} >= 1 on inputs in [0, 1] lets the attack reach every image "
                f"(robust accuracy is trivially 0); did you mean {e:g}/255 = {e / 255:.4g}?"
            )
        elif norm is Norm.L2 and e > diameter:
            messages.append(
                f"l2 epsilon {e:g} exceeds the diameter sqrt({dim}) = {diameter:.4g} of the "
                f"input space [0, 1]^{dim} (every image is reachable); did you mean "
                f"{e:g}/255 = {e / 255:.4g}?"
            )
        elif norm is Norm.L1 and e > dim:
            messages.append(
                f"l1 epsilon {e:g} exceeds the L1 diameter {dim} of the input space "
                f"[0, 1]^{dim} (every image is reachable); did you mean "
                f"{e:g}/255 = {e / 255:.4g}?"
            )
    return messages
