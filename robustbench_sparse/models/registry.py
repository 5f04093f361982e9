"""Model registry and factory: ``create_model("resnet20", num_classes=10)`` (timm-style).

Builders register themselves (:func:`register_model`; a whole prefix such as ``tv:`` with
:func:`register_namespace`) when :mod:`robustbench_sparse.models` imports their modules; the
registry imports none of them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from robustbench_sparse.errors import UserError, unknown_name
from robustbench_sparse.models.normalize import NormalizedModel
from robustbench_sparse.models.user_arch import (
    PLACEHOLDER,
    check_logits_shape,
    is_import_path,
    user_builder,
)
from robustbench_sparse.state_dicts import strip_wrapper_prefixes

if TYPE_CHECKING:
    from robustbench_sparse.datasets import DatasetInfo

logger = logging.getLogger(__name__)

__all__ = [
    "TV_PREFIX",
    "ModelBuilder",
    "create_model",
    "create_model_for",
    "first_conv_and_classifier",
    "is_user_arch",
    "list_models",
    "load_state_dict_into",
    "register_model",
    "register_namespace",
]

TV_PREFIX = "tv:"

ModelBuilder = Callable[..., nn.Module]
"""``builder(*, num_classes: int, in_channels: int, **kwargs) -> nn.Module`` (without normalization)."""

_F = TypeVar("_F", bound=ModelBuilder)
_REGISTRY: dict[str, ModelBuilder] = {}
# prefix -> (resolver of the name after the prefix, placeholder shown in the list of valid names)
_NAMESPACES: dict[str, tuple[Callable[[str], ModelBuilder], str]] = {}


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator registering ``builder(*, num_classes, in_channels, **kwargs) -> nn.Module`` as ``name``."""
    if name.startswith(TV_PREFIX):
        raise ValueError(f"names starting with {TV_PREFIX!r} are reserved for torchvision models")

    def decorator(builder: _F) -> _F:
        if name in _REGISTRY and _REGISTRY[name] is not builder:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def list_models() -> list[str]:
    """Registered model names, sorted. Any torchvision classification model is also ``tv:<name>``."""
    return sorted(_REGISTRY)


def register_namespace(
    prefix: str, resolve: Callable[[str], ModelBuilder], placeholder: str
) -> None:
    """Route every name starting with ``prefix`` (e.g. ``tv:``) to ``resolve(rest_of_the_name)``.

    ``resolve`` returns the builder or raises ``UserError`` listing the valid names; ``placeholder``
    stands for the namespace in the list of valid names (``tv:<torchvision model>``). Builder
    modules register their namespace on import, so the registry imports none of them.
    """
    if prefix in _NAMESPACES and _NAMESPACES[prefix][0] is not resolve:
        raise ValueError(f"model namespace {prefix!r} is already registered")
    _NAMESPACES[prefix] = (resolve, placeholder)


def is_user_arch(name: str) -> bool:
    """True when ``name`` is the user's own ``package.module:ClassName`` (not a registered name or
    namespace such as ``tv:``): building it imports that module
    (:mod:`robustbench_sparse.models.user_arch`)."""
    if name in _REGISTRY or any(name.startswith(prefix) for prefix in _NAMESPACES):
        return False
    return is_import_path(name)


def _resolve(name: str) -> ModelBuilder:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for prefix, (resolve, _) in _NAMESPACES.items():
        if name.startswith(prefix):
            return resolve(name[len(prefix) :])
    if is_import_path(name):
        return user_builder(name)  # imports the user's module
    namespaces = [prefix + placeholder for prefix, (_, placeholder) in _NAMESPACES.items()]
    raise unknown_name("arch", name, [*list_models(), *namespaces, PLACEHOLDER])


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    input_shape: Sequence[int] | None = None,
    **kwargs: Any,
) -> NormalizedModel:
    """Build registered model ``name`` wrapped in a :class:`NormalizedModel`.

    Args:
        name: one of :func:`list_models`, ``tv:<torchvision classification model>``, or the
            user's own ``package.module:ClassName`` (imported from the Python path; see
            :mod:`robustbench_sparse.models.user_arch`).
        num_classes: number of logits.
        in_channels: image channels (1 for MNIST/digits).
        mean: per-channel mean for the ``Normalize`` layer (default 0 per channel).
        std: per-channel std (default 1 per channel).
        input_shape: ``(C, H, W)`` of the inputs; when given, a user architecture's logits are
            checked to be ``(N, num_classes)`` on a zero batch of this shape.
        **kwargs: passed to the builder (e.g. ``width`` for ``small_cnn``, ``pretrained`` for torchvision).

    Raises:
        UserError: an unknown name, keywords the builder does not take, mean/std of the wrong
            length, a user architecture that cannot be imported or gives logits of another shape.
    """
    builder = _resolve(name)
    if num_classes < 1 or in_channels < 1:
        raise UserError(
            f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}"
        )
    mean_t = tuple(float(m) for m in mean) if mean is not None else (0.0,) * in_channels
    std_t = tuple(float(s) for s in std) if std is not None else (1.0,) * in_channels
    if len(mean_t) != in_channels or len(std_t) != in_channels:
        raise UserError(
            f"mean/std have {len(mean_t)}/{len(std_t)} values but the model has {in_channels} input channels"
        )
    try:
        net = builder(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as exc:  # an unexpected keyword from the user's config
        if not kwargs:
            raise
        raise UserError(f"arch {name!r} does not accept {sorted(kwargs)}: {exc}") from exc
    # `pretrained` is not recorded: a model rebuilt from a checkpoint gets the saved weights instead.
    arch_kwargs = {k: v for k, v in kwargs.items() if k != "pretrained"}
    model = NormalizedModel(
        net, mean_t, std_t, arch=name, num_classes=num_classes, arch_kwargs=arch_kwargs
    )
    if input_shape is not None and is_user_arch(name):
        check_logits_shape(model, name, input_shape, num_classes)
    return model


def create_model_for(name: str, info: DatasetInfo, **kwargs: Any) -> NormalizedModel:
    """:func:`create_model` sized and normalized for a dataset: its class count, input channels
    (``info.input_shape[0]``) and per-channel mean/std (a user architecture's logits are checked
    on the dataset's input shape). ``kwargs`` go to the builder."""
    return create_model(
        name,
        num_classes=info.num_classes,
        in_channels=info.input_shape[0],
        mean=info.mean,
        std=info.std,
        input_shape=info.input_shape,
        **kwargs,
    )


def first_conv_and_classifier(model: nn.Module) -> tuple[str | None, str | None]:
    """Qualified module names of the first ``Conv2d`` and the last ``Linear``, in registration order.

    For a :class:`NormalizedModel` these look like ``("net.conv1", "net.fc")``. ``None`` where absent.
    """
    first_conv: str | None = None
    classifier: str | None = None
    for mod_name, module in model.named_modules():
        if first_conv is None and isinstance(module, nn.Conv2d):
            first_conv = mod_name
        if isinstance(module, nn.Linear):
            classifier = mod_name
    return first_conv, classifier


def _describe(model: nn.Module) -> str:
    arch = getattr(model, "arch", None)
    n = getattr(model, "num_classes", None)
    if arch is None:
        return f"model {type(model).__name__}"
    return f"arch {arch}" + (f" with {n} classes" if n is not None else "")


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """Load weights into ``model`` (a :class:`NormalizedModel`), checking every tensor first.

    Accepts either a ``NormalizedModel`` state dict (keys ``net.*`` and ``normalize.*``) or a plain one
    with the keys of ``model.net`` (torchvision style, or a public definition's plain ``state_dict()``;
    the ``Normalize`` buffers are then kept). Leading ``module.`` (DataParallel/DDP) and
    ``_orig_mod.`` (``torch.compile``) prefixes are stripped. Missing ``num_batches_tracked`` buffers are tolerated.

    Raises:
        UserError: naming the first missing, unexpected or wrong-shape tensor.
    """
    own = model.state_dict()
    sd = strip_wrapper_prefixes(
        state_dict
    )  # DataParallel/DDP "module.", torch.compile "_orig_mod."
    is_wrapped = isinstance(model, NormalizedModel)
    if is_wrapped and not any(k.startswith(("net.", "normalize.")) for k in sd):
        sd = {f"net.{k}": v for k, v in sd.items()}
    if is_wrapped:
        for key in ("normalize.mean", "normalize.std"):
            sd.setdefault(key, own[key])
    who = _describe(model)
    param_names = {n for n, _ in model.named_parameters()}
    for key, expected in own.items():
        if key not in sd:
            if key.endswith("num_batches_tracked"):
                sd[key] = expected
                continue
            raise UserError(f"state dict lacks tensor {key!r} that {who} requires")
        got = sd[key]
        if not isinstance(got, Tensor):
            raise UserError(f"state dict entry {key!r} is a {type(got).__name__}, not a tensor")
        if tuple(got.shape) != tuple(expected.shape):
            kind = "weight" if key in param_names else "buffer"
            raise UserError(
                f"{kind} {key!r} has shape {tuple(got.shape)} but {who} expects {tuple(expected.shape)}"
            )
    for key in sd:
        if key not in own:
            raise UserError(f"state dict has tensor {key!r} that {who} does not have")
    with torch.no_grad():
        model.load_state_dict(sd, strict=True)
