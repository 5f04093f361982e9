"""state_dicts: wrapper prefixes, torch.nn.utils.prune pairs, and --normalize specs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.errors import UserError
from robustbench_sparse.state_dicts import (
    find_state_dict,
    fold_prune_masks,
    resolve_normalization,
    strip_wrapper_prefixes,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))


@pytest.mark.parametrize(
    "prefix", ["", "module.", "_orig_mod.", "module._orig_mod.", "_orig_mod.module."]
)
def test_strip_wrapper_prefixes(prefix: str) -> None:
    state = _net().state_dict()
    wrapped = {prefix + k: v for k, v in state.items()}
    assert list(strip_wrapper_prefixes(wrapped)) == list(state)


def test_a_prefix_on_some_keys_only_is_kept() -> None:
    state = {"module.a": torch.zeros(1), "b": torch.zeros(1)}
    assert strip_wrapper_prefixes(state) == state


@pytest.mark.parametrize(
    "apply",
    [
        lambda m: prune.l1_unstructured(m, "weight", amount=0.495),
        lambda m: prune.random_unstructured(m, "weight", amount=0.3),
        lambda m: prune.ln_structured(m, "weight", amount=0.5, n=2, dim=0),
    ],
)
def test_fold_equals_prune_remove(apply: object) -> None:
    net = _net()
    for module in (net[0], net[3]):
        apply(module)  # type: ignore[operator]
    pairs = net.state_dict()
    assert "0.weight_orig" in pairs and "0.weight_mask" in pairs
    folded, masks = fold_prune_masks(pairs)
    for module in (net[0], net[3]):
        prune.remove(module, "weight")
    removed = net.state_dict()
    assert list(folded) == list(removed)
    for key, value in removed.items():
        assert torch.equal(folded[key], value), key
    assert sorted(masks) == ["0.weight", "3.weight"]
    for key, mask in masks.items():
        assert mask.dtype == torch.bool
        assert torch.equal(mask, removed[key] != 0)


def test_fold_zeroes_non_finite_pruned_entries() -> None:
    orig = torch.tensor([[1.0, math.inf], [math.nan, 2.0]])
    mask = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    folded, _ = fold_prune_masks({"w_orig": orig, "w_mask": mask})
    assert torch.equal(folded["w"], torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    assert not torch.signbit(folded["w"]).any()


@pytest.mark.parametrize(
    ("state", "match"),
    [
        ({"w_orig": torch.ones(2)}, "no matching 'w_mask'"),
        ({"w_mask": torch.ones(2)}, "no matching 'w_orig'"),
        ({"w_orig": torch.ones(2), "w_mask": torch.ones(3)}, "has shape"),
        ({"w_orig": torch.ones(2), "w_mask": torch.tensor([0.5, 1.0])}, "other than 0 and 1"),
        ({"w_orig": torch.ones(2), "w_mask": torch.ones(2), "w": torch.ones(2)}, "both"),
    ],
)
def test_fold_refuses_broken_pairs(state: dict[str, torch.Tensor], match: str) -> None:
    with pytest.raises(UserError, match=match):
        fold_prune_masks(state, "x.pt")


def test_resolve_normalization() -> None:
    info = dataset_info("cifar10")
    assert resolve_normalization(None, info) == (info.mean, info.std, "dataset")
    assert resolve_normalization("dataset", info) == (info.mean, info.std, "dataset")
    assert resolve_normalization("none", info) == ((0.0,) * 3, (1.0,) * 3, "none")
    assert resolve_normalization("0.5,0.25", info) == ((0.5,) * 3, (0.25,) * 3, "custom")
    mean, std, label = resolve_normalization("0.1,0.2,0.3,0.4,0.5,0.6", info)
    assert (mean, std, label) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "custom")
    gray = dataset_info("digits")
    assert resolve_normalization("0.5,0.5", gray) == ((0.5,), (0.5,), "custom")


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("imagenet", "expected dataset, none"),
        ("0.5", "expected dataset, none"),
        ("0.1,0.2,0.3,0.4", "expected dataset, none"),
        ("0.5,nan", "expected dataset, none"),
        ("0.5,0", "std must be positive"),
        ("0.5,-1", "std must be positive"),
    ],
)
def test_resolve_normalization_refuses(spec: str, match: str) -> None:
    with pytest.raises(UserError, match=match):
        resolve_normalization(spec, dataset_info("cifar10"))


# ------------------------------------------------------------------ find_state_dict (issue 29, 5)
_SD = {"conv.weight": torch.ones(2, 1, 3, 3), "fc.weight": torch.zeros(3, 2)}
_SD2 = {"conv.weight": torch.full((2, 1, 3, 3), 2.0), "fc.weight": torch.ones(3, 2)}
_OPTIM = {"state": {0: {"momentum_buffer": torch.ones(2)}}, "param_groups": [{"lr": 0.1}]}


@pytest.mark.parametrize(
    ("obj", "key"),
    [
        (_SD, None),  # the state dict itself
        ({"net": _SD, "acc": 95.3, "epoch": 200}, "net"),  # kuangliu/pytorch-cifar
        ({"model_state": _SD}, "model_state"),
        ({"state_dict": _SD, "optimizer": _OPTIM, "epoch": 3}, "state_dict"),  # optimizer skipped
        ({"checkpoint": {"weights": _SD, "step": 7}}, "checkpoint/weights"),  # nested
        ({"best": _SD, "history": [1.0, 2.0], "note": "x"}, "best"),  # any key name
    ],
)
def test_the_one_state_dict_is_found_under_any_key(obj: object, key: str | None) -> None:
    state, used = find_state_dict(obj)
    assert used == key
    assert set(state) == set(_SD) and all(torch.equal(state[k], _SD[k]) for k in _SD)


@pytest.mark.parametrize(
    ("obj", "listed"),
    [
        ({"ema": _SD2, "model": _SD}, ("'ema'", "'model'")),  # EMA training: which one is meant?
        ({"model": _SD, "model_ema": _SD2, "optimizer": _OPTIM}, ("'model'", "'model_ema'")),
        ({"a": {"x": _SD}, "b": {"y": _SD2}}, ("'a/x'", "'b/y'")),
    ],
)
def test_several_state_dicts_are_refused_listing_them_and_the_flag(
    obj: object, listed: tuple[str, ...]
) -> None:
    with pytest.raises(UserError, match="holds 2 state dicts") as info:
        find_state_dict(obj, where="m.pt")
    message = str(info.value)
    assert "--state-dict-key KEY" in message and "\n" not in message
    assert all(name in message for name in listed)


@pytest.mark.parametrize(
    ("key", "expected"),
    [("ema", _SD2), ("model", _SD)],
)
def test_the_key_picks_one(key: str, expected: dict[str, torch.Tensor]) -> None:
    state, used = find_state_dict({"ema": _SD2, "model": _SD}, key)
    assert used == key and torch.equal(state["conv.weight"], expected["conv.weight"])


def test_a_nested_path_and_a_top_level_key_with_a_slash() -> None:
    state, used = find_state_dict({"run": {"ema": _SD2, "model": _SD}}, "run/ema")
    assert used == "run/ema" and torch.equal(state["fc.weight"], _SD2["fc.weight"])
    state, _ = find_state_dict({"a/b": _SD, "a": {"b": _SD2}}, "a/b")  # the literal key wins
    assert torch.equal(state["fc.weight"], _SD["fc.weight"])


@pytest.mark.parametrize(
    ("obj", "key", "match"),
    [
        ({"epochs": 3}, None, r"does not contain a state dict of tensors \(entries: 'epochs'\)"),
        ({}, None, "does not contain a state dict"),
        ([torch.ones(1)], None, r"does not contain a state dict of tensors \(a list\)"),
        ({"w": {}}, None, "does not contain a state dict"),  # an empty dict is no model
        ({"ema": _SD2, "model": _SD}, "emma", r"no entry 'emma'; the state dicts it holds: 'ema'"),
        (
            {"net": _SD, "epoch": 3},
            "epoch",
            r"entry 'epoch' of m.pt is not a state dict .*holds an int",
        ),
        (_SD, "net", "is itself a state dict .* drop --state-dict-key"),
    ],
)
def test_find_state_dict_refuses(obj: object, key: str | None, match: str) -> None:
    with pytest.raises(UserError, match=match):
        find_state_dict(obj, key, where="m.pt")
