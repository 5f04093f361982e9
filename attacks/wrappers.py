"""Model wrappers that make a model fit the attack contract ``model(x) -> logits (N, num_classes)``.

Many models return more than logits: ``(logits, features)`` tuples, auxiliary heads, or dicts
such as ``{"logits": ..., "features": ...}`` (Hugging Face style outputs). The attacks refuse
those with a message naming :func:`select_output`; wrap the model once and attack the wrapper::

    from attacks.wrappers import select_output
    result = get_attack("pgd")(select_output(model, 0), x, y, epsilons=[0, 8 / 255])
    result = get_attack("pgd")(select_output(model, "logits"), x, y, epsilons=[0, 8 / 255])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from attacks.contracts import AttackInputError

__all__ = ["CastInputs", "SelectOutput", "select_output"]


class SelectOutput(nn.Module):
    """``forward(x) = model(x)[key]``: one element of a tuple / list / dict / attribute output.

    ``key`` is an ``int`` (position in a tuple or list, negative allowed) or a ``str`` (a dict key,
    or an attribute such as ``.logits`` of a dataclass / named-tuple output). The wrapped model is
    a submodule, so ``eval()``, ``.to(device)`` and the attacks' parameter freezing reach it.
    """

    def __init__(self, model: nn.Module, key: int | str) -> None:
        super().__init__()
        if isinstance(key, bool) or not isinstance(key, (int, str)):
            raise AttackInputError(
                f"select_output key must be an int index or a str key (got {key!r})"
            )
        self.model = model
        self.key = key
        self.training = model.training  # mirror it; train() would recurse into model

    def forward(self, x: Tensor) -> Any:
        out = self.model(x)
        key = self.key
        if isinstance(key, str):
            if isinstance(out, Mapping):
                if key not in out:
                    raise AttackInputError(
                        f"select_output: the model's output has no key {key!r} "
                        f"(keys: {sorted(map(str, out))})"
                    )
                return out[key]
            if hasattr(out, key):
                return getattr(out, key)
            raise AttackInputError(
                f"select_output: the model returns a {type(out).__name__}, which has no key or "
                f"attribute {key!r}"
            )
        if isinstance(out, Sequence) and not isinstance(out, (str, bytes, Tensor)):
            if not -len(out) <= key < len(out):
                raise AttackInputError(
                    f"select_output: index {key} is out of range for the model's "
                    f"{type(out).__name__} of {len(out)} outputs"
                )
            return out[key]
        raise AttackInputError(
            f"select_output: index {key} needs a tuple or list output, but the model returns a "
            f"{type(out).__name__}"
        )

    def extra_repr(self) -> str:
        return f"key={self.key!r}"


def select_output(model: nn.Module, key: int | str) -> SelectOutput:
    """Wrap ``model`` so that it returns ``model(x)[key]`` (see :class:`SelectOutput`).

    Raises:
        AttackInputError: ``key`` is neither an int nor a str (at construction), or the model's
            output has no such element (at the first forward, i.e. before any attack work).
    """
    return SelectOutput(model, key)


class CastInputs(nn.Module):
    """``forward(x) = model(x.to(dtype)).float()``: a half-precision model seen from float32.

    The attack template wraps float16 / bfloat16 models in this so that iterates, projections and
    library internals (divisions by ``1e-10``, gradient norms) run in float32, where they neither
    underflow nor round outside the ball; the rounding of the input to ``dtype`` becomes part of
    the model, and every counted adversarial is a float32 point the wrapped model misclassifies.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.training = model.training  # mirror it; train() would recurse into model

    def forward(self, x: Tensor) -> Any:
        out = self.model(x.to(self.dtype))
        return out.float() if isinstance(out, Tensor) and out.is_floating_point() else out

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"
