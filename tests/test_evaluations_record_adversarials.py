"""Tests for :mod:`evaluations.record.adversarials`: the saved-adversarials file format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from evaluations.record.adversarials import (
    META_KEY,
    KeptAdversarials,
    SavedAdversarials,
    adversarials_path,
    clean_sha256,
    find_adversarial_files,
    load_adversarials,
    save_adversarials,
)
from robustbench_sparse.errors import UserError


def _saved(m: int = 3, n: int = 5) -> SavedAdversarials:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 4, 4, generator=gen)
    return SavedAdversarials(
        source="dense",
        source_path="/runs/dense",
        weights_sha256="ab" * 32,
        dataset="digits",
        attack="pgd",
        backend="native",
        norm="linf",
        epsilons=[0.0, 0.1, 0.2],
        params={"steps": 5},
        fingerprint="f" * 64,
        clean_sha256=clean_sha256(x),
        examples=torch.tensor([7, 3, 11, 0, 5][:n]),
        labels=torch.tensor([1, 0, 2, 2, 1][:n]),
        kept=KeptAdversarials(
            torch.tensor([0, 2, 2][:m]),
            torch.tensor([1, 1, 2][:m]),
            torch.rand(m, 1, 4, 4, generator=gen),
        ),
    )


def test_round_trip_keeps_every_tensor_and_field(tmp_path: Path) -> None:
    saved = _saved()
    path = save_adversarials(adversarials_path(tmp_path, "dense", "pgd@native"), saved)
    assert path == tmp_path / "adversarials" / "dense" / "pgd@native.safetensors"
    back = load_adversarials(path)
    assert back.metadata() == saved.metadata() and back.path == path
    for name in ("examples", "labels"):
        assert torch.equal(getattr(back, name), getattr(saved, name))
    assert torch.equal(back.kept.position, saved.kept.position)
    assert torch.equal(back.kept.eps_index, saved.kept.eps_index)
    assert torch.equal(back.kept.adversarials, saved.kept.adversarials)
    assert back.kept.adversarials.dtype == torch.float32
    assert not list(path.parent.glob(".*tmp*"))  # written atomically, no leftovers


def test_a_cell_without_adversarials_round_trips(tmp_path: Path) -> None:
    saved = _saved(m=0)
    back = load_adversarials(save_adversarials(tmp_path / "a.safetensors", saved))
    assert back.kept.adversarials.shape[0] == 0 and back.examples.numel() == 5


def test_clean_hash_sees_one_changed_value() -> None:
    x = torch.rand(4, 1, 3, 3)
    y = x.clone()
    y[2, 0, 1, 1] += 1e-6
    assert clean_sha256(x) == clean_sha256(x.clone().double())  # float32 bytes either way
    assert clean_sha256(x) != clean_sha256(y)


def test_concat_offsets_positions() -> None:
    a = KeptAdversarials(torch.tensor([0, 1]), torch.tensor([1, 1]), torch.zeros(2, 1, 2, 2))
    b = KeptAdversarials(torch.tensor([0]), torch.tensor([2]), torch.ones(1, 1, 2, 2))
    joined = KeptAdversarials.concat([a, b], [0, 5])
    assert joined.position.tolist() == [0, 1, 5] and joined.eps_index.tolist() == [1, 1, 2]


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, object]) -> Path:
    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("not safetensors", "not a saved-adversarials file"),
        ("no metadata", "not a saved-adversarials file"),
        ("other format", "no robustbench-sparse-adversarials metadata"),
        ("future version", "format version 99 is not supported"),
        ("missing tensor", "lacks the tensors adversarials"),
        ("position out of range", "do not fit together"),
        ("eps index out of range", "do not fit together"),
    ],
)
def test_bad_files_are_refused_in_one_line(tmp_path: Path, case: str, message: str) -> None:
    good = tmp_path / "good.safetensors"
    save_adversarials(good, _saved())
    back = load_adversarials(good)
    tensors = {
        "examples": back.examples,
        "labels": back.labels,
        "position": back.kept.position,
        "eps_index": back.kept.eps_index,
        "adversarials": back.kept.adversarials,
    }
    meta = back.metadata()
    bad = tmp_path / "bad.safetensors"
    if case == "not safetensors":
        bad.write_text("hello")
    elif case == "no metadata":
        save_file(tensors, str(bad))
    elif case == "other format":
        _write_raw(bad, tensors, {**meta, "format": "something-else"})
    elif case == "future version":
        _write_raw(bad, tensors, {**meta, "version": 99})
    elif case == "missing tensor":
        _write_raw(bad, {k: v for k, v in tensors.items() if k != "adversarials"}, meta)
    elif case == "position out of range":
        _write_raw(bad, {**tensors, "position": torch.tensor([0, 2, 5])}, meta)
    else:
        _write_raw(bad, {**tensors, "eps_index": torch.tensor([0, 3, 1])}, meta)
    with pytest.raises(UserError, match=message) as info:
        load_adversarials(bad)
    assert "\n" not in str(info.value)


def test_find_files_from_results_dir_subdir_or_file(tmp_path: Path) -> None:
    a = save_adversarials(adversarials_path(tmp_path, "dense", "pgd@native"), _saved())
    b = save_adversarials(adversarials_path(tmp_path, "dense", "fgsm@native"), _saved())
    assert find_adversarial_files(tmp_path) == sorted([a, b])
    assert find_adversarial_files(tmp_path / "adversarials" / "dense") == sorted([a, b])
    assert find_adversarial_files(a) == [a]
    with pytest.raises(UserError, match="no such file or directory"):
        find_adversarial_files(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="--save-adversarials"):
        find_adversarial_files(tmp_path / "empty")
