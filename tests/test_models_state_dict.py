"""Tests for robustbench_sparse.models.registry.load_state_dict_into."""

from __future__ import annotations

import pytest
import torch

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model, load_state_dict_into


def _model(seed: int, **kwargs: object) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", num_classes=10, in_channels=1, **kwargs)  # type: ignore[arg-type]


def _assert_same(a: torch.nn.Module, b: torch.nn.Module, prefix: str = "net.") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        if key.startswith(prefix):
            assert torch.equal(sa[key], sb[key]), key


def test_normalized_model_keys_roundtrip() -> None:
    src = _model(0, mean=(0.3,), std=(0.4,))
    dst = _model(1)
    load_state_dict_into(dst, src.state_dict())
    _assert_same(src, dst, prefix="")
    assert dst.normalize.mean.item() == pytest.approx(0.3)


def test_plain_torchvision_style_keys_keep_normalization() -> None:
    src = _model(0)
    dst = _model(1, mean=(0.1,), std=(0.2,))
    load_state_dict_into(dst, src.net.state_dict())  # keys like "conv1.0.weight"
    _assert_same(src, dst)
    assert dst.normalize.mean.item() == pytest.approx(0.1)
    x = torch.rand(2, 1, 8, 8)
    src.eval(), dst.eval()
    torch.testing.assert_close(dst.net(x), src.net(x))


def test_dataparallel_prefix_and_missing_num_batches_tracked() -> None:
    src = _model(0)
    sd = {f"module.{k}": v for k, v in src.net.state_dict().items() if "num_batches" not in k}
    dst = _model(1)
    load_state_dict_into(dst, sd)
    _assert_same(src, dst)


def test_shape_mismatch_names_tensor_arch_and_classes() -> None:
    big = create_model("resnet18", num_classes=1000)
    small = create_model("resnet18", num_classes=10)
    with pytest.raises(UserError) as err:
        load_state_dict_into(small, big.net.state_dict())
    assert str(err.value) == (
        "weight 'net.fc.weight' has shape (1000, 512) but arch resnet18 with 10 classes expects (10, 512)"
    )


def test_missing_and_unexpected_tensors() -> None:
    src = _model(0).state_dict()
    dst = _model(1)
    missing = {k: v for k, v in src.items() if k != "net.fc.bias"}
    with pytest.raises(UserError, match=r"lacks tensor 'net.fc.bias'.*small_cnn with 10 classes"):
        load_state_dict_into(dst, missing)
    extra = {**src, "net.fc2.weight": torch.zeros(3)}
    with pytest.raises(UserError, match=r"'net.fc2.weight'.*does not have"):
        load_state_dict_into(dst, extra)
    wrong_in = create_model("small_cnn", num_classes=10, in_channels=3).state_dict()
    with pytest.raises(UserError, match=r"'normalize.mean' has shape \(1, 3, 1, 1\)"):
        load_state_dict_into(dst, wrong_in)
