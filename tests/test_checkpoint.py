"""checkpoint: round trip, plain .pt loading, refusal of pickled code, corrupt files, train state."""

from __future__ import annotations

import builtins
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustbench_sparse.checkpoint import (
    MASK_PREFIX,
    META_FILE,
    WEIGHTS_FILE,
    load_checkpoint,
    load_train_state,
    save_checkpoint,
    save_train_state,
)
from robustbench_sparse.checkpoint_files import resolve_checkpoint_files
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import NormalizedModel, create_model
from tests.core_helpers import WIDTH, assert_tensors_identical, read_weights_file, single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> NormalizedModel:
    torch.manual_seed(seed)
    info = dataset_info("digits")
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )
    # Non-trivial BN buffers, so the round trip checks more than the init values.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.num_batches_tracked.fill_(7)
    return model


def _meta(**extra: Any) -> dict[str, Any]:
    info = dataset_info("digits")
    return {
        "name": "unit",
        "arch": "small_cnn",
        "arch_kwargs": {"width": WIDTH},
        "dataset": "digits",
        "num_classes": 10,
        "in_channels": 1,
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "granularity": "window",
        "sparsity_target": 0.7,
        "clean_accuracy": 0.5,
        **extra,
    }


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, NormalizedModel, dict[str, torch.Tensor]]:
    model = _model()
    w = model.net.conv2[0].weight
    mask = torch.rand_like(w) > 0.7
    with torch.no_grad():
        w.mul_(mask)
    out = save_checkpoint(tmp_path / "ck", model, _meta(), {"net.conv2.0.weight": mask})
    return out, model, {"net.conv2.0.weight": mask}


def _rewrite_meta(out: Path, **changes: Any) -> None:
    meta = json.loads((out / META_FILE).read_text())
    meta.update(changes)
    for key, value in changes.items():
        if value is None:
            del meta[key]
    (out / META_FILE).write_text(json.dumps(meta))


# ------------------------------------------------------------------------------- round trip
def test_round_trip(saved: tuple[Path, NormalizedModel, dict[str, torch.Tensor]]) -> None:
    out, model, masks = saved
    assert sorted(p.name for p in out.iterdir()) == [META_FILE, WEIGHTS_FILE]  # no temp files
    ck = load_checkpoint(out)
    assert not ck.model.training
    assert all(not m.training for m in ck.model.modules())
    assert_tensors_identical(ck.model.state_dict(), model.state_dict())
    assert_tensors_identical(ck.masks, masks)
    assert ck.masks["net.conv2.0.weight"].dtype == torch.bool
    assert ck.name == "unit" and ck.path == out
    assert ck.info.name == "digits"
    assert ck.granularity == "window" and ck.sparsity_target == 0.7
    assert ck.meta["format"] == "robustbench-sparse-checkpoint"
    assert ck.meta["format_version"] == 1
    assert len(ck.meta["weights_sha256"]) == 64
    assert ck.meta["arch_kwargs"] == {"width": WIDTH}
    # The masks are stored in the file itself, next to the weights.
    state, file_masks = read_weights_file(out)
    assert_tensors_identical(file_masks, masks)
    assert not any(k.startswith(MASK_PREFIX) for k in state)
    # Same predictions.
    x = torch.rand(4, 1, 8, 8)
    model.eval()
    assert torch.equal(ck.model(x), model(x))


def test_load_by_file_paths(saved: tuple[Path, NormalizedModel, dict[str, torch.Tensor]]) -> None:
    out, _, _ = saved
    for path in (out / WEIGHTS_FILE, out / META_FILE):
        assert load_checkpoint(path).meta["name"] == "unit"
    assert resolve_checkpoint_files(out) == (out / WEIGHTS_FILE, out / META_FILE)
    assert resolve_checkpoint_files(out / META_FILE) == (out / WEIGHTS_FILE, out / META_FILE)


def test_name_defaults_to_directory(tmp_path: Path) -> None:
    meta = _meta()
    del meta["name"]
    out = save_checkpoint(tmp_path / "my-run", _model(), meta)
    assert load_checkpoint(out).name == "my-run"


def test_save_requires_core_meta(tmp_path: Path) -> None:
    meta = _meta()
    del meta["dataset"]
    with pytest.raises(ValueError, match="dataset"):
        save_checkpoint(tmp_path / "x", _model(), meta)


def test_unknown_path_kinds(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"123")
    with pytest.raises(UserError, match="cannot tell what"):
        load_checkpoint(odd)


# ---------------------------------------------------------------------- plain .pt state dicts
@pytest.mark.parametrize("style", ["normalized", "plain", "module-prefix", "wrapped"])
def test_plain_state_dict_loading(tmp_path: Path, style: str) -> None:
    model = _model(seed=1)
    if style == "normalized":
        sd: Any = model.state_dict()
    elif style == "plain":  # torchvision style: the keys of model.net
        sd = model.net.state_dict()
    elif style == "module-prefix":  # DataParallel
        sd = {f"module.{k}": v for k, v in model.net.state_dict().items()}
    else:
        sd = {"state_dict": model.state_dict(), "epoch": 3}
    path = tmp_path / "weights.pt"
    torch.save(sd, path)
    ck = load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs={"width": WIDTH})
    assert not ck.model.training
    assert_tensors_identical(ck.model.net.state_dict(), model.net.state_dict())
    info = dataset_info("digits")
    assert torch.allclose(ck.model.normalize.mean.flatten(), torch.tensor(info.mean))
    assert ck.meta["source"] == "plain-state-dict" and ck.meta["granularity"] == "dense"
    assert ck.name == "weights" and ck.masks == {}


def test_plain_state_dict_needs_arch_and_dataset(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save(_model().state_dict(), path)
    with pytest.raises(UserError, match="--arch and --dataset"):
        load_checkpoint(path, dataset="digits")


def test_plain_state_dict_of_wrong_architecture(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(_model().state_dict(), path)  # width 0.25
    with pytest.raises(UserError, match="shape"):
        load_checkpoint(path, arch="small_cnn", dataset="digits")  # width 1.0


def test_plain_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(UserError, match="state dict"):
        load_checkpoint(path, arch="small_cnn", dataset="digits")
    path.write_bytes(b"this is not a zip or pickle")
    with pytest.raises(UserError):
        load_checkpoint(path, arch="small_cnn", dataset="digits")


class _Evil:
    """Unpickling this would create a file (arbitrary code execution)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.open, (str(self.target), "w"))


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UserError) as info:
        load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs={"width": WIDTH})
    assert "refusing to load" in str(info.value)
    assert "\n" not in str(info.value)
    assert not marker.exists()


def test_malicious_train_state_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": _Evil(marker)}, tmp_path / "train_state.pt")
    with pytest.raises(UserError, match="cannot resume"):
        load_train_state(tmp_path)
    assert not marker.exists()


def test_plain_state_dict_with_nan_is_refused(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.net.fc.weight[0, 0] = float("inf")
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(UserError, match="NaN or Inf"):
        load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs={"width": WIDTH})


# ----------------------------------------------------------------------- corrupt checkpoints
def _corrupt_and_reseal(out: Path, data: bytes) -> None:
    """Replace the weights file and update the checksum, so the deeper checks are reached."""
    import hashlib

    (out / WEIGHTS_FILE).write_bytes(data)
    _rewrite_meta(out, weights_sha256=hashlib.sha256(data).hexdigest())


def test_edited_weights_fail_the_checksum(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    raw = bytearray((out / WEIGHTS_FILE).read_bytes())
    raw[-3] ^= 0x01  # one bit of one weight
    (out / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(UserError, match="checksum differs"):
        load_checkpoint(out)


def test_truncated_weights_fail_the_checksum(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    raw = (out / WEIGHTS_FILE).read_bytes()
    (out / WEIGHTS_FILE).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match="checksum differs"):
        load_checkpoint(out)


@pytest.mark.parametrize("keep", [0, 5, "half"])
def test_truncated_safetensors_is_a_user_error(saved: tuple[Path, Any, Any], keep: Any) -> None:
    out, _, _ = saved
    raw = (out / WEIGHTS_FILE).read_bytes()
    n = len(raw) // 2 if keep == "half" else keep
    _corrupt_and_reseal(out, raw[:n])
    with pytest.raises(UserError, match=r"truncated|corrupt"):
        load_checkpoint(out)


def test_safetensors_cut_in_the_data_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    raw = (out / WEIGHTS_FILE).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    _corrupt_and_reseal(out, raw[: 8 + header_len + 16])  # header intact, tensors cut
    with pytest.raises(UserError, match="lies outside the file"):
        load_checkpoint(out)


def test_corrupt_json_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    (out / META_FILE).write_text('{"format": "robustbench-sparse-checkpoint", "arch": ')
    with pytest.raises(UserError, match="not valid JSON"):
        load_checkpoint(out)


def test_foreign_json_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    (out / META_FILE).write_text('{"hello": "world"}')
    with pytest.raises(UserError, match="not a robustbench-sparse checkpoint"):
        load_checkpoint(out)
    (out / META_FILE).write_text('{"format": "robustbench-sparse-checkpoint", "arch": "x"}')
    with pytest.raises(UserError, match="lacks the field"):
        load_checkpoint(out)


def test_missing_json_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    (out / META_FILE).unlink()
    with pytest.raises(UserError, match="missing"):
        load_checkpoint(out)


def test_missing_weights_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(UserError, match="missing"):
        load_checkpoint(out)


def test_nan_weights_are_refused(tmp_path: Path) -> None:
    model = _model()
    with torch.no_grad():
        model.net.conv3[0].weight[0, 0, 1, 1] = float("nan")
    out = save_checkpoint(tmp_path / "nan", model, _meta())  # valid file, valid checksum
    with pytest.raises(UserError, match="NaN or Inf") as info:
        load_checkpoint(out)
    assert "net.conv3.0.weight" in str(info.value)


def test_wrong_class_count_for_dataset(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    with pytest.raises(UserError, match="10 classes but dataset 'cifar100' has 100"):
        load_checkpoint(out, dataset="cifar100")


def test_wrong_channel_count_for_dataset(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    with pytest.raises(UserError, match="1-channel inputs but dataset 'cifar10' has 3"):
        load_checkpoint(out, dataset="cifar10")


def test_same_shape_dataset_override_is_allowed(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    assert load_checkpoint(out, dataset="mnist").info.name == "mnist"


def test_unknown_dataset_override(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    with pytest.raises(UserError, match="digits"):
        load_checkpoint(out, dataset="digitz")


def test_meta_weights_mismatch_is_a_user_error(saved: tuple[Path, Any, Any]) -> None:
    out, _, _ = saved
    _rewrite_meta(out, arch_kwargs={"width": 0.5})
    with pytest.raises(UserError, match="shape"):
        load_checkpoint(out)


# ------------------------------------------------------------------------------ train state
def test_train_state_round_trip(tmp_path: Path) -> None:
    assert load_train_state(tmp_path) is None
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.rand(2, 1, 8, 8)).sum().backward()
    opt.step()
    state = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "history": [{"epoch": 1, "lr": 0.1, "masks_frozen": False}],
        "best_accuracy": 0.25,
    }
    save_train_state(tmp_path, state)
    assert [p.name for p in tmp_path.iterdir()] == ["train_state.pt"]
    back = load_train_state(tmp_path)
    assert back is not None
    assert_tensors_identical(back["model"], state["model"])
    assert back["history"] == state["history"] and back["best_accuracy"] == 0.25
    opt2 = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(back["optimizer"])
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_garbage_train_state_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "train_state.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="cannot resume"):
        load_train_state(tmp_path)
    torch.save([1, 2], tmp_path / "train_state.pt")
    with pytest.raises(UserError, match="not a training state"):
        load_train_state(tmp_path)
