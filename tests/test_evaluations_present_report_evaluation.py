"""The report's attack table: restarts and targets next to every attack, few-class substitutions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evaluations.engine.attack_settings import attack_settings
from evaluations.engine.spec import AttackSpec
from evaluations.present.document import Table
from evaluations.present.report import write_report
from evaluations.present.report_evaluation import attack_blocks
from evaluations.record.results import write_results, write_sidecar
from tests.test_evaluations_engine_attack_settings import fake_checkpoint
from tests.test_evaluations_results import synthetic_results


def _records(classes: dict[str, int]) -> list[dict[str, Any]]:
    specs = [
        AttackSpec("fgsm"),
        AttackSpec("apgd-ce", params=(("restarts", 5),)),
        AttackSpec("apgd-t"),
        AttackSpec("autoattack"),
    ]
    return attack_settings(specs, [fake_checkpoint(n, c) for n, c in classes.items()])


def _rows(side: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    (_, table) = attack_blocks(side)
    assert isinstance(table, Table)
    return {(r[0], r[3]): r for r in table.rows}


def test_restarts_and_targets_stand_next_to_each_attack() -> None:
    rows = _rows({"attacks": _records({"dense": 10})})
    assert rows["fgsm", "10"][4:] == ["–", "–", "–"]
    assert rows["apgd-ce", "10"][4] == "5"
    assert rows["apgd-t", "10"][4:6] == ["1", "9"]
    aa = rows["autoattack", "10"]
    assert aa[4] == "apgd-ce 1 · apgd-t 1 · fab-t 1 · square 1"
    assert aa[5] == "apgd-t 9 · fab-t 9" and aa[6] == "–"


def test_few_classes_show_the_substitution_per_class_count() -> None:
    rows = _rows({"attacks": _records({"dense": 10, "binary": 2})})
    two = rows["autoattack", "2"]
    assert two[4] == "apgd-ce 1 · apgd-t-ce 1 · fab-t 1 · square 1"
    assert two[5] == "apgd-t-ce 1 · fab-t 1"
    assert two[6].startswith("apgd-t → apgd-t-ce: the targeted DLR loss needs 4 classes")
    assert rows["apgd-t", "2"][5] == "1"  # targets it can have; the attack itself refuses


def test_report_has_the_table_and_older_sidecars_none(tmp_path: Path) -> None:
    assert attack_blocks({}) == [] and attack_blocks({"attacks": []}) == []
    df, _ = synthetic_results(with_l2=False)
    write_results(df, tmp_path)
    write_sidecar(tmp_path, {"attacks": _records({"window70": 3})})
    md, _ = write_report(tmp_path, command=None)
    text = md.read_text(encoding="utf-8")
    assert "## Attacks" in text and "apgd-t → apgd-t-ce" in text
    assert "version='custom'" in text


def _masking_side(mode: str) -> dict[str, Any]:
    rows = [{"checkpoint": "dense", "norm": "linf", "evidence": f"probe ({mode})"}]
    sample = {
        "summary": "sampled 30 of 200 white-box survivors (power 0.96)",
        "rule": "budget = a quarter of the grid",
        "checkpoints": [{"checkpoint": "dense", "spent_forwards": 900, "budget_forwards": 1000}],
    }
    return {
        "masking": {
            "flags": [],
            "checks": {"randomness": {"flagged": False, "detail": "ok"}},
            "mode": mode,
            "evidence": rows,
            **({"sample": sample} if mode == "sample" else {}),
        }
    }


def test_masking_blocks_state_the_evidence_and_the_samples_power() -> None:
    from evaluations.present.report_evaluation import masking_blocks, masking_off_blocks

    text = " ".join(getattr(b, "text", "") for b in masking_blocks(_masking_side("sample")))
    assert "--masking sample" in text and "dense/linf: probe (sample)" in text
    assert "power 0.96" in text and "900 / 1000" in text
    assert masking_off_blocks(_masking_side("sample")) == []
    (off,) = masking_off_blocks(_masking_side("off"))
    assert "--masking off" in getattr(off, "text", "")
    # a record made before --masking: nothing about modes
    old = _masking_side("full")
    del old["masking"]["mode"]
    assert "--masking" not in " ".join(getattr(b, "text", "") for b in masking_blocks(old))
