"""models.user_arch: the user's own ``package.module:ClassName``, and checkpoints that record one.

Each test writes a fresh module (unique name) to ``tmp_path`` and puts it on ``sys.path``; the
module touches a marker file when imported, so a test can tell whether loading ran its code.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.checkpoint import load_checkpoint, save_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.model_section import check_arch_kwargs
from robustbench_sparse.models import NormalizedModel, create_model, is_user_arch
from robustbench_sparse.models.user_arch import (
    check_logits_shape,
    is_import_path,
    source_record,
    warn_if_source_changed,
)

MODULE = """
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

Path(__file__).with_suffix(".imported").touch()  # evidence that this code ran


class LeNet(nn.Module):
    def __init__(self, num_classes, in_channels, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width * 4 * 4, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv1(x))), 2)
        return self.fc(x.flatten(1))


class ThreeClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Pair(ThreeClasses):
    def forward(self, x):
        return self.fc(x.flatten(1)), x


class Needs28(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(784, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Broken(nn.Module):
    def __init__(self, num_classes):
        raise ValueError("depth must be even")


def factory(num_classes, in_channels):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 64, num_classes))


def not_a_module(num_classes):
    return 3


CONSTANT = 3
"""


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The name of a fresh module holding :data:`MODULE`, importable from ``sys.path``."""
    name = f"user_nets_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def _marker(tmp_path: Path, module: str) -> Path:
    return tmp_path / f"{module}.imported"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("pkg.mod:Net", True),
        ("mod:Outer.Inner", True),
        ("tv:resnet18", True),  # the form fits; the registry's tv: namespace comes first
        ("small_cnn", False),
        ("mod:", False),
        (":Net", False),
        ("a:b:c", False),
        ("pkg.:Net", False),
        ("1mod:Net", False),
        ("mod:Net()", False),
    ],
)
def test_import_path_form(name: str, expected: bool) -> None:
    assert is_import_path(name) is expected


def test_registered_names_and_namespaces_are_not_user_archs() -> None:
    assert not is_user_arch("small_cnn")
    assert not is_user_arch("tv:resnet18")
    assert is_user_arch("my_pkg.nets:LeNet")


def test_builds_the_class_with_dataset_sizes_and_kwargs(user_module: str) -> None:
    name = f"{user_module}:LeNet"
    model = create_model(name, num_classes=7, in_channels=3, input_shape=(3, 8, 8), width=5)
    assert isinstance(model, NormalizedModel)
    assert model.arch == name and model.arch_kwargs == {"width": 5}
    conv1 = model.get_submodule("net.conv1")
    assert isinstance(conv1, nn.Conv2d) and (conv1.in_channels, conv1.out_channels) == (3, 5)
    assert model(torch.rand(4, 3, 8, 8)).shape == (4, 7)


def test_a_factory_function_works_too(user_module: str) -> None:
    model = create_model(
        f"{user_module}:factory", num_classes=4, in_channels=1, input_shape=(1, 8, 8)
    )
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 4)


def _error(name: str, **kwargs: object) -> str:
    with pytest.raises(UserError) as info:
        create_model(name, num_classes=10, in_channels=1, input_shape=(1, 8, 8), **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_module_names_pythonpath() -> None:
    message = _error("no_such_module_xyz:Net")
    assert "no module named 'no_such_module_xyz'" in message and "PYTHONPATH" in message


def test_module_whose_own_import_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"user_bad_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text("import not_installed_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = _error(f"{name}:Net")
    assert f"importing {name!r} failed" in message
    assert "not_installed_dependency_xyz" in message


def test_missing_class_lists_the_module_s_classes(user_module: str) -> None:
    message = _error(f"{user_module}:LeNett")
    assert "has no 'LeNett'" in message
    assert "LeNet" in message and "ThreeClasses" in message


@pytest.mark.parametrize(
    ("attr", "kwargs", "expected"),
    [
        ("LeNet", {"widht": 4}, "unexpected keyword argument 'widht'"),
        ("LeNet", {"width": 4, "depth": 2}, "unexpected keyword argument 'depth'"),
        ("Broken", {}, "failed to build (ValueError: depth must be even)"),
        ("CONSTANT", {}, "is a int, not a torch.nn.Module class"),
        ("not_a_module", {}, "returned a int, not a torch.nn.Module"),
    ],
)
def test_kwargs_and_constructors_that_do_not_fit(
    user_module: str, attr: str, kwargs: dict[str, object], expected: str
) -> None:
    message = _error(f"{user_module}:{attr}", **kwargs)
    assert expected in message
    if "keyword" in expected:
        assert "it takes: num_classes, in_channels, width" in message


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("ThreeClasses", "returns shape (2, 3) for a batch of 2, not (N, num_classes) = (2, 10)"),
        ("Pair", "returns a tuple, not a (N, 10) tensor of logits"),
        ("Needs28", "fails on a batch of shape (2, 1, 8, 8) (RuntimeError: mat1 and mat2"),
    ],
)
def test_outputs_that_are_not_n_by_num_classes(user_module: str, attr: str, expected: str) -> None:
    assert expected in _error(f"{user_module}:{attr}")


def test_reserved_kwargs_are_refused() -> None:
    for key in ("num_classes", "in_channels"):
        with pytest.raises(UserError, match=f"'{key}' comes from the dataset"):
            check_arch_kwargs({key: 3})
    check_arch_kwargs({"width": 3})


def test_the_output_check_changes_neither_mode_nor_batchnorm(user_module: str) -> None:
    model = create_model(f"{user_module}:LeNet", num_classes=10, in_channels=1)
    model.train()
    bn = model.get_submodule("net.bn")
    assert isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None
    with torch.no_grad():
        bn.running_mean.fill_(0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    check_logits_shape(model, "x:LeNet", (1, 8, 8), 10)
    assert model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_source_record_and_a_changed_module_warns(
    user_module: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"{user_module}:LeNet"
    assert source_record(name) == {}  # not imported yet: nothing is read, nothing imported
    assert user_module not in sys.modules
    create_model(name, num_classes=10, in_channels=1)
    record = source_record(name)
    assert record["module"] == user_module and record["object"] == "LeNet"
    assert record["file"] == str((tmp_path / f"{user_module}.py").resolve())
    assert len(record["sha256"]) == 64
    with caplog.at_level(logging.WARNING):
        warn_if_source_changed(name, record)
    assert not caplog.records
    (tmp_path / f"{user_module}.py").write_text(MODULE + "\n# edited\n")
    with caplog.at_level(logging.WARNING):
        warn_if_source_changed(name, record)
    assert "has changed since the checkpoint was written" in caplog.text


def test_source_record_of_registered_names_is_empty() -> None:
    assert source_record("small_cnn") == {}
    assert source_record("tv:resnet18") == {}


# --------------------------------------------------------------------------- checkpoints
def _saved(tmp_path: Path, module: str) -> tuple[Path, NormalizedModel]:
    name = f"{module}:LeNet"
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=1, input_shape=(1, 8, 8), width=3)
    meta = {
        "arch": name,
        "arch_kwargs": {"width": 3},
        "arch_source": source_record(name),
        "dataset": "digits",
        "num_classes": 10,
        "in_channels": 1,
        "input_shape": [1, 8, 8],
        "normalization": {"mean": [0.0], "std": [1.0]},
    }
    return save_checkpoint(tmp_path / "ck", model, meta), model.eval()


def test_a_checkpoint_alone_never_imports_its_module(user_module: str, tmp_path: Path) -> None:
    ck, _ = _saved(tmp_path, user_module)
    sys.modules.pop(user_module)
    _marker(tmp_path, user_module).unlink()
    for arch in (None, "small_cnn", f"{user_module}:Other"):
        with pytest.raises(UserError) as info:
            load_checkpoint(ck, arch=arch)
        message = str(info.value)
        assert f"pass --arch {user_module}:LeNet (or --trust-arch)" in message
        assert user_module not in sys.modules
        assert not _marker(tmp_path, user_module).exists()


@pytest.mark.parametrize("how", ["named", "trusted"])
def test_a_named_or_trusted_checkpoint_loads_the_same_logits(
    user_module: str, tmp_path: Path, how: str
) -> None:
    ck, model = _saved(tmp_path, user_module)
    sys.modules.pop(user_module)
    kwargs = {"arch": f"{user_module}:LeNet"} if how == "named" else {"trust_arch": True}
    loaded = load_checkpoint(ck, **kwargs)  # type: ignore[arg-type]
    assert _marker(tmp_path, user_module).exists()
    assert loaded.meta["arch_kwargs"] == {"width": 3}
    x = torch.rand(5, 1, 8, 8)
    assert torch.equal(loaded.model(x), model(x))


def test_kwargs_that_contradict_the_checkpoint_are_refused(
    user_module: str, tmp_path: Path
) -> None:
    ck, _ = _saved(tmp_path, user_module)
    expected = re.escape("records arch kwargs {'width': 3}, not {'width': 4}")
    with pytest.raises(UserError, match=expected):
        load_checkpoint(ck, arch=f"{user_module}:LeNet", arch_kwargs={"width": 4})


def test_plain_state_dict_of_a_user_class(user_module: str, tmp_path: Path) -> None:
    _, model = _saved(tmp_path, user_module)
    path = tmp_path / "lenet.pt"
    torch.save(model.net.state_dict(), path)
    loaded = load_checkpoint(
        path, arch=f"{user_module}:LeNet", arch_kwargs={"width": 3}, dataset="digits"
    )
    assert isinstance(loaded.model, nn.Module) and loaded.meta["arch"] == f"{user_module}:LeNet"
    with pytest.raises(UserError, match="'num_classes' comes from the dataset"):
        load_checkpoint(
            path, arch=f"{user_module}:LeNet", arch_kwargs={"num_classes": 10}, dataset="digits"
        )
