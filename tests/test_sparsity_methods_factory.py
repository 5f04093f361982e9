"""The pruning-method factory and its pipeline wiring: config, CLI, experiment plan, `rbs run`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pandas as pd
import pytest

from rbs.cli import build_parser, main
from rbs.run_job import plan_experiment
from robustbench_sparse.config import load_toml
from robustbench_sparse.errors import UserError
from robustbench_sparse.recipes import load_recipe
from robustbench_sparse.sparsity import (
    CampfireSparsifier,
    PruningMethod,
    Sparsifier,
    SparsityConfig,
    create_sparsifier,
)
from robustbench_sparse.sparsity.methods import (
    FilterSparsifier,
    GMPSparsifier,
    GraspSparsifier,
    RandomSparsifier,
)
from robustbench_sparse.train_job import train_job_from_config
from tests.core_helpers import single_thread

METHODS_TOML = Path(str(resources.files("evaluations").joinpath("configs/methods.toml")))


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.mark.parametrize(
    ("method", "cls"),
    [
        ("campfire", CampfireSparsifier),
        ("gmp", GMPSparsifier),
        ("random", RandomSparsifier),
        ("grasp", GraspSparsifier),
        ("filter", FilterSparsifier),
    ],
)
def test_factory_maps_every_method_to_a_sparsifier(method: str, cls: type[Sparsifier]) -> None:
    sp = create_sparsifier(SparsityConfig(target=0.5, method=method), 10)  # type: ignore[arg-type]
    assert type(sp) is cls and isinstance(sp, Sparsifier)


def test_default_method_is_campfire_and_configs_round_trip() -> None:
    assert SparsityConfig().method is PruningMethod.CAMPFIRE
    assert SparsityConfig(target=0.5, granularity="channel").label == "channel"
    for method in PruningMethod:
        cfg = SparsityConfig(
            target=0.7,
            method=method,
            random_distribution="erk",
            grasp_batches=2,
            grasp_temperature=100,
            filter_norm="l1",
        )
        d = json.loads(json.dumps(cfg.to_dict()))
        assert d["method"] == method.value
        assert SparsityConfig.from_dict(d) == cfg
    with pytest.raises(UserError, match="campfire"):
        SparsityConfig(method="snip")  # type: ignore[arg-type]
    with pytest.raises(UserError, match="grasp_batches"):
        SparsityConfig(grasp_batches=0)


def test_method_flows_from_toml_and_cli_flags() -> None:
    job = train_job_from_config({"sparsity": {"target": 0.7, "method": "grasp"}})
    assert job.sparsity.method is PruningMethod.GRASP
    job = train_job_from_config(
        {"sparsity": {"target": 0.7}},
        sparsity_overrides={"method": "random", "random_distribution": "erk"},
    )
    assert job.sparsity.label == "random-erk"
    args = build_parser().parse_args(
        ["train", "--out", "x", "--method", "filter", "--random-distribution", "erk"]
    )
    assert args.method == "filter" and args.random_distribution == "erk"
    args = build_parser().parse_args(["run", "--config", "m.toml"])
    assert args.config_flag == "m.toml"


def test_methods_config_plans_one_model_per_method_at_70() -> None:
    plan = plan_experiment(load_toml(METHODS_TOML))
    names = {m.name: m.job.sparsity for m in plan.models}
    assert list(names) == [
        "dense",
        "window-70",
        "channel-70",
        "combined-70",
        "gmp-70",
        "random-erk-70",
        "grasp-70",
        "filter-70",
    ]
    # Every method except HYDRA, whose scores are learned with the robust loss: it is compared in
    # evaluations/configs/adversarial.toml, next to the adversarially trained models; and except
    # the post-training ones (rbs prune), which start from a trained checkpoint.
    left_out = {PruningMethod.HYDRA.value, PruningMethod.CALIBRATED.value}
    # AutoSparse and GA on top-k (issue 26) are compared in the seed-methods experiment, not in
    # this recipe (autosparse at a target needs a threshold search of several trainings)
    left_out |= {PruningMethod.AUTOSPARSE.value, PruningMethod.CAMPFIRE_GA.value}
    # ToST (issue 26) trains Campfire's masks with its recipe: evaluations/configs/tost.toml
    left_out.add(PruningMethod.TOST.value)
    expected = {m.value for m in PruningMethod} - left_out
    assert {sp.method.value for sp in names.values()} == expected
    assert all(sp.target == 0.7 for n, sp in names.items() if n != "dense")
    assert names["dense"].target == 0.0
    assert [a.name for a in plan.grid.attacks] == ["fgsm", "pgd", "cw"]
    recipe = plan_experiment(load_recipe("digits-methods"))
    assert recipe.fingerprint() == plan.fingerprint()


def test_campfire_only_configs_plan_as_before() -> None:
    cfg = {"models": {"targets": [0.5], "granularities": ["window"]}}
    assert [m.name for m in plan_experiment(cfg).models] == ["dense", "window-50"]
    with pytest.raises(UserError, match="pruning method"):
        plan_experiment({"models": {"methods": ["nope"]}})


REDUCED = """
name = "methods-smoke"
[data]
dataset = "digits"
train_limit = 200
test_limit = 60
augment = false
[model]
arch = "small_cnn"
width = 0.25
[train]
epochs = 2
batch_size = 32
device = "cpu"
[sparsity]
update_every = 2
random_distribution = "erk"
grasp_batches = 2
[models]
dense = true
targets = [0.7]
methods = ["campfire", "gmp", "random", "grasp", "filter"]
granularities = ["window"]
[attack]
attacks = ["fgsm", "pgd", "cw"]
limit = 40
[attack.params.pgd]
steps = 3
[attack.params.cw]
steps = 5
binary_search_steps = 2
[epsilons]
linf = [0.0, 0.1]
l2 = [0.0, 1.0]
"""


@pytest.mark.slow
def test_rbs_run_methods_config_end_to_end(tmp_path: Path) -> None:
    config = tmp_path / "methods.toml"
    config.write_text(REDUCED)
    out = tmp_path / "run"
    assert main(["-q", "run", "--config", str(config), "--out", str(out)]) == 0
    df = pd.read_csv(out / "results" / "results.csv")
    labels = set(df["granularity"])
    assert labels == {"dense", "window", "gmp", "random-erk", "grasp", "filter"}
    for name in ["window-70", "gmp-70", "random-erk-70", "grasp-70", "filter-70"]:
        rows = df[df["checkpoint"] == name]
        assert set(rows["attack"]) >= {"fgsm", "pgd", "cw"}, name
        assert (rows["sparsity_target"] == 0.7).all()
        assert main(["inspect", str(out / "checkpoints" / name)]) == 0
    assert (out / "results" / "report.html").is_file()


def test_post_training_methods_have_no_sparsifier_and_say_rbs_prune() -> None:
    cfg = SparsityConfig(target=0.5, method="calibrated", granularity="window")  # type: ignore[arg-type]
    assert cfg.label == "calibrated-window"
    assert SparsityConfig(0.5, "unstructured", method="calibrated").label == "calibrated"  # type: ignore[arg-type]
    with pytest.raises(
        UserError, match="rbs prune CKPT --sparsity S --out DIR --method calibrated"
    ):
        create_sparsifier(cfg, 10)
