"""Tests for :mod:`rbs.run_job` (``rbs run``): planning, config validation, output rules.

The end-to-end ``rbs run`` test (reduced config: dense + window-70, 2 epochs, 40 attacked examples)
is marked ``slow``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomllib

from evaluations.record.metrics import WORST_CASE
from evaluations.record.results import read_results, read_sidecar
from rbs.cli import main
from rbs.run_job import (
    EXPERIMENT_FILE,
    default_config,
    default_config_text,
    plan_experiment,
    prepare_experiment_dir,
)
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import Granularity
from robustbench_sparse.train_job import train_job_from_config
from robustbench_sparse.training import default_prune_window
from tests.eval_helpers import single_thread

DEFAULT_NAMES = [
    "dense",
    "window-50",
    "window-70",
    "window-90",
    "channel-50",
    "channel-70",
    "channel-90",
    "combined-50",
    "combined-70",
    "combined-90",
]


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _config(**sections: Any) -> dict[str, Any]:
    cfg = default_config()
    cfg.update(sections)
    return cfg


# ----------------------------------------------------------------------------- planning


def test_default_plan_has_ten_models() -> None:
    plan = plan_experiment()
    assert [m.name for m in plan.models] == DEFAULT_NAMES
    assert plan.name == "digits-campfire"
    by_name = {m.name: m.job for m in plan.models}
    assert by_name["dense"].sparsity.target == 0.0
    for g in ("window", "channel", "combined"):
        for t in (50, 70, 90):
            job = by_name[f"{g}-{t}"]
            assert job.sparsity.granularity is Granularity(g)
            assert job.sparsity.target == pytest.approx(t / 100)
            assert job.sparsity.update_every == 20
            assert job.name == f"{g}-{t}"
    jobs = list(by_name.values())
    assert {j.arch for j in jobs} == {"small_cnn"}
    assert {j.data.dataset for j in jobs} == {"digits"}
    assert len({j.train for j in jobs}) == 1  # training settings shared by every model


def test_default_plan_grid() -> None:
    grid = plan_experiment().grid
    assert [s.name for s in grid.attacks] == ["fgsm", "pgd", "cw"]
    assert {s.backend for s in grid.attacks} == {"native"}
    params = {s.name: dict(s.params) for s in grid.attacks}
    assert params["pgd"] == {
        "steps": 20,
        "rel_stepsize": 0.125,
        "random_start": True,
        "restarts": 1,
    }
    assert params["cw"] == {"steps": 100, "binary_search_steps": 6}
    assert grid.linf_epsilons is None and grid.l2_epsilons is None  # dataset defaults
    assert grid.limit is None and grid.batch_size == 500 and grid.device == "cpu"


def test_default_config_text_matches_the_parsed_config() -> None:
    assert tomllib.loads(default_config_text()) == default_config()


def test_overrides_patch_sections() -> None:
    plan = plan_experiment(overrides={"attack": {"limit": 100}, "train": {"epochs": 2}})
    assert plan.grid.limit == 100
    start, end = default_prune_window(2)
    for model in plan.models:
        assert model.job.train.epochs == 2
        assert (model.job.sparsity.start, model.job.sparsity.end) == (start, end)
    same = plan_experiment(overrides={"attack": {"limit": None}, "train": {"epochs": None}})
    assert same.fingerprint() == plan_experiment().fingerprint()


def test_fingerprint_is_stable_and_sensitive() -> None:
    a = plan_experiment()
    assert a.fingerprint() == plan_experiment().fingerprint()
    assert a.fingerprint() == plan_experiment(default_config()).fingerprint()
    assert len(a.fingerprint()) == 16
    others = [
        plan_experiment(overrides={"attack": {"limit": 50}}),
        plan_experiment(overrides={"train": {"epochs": 3}}),
        plan_experiment(_config(models={"dense": True, "targets": [0.7]})),
        plan_experiment(_config(epsilons={"linf": [0, 0.1]})),
    ]
    prints = {a.fingerprint(), *(p.fingerprint() for p in others)}
    assert len(prints) == 1 + len(others)


def test_models_section_variants() -> None:
    plan = plan_experiment(
        _config(models={"dense": False, "targets": [0.7], "granularities": ["unstructured"]})
    )
    assert [m.name for m in plan.models] == ["unstructured-70"]
    plan = plan_experiment(_config(models={"targets": [0.25]}))
    assert [m.name for m in plan.models] == [
        "dense",
        "window-25",
        "channel-25",
        "combined-25",
    ]


def test_epsilons_section_is_validated_and_sorted() -> None:
    plan = plan_experiment(_config(epsilons={"linf": [0.2, 0, 0.1], "l2": [1, 0]}))
    assert plan.grid.linf_epsilons == (0.0, 0.1, 0.2)
    assert plan.grid.l2_epsilons == (0.0, 1.0)


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("cfg", "key"),
    [
        (_config(atack={}), "atack"),
        (_config(models={"dense": True, "target": [0.5]}), "target"),
        (_config(attack={"attacks": ["fgsm"], "steps": 3}), "steps"),
        (_config(epsilons={"linf": [0, 0.1], "l0": [0]}), "l0"),
        (_config(train={"epoch": 3}), "epoch"),
        (_config(data={"dataset": "digits", "limit": 5}), "limit"),
    ],
)
def test_unknown_keys_are_named(cfg: dict[str, Any], key: str) -> None:
    with pytest.raises(UserError, match=repr(key)):
        plan_experiment(cfg)


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        (
            _config(attack={"attacks": ["fgsm"], "params": {"pgd": {"steps": 3}}}),
            r"attack\.params\.pgd",
        ),
        (_config(models={"granularities": ["diagonal"]}), "diagonal"),
        (_config(models={"targets": [1.0]}), "targets"),
        (_config(models={"targets": [-0.1]}), "targets"),
        (_config(models={"dense": False, "targets": []}), "no model"),
        (_config(epsilons={"linf": [0, -0.1]}), "invalid"),
        (_config(epsilons={"l2": [0, 1, 1]}), "duplicates"),
        (_config(attack={"limit": -5}), "limit"),
        (_config(attack={"limit": 0}), "limit"),
        (_config(attack={"batch_size": 0}), "batch size"),
        (_config(attack={"masking": "sometimes"}), "--masking 'sometimes'"),
    ],
)
def test_invalid_configs_are_user_errors(cfg: dict[str, Any], match: str) -> None:
    with pytest.raises(UserError, match=match):
        plan_experiment(cfg)


def test_masking_mode_is_planned_and_outside_the_fingerprint() -> None:
    plain = plan_experiment(_config())
    off = plan_experiment(_config(attack={"masking": "off"}))
    assert plain.masking is None and off.masking == "off"
    assert off.fingerprint() == plain.fingerprint()  # only the masking record changes


def test_unknown_attack_or_parameter_fails_at_planning() -> None:
    from attacks import AttackConfigError

    with pytest.raises(AttackConfigError, match="fgsm"):
        plan_experiment(_config(attack={"attacks": ["nope"]}))
    with pytest.raises(AttackConfigError, match="bogus"):
        plan_experiment(_config(attack={"attacks": ["pgd"], "params": {"pgd": {"bogus": 1}}}))


# ----------------------------------------------------------------------------- directory rules


def test_prepare_experiment_dir_rules(tmp_path: Path) -> None:
    plan = plan_experiment()
    other = plan_experiment(overrides={"attack": {"limit": 10}})
    out = tmp_path / "exp"
    assert prepare_experiment_dir(out, plan, overwrite=False, resume=False) is False
    marker = json.loads((out / EXPERIMENT_FILE).read_text())
    assert marker["fingerprint"] == plan.fingerprint()
    assert [m["name"] for m in marker["plan"]["models"]] == DEFAULT_NAMES
    (out / "checkpoints").mkdir()
    assert prepare_experiment_dir(out, plan, overwrite=False, resume=False) is True  # same plan
    assert prepare_experiment_dir(out, plan, overwrite=False, resume=True) is True
    with pytest.raises(UserError, match="--overwrite"):
        prepare_experiment_dir(out, other, overwrite=False, resume=False)
    with pytest.raises(UserError, match="different experiment"):
        prepare_experiment_dir(out, other, overwrite=False, resume=True)
    assert json.loads((out / EXPERIMENT_FILE).read_text())["fingerprint"] == plan.fingerprint()
    assert prepare_experiment_dir(out, other, overwrite=True, resume=False) is False
    assert sorted(p.name for p in out.iterdir()) == [EXPERIMENT_FILE]
    assert json.loads((out / EXPERIMENT_FILE).read_text())["fingerprint"] == other.fingerprint()


def test_prepare_experiment_dir_refuses_foreign_directories(tmp_path: Path) -> None:
    plan = plan_experiment()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    for resume in (False, True):
        with pytest.raises(UserError):
            prepare_experiment_dir(foreign, plan, overwrite=False, resume=resume)
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert prepare_experiment_dir(empty, plan, overwrite=False, resume=False) is False
    assert (empty / EXPERIMENT_FILE).is_file()


# ----------------------------------------------------------------------------- CLI


def test_print_default_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--print-default-config"]) == 0
    assert capsys.readouterr().out == default_config_text()


def test_run_config_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[models]\ntargetz = [0.5]\n")
    out = tmp_path / "out"
    assert main(["run", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rbs run: error: ") and "'targetz'" in err and "\n" not in err
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not out.exists()


REDUCED_CONFIG = """
name = "tiny"

[data]
dataset = "digits"
train_limit = 300
test_limit = 60

[model]
arch = "small_cnn"
width = 0.25

[train]
batch_size = 32
lr = 0.05
warmup_epochs = 0.0
device = "cpu"
amp = false

[sparsity]
update_every = 2

[models]
dense = true
targets = [0.7]
granularities = ["window"]

[attack]
attacks = ["fgsm", "pgd", "cw"]
batch_size = 50

[attack.params.pgd]
steps = 5

[attack.params.cw]
steps = 20
binary_search_steps = 3
"""


@pytest.mark.slow
def test_rbs_run_end_to_end_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "tiny.toml"
    cfg.write_text(REDUCED_CONFIG)
    out = tmp_path / "run"
    argv = ["run", str(cfg), "--out", str(out), "--epochs", "2", "--limit", "40"]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    results = out / "results"
    assert f"report:  {results / 'report.html'}" in stdout
    assert f"{results / 'report.md'}" in stdout

    assert json.loads((out / EXPERIMENT_FILE).read_text())["fingerprint"]
    names = ["dense", "window-70"]
    for name in names:
        meta = json.loads((out / "checkpoints" / name / "checkpoint.json").read_text())
        assert meta["name"] == name and meta["epochs_completed"] == 2
        assert meta["arch_kwargs"] == {"width": 0.25}
    df = read_results(results)
    assert set(df["checkpoint"]) == set(names)
    for name in names:
        for attack, norm in (("fgsm", "linf"), ("pgd", "linf"), ("cw", "l2")):
            rows = df[(df.checkpoint == name) & (df.attack == attack) & (df.norm == norm)]
            assert len(rows) == 6, (name, attack)  # the digits default grid
        assert set(df[(df.checkpoint == name) & (df.attack == WORST_CASE)]["norm"]) == {
            "linf",
            "l2",
        }
    assert (df["n"] == 40).all()
    side = read_sidecar(results)
    assert all(c["passed"] for c in side["invariants"].values()), side["invariants"]
    assert side["command"] == "rbs " + " ".join(argv)
    assert side["work"]["cells_computed"] == 6

    for norm in ("linf", "l2"):
        assert (results / "figures" / f"robustness_curves_{norm}.png").is_file()
    html = (results / "report.html").read_text(encoding="utf-8")
    assert "robustness_curves_linf" in html and "robustness_curves_l2" in html
    for token in [*names, "fgsm", "pgd", "cw"]:
        assert token in html.lower(), token

    ckpt_mtimes = {
        n: (out / "checkpoints" / n / "checkpoint.safetensors").stat().st_mtime_ns for n in names
    }
    before = df
    assert side["masking"]["seconds"] > 0 and side["masking"]["fingerprint"]
    assert main(argv) == 0
    capsys.readouterr()
    again = read_sidecar(results)
    work = again["work"]
    assert work["cells_reused"] == 6 and work["cells_computed"] == 0
    # the gradient-masking record is reused with its time, so the compute total does not move
    assert again["masking"] == side["masking"]
    assert again["total_seconds"] == side["total_seconds"]
    assert len(again["invocations"]) == len(side["invocations"]) + 1
    for n in names:  # not retrained
        assert (
            out / "checkpoints" / n / "checkpoint.safetensors"
        ).stat().st_mtime_ns == ckpt_mtimes[n]
    from pandas.testing import assert_frame_equal

    from tests.eval_helpers import without_timing

    assert_frame_equal(without_timing(read_results(results)), without_timing(before))


# ------------------------------------------------------------- training methods (issue 12)
def test_adversarial_config_plans_every_model_per_training_method() -> None:
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "adversarial.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()), protocol="quick")
    names = [m.name for m in plan.models]
    assert len(names) == 33 and len(set(names)) == 33
    assert names[:2] == ["dense", "window-50"] and "hydra-70" in names
    assert "pgd-window-70" in names and "trades-hydra-70" in names
    by_name = {m.name: m.job for m in plan.models}
    assert by_name["window-70"].adversarial.method.value == "none"
    for prefix, method in (("pgd-", "pgd"), ("trades-", "trades")):
        adv = by_name[prefix + "combined-90"].adversarial
        assert adv.method.value == method and adv.eps == 0.1 and adv.steps == 10
    hydra = by_name["pgd-hydra-70"].sparsity
    assert hydra.method.value == "hydra" and hydra.granularity is Granularity.UNSTRUCTURED
    assert hydra.target == 0.7


def test_beyond_config_gives_ibp_models_their_own_training_recipe() -> None:
    """``{ method = "ibp", ..., train = {...} }``: the [train] keys reach the IBP models only."""
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "beyond.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()))
    by_name = {m.name: m.job for m in plan.models}
    assert len(by_name) == 12
    ibp, gauss, plain = by_name["ibp-window-70"], by_name["gaussian-window-70"], by_name["dense"]
    assert ibp.adversarial.method.value == "ibp" and ibp.adversarial.eps == 0.1
    assert (ibp.train.epochs, ibp.train.batch_size, ibp.train.optimizer) == (60, 16, "adam")
    assert ibp.train.weight_decay == 0.0 and ibp.train.lr == 5e-4
    for job in (gauss, plain):  # the others keep the [train] section
        assert (job.train.epochs, job.train.batch_size, job.train.optimizer) == (20, 64, "sgd")
    assert ibp.sparsity == gauss.sparsity  # same masks recipe (schedule in fractions of epochs)


@pytest.mark.parametrize(
    "models,match",
    [
        ({"trainings": "pgd"}, "trainings must be a non-empty list"),
        ({"trainings": ["pgd", "madry"]}, "adversarial method 'madry' is unknown"),
        ({"extra": [{"method": "hydra", "target": 1.5}]}, r"target must be in \(0, 1\)"),
        ({"extra": [{"method": "hydra", "taget": 0.7}]}, "unknown key 'taget'"),
        ({"trainings": [{"method": "ibp", "train": 60}]}, "must be a table of \\[train\\] keys"),
        (
            {"trainings": [{"method": "ibp", "train": {"epoch": 60}}]},
            "unknown \\[train\\] key 'epoch'",
        ),
    ],
)
def test_bad_training_sections_are_user_errors(models: dict[str, Any], match: str) -> None:
    cfg = {"adversarial": {"eps": 0.1}, "models": {"dense": True, "targets": [], **models}}
    with pytest.raises(UserError, match=match):
        plan_experiment(cfg)


# ------------------------------------------------------------- real CIFAR-10 on a CPU (issue 13)
def test_cifar10_cpu_config_plans_the_five_models_on_real_data() -> None:
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "cifar10.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()))
    names = [m.name for m in plan.models]
    assert names == ["dense", "window-70", "channel-70", "combined-70", "window-90"]
    for model in plan.models:
        job = model.job
        assert job.data.dataset == "cifar10" and job.data.train_limit == 10_000
        assert job.arch == "resnet20" and job.train.device == "cpu"
        assert job.train.epochs == 8 and job.sparsity.end <= job.train.epochs
    assert plan.grid.limit == 200


def test_cifar10_train_config_is_the_experiment_s_training_part() -> None:
    configs = Path(__file__).resolve().parents[1] / "evaluations" / "configs"
    experiment = tomllib.loads((configs / "cifar10.toml").read_text())
    train = tomllib.loads((configs / "cifar10-train.toml").read_text())
    assert set(train) == {"data", "model", "train", "sparsity"}
    for section in train:
        assert train[section] == experiment[section], section
    # rbs train accepts it, and builds the experiment's dense job from it
    job = train_job_from_config(train)
    dense = plan_experiment(experiment).models[0].job
    assert (job.arch, job.data, job.train) == (dense.arch, dense.data, dense.train)


# ------------------------------------------------------------- ToST in [models] methods (issue 26)
def test_tost_plans_one_model_per_granularity_on_campfire_masks_and_one_on_random() -> None:
    models = {"dense": False, "targets": [0.7], "methods": ["tost"]}
    cfg = {"models": {**models, "granularities": ["window", "channel"]}}
    plan = plan_experiment(cfg)
    assert [m.name for m in plan.models] == ["tost-window-70", "tost-channel-70"]
    assert plan.models[1].job.sparsity.granularity is Granularity.CHANNEL
    random = {"sparsity": {"tost_mask": "random", "random_distribution": "erk"}, "models": models}
    assert [m.name for m in plan_experiment(random).models] == ["tost-random-erk-70"]


# ------------------------------------------------------------- AutoSparse / GA on top-k (issue 26)
def test_models_methods_expand_autosparse_once_and_campfire_ga_per_granularity() -> None:
    config = {
        "models": {
            "dense": False,
            "methods": ["autosparse", "campfire-ga"],
            "granularities": ["window", "channel"],
            "targets": [0.7],
        },
        "sparsity": {"autosparse_search_runs": 3},
    }
    plan = plan_experiment(config, protocol="quick")
    by_name = {m.name: m.job.sparsity for m in plan.models}
    assert sorted(by_name) == ["autosparse-70", "channel-ga-70", "window-ga-70"]
    assert by_name["autosparse-70"].granularity is Granularity.UNSTRUCTURED
    assert by_name["autosparse-70"].autosparse_search_runs == 3  # the [sparsity] section's keys
    assert by_name["channel-ga-70"].granularity is Granularity.CHANNEL
    assert by_name["window-ga-70"].method.value == "campfire-ga"


def test_tost_config_plans_campfire_and_tost_per_granularity_and_training() -> None:
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "tost.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()))
    names = [m.name for m in plan.models]
    assert names[:5] == ["dense", "window-90", "channel-90", "tost-window-90", "tost-channel-90"]
    assert len(names) == 10 and "pgd-tost-channel-90" in names
    tost = {m.name: m.job for m in plan.models}["pgd-tost-window-90"]
    assert tost.sparsity.method.value == "tost" and tost.adversarial.method.value == "pgd"
    assert tost.sparsity.end <= tost.train.epochs


def test_autosparse_config_plans_campfire_autosparse_and_ga_at_70() -> None:
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "autosparse.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()))
    names = [m.name for m in plan.models]
    assert names == [
        "dense",
        "unstructured-70",
        "window-70",
        "autosparse-70",
        "unstructured-ga-70",
        "window-ga-70",
    ]
    jobs = {m.name: m.job for m in plan.models}
    autosparse = jobs["autosparse-70"].sparsity
    assert autosparse.method.value == "autosparse" and autosparse.autosparse_search_runs == 6
    assert jobs["window-ga-70"].sparsity.end <= jobs["window-ga-70"].train.epochs


# ------------------------------------------------------------- the related-methods matrix (issue 26)
def test_seed_methods_config_plans_every_family_at_both_levels_and_trainings() -> None:
    path = Path(__file__).resolve().parents[1] / "evaluations" / "configs" / "seed-methods.toml"
    plan = plan_experiment(tomllib.loads(path.read_text()))
    names = [m.name for m in plan.models]
    posttrain = [p.name for p in plan.posttrain]
    assert len(names) == 34 and len(posttrain) == 8 and len(set(names + posttrain)) == 42
    for training in ("", "pgd-"):
        for target in (70, 90):
            for family in ("window", "channel", "combined", "gmp", "random-erk", "hydra"):
                assert f"{training}{family}-{target}" in names
            assert f"{training}autosparse-{target}" in names
            assert f"{training}tost-window-{target}" in names
            assert f"{training}calibrated-{target}" in posttrain
            assert f"{training}filtersketch-filter-{target}" in posttrain
    jobs = {m.name: m.job for m in plan.models}
    assert jobs["pgd-tost-window-90"].sparsity.method.value == "tost"
    assert jobs["pgd-tost-window-90"].adversarial.method.value == "pgd"
    assert jobs["autosparse-70"].sparsity.autosparse_search_runs == 6
    assert plan.protocol is not None and plan.protocol.name == "standard"
