"""recipes: shipped experiment configs, listed by ``rbs recipes`` and run by ``--recipe NAME``."""

from __future__ import annotations

from pathlib import Path

import pytest

from rbs.cli import main
from rbs.run_job import default_config, plan_experiment
from robustbench_sparse.errors import UserError
from robustbench_sparse.recipes import (
    DEFAULT_RECIPE,
    list_recipes,
    load_recipe,
    recipe_names,
    recipe_text,
    training_sections,
)
from robustbench_sparse.sparsity import Granularity
from robustbench_sparse.train_job import train_job_from_config

EXPECTED = {
    "digits-smallcnn",
    "digits-methods",
    "mnist-smallcnn",
    "cifar10-resnet18-at",
    "cifar10-resnet18",
    "cifar10-resnet20",
    "cifar10-resnet56",
    "imagenet-resnet50-campfire",
}


def test_the_shipped_recipes_are_listed_with_runtime_and_hardware() -> None:
    assert set(recipe_names()) == EXPECTED
    for recipe in list_recipes():
        assert recipe.description and recipe.runtime and recipe.hardware
        assert recipe.runtime != "unknown" and recipe.hardware != "unknown"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_recipe_plans_and_builds(name: str) -> None:
    plan = plan_experiment(load_recipe(name))
    assert plan.models and plan.grid.attacks
    job = train_job_from_config(training_sections(load_recipe(name)))
    assert job.sparsity.end <= job.train.epochs


def test_the_default_recipe_is_the_default_experiment() -> None:
    assert DEFAULT_RECIPE == "digits-smallcnn"
    recipe = plan_experiment(load_recipe(DEFAULT_RECIPE))
    assert recipe.fingerprint() == plan_experiment(default_config()).fingerprint()


def test_imagenet_recipe_follows_the_paper_setting() -> None:
    plan = plan_experiment(load_recipe("imagenet-resnet50-campfire"))
    sparse = [m for m in plan.models if m.job.sparsity.target > 0]
    assert {m.job.sparsity.granularity for m in sparse} == {
        Granularity.WINDOW,
        Granularity.CHANNEL,
        Granularity.COMBINED,
    }
    for m in plan.models:
        job = m.job
        assert job.arch == "resnet50" and job.data.dataset == "imagefolder"
        assert job.train.epochs == 90 and job.train.scale_lr
        assert job.sparsity.target in (0.0, 0.7)
        # gradual pruning to a mask that is fixed part-way through training
        assert 0 < job.sparsity.end < job.train.epochs


def test_unknown_recipe_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="digits-smallcnn"):
        recipe_text("nope")


def test_cli_recipes_lists_and_prints(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in EXPECTED:
        assert name in out
    assert "digits-smallcnn (default)" in out and "runtime:" in out and "hardware:" in out
    assert main(["recipes", "cifar10-resnet20"]) == 0
    assert 'arch = "resnet20"' in capsys.readouterr().out
    assert main(["recipes", "nope"]) == 2


def test_cli_run_refuses_config_and_recipe_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["run", "digits-smallcnn", "--recipe", "digits-smallcnn", "--out", str(tmp_path)])
    assert code == 2 and "not both" in capsys.readouterr().err


def test_the_adversarial_recipe_trains_every_model_with_pgd_at_8_255() -> None:
    plan = plan_experiment(load_recipe("cifar10-resnet18-at"))
    names = [m.name for m in plan.models]
    assert names[0] == "dense" and "hydra-90" in names and len(names) == 8
    for m in plan.models:
        adv = m.job.adversarial
        assert adv.method.value == "pgd" and adv.eps == pytest.approx(8 / 255)
        assert adv.steps == 10 and adv.stepsize(adv.eps) == pytest.approx(2 / 255)
    job = train_job_from_config(training_sections(load_recipe("cifar10-resnet18-at")))
    assert job.adversarial.method.value == "pgd"  # rbs train --recipe keeps the threat model


def test_the_cifar10_resnet18_recipe_is_the_full_size_recipe() -> None:
    """ResNet-18 (CIFAR definition), full training set, 200 epochs, the five models of the CPU config."""
    plan = plan_experiment(load_recipe("cifar10-resnet18"))
    assert [m.name for m in plan.models] == [
        "dense",
        "window-70",
        "channel-70",
        "combined-70",
        "window-90",
    ]
    for model in plan.models:
        job = model.job
        assert job.arch == "resnet18_cifar" and job.data.dataset == "cifar10"
        assert job.data.train_limit is None and job.train.epochs == 200
        assert (job.sparsity.start, job.sparsity.end) == (20.0, 100.0)
