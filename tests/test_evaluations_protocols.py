"""Protocols are data: names, versions, attack lists, parameter merging, identification, deviations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attacks import get_attack, list_attacks
from evaluations.engine.protocols import (
    CUSTOM,
    PAPER_DEFAULTS,
    PROTOCOLS,
    STANDARD_ATTACKS,
    describe,
    get_protocol,
    identify,
    paper_deviations,
    protocol_names,
    resolve_attacks,
)
from evaluations.engine.spec import AttackSpec
from rbs.attack_job import AttackRunRequest
from rbs.run_job import default_config, plan_experiment
from robustbench_sparse.errors import UserError


def test_shipped_protocols_are_ordered_versioned_and_json() -> None:
    assert protocol_names() == ["quick", "standard", "thorough"]
    for p in PROTOCOLS.values():
        assert p.version >= 1
        assert p.label == f"{p.name}/v{p.version}"
        record = describe(p, [])
        assert json.loads(json.dumps(record)) == record  # JSON-able as is
        assert record["equivalent_to"]


def test_quick_is_the_historical_default() -> None:
    assert PROTOCOLS["quick"].attack_names(l2_grid_given=False) == ["fgsm", "pgd", "cw"]


def test_standard_and_thorough_extend_quick_with_stronger_attacks() -> None:
    every = {"l2_grid_given": True, "l1_grid_given": True}
    quick = set(PROTOCOLS["quick"].attack_names(**every))
    standard = set(PROTOCOLS["standard"].attack_names(**every))
    thorough = set(PROTOCOLS["thorough"].attack_names(**every))
    assert quick < standard < thorough
    assert {"autoattack", "autoattack-l2", "autoattack-l1", "fmn"} <= standard
    assert {"autoattack-plus", "autoattack-plus-l2"} <= thorough
    assert standard == STANDARD_ATTACKS
    thorough_pgd = PROTOCOLS["thorough"].params(l2_grid_given=False)["pgd"]
    assert thorough_pgd["steps"] > 20 and thorough_pgd["restarts"] > 1


@pytest.mark.parametrize("l2, l1", [(False, False), (True, False), (False, True), (True, True)])
def test_standard_adds_autoattack_of_a_norm_only_when_its_grid_is_given(l2: bool, l1: bool) -> None:
    names = PROTOCOLS["standard"].attack_names(l2_grid_given=l2, l1_grid_given=l1)
    assert ("autoattack-l2" in names) is l2
    assert ("autoattack-l1" in names) is l1
    assert "autoattack" in names
    _, resolved, _ = resolve_attacks("standard", None, {}, l2_grid_given=l2, l1_grid_given=l1)
    assert resolved == names


@pytest.mark.parametrize("name", ["quick", "standard", "thorough"])
def test_every_protocol_attack_is_registered_and_builds(name: str) -> None:
    p = PROTOCOLS[name]
    params = p.params(l2_grid_given=True)
    for attack in p.attack_names(l2_grid_given=True):
        assert attack in list_attacks("native")
        get_attack(attack, **params.get(attack, {}))  # valid parameter names and values
    assert p.probes.black_box in list_attacks("native")


def test_unknown_protocol_lists_the_valid_names() -> None:
    with pytest.raises(
        UserError, match=r"unknown protocol 'fast'; valid: quick, standard, thorough"
    ):
        get_protocol("fast")


def test_resolve_attacks_protocol_or_attacks_not_both() -> None:
    with pytest.raises(UserError, match="not both"):
        resolve_attacks("quick", ["pgd"], {}, l2_grid_given=False)
    p, names, params = resolve_attacks(
        None, ["pgd", "fgsm"], {"pgd": {"steps": 5}}, l2_grid_given=False
    )
    assert p is None and names == ["pgd", "fgsm"] and params == {"pgd": {"steps": 5}}
    p, names, _ = resolve_attacks(None, None, {}, l2_grid_given=False)
    assert p is not None and p.name == "quick" and names == ["fgsm", "pgd", "cw"]


def test_explicit_params_override_the_protocol_and_unknown_attacks_are_refused() -> None:
    _, _, params = resolve_attacks("quick", None, {"pgd": {"steps": 7}}, l2_grid_given=False)
    assert params["pgd"]["steps"] == 7
    assert params["pgd"]["rel_stepsize"] == 0.125  # the protocol's other values stay
    with pytest.raises(UserError, match="not in protocol 'quick'"):
        resolve_attacks("quick", None, {"fmn": {"steps": 7}}, l2_grid_given=False)


def test_identify_recognizes_hand_picked_quick_and_not_a_variant() -> None:
    same = (AttackSpec("fgsm"), AttackSpec("pgd"), AttackSpec("cw"))
    p = identify(same)
    assert p is not None and p.name == "quick"
    assert (
        identify((AttackSpec("fgsm"), AttackSpec("pgd", params=(("steps", 5),)), AttackSpec("cw")))
        is None
    )
    assert identify((AttackSpec("pgd"),)) is None
    assert (
        identify((AttackSpec("fgsm", "torchattacks"), AttackSpec("pgd"), AttackSpec("cw"))) is None
    )
    assert describe(None, ["pgd"])["name"] == CUSTOM


def test_paper_deviations_list_only_differing_known_parameters() -> None:
    rows = paper_deviations(
        {
            "pgd": {"steps": 20, "restarts": 1, "seed": 0},
            "cw": {"steps": 10000},
            "mystery": {"a": 1},
        }
    )
    assert rows == [
        {
            "attack": "pgd",
            "parameter": "steps",
            "used": 20,
            "paper": 40,
            "source": PAPER_DEFAULTS["pgd"]["source"],
        }
    ]
    # paper-default AutoAttack stages: APGD's defaults are the paper's
    assert paper_deviations({"apgd-ce": get_attack("apgd-ce").params()}) == []


def test_attack_request_protocol_resolves_attacks(tmp_path: Path) -> None:
    plain = AttackRunRequest(checkpoints=(tmp_path,))
    standard = AttackRunRequest(checkpoints=(tmp_path,), protocol="standard")
    assert standard.fingerprint() != plain.fingerprint()
    names = [s.name for s in standard.grid().attacks]
    assert names == PROTOCOLS["standard"].attack_names(l2_grid_given=False)
    with pytest.raises(UserError, match="unknown protocol"):
        AttackRunRequest(checkpoints=(tmp_path,), protocol="nope").grid()


def test_experiment_config_protocol_and_cli_override() -> None:
    default = plan_experiment()
    assert default.protocol is not None and default.protocol.name == "quick"
    assert [s.name for s in default.grid.attacks] == ["fgsm", "pgd", "cw"]
    standard = plan_experiment(protocol="standard")
    assert standard.protocol is not None and standard.protocol.name == "standard"
    assert "autoattack" in [s.name for s in standard.grid.attacks]
    assert standard.fingerprint() != default.fingerprint()
    cfg = default_config()
    cfg["attack"]["attacks"] = ["pgd"]
    with pytest.raises(UserError, match="protocol or attacks, not both"):
        plan_experiment(cfg)
    del cfg["attack"]["protocol"]
    custom = plan_experiment(cfg)
    assert custom.protocol is None
    cfg["attack"]["protocol"] = "bogus"
    del cfg["attack"]["attacks"]
    with pytest.raises(UserError, match="unknown protocol 'bogus'"):
        plan_experiment(cfg)


def test_default_experiment_keeps_its_pre_protocol_fingerprint() -> None:
    # The grid of the shipped config before protocols existed: resuming old runs keeps working.
    cfg = default_config()
    del cfg["attack"]["protocol"]
    cfg["attack"]["attacks"] = ["fgsm", "pgd", "cw"]
    cfg["attack"]["params"] = {
        "pgd": {"steps": 20, "rel_stepsize": 0.125, "random_start": True, "restarts": 1},
        "cw": {"steps": 100, "binary_search_steps": 6},
    }
    old = plan_experiment(cfg)
    assert old.fingerprint() == plan_experiment().fingerprint()
    assert old.protocol is not None and old.protocol.name == "quick"
