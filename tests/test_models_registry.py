"""Tests for robustbench_sparse.models.registry: every registered model builds and gives logits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import (
    NormalizedModel,
    create_model,
    first_conv_and_classifier,
    list_models,
    register_model,
)
from robustbench_sparse.models import registry as reg

# (input shape (C, H, W), batch) per registered model; big ImageNet models get a tiny batch and input.
INPUTS: dict[str, tuple[tuple[int, int, int], int]] = {
    "small_cnn": ((1, 8, 8), 4),
    "resnet20": ((3, 32, 32), 2),
    "resnet32": ((3, 32, 32), 2),
    "resnet56": ((3, 32, 32), 2),
    "resnet18": ((3, 32, 32), 2),
    "resnet50": ((3, 32, 32), 2),
    "resnet18_cifar": ((3, 32, 32), 2),
    "preact_resnet18": ((3, 32, 32), 2),
    "vgg16_bn_cifar": ((3, 32, 32), 2),
    "wrn28_10": ((3, 32, 32), 1),
    "wrn34_10": ((3, 32, 32), 1),
}


def test_registry_contents() -> None:
    names = list_models()
    assert names == sorted(names)
    assert set(INPUTS) == set(names), "add new registered models to INPUTS"


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_every_registered_model_gives_logits(name: str) -> None:
    (c, h, w), n = INPUTS[name]
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=c, mean=(0.5,) * c, std=(0.25,) * c)
    assert isinstance(model, NormalizedModel)
    assert model.arch == name and model.num_classes == 7
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(n, c, h, w))
    assert out.shape == (n, 7) and torch.isfinite(out).all()
    conv, fc = first_conv_and_classifier(model)
    assert conv is not None and fc is not None
    assert conv.startswith("net.") and fc.startswith("net.")
    assert isinstance(model.get_submodule(conv), nn.Conv2d)
    assert model.get_submodule(conv).in_channels == c
    assert model.get_submodule(fc).out_features == 7


@pytest.mark.parametrize("name", ["small_cnn", "resnet20", "resnet18"])
def test_single_channel_inputs(name: str) -> None:
    model = create_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_torchvision_prefix_builds_any_classification_model() -> None:
    model = create_model("tv:mobilenet_v3_small", num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 5)
    conv, fc = first_conv_and_classifier(model)
    assert conv == "net.features.0.0" and fc == "net.classifier.3"
    assert model.get_submodule(conv).in_channels == 1


def test_defaults_mean_zero_std_one() -> None:
    model = create_model("small_cnn", num_classes=3, in_channels=2)
    assert model.normalize.mean.flatten().tolist() == [0.0, 0.0]
    assert model.normalize.std.flatten().tolist() == [1.0, 1.0]


def test_unknown_names_list_valid_ones() -> None:
    with pytest.raises(UserError) as err:
        create_model("resnet21", num_classes=10)
    msg = str(err.value)
    assert "arch 'resnet21'" in msg and "resnet20" in msg and "small_cnn" in msg and "tv:" in msg
    with pytest.raises(UserError, match=r"tv:resnet18"):
        create_model("tv:resnet181", num_classes=10)


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="3 input channels"):
        create_model("small_cnn", num_classes=10, mean=(0.5,), std=(0.5,))
    with pytest.raises(UserError, match="does not accept"):
        create_model("resnet20", num_classes=10, depth=3)


def test_register_model_decorator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))

    @register_model("toy_mlp")
    def toy(*, num_classes: int, in_channels: int = 3, hidden: int = 8) -> nn.Module:
        return nn.Sequential(
            nn.Flatten(), nn.LazyLinear(hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )

    assert "toy_mlp" in list_models()
    model = create_model("toy_mlp", num_classes=4, in_channels=1, hidden=5)
    assert model(torch.rand(2, 1, 3, 3)).shape == (2, 4)
    assert model.arch_kwargs == {"hidden": 5}
    assert first_conv_and_classifier(model) == (None, "net.3")
    with pytest.raises(ValueError, match="already registered"):
        register_model("toy_mlp")(lambda **kw: nn.Identity())
    with pytest.raises(ValueError, match="reserved"):
        register_model("tv:toy")


def test_register_namespace_routes_prefixed_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_NAMESPACES", dict(reg._NAMESPACES))
    asked: list[str] = []

    def resolve(rest: str) -> reg.ModelBuilder:
        asked.append(rest)
        if rest != "tiny":
            raise UserError(f"no toy model {rest!r}")
        return lambda *, num_classes, in_channels, **kw: nn.Sequential(
            nn.Flatten(), nn.LazyLinear(num_classes)
        )

    reg.register_namespace("toy:", resolve, "<toy>")
    reg.register_namespace("toy:", resolve, "<toy>")  # the same resolver again is harmless
    model = create_model("toy:tiny", num_classes=3, in_channels=1)
    assert model(torch.rand(2, 1, 2, 2)).shape == (2, 3) and asked == ["tiny"]
    with pytest.raises(UserError, match="no toy model 'huge'"):
        create_model("toy:huge", num_classes=3)
    with pytest.raises(UserError, match=r"toy:<toy>") as err:
        create_model("nothing-like-it", num_classes=3)
    assert "tv:<torchvision model>" in str(err.value)
    with pytest.raises(ValueError, match="already registered"):
        reg.register_namespace("toy:", lambda rest: resolve(rest), "<toy>")


def test_first_conv_and_classifier_registration_order() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 2)  # registered first but it is not the last Linear
            self.stem = nn.Conv2d(1, 4, 3)
            self.body = nn.Conv2d(4, 4, 3)
            self.out = nn.Linear(2, 2)

    assert first_conv_and_classifier(Net()) == ("stem", "out")
    assert first_conv_and_classifier(nn.ReLU()) == (None, None)


@pytest.mark.parametrize(("dataset", "arch"), [("digits", "small_cnn"), ("cifar10", "resnet20")])
def test_create_model_for_takes_the_dataset_s_shape_and_statistics(dataset: str, arch: str) -> None:
    from robustbench_sparse.datasets import dataset_info
    from robustbench_sparse.models import create_model_for

    info = dataset_info(dataset)
    model = create_model_for(arch, info)
    assert model.num_classes == info.num_classes
    assert model(torch.rand(2, *info.input_shape)).shape == (2, info.num_classes)
    assert torch.allclose(model.normalize.mean.flatten(), torch.tensor(info.mean))
    assert torch.allclose(model.normalize.std.flatten(), torch.tensor(info.std))
