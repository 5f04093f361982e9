"""config: TOML loading errors, dataclass_from_dict (unknown keys, coercion), merge, to_jsonable."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from robustbench_sparse.config import (
    ConfigSchema,
    check_keys,
    coerce,
    dataclass_from_dict,
    deep_merge,
    load_toml,
    merge_dataclass,
    nearest_key,
    to_jsonable,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.training import LRSchedule, OptimizerName, TrainConfig


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Sample:
    name: str = "x"
    count: int = 1
    rate: float = 0.5
    flag: bool = False
    color: Color = Color.RED
    values: tuple[float, ...] = ()
    colors: tuple[Color, ...] = ()
    root: str | None = None
    limit: int | None = None


# --------------------------------------------------------------------------------- load_toml
def test_load_toml_reads_tables(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[train]\nepochs = 3\nlr = 0.1\n[sparsity]\ninclude = ["net.conv2"]\n')
    assert load_toml(path) == {
        "train": {"epochs": 3, "lr": 0.1},
        "sparsity": {"include": ["net.conv2"]},
    }


def test_load_toml_missing_file_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(UserError, match="does not exist") as info:
        load_toml(path)
    assert "nope.toml" in str(info.value)


def test_load_toml_directory_is_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError):
        load_toml(tmp_path)


def test_load_toml_bad_syntax_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[train\nepochs = = 3\n")
    with pytest.raises(UserError, match="not valid TOML"):
        load_toml(path)


def test_load_toml_binary_file_is_user_error(tmp_path: Path) -> None:
    path = tmp_path / "weights.toml"
    path.write_bytes(b"\xff\xfe\x00binary\x80")
    with pytest.raises(UserError, match="not valid TOML"):
        load_toml(path)


# ------------------------------------------------------------------------ dataclass_from_dict
def test_unknown_key_names_key_and_nearest_valid_key() -> None:
    with pytest.raises(UserError) as info:
        dataclass_from_dict(TrainConfig, {"epochs": 2, "learning_rat": 0.1}, "train")
    msg = str(info.value)
    assert "'learning_rat'" in msg
    assert "[train]" in msg
    with pytest.raises(UserError) as info:
        dataclass_from_dict(TrainConfig, {"epoch": 2}, "train")
    assert "unknown key 'epoch'" in str(info.value)
    assert "did you mean 'epochs'?" in str(info.value)


def test_unknown_key_without_close_match_lists_valid_keys() -> None:
    with pytest.raises(UserError) as info:
        check_keys("data", {"zzzzqqq": 1}, ["dataset", "train_limit"])
    assert "did you mean" not in str(info.value)
    assert "valid: dataset, train_limit" in str(info.value)


def test_coerces_enums_tuples_and_ints_for_floats() -> None:
    obj = dataclass_from_dict(
        Sample,
        {"color": "blue", "values": [1, 2.5], "colors": ["red", "blue"], "rate": 2, "limit": 5},
        "sample",
    )
    assert obj.color is Color.BLUE
    assert obj.values == (1.0, 2.5) and all(type(v) is float for v in obj.values)
    assert obj.colors == (Color.RED, Color.BLUE)
    assert obj.rate == 2.0 and type(obj.rate) is float
    assert obj.limit == 5
    assert dataclass_from_dict(Sample, {"limit": None, "root": None}, "s").limit is None


def test_train_config_from_toml_like_dict_gets_enums() -> None:
    cfg = dataclass_from_dict(
        TrainConfig,
        {"optimizer": "adamw", "lr_schedule": "multistep", "milestones": [2, 3], "lr": 1},
        "train",
    )
    assert cfg.optimizer is OptimizerName.ADAMW
    assert cfg.lr_schedule is LRSchedule.MULTISTEP
    assert cfg.milestones == (2.0, 3.0)
    sp = dataclass_from_dict(SparsityConfig, {"granularity": "channel", "target": 0.5}, "sparsity")
    assert sp.granularity is Granularity.CHANNEL


def test_invalid_enum_value_lists_valid_values() -> None:
    with pytest.raises(UserError) as info:
        dataclass_from_dict(Sample, {"color": "green"}, "sample")
    assert "[sample] color" in str(info.value)
    assert "valid: red, blue" in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"count": "3"}, "expected int"),
        ({"count": 1.5}, "expected int"),
        ({"count": True}, "expected int"),
        ({"rate": "fast"}, "expected float"),
        ({"rate": False}, "expected float"),
        ({"flag": 1}, "expected bool"),
        ({"name": 3}, "expected str"),
        ({"values": 3}, "expected a list"),
    ],
)
def test_wrong_types_are_user_errors(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        dataclass_from_dict(Sample, data, "sample")


def test_dataclass_from_dict_rejects_non_dataclass() -> None:
    with pytest.raises(TypeError):
        dataclass_from_dict(dict, {}, "x")  # type: ignore[type-var]


def test_merge_dataclass_ignores_none_and_validates() -> None:
    base = Sample(count=4, color=Color.BLUE)
    merged = merge_dataclass(base, {"count": None, "rate": 1, "values": [3]}, "s")
    assert merged == Sample(count=4, rate=1.0, color=Color.BLUE, values=(3.0,))
    with pytest.raises(UserError, match="did you mean 'count'"):
        merge_dataclass(base, {"cont": 1}, "s")


# ------------------------------------------------------------------------------- to_jsonable
def test_to_jsonable_round_trips_through_json() -> None:
    obj = {
        "sample": Sample(color=Color.BLUE, values=(1.0,), colors=(Color.RED,)),
        "path": Path("/tmp/x"),
        3: [Color.RED, (1, 2)],
    }
    out = to_jsonable(obj)
    assert out == {
        "sample": {
            "name": "x",
            "count": 1,
            "rate": 0.5,
            "flag": False,
            "color": "blue",
            "values": [1.0],
            "colors": ["red"],
            "root": None,
            "limit": None,
        },
        "path": "/tmp/x",
        "3": ["red", [1, 2]],
    }
    assert json.loads(json.dumps(out)) == out


def test_to_jsonable_of_train_config_rebuilds_the_same_config() -> None:
    cfg = TrainConfig(epochs=5, optimizer=OptimizerName.ADAM, milestones=(1.0, 3.0))
    assert dataclass_from_dict(TrainConfig, to_jsonable(cfg), "train") == cfg
    sp = SparsityConfig(target=0.7, granularity=Granularity.COMBINED, include=("net.conv2",))
    assert dataclass_from_dict(SparsityConfig, to_jsonable(sp), "sparsity") == sp


def test_config_schema_checks_sections_and_keys() -> None:
    schema = ConfigSchema({"train": ("epochs", "lr"), "model": None}, scalars=("name",))
    assert schema.top_keys() == ["train", "model", "name"]
    schema.check({"train": {"epochs": 3}, "model": {"anything": 1}, "name": "x"})
    with pytest.raises(UserError, match=r"unknown key 'trian' in \[config\]; did you mean 'train'"):
        schema.check({"trian": {}})
    with pytest.raises(UserError, match=r"unknown key 'epoch' in \[train\]; did you mean 'epochs'"):
        schema.check({"train": {"epoch": 3}})


def test_nearest_key_and_deep_merge() -> None:
    assert nearest_key("lr_rate", ["lr", "epochs"]) == "lr"
    assert nearest_key("zzz", ["lr", "epochs"]) is None
    base = {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}
    assert deep_merge(base, {"a": {"c": {"d": 3}, "b": None}, "e": [2]}) == {
        "a": {"b": 1, "c": {"d": 3}},
        "e": [2],
    }
    assert base == {"a": {"b": 1, "c": {"d": 2}}, "e": [1]}


def test_coerce_wants_a_table_for_a_dict_field() -> None:
    with pytest.raises(UserError, match=r"\[attack\] params: expected a table, got 3"):
        coerce(3, dict[str, int], "[attack] params")
    assert coerce({"a": 1}, dict[str, int], "x") == {"a": 1}
