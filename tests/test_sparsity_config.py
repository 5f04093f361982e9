"""SparsityConfig validation and dict round trip."""

from __future__ import annotations

import json

import pytest

from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import Granularity, SparsityConfig


def test_defaults_are_dense_window() -> None:
    cfg = SparsityConfig()
    assert cfg.target == 0.0
    assert cfg.dense
    assert cfg.granularity is Granularity.WINDOW
    assert not cfg.prune_first_conv and not cfg.prune_classifier


def test_round_trip_through_json() -> None:
    cfg = SparsityConfig(
        target=0.8,
        granularity=Granularity.COMBINED,
        initial=0.1,
        start=0.5,
        end=3.0,
        update_every=7,
        include=("net.layer*",),
        exclude=("*.shortcut.*",),
        prune_first_conv=True,
    )
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d["granularity"] == "combined"
    assert SparsityConfig.from_dict(d) == cfg


def test_from_dict_accepts_strings_and_lists() -> None:
    cfg = SparsityConfig.from_dict({"target": 0.5, "granularity": "Channel", "include": ["a"]})
    assert cfg.granularity is Granularity.CHANNEL
    assert cfg.include == ("a",)
    assert isinstance(cfg.target, float)


def test_from_dict_unknown_key_suggests_nearest() -> None:
    with pytest.raises(UserError, match="update_evry") as info:
        SparsityConfig.from_dict({"update_evry": 10})
    assert "update_every" in str(info.value)


def test_unknown_granularity_lists_valid() -> None:
    with pytest.raises(UserError, match="window"):
        SparsityConfig(target=0.5, granularity="windw")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"target": 1.0},
        {"target": -0.1},
        {"target": float("nan")},
        {"target": 0.5, "initial": 0.6},
        {"target": 0.5, "initial": -0.1},
        {"target": 0.5, "start": 2.0, "end": 1.0},
        {"target": 0.5, "start": -1.0},
        {"target": 0.5, "update_every": 0},
        {"target": 0.5, "update_every": 2.5},
        {"target": 0.5, "include": "net.conv1"},
        {"target": 0.5, "prune_classifier": "yes"},
        {"target": True},
    ],
)
def test_invalid_values_raise_user_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(UserError):
        SparsityConfig(**kwargs)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    cfg = SparsityConfig(target=0.5)
    with pytest.raises(AttributeError):
        cfg.target = 0.6  # type: ignore[misc]


# ------------------------------------------------------------------ ToST keys (issue 26)
@pytest.mark.parametrize(
    "changes,match",
    [
        ({"tost_mask": "lottery"}, "unknown sparsity tost_mask 'lottery'"),
        ({"tost_activation": "tanh"}, "unknown sparsity tost_activation 'tanh'"),
        ({"tost_label_smoothing": 1.0}, r"tost_label_smoothing must be in \[0, 1\)"),
        ({"tost_skip": "yes"}, "tost_skip must be true or false"),
        ({"mask_from": ""}, "mask_from must be a checkpoint path"),
    ],
)
def test_bad_tost_keys_are_user_errors(changes: dict[str, object], match: str) -> None:
    with pytest.raises(UserError, match=match):
        SparsityConfig(target=0.7, method="tost", **changes)  # type: ignore[arg-type]


def test_tost_keys_normalise_and_round_trip() -> None:
    cfg = SparsityConfig(target=0.7, method="tost", tost_activation=" GELU", tost_mask="Random")  # type: ignore[arg-type]
    assert (cfg.tost_activation, cfg.tost_mask, cfg.label) == (
        "gelu",
        "random",
        "tost-random-uniform",
    )
    assert SparsityConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert SparsityConfig(target=0.7, method="tost", granularity="channel").label == "tost-channel"  # type: ignore[arg-type]
