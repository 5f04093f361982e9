"""The sidecar's ``attacks`` record: parameters, restarts, targets and substitutions per class count."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from evaluations.engine.attack_settings import attack_settings
from evaluations.engine.spec import AttackSpec
from robustbench_sparse.checkpoint import LoadedCheckpoint


def fake_checkpoint(name: str, classes: int) -> LoadedCheckpoint:
    """What attack_settings reads of a checkpoint: its name and its data set's class count."""
    return cast(
        LoadedCheckpoint, SimpleNamespace(name=name, info=SimpleNamespace(num_classes=classes))
    )


def test_one_record_per_attack_and_class_count() -> None:
    specs = [AttackSpec("apgd-ce", params=(("restarts", 5),)), AttackSpec("autoattack")]
    ckpts = [fake_checkpoint("dense", 10), fake_checkpoint("bin", 2), fake_checkpoint("bin70", 2)]
    records = attack_settings(specs, ckpts)
    by = {(r["attack"], r["classes"]): r for r in records}
    assert sorted(by) == [("apgd-ce", 2), ("apgd-ce", 10), ("autoattack", 2), ("autoattack", 10)]
    assert by["apgd-ce", 10]["params"]["restarts"] == 5 and by["apgd-ce", 10]["norm"] == "linf"
    assert by["autoattack", 2]["checkpoints"] == ["bin", "bin70"]
    assert by["autoattack", 2]["substitutions"][0]["ran"] == "apgd-t-ce"
    assert "substitutions" not in by["autoattack", 10]
    assert [s["restarts"] for s in by["autoattack", 10]["stages"]] == [1, 1, 1, 1]
