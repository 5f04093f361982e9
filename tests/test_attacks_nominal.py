"""Attack.nominal_gradients / nominal_forwards / nominal_grid_gradients: every registered attack.

The grid used to compute these numbers itself by reading ``steps``, ``restarts`` and
``binary_search_steps`` out of ``attack.params()``; the ``_grid_*`` functions below are its code,
verbatim, and every registered attack (every backend, default and non-default parameters) must
give the same numbers through its own methods.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import fields
from typing import Any

import pytest

from attacks import Attack, AttackConfigError, AttackKind, get_attack, list_attacks
from attacks.registry import attack_class
from tests.attack_helpers import installed_backends


def _grid_expected_forwards(params: Mapping[str, Any]) -> int:
    """``evaluations.engine.cell_attack.expected_forwards`` (the progress bar's estimate)."""
    try:
        steps = int(params.get("steps") or 0)
        searches = int(params.get("binary_search_steps") or 1)
        restarts = int(params.get("restarts") or 1)
    except (TypeError, ValueError):
        return 0
    return steps * searches * restarts if steps > 1 else 0


def _grid_naive(attack: Attack, n: int, eps: list[float]) -> int:
    """``evaluations.engine.grid._naive_grad_evals`` (the naive account of one cell)."""
    params = attack.params()
    steps = (
        int(params.get("steps", 1))
        * int(params.get("restarts", 1))
        * (int(params.get("binary_search_steps", 1)))
    )
    per_eps = len([e for e in eps if e > 0]) if attack.kind is AttackKind.FIXED_BUDGET else 1
    return n * per_eps * steps


#: non-default values for the parameters the grid formula (or the attack's work) depends on
VARIED = {
    "steps": 7,
    "restarts": 3,
    "binary_search_steps": 4,
    "n_iter": 5,
    "n_queries": 9,
    "n_target_classes": 2,
}


def _registered() -> Iterator[tuple[str, str]]:
    for backend in installed_backends():
        for name in list_attacks(backend):
            yield backend, name


def _cls(backend: str, name: str) -> type[Attack]:
    try:
        return attack_class(name, backend=backend)
    except (AttackConfigError, ImportError) as err:  # an optional library is missing
        pytest.skip(f"{backend}/{name}: {err}")


def _variants(backend: str, name: str) -> list[Attack]:
    cls = _cls(backend, name)
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    out = [get_attack(name, backend=backend)]
    for key, value in VARIED.items():
        if key in names:
            out.append(get_attack(name, backend=backend, **{key: value}))
    varied = {k: v for k, v in VARIED.items() if k in names}
    if len(varied) > 1:
        out.append(get_attack(name, backend=backend, **varied))
    if "steps" in names:  # one step: the progress bar has no estimate
        out.append(get_attack(name, backend=backend, steps=1))
    return out


@pytest.mark.parametrize(("backend", "name"), list(_registered()))
def test_nominal_counts_equal_the_grid_formulas(backend: str, name: str) -> None:
    for attack in _variants(backend, name):
        params = attack.params()
        legacy = _grid_naive(attack, 1, [1.0])
        assert attack.nominal_gradients() == legacy, (attack, params)
        assert attack.nominal_forwards() == _grid_expected_forwards(params), (attack, params)
        for n, eps in [(0, [0.0, 0.1]), (17, [0.0, 0.1, 0.2, 0.3]), (5, [0.0]), (3, [0.5, 1.0])]:
            assert attack.nominal_grid_gradients(n, eps) == _grid_naive(attack, n, eps)


@pytest.mark.parametrize(("backend", "name"), list(_registered()))
def test_every_registered_attack_overrides_the_generic_rule(backend: str, name: str) -> None:
    cls = _cls(backend, name)
    assert cls.nominal_gradients is not Attack.nominal_gradients, f"{backend}/{name}"
    assert cls.nominal_forwards is not Attack.nominal_forwards, f"{backend}/{name}"


def test_examples() -> None:
    assert get_attack("fgsm").nominal_gradients() == 1
    assert get_attack("fgsm").nominal_forwards() == 0
    assert get_attack("pgd", steps=40, restarts=2).nominal_gradients() == 80
    cw = get_attack("cw", binary_search_steps=6, steps=100)
    assert cw.nominal_gradients() == 600 and cw.nominal_forwards() == 600
    assert cw.nominal_grid_gradients(10, [0.0, 0.5, 1.0]) == 6000  # one run for every eps
    pgd = get_attack("pgd", steps=20)
    assert pgd.nominal_grid_gradients(10, [0.0, 0.1, 0.2]) == 10 * 2 * 20  # eps 0 is not attacked
    assert get_attack("square", restarts=2).nominal_forwards() == 0
    assert get_attack("autoattack").nominal_gradients() == 1


def test_generic_rule_for_attacks_outside_the_registry() -> None:
    from tests.test_attacks_warnings import _Outside  # no parameters: the generic rule

    attack = _Outside()
    assert type(attack).nominal_gradients is Attack.nominal_gradients
    assert attack.nominal_gradients() == 1 and attack.nominal_forwards() == 0
    assert attack.nominal_grid_gradients(4, [0.0, 0.1]) == 4
