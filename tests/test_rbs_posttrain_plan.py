"""``[[models.posttrain]]`` of ``rbs run`` (rbs/posttrain_plan.py): planning, refusals, a tiny run."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rbs.posttrain_plan import posttrain_plans
from rbs.run_job import plan_experiment, run_experiment
from robustbench_sparse.errors import UserError
from tests.core_helpers import single_thread

FAST = {"iterations": 1, "samples_per_iteration": 40}


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _config(posttrain: list[dict[str, Any]], **models: Any) -> dict[str, Any]:
    return {
        "name": "pt",
        "data": {"dataset": "digits", "train_limit": 200, "test_limit": 60},
        "model": {"kwargs": {"width": 0.25}},
        "train": {"epochs": 1, "batch_size": 50, "lr": 0.05, "device": "cpu"},
        "models": {"dense": True, "targets": [], "posttrain": posttrain, **models},
        "attack": {"attacks": ["fgsm"], "limit": 20},
        "epsilons": {"linf": [0, 0.1]},
    }


def test_names_follow_the_trained_models_and_the_fingerprint_holds_them() -> None:
    tables = [
        {"method": "calibrated", "target": 0.7, "calibration": 40},
        {"method": "calibrated", "target": 0.5, "granularity": "window", "from": "pgd-dense"},
    ]
    cfg = _config(tables, trainings=["none", "pgd"])
    plan = plan_experiment({**cfg, "adversarial": {"eps": 0.1}})
    assert [p.name for p in plan.models] == ["dense", "pgd-dense"]
    assert [(p.name, p.source) for p in plan.posttrain] == [
        ("calibrated-70", "dense"),
        ("pgd-calibrated-70", "pgd-dense"),
        ("pgd-calibrated-window-50", "pgd-dense"),
    ]
    assert plan.posttrain[0].config.options["iterations"] == 30  # the method's defaults filled
    assert plan.config["posttrain"][0]["calibration"] == 40
    cfg = _config([{**tables[0], "calibration": 41}], trainings=["none", "pgd"])
    other = plan_experiment({**cfg, "adversarial": {"eps": 0.1}})
    assert other.fingerprint() != plan.fingerprint()
    assert "posttrain" not in plan_experiment(_config([])).config  # earlier fingerprints stay


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([{"method": "snip"}], "unknown post-training method 'snip'"),
        ([{"method": "calibrated", "target": 1.0}], r"target must be in \(0, 1\)"),
        ([{"method": "calibrated", "granularity": "nm"}], "supports granularity"),
        ([{"method": "calibrated", "from": "window-70"}], "not a dense model of this run"),
        ([{"method": "calibrated", "optoins": {}}], "optoins"),
        ([{"method": "calibrated", "options": {"stpes": 1}}], "unknown calibrated option"),
        ([{"method": "calibrated"}, {"method": "calibrated"}], "planned twice"),
        ([{"method": "calibrated", "calibration_data": "noise"}], "calibration_data"),
        ("calibrated", "must be a list of tables"),
    ],
)
def test_refusals_are_one_line_before_anything_trains(tables: Any, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        plan_experiment(_config(tables))
    assert "\n" not in str(info.value)


def test_a_post_training_method_is_refused_among_trained_methods() -> None:
    with pytest.raises(UserError, match=r"\[\[models.posttrain\]\] method = \"calibrated\""):
        plan_experiment(_config([], methods=["calibrated"], targets=[0.7]))
    assert posttrain_plans(None, [("dense", "")], ["dense"], 0, "cpu") == []


@pytest.mark.slow
def test_a_run_makes_the_post_training_model_once_and_attacks_it(tmp_path: Path) -> None:
    tables = [{"method": "calibrated", "target": 0.7, "calibration": 40, "options": FAST}]
    plan = plan_experiment(_config(tables))
    with single_thread():
        outcome = run_experiment(plan, tmp_path / "run", progress=False)
    meta_path = tmp_path / "run" / "checkpoints" / "calibrated-70" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    assert meta["post_training"]["source"]["name"] == "dense"
    rows = (outcome.results_dir / "results.csv").read_text().splitlines()
    assert any(row.startswith("calibrated-70,") for row in rows)
    stamp = meta_path.stat().st_mtime_ns
    with single_thread():
        run_experiment(plan, tmp_path / "run", progress=False)  # the same experiment: reused
    assert meta_path.stat().st_mtime_ns == stamp


def test_the_shipped_posttrain_config_plans() -> None:
    from importlib import resources

    import tomllib

    path = resources.files("evaluations").joinpath("configs/posttrain.toml")
    plan = plan_experiment(tomllib.loads(path.read_text()))
    assert [p.name for p in plan.posttrain] == [
        "calibrated-70",
        "pgd-calibrated-70",
        "calibrated-90",
        "pgd-calibrated-90",
        "calibrated-window-70",
        "pgd-calibrated-window-70",
    ]
    assert {p.source for p in plan.posttrain} == {"dense", "pgd-dense"}
