"""Models by name, wrapped with input normalization: ``create_model("small_cnn", num_classes=10)``.

Every model returned by :func:`create_model` is a :class:`NormalizedModel` taking ``[0, 1]`` images;
parameter names look like ``net.conv1.weight``. Registered: ``small_cnn``, CIFAR ResNets
``resnet20/32/56`` (option-B shortcuts), the literature's CIFAR models with their public key names
(``resnet18_cifar``, ``preact_resnet18``, ``vgg16_bn_cifar``, ``wrn28_10``, ``wrn34_10``), torchvision
``resnet18``/``resnet50`` (v1.5), and ``tv:<name>`` for any torchvision classification model.
"""

from __future__ import annotations

# Importing the builder modules registers their models (torchvision_models also the tv: namespace).
from robustbench_sparse.models import (  # noqa: F401
    cifar_resnets,
    resnet_cifar,
    small_cnn,
    torchvision_models,
    vgg_wrn,
)
from robustbench_sparse.models.normalize import Normalize, NormalizedModel
from robustbench_sparse.models.registry import (
    TV_PREFIX,
    create_model,
    create_model_for,
    first_conv_and_classifier,
    is_user_arch,
    list_models,
    load_state_dict_into,
    register_model,
    register_namespace,
)
from robustbench_sparse.models.resnet_cifar import CifarResNet
from robustbench_sparse.models.small_cnn import SmallCNN

__all__ = [
    "TV_PREFIX",
    "CifarResNet",
    "Normalize",
    "NormalizedModel",
    "SmallCNN",
    "create_model",
    "create_model_for",
    "first_conv_and_classifier",
    "is_user_arch",
    "list_models",
    "load_state_dict_into",
    "register_model",
    "register_namespace",
]
