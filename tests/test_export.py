"""robustbench_sparse.export: packed format round trips bit-exactly and meets the size bound."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustbench_sparse.checkpoint import MASK_PREFIX, save_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.export import (
    MAGIC,
    compare_packed,
    pack_checkpoint,
    pack_tensors,
    unpack,
    verify_packed,
)
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, compute_mask


def _checkpoint(
    tmp: Path, granularity: Granularity | None, sparsity: float = 0.9, *, mul: bool = False
) -> Path:
    """small_cnn (1 channel) with Campfire masks on every conv but the first and on nothing else."""
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=10, in_channels=1)
    masks: dict[str, torch.Tensor] = {}
    if granularity is not None:
        convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
        for name in convs[1:]:
            weight = model.get_submodule(name).weight
            mask = compute_mask(weight, sparsity, granularity)
            with torch.no_grad():
                if mul:  # what the sparsifier does: leaves -0.0 at negative pruned weights
                    weight.mul_(mask.float())
                else:
                    weight.masked_fill_(~mask, 0.0)
            masks[f"{name}.weight"] = mask
    meta = {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "dataset": "digits"}
    out = tmp / (granularity.value if granularity else "dense")
    return save_checkpoint(out, model, meta, masks)


@pytest.mark.parametrize("granularity", [*list(Granularity), None])
def test_round_trip_is_bit_exact(tmp_path: Path, granularity: Granularity | None) -> None:
    ckpt = _checkpoint(tmp_path, granularity)
    out = tmp_path / "model.rbsp"
    stats = pack_checkpoint(ckpt, out)
    assert out.read_bytes()[:8] == MAGIC
    report = compare_packed(ckpt, out)
    assert report.identical and report.negative_zeros == 0 and not report.mismatched
    assert verify_packed(ckpt, out)
    assert stats.packed_bytes == out.stat().st_size
    if granularity in (Granularity.WINDOW, Granularity.CHANNEL, Granularity.COMBINED):
        assert stats.ratio_to_bound <= 1.1
        assert stats.packed_bytes < 0.25 * stats.dense_bytes
        assert all(s.code_bits == s.bound_code_bits for s in stats.layers)  # codes meet the bound
    if granularity is Granularity.UNSTRUCTURED:
        assert {s.encoding for s in stats.layers} == {"bitmask"}


def test_signed_zeros_reported_or_stored(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.WINDOW, mul=True)
    plain, signed = tmp_path / "a.rbsp", tmp_path / "b.rbsp"
    small = pack_checkpoint(ckpt, plain)
    big = pack_checkpoint(ckpt, signed, signed_zeros=True)
    report = compare_packed(ckpt, plain)
    assert report.identical and report.negative_zeros > 0  # -0.0 restored as +0.0, said so
    assert verify_packed(ckpt, plain)
    exact = compare_packed(ckpt, signed)
    assert exact.identical and exact.negative_zeros == 0  # fully bit-identical
    assert verify_packed(ckpt, signed)
    assert big.packed_bytes > small.packed_bytes


def test_values_and_masks_match_the_source(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.COMBINED, 0.7)
    tensors = unpack(pack_checkpoint(ckpt, tmp_path / "m.rbsp") and tmp_path / "m.rbsp")
    from safetensors.torch import load_file

    source = load_file(str(ckpt / "checkpoint.safetensors"))
    assert set(tensors) == set(source)
    for name, t in source.items():
        assert t.dtype == tensors[name].dtype and torch.equal(t, tensors[name]), name
    assert any(n.startswith(MASK_PREFIX) for n in tensors)


def test_odd_tensors_fall_back_and_round_trip(tmp_path: Path) -> None:
    w = torch.randn(4, 6, 3, 3)
    mask = torch.rand(4, 6, 3, 3) > 0.5
    leaky = w.clone()  # nonzero outside its mask: must be stored raw, not lose anything
    tensors = {
        "a.weight": w * mask,
        MASK_PREFIX + "a.weight": mask,
        "b.weight": leaky,
        MASK_PREFIX + "b.weight": mask,
        "c.weight": (torch.randn(5, 7) * (torch.rand(5, 7) > 0.3)).to(torch.bfloat16),
        "d.half": torch.randn(3).half(),
        "e.steps": torch.tensor(7, dtype=torch.int64),
        "f.empty": torch.zeros(0, 3),
    }
    data, _ = pack_tensors(tensors, signed_zeros=True)  # w * mask leaves -0.0
    path = tmp_path / "odd.rbsp"
    path.write_bytes(data)
    back = unpack(path)
    assert set(back) == set(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and back[name].shape == t.shape
        assert torch.equal(
            t.reshape(-1).view(torch.uint8), back[name].reshape(-1).view(torch.uint8)
        )


def test_corrupt_or_missing_files_are_user_errors(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path, Granularity.WINDOW)
    out = tmp_path / "m.rbsp"
    pack_checkpoint(ckpt, out)
    with pytest.raises(UserError, match="exists"):
        pack_checkpoint(ckpt, out)
    pack_checkpoint(ckpt, out, overwrite=True)
    raw = out.read_bytes()
    bad = tmp_path / "bad.rbsp"
    bad.write_bytes(b"NOTPACK!" + raw[8:])
    with pytest.raises(UserError, match="magic"):
        unpack(bad)
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UserError, match=r"corrupt|truncated"):
        unpack(bad)
    with pytest.raises(UserError, match="does not exist"):
        unpack(tmp_path / "nope.rbsp")
    with pytest.raises(UserError):
        pack_checkpoint(tmp_path / "no-checkpoint", tmp_path / "x.rbsp")


# ------------------------------------------------------------- packed files load like checkpoints
def test_packed_file_loads_wherever_a_checkpoint_loads(tmp_path: Path) -> None:
    from robustbench_sparse.checkpoint import load_checkpoint

    ckpt = _checkpoint(tmp_path, Granularity.CHANNEL, 0.7)
    packed = tmp_path / "model.rbsp"
    pack_checkpoint(ckpt, packed)
    a, b = load_checkpoint(ckpt), load_checkpoint(packed)
    assert a.meta == b.meta  # the name falls back to the file stem when the meta has none
    for (n1, t1), (n2, t2) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert n1 == n2 and torch.equal(t1, t2), n1
    assert set(a.masks) == set(b.masks) and all(
        torch.equal(a.masks[k], b.masks[k]) for k in a.masks
    )
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(a.model(x), b.model(x))


def test_packed_without_signed_zeros_loads_as_the_same_numbers(tmp_path: Path) -> None:
    from robustbench_sparse.checkpoint import load_checkpoint

    ckpt = _checkpoint(tmp_path, Granularity.WINDOW, mul=True)  # weights hold -0.0
    packed = tmp_path / "model.rbsp"
    pack_checkpoint(ckpt, packed)
    a, b = load_checkpoint(ckpt), load_checkpoint(packed)
    for t1, t2 in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(t1, t2)  # -0.0 == +0.0


def test_packed_file_with_edited_values_or_no_metadata_is_refused(tmp_path: Path) -> None:
    from robustbench_sparse.checkpoint import load_checkpoint
    from robustbench_sparse.packed_format import load_packed

    ckpt = _checkpoint(tmp_path, Granularity.WINDOW)
    packed = tmp_path / "model.rbsp"
    pack_checkpoint(ckpt, packed)
    raw = bytearray(packed.read_bytes())
    raw[-3] ^= 0x40  # flip a bit in the last blob (a value of a raw tensor)
    edited = tmp_path / "edited.rbsp"
    edited.write_bytes(bytes(raw))
    with pytest.raises(UserError, match="does not reproduce"):
        load_checkpoint(edited)
    from safetensors.torch import load_file

    data, _ = pack_tensors(load_file(str(ckpt / "checkpoint.safetensors")))  # no meta
    bare = tmp_path / "bare.rbsp"
    bare.write_bytes(data)
    with pytest.raises(UserError, match="without the checkpoint's metadata"):
        load_packed(bare)
