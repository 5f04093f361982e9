"""robustbench_sparse.outdir: the three commands' output-directory rules, side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robustbench_sparse.errors import UserError
from robustbench_sparse.outdir import (
    ATTACK_RULES,
    RUN_RULES,
    TRAIN_RULES,
    OutputRules,
    prepare_output_dir,
)

RULES = {"train": TRAIN_RULES, "attack": ATTACK_RULES, "run": RUN_RULES}


def _job_dir(tmp_path: Path, rules: OutputRules, fingerprint: str = "a") -> Path:
    out = tmp_path / "out"
    assert not prepare_output_dir(
        out, rules, overwrite=False, resume=False, fingerprint=fingerprint
    )
    (out / "work.bin").write_text("done")
    return out


def _outcome(out: Path, rules: OutputRules, *, resume: bool, fingerprint: str) -> str:
    try:
        kept = prepare_output_dir(
            out, rules, overwrite=False, resume=resume, fingerprint=fingerprint
        )
    except UserError:
        return "refused"
    assert kept and (out / "work.bin").read_text() == "done"
    return "continued"


@pytest.mark.parametrize(
    ("command", "same", "resume_another", "resume_foreign"),
    [
        ("train", "refused", "continued", "continued"),
        ("attack", "continued", "continued", "refused"),
        ("run", "continued", "refused", "refused"),
    ],
)
def test_the_rules_table(
    tmp_path: Path, command: str, same: str, resume_another: str, resume_foreign: str
) -> None:
    rules = RULES[command]
    out = tmp_path / "out"
    assert prepare_output_dir(out, rules, overwrite=False, resume=False, fingerprint="a") is False
    (out / "work.bin").write_text("done")
    assert _outcome(out, rules, resume=False, fingerprint="a") == same
    assert _outcome(out, rules, resume=True, fingerprint="b") == resume_another
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "work.bin").write_text("done")
    assert _outcome(foreign, rules, resume=True, fingerprint="a") == resume_foreign
    assert _outcome(foreign, rules, resume=False, fingerprint="a") == "refused"


@pytest.mark.parametrize("command", sorted(RULES))
def test_overwrite_replaces_and_a_new_directory_gets_the_marker(
    tmp_path: Path, command: str
) -> None:
    rules = RULES[command]
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("x")
    assert not prepare_output_dir(
        out, rules, overwrite=True, resume=False, fingerprint="f", record={"plan": 1}
    )
    names = sorted(p.name for p in out.iterdir())
    if rules.marker is None:
        assert names == []
    else:
        assert names == [rules.marker]
        assert json.loads((out / rules.marker).read_text()) == {"fingerprint": "f", "plan": 1}


def test_resume_into_another_attack_run_records_the_new_fingerprint(tmp_path: Path) -> None:
    out = _job_dir(tmp_path, ATTACK_RULES)
    prepare_output_dir(out, ATTACK_RULES, overwrite=False, resume=True, fingerprint="b")
    assert json.loads((out / "request.json").read_text()) == {"fingerprint": "b"}


def test_an_unreadable_marker_is_never_the_same_job(tmp_path: Path) -> None:
    for rules in (ATTACK_RULES, RUN_RULES):
        out = _job_dir(tmp_path / str(rules.marker), rules)
        assert rules.marker is not None
        (out / rules.marker).write_text("[1, 2]")
        with pytest.raises(UserError):
            prepare_output_dir(out, rules, overwrite=False, resume=False, fingerprint="a")
        prepare_output_dir(out, rules, overwrite=True, resume=False, fingerprint="a")


@pytest.mark.parametrize(
    ("command", "resume", "message"),
    [
        ("train", False, "output directory '{out}' already exists and is not empty; pass "
         "--overwrite to replace it or --resume to continue it"),
        ("attack", False, "output directory '{out}' already exists and holds a different run; "
         "pass --resume to continue it (finished cells are reused), --overwrite to replace it, "
         "or choose another --out"),
        ("run", False, "output directory '{out}' already exists and holds something else; pass "
         "--overwrite to replace it or choose another --out"),
        ("run", True, "'{out}' holds a different experiment (config changed); use another --out "
         "or pass --overwrite"),
    ],
)  # fmt: skip
def test_refusals_are_one_line_naming_the_directory(
    tmp_path: Path, command: str, resume: bool, message: str
) -> None:
    rules = RULES[command]
    out = _job_dir(tmp_path, rules)
    with pytest.raises(UserError) as info:
        prepare_output_dir(out, rules, overwrite=False, resume=resume, fingerprint="other")
    assert str(info.value) == message.format(out=out)
