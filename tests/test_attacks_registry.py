"""attacks.registry: names, backends, parameter validation; the package's dependency rule."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

import attacks
from attacks import AttackConfigError, AttackKind, Norm, get_attack, list_attacks, list_backends
from attacks.registry import attack_class


def test_lists() -> None:
    assert list_backends()[:3] == ["native", "torchattacks", "foolbox"]
    assert "autoattack" in list_backends()
    native = list_attacks("native")  # grows as attacks land (issue 11): check a core subset
    assert native == sorted(native)
    assert {"cw", "fgsm", "pgd", "pgd-l2", "apgd-ce", "apgd-t", "autoattack"} <= set(native)
    assert list_attacks("torchattacks") == ["cw-fixed-c", "fgsm", "pgd", "pgd-l2"]
    assert list_attacks("foolbox") == ["cw", "fgsm", "pgd", "pgd-l2"]
    every = list_attacks()
    assert every == sorted(set(every))
    assert set(every) == {n for b in list_backends() for n in list_attacks(b)}


@pytest.mark.parametrize("backend", ["native", "torchattacks", "foolbox", "autoattack"])
def test_every_registered_attack_builds_with_defaults(backend: str) -> None:
    for name in list_attacks(backend):
        attack = get_attack(name, backend=backend)
        assert attack.name == name
        assert attack.backend == backend
        assert isinstance(attack.kind, AttackKind)
        assert isinstance(attack.norm, Norm)
        json.dumps(attack.params())  # recorded in results rows
        assert name in repr(attack) or type(attack).__name__ in repr(attack)


def test_kinds_and_norms() -> None:
    assert get_attack("fgsm").kind is AttackKind.FIXED_BUDGET
    assert get_attack("pgd-l2").norm is Norm.L2
    assert get_attack("cw").kind is AttackKind.MINIMUM_NORM
    assert get_attack("cw-fixed-c", backend="torchattacks").kind is AttackKind.MINIMUM_NORM


def test_same_parameters_and_defaults_across_backends() -> None:
    for name in ["fgsm", "pgd", "pgd-l2"]:
        backends = ["native", "torchattacks", "foolbox"]
        params = {b: get_attack(name, backend=b).params() for b in backends}
        # The grid-engine switches exist only on the native backend.
        engine_only = {"nested", "early_stop", "warm_start"}
        native = {k: v for k, v in params["native"].items() if k not in engine_only}
        assert native == params["torchattacks"] == params["foolbox"]
    assert get_attack("cw").params() == get_attack("cw", backend="foolbox").params()
    # APGD: the reference backend has the native parameters minus the engine switches.
    for name in ["apgd-ce", "apgd-t", "apgd-t-l2"]:
        native = get_attack(name).params()
        del native["nested"], native["parallel"]
        assert native == get_attack(name, backend="autoattack").params()


def test_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(
        AttackConfigError,
        match=r"unknown attack 'deepfool'.*valid: apgd-ce, .*cw, .*fgsm, .*pgd, pgd-l2",
    ):
        get_attack("deepfool")
    with pytest.raises(AttackConfigError, match="valid: cw-fixed-c"):
        get_attack("cw", backend="torchattacks")


def test_unknown_backend_lists_valid_ones() -> None:
    with pytest.raises(AttackConfigError, match="valid: native, torchattacks, foolbox"):
        get_attack("pgd", backend="cleverhans")
    with pytest.raises(AttackConfigError):
        list_attacks("cleverhans")


def test_unknown_parameter_lists_valid_ones() -> None:
    with pytest.raises(AttackConfigError, match=r"unknown parameter\(s\) stpes.*valid: steps"):
        get_attack("pgd", stpes=10)
    with pytest.raises(AttackConfigError, match=r"valid: \(none\)"):
        get_attack("fgsm", steps=3)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("pgd", {"steps": 0}),
        ("pgd", {"rel_stepsize": -1.0}),
        ("pgd", {"abs_stepsize": 0.0}),
        ("pgd", {"restarts": 3, "random_start": False}),
        ("pgd-l2", {"steps": 2.5}),
        ("cw", {"binary_search_steps": 0}),
        ("cw", {"initial_const": 0.0}),
        ("cw", {"confidence": -1.0}),
    ],
)
def test_invalid_values_raise_config_error(name: str, params: dict[str, object]) -> None:
    with pytest.raises(AttackConfigError):
        get_attack(name, **params)


def test_config_errors_are_value_errors() -> None:
    assert issubclass(AttackConfigError, ValueError)
    assert issubclass(attacks.AttackInputError, ValueError)


def test_attack_class_is_exposed() -> None:
    assert attack_class("pgd", backend="foolbox").__name__ == "FoolboxPGD"


def test_attacks_package_depends_only_on_torch_and_attack_libraries() -> None:
    allowed = {"torch", "numpy", "torchattacks", "foolbox", "eagerpy", "attacks", "__future__"}
    allowed |= {"pyautoattack", "adv_lib"}  # reference backends of issue 11
    root = Path(attacks.__file__).parent
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, (
                    f"{path.name} imports {mod}"
                )


def test_unknown_attack_suggests_the_nearest_name_across_case() -> None:
    with pytest.raises(AttackConfigError, match=r"did you mean 'pgd'\?"):
        get_attack("PGD")
    with pytest.raises(AttackConfigError, match=r"did you mean 'pgd-l2'\?"):
        get_attack("pgd_l2")
