"""Fewer than 4 classes (issue 29): ``apgd-t-ce``, the cascades' substitution, one-line refusals.

The DLR losses need a 3rd (APGD-DLR) and a 4th (APGD-T) class. The native AutoAttack cascades run
the targeted cross-entropy (``apgd-t-ce``) instead and record it; every attack of every installed
backend either runs on a 2- or 3-class model or refuses it in one line before any work.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from attacks import AttackInputError, Norm, get_attack, list_attacks, verify_adversarials
from attacks.apgd import ce_loss, ce_targeted_loss
from attacks.autoattack import AutoAttack, AutoAttackPlus
from attacks.contracts import FEW_CLASS_SUBSTITUTE
from attacks.few_classes import stage_for_classes
from attacks.registry import attack_class
from evaluations.record.results import read_results
from rbs.cli import main
from tests.attack_helpers import installed_backends, tiny_cnn

EPS = [0.0, 0.15, 0.25]


@functools.cache
def few_class_task(classes: int) -> tuple[nn.Module, Tensor, Tensor]:
    """The tiny CNN trained (40 Adam steps) on the digits ``0 .. classes-1``; 60 test images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = torch.tensor(data.target) < classes
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)[keep] / 16.0  # (M, 1, 8, 8)
    y = torch.tensor(data.target, dtype=torch.long)[keep]
    torch.manual_seed(0)
    model = tiny_cnn(classes)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for step in range(40):
        idx = torch.randint(60, len(y), (64,), generator=torch.Generator().manual_seed(step))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval(), x[:60], y[:60]


@dataclass(frozen=True, repr=False)
class _CheapStandard(AutoAttack):
    """AutoAttack "standard"'s stage list with small budgets (the substitution rule is the same)."""

    stage_specs: ClassVar[tuple[tuple[str, dict[str, Any]], ...]] = (
        ("apgd-ce", {"restarts": 1, "steps": 10}),
        ("apgd-t", {"restarts": 1, "n_target_classes": 9, "steps": 10}),
        ("fab-t", {"restarts": 1, "n_target_classes": 9, "n_iter": 10}),
        ("square", {"n_queries": 50}),
    )


@pytest.mark.parametrize("classes", [2, 3])
def test_apgd_t_ce_runs_on_few_classes_within_budget(classes: int) -> None:
    model, x, y = few_class_task(classes)
    attack = get_attack("apgd-t-ce", steps=10)
    result = attack(model, x, y, epsilons=EPS)
    for k, e in enumerate(EPS):
        assert bool(verify_adversarials(result.adversarials[k], x, e, Norm.LINF).all())
    acc = result.robust_accuracy()
    assert acc[0] > 0.8 and acc[-1] < acc[0]  # it breaks examples
    assert attack.settings_for(classes) == {"targets": classes - 1}
    n_clean = int(result.success[0].logical_not().sum())
    assert result.grad_evals <= 11 * (classes - 1) * n_clean * (len(EPS) - 1)


def test_targeted_ce_on_two_classes_ascends_like_ce() -> None:
    """On 2 classes -CE(z, t) and CE(z, y) are increasing functions of the same margin z_t - z_y:
    their input gradients point the same way (APGD-T-CE is then APGD-CE from another start)."""
    torch.manual_seed(3)
    w = torch.randn(2, 5)
    x = torch.randn(7, 5, requires_grad=True)
    y = torch.randint(0, 2, (7,))
    (g_ce,) = torch.autograd.grad(ce_loss(x @ w.T, y).sum(), x)
    (g_t,) = torch.autograd.grad(ce_targeted_loss(x @ w.T, y, 1 - y).sum(), x)
    cos = nn.functional.cosine_similarity(g_ce, g_t, dim=1)
    assert bool((cos > 1 - 1e-5).all())
    with pytest.raises(ValueError, match="target"):
        ce_targeted_loss(x @ w.T, y)


@pytest.mark.parametrize("classes", [2, 3])
def test_cascade_substitutes_apgd_t_and_records_it(classes: int) -> None:
    model, x, y = few_class_task(classes)
    cascade = _CheapStandard()
    result = cascade(model, x, y, epsilons=EPS)
    assert result.details is not None
    assert result.details["stages"] == ["apgd-ce", "apgd-t-ce", "fab-t", "square"]
    (sub,) = result.details["substitutions"]
    assert sub["stage"] == "apgd-t" and sub["ran"] == "apgd-t-ce" and sub["classes"] == classes
    assert "4 classes" in sub["reason"]
    # the substitute really ran on APGD-CE's survivors
    assert result.details["stage_attacked"][1][1] > 0
    settings = cascade.settings_for(classes)
    assert [s["stage"] for s in settings["stages"]] == result.details["stages"]
    assert settings["stages"][1]["targets"] == classes - 1
    assert settings["substitutions"] == result.details["substitutions"]
    # never weaker than its first stage alone
    alone = get_attack("apgd-ce", steps=10)(model, x, y, epsilons=EPS)
    for a, b in zip(result.robust_accuracy(), alone.robust_accuracy(), strict=True):
        assert a <= b


def test_many_classes_have_no_substitution() -> None:
    settings = AutoAttack().settings_for(10)
    assert "substitutions" not in settings
    assert [s["stage"] for s in settings["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert [s["restarts"] for s in settings["stages"]] == [1, 1, 1, 1]
    assert settings["stages"][1]["targets"] == 9


def test_plus_substitutes_dlr_on_two_classes_and_keeps_its_restarts() -> None:
    plan = {name: (ran, params) for name, (ran, params, _) in _plan(AutoAttackPlus(), 2).items()}
    assert plan["apgd-dlr"] == ("apgd-t-ce", {"restarts": 5})
    assert plan["apgd-t"][0] == "apgd-t-ce" and plan["apgd-ce"][0] == "apgd-ce"
    three = _plan(AutoAttackPlus(), 3)
    assert three["apgd-dlr"][0] == "apgd-dlr" and three["apgd-t"][0] == "apgd-t-ce"
    assert stage_for_classes("apgd-t-l2", {}, 3)[0] == "apgd-t-ce-l2"
    assert stage_for_classes("apgd-t", {}, None) == ("apgd-t", {}, None)  # count unknown


def _plan(cascade: AutoAttack, classes: int) -> dict[str, tuple[str, dict[str, Any], Any]]:
    specs = [base for base, _ in cascade.stage_specs]
    return dict(zip(specs, cascade.stage_plan(classes), strict=True))


def _refusers(classes: int) -> list[tuple[str, str]]:
    return [
        (b, name)
        for b in installed_backends()
        for name in list_attacks(b)
        if attack_class(name, backend=b).min_classes > classes
    ]


@pytest.mark.parametrize("classes", [2, 3])
def test_every_backend_refuses_few_classes_in_one_line(classes: int) -> None:
    model, x, y = few_class_task(classes)
    refusers = _refusers(classes)
    expected = {("native", "apgd-t"), ("native", "apgd-t-l2")}
    if "autoattack" in installed_backends():
        expected |= {("autoattack", "autoattack"), ("autoattack", "apgd-t")}
    if "adv-lib" in installed_backends():
        expected |= {("adv-lib", "apgd-t")} | ({("adv-lib", "apgd-dlr")} if classes < 3 else set())
    if classes < 3:
        expected |= {("native", "apgd-dlr")}
    assert expected <= set(refusers)
    for backend, name in refusers:
        attack = get_attack(name, backend=backend)
        with pytest.raises(AttackInputError) as err:
            attack(model, x[:4], y[:4], epsilons=[0.0, 0.1])
        message = str(err.value)
        assert "\n" not in message
        assert f"{backend}/{name} needs a model with at least" in message
        assert f"(this one has {classes})" in message
        # the advice names an attack that exists, of the refused attack's own norm
        advised = FEW_CLASS_SUBSTITUTE[attack.norm.value]
        if "apgd-t-ce" in message:
            assert f"({advised})" in message or f"use {advised} " in message
            assert advised in list_attacks("native")
            assert attack_class(advised, backend="native").norm == attack.norm
        assert "{apgd_t_ce}" not in message


_SMALL = {"steps": 3, "n_iter": 3, "n_queries": 10, "binary_search_steps": 1}


@pytest.mark.parametrize("classes", [2, 3])
def test_every_other_attack_runs_on_few_classes(classes: int) -> None:
    """No raw library traceback: whatever does not refuse the model attacks it (small budgets)."""
    model, x, y = few_class_task(classes)
    refused = set(_refusers(classes))
    for backend in installed_backends():
        for name in list_attacks(backend):
            if (backend, name) in refused or name.startswith("autoattack"):
                continue  # cascades: test_cascade_substitutes_apgd_t_and_records_it
            cls = attack_class(name, backend=backend)
            fields = {f for f in cls.__dataclass_fields__}  # type: ignore[attr-defined]
            attack = get_attack(
                name, backend=backend, **{k: v for k, v in _SMALL.items() if k in fields}
            )
            eps = [0.0, 10.0] if name.endswith("-l1") else [0.0, 0.5 if "l2" in name else 0.1]
            result = attack(model, x[:6], y[:6], epsilons=eps, warn_units=False)
            assert result.success.shape == (2, 6), (backend, name)


def _digit_folder(root: Path, classes: int) -> Path:
    """An ImageFolder (``train/``, ``test/``) of the sklearn digits ``0 .. classes-1``, 8x8 PNGs."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    for cls in range(classes):
        idx = np.nonzero(data.target == cls)[0]
        for split, part in (("train", idx[:-20]), ("test", idx[-20:])):
            (root / split / str(cls)).mkdir(parents=True, exist_ok=True)
            for i in part:
                pixels = (data.images[i] * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / str(cls) / f"{i}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("classes", [2, 3])
def test_cli_standard_protocol_runs_on_few_classes(
    classes: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Field report 3: ``--protocol standard`` on a 2- / 3-class task, the substitution recorded
    in results.json and the rows; the reference backends' APGD-T refuses in one line."""
    folder = _digit_folder(tmp_path / "digits", classes)
    ck, res = tmp_path / "ck", tmp_path / "res"
    data = ["--data-root", str(folder)]
    assert (
        main(["-q", "train", "--dataset", "imagefolder", *data, "--epochs", "2", "--out", str(ck)])
        == 0
    )
    attack = ["attack", "--checkpoint", str(ck), *data, "--limit", "6", "--eps", "0,0.3"]
    assert main([*attack, "--protocol", "standard", "--no-report", "--out", str(res)]) == 0
    side = json.loads((res / "results.json").read_text())
    (aa,) = [r for r in side["attacks"] if r["attack"] == "autoattack"]
    assert aa["classes"] == classes and aa["substitutions"][0]["ran"] == "apgd-t-ce"
    rows = read_results(res / "results.csv")
    params = json.loads(rows[rows.attack == "autoattack"]["params"].iloc[0])
    assert params["substitutions"] == aa["substitutions"]
    # the report's attack table: tests/test_evaluations_present_report_evaluation.py
    capsys.readouterr()
    for backend in ("autoattack", "adv-lib"):
        if backend not in installed_backends():
            continue
        out = tmp_path / f"ref-{backend}"
        code = main([*attack, "--backend", backend, "--attack", "apgd-t", "--out", str(out)])
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(err) == 1, err
        assert f"{backend}/apgd-t needs a model with at least 4 classes" in err[0]
