"""Same command, same seed, CPU: identical results tables (but wall time) and checkpoint bytes.

The two runs are separate processes on purpose: process-level randomness (hash seeds, the
random state of safetensors' metadata map) must not leak into the outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustbench_sparse.checkpoint import WEIGHTS_FILE, save_checkpoint
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.models import create_model
from tests.test_kill_resume import TINY_RUN, assert_same_run, read_table, run_to_completion

SEED = 3


def test_saving_the_same_model_twice_writes_identical_bytes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)
    meta = {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "dataset": info.name}
    mask = {"net.conv2.0.weight": torch.rand_like(model.net.conv2[0].weight) > 0.5}  # type: ignore[index,union-attr]
    blobs = {
        (save_checkpoint(tmp_path / str(i), model, meta, mask) / WEIGHTS_FILE).read_bytes()
        for i in range(8)
    }
    assert len(blobs) == 1


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_same_command_twice_gives_identical_tables_and_checkpoints(tmp_path: Path) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(TINY_RUN.replace("seed = 0", f"seed = {SEED}"))
    log = tmp_path / "rbs.log"
    first, second = tmp_path / "first", tmp_path / "second"
    run_to_completion(cfg, first, log)
    run_to_completion(cfg, second, log)
    assert_same_run(first, second)  # tables equal but `seconds`, checkpoints byte-identical

    # The seeds are recorded where a reader looks for them.
    table = read_table(first)
    attack_seeds = {
        row.attack: json.loads(str(row.params)).get("seed")
        for row in table.itertuples()
        if row.attack in ("fgsm", "pgd", "cw")
    }
    side = json.loads((first / "results" / "results.json").read_text())
    assert side["seeds"] == {"train": SEED, "attack": attack_seeds}
    assert attack_seeds["pgd"] is not None  # PGD's random start is seeded
    for meta_path in (first / "checkpoints").glob("*/checkpoint.json"):
        meta = json.loads(meta_path.read_text())
        assert meta["seed"] == SEED and meta["training"]["seed"] == SEED
