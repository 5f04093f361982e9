"""``rbs cost``: the table, the ``--json`` object other tools read, and its user errors."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from rbs.cli import main
from rbs.commands.cost import parse_input_shape
from robustbench_sparse.checkpoint import save_checkpoint
from robustbench_sparse.cost import MAC_KEYS
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.granularity import Granularity
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, small_cnn


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = small_cnn(width=0.25)
    masks = apply_masks(model, Granularity.WINDOW, 0.7, SMALL_CNN_PRUNED)
    meta = {
        "arch": "small_cnn",
        "arch_kwargs": {"width": 0.25},
        "num_classes": 10,
        "in_channels": 1,
        "dataset": "digits",
        "granularity": "window",
        "sparsity_target": 0.7,
    }
    return save_checkpoint(tmp_path_factory.mktemp("cost") / "w70", model, meta, masks)


def test_json_is_one_object_with_layers_and_total(
    ckpt: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cost", str(ckpt), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["input_shape"] == [1, 8, 8]  # the digits dataset
    assert [layer["name"] for layer in d["layers"]][:2] == ["net.conv1.0", "net.conv2.0"]
    assert set(MAC_KEYS) <= set(d["total"])
    conv2 = d["layers"][1]
    assert conv2["macs_effective"] * 3 == conv2["macs_dense"]  # window n_w = 3 of 9


def test_table_and_options(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cost", str(ckpt), "--input-shape", "1,16,16", "--mac-lanes", "64", "--batch", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1x16x16" in out and "64 MAC lanes" in out and "batch 8" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-shape", "3,8"], "three positive integers"),
        (["--input-shape", "3,8,8"], "channels"),
        (["--mac-lanes", "0"], "positive"),
        (["--batch", "0"], "batch"),
    ],
)
def test_user_errors_exit_2_with_one_line(
    ckpt: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["cost", str(ckpt), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rbs cost: error:") and message in err[0]


def test_parse_input_shape() -> None:
    assert parse_input_shape("3,32,32") == (3, 32, 32)
    assert parse_input_shape("3x32x32") == (3, 32, 32)
    with pytest.raises(UserError):
        parse_input_shape("3,-1,2")
