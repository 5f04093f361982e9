"""IBP training (robustbench_sparse/bounds/ibp_training.py and the ``ibp`` method of
robustbench_sparse/adversarial.py): the kappa and eps schedules, the loss, settings, and a tiny
training run with Campfire masks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robustbench_sparse.adversarial import AdversarialConfig, robust_loss
from robustbench_sparse.bounds import input_box, margin_lower_bounds
from robustbench_sparse.bounds.ibp_training import ibp_kappa, ibp_training_loss
from robustbench_sparse.errors import UserError
from robustbench_sparse.train_job import adversarial_from_dict, run_train_job
from tests.core_helpers import read_weights_file, single_thread, tiny_job


def test_kappa_falls_from_one_to_its_final_value_over_the_eps_ramp() -> None:
    assert ibp_kappa(0.0, 0.1, 0.5) == 1.0
    assert ibp_kappa(0.05, 0.1, 0.5) == pytest.approx(0.75)
    assert ibp_kappa(0.1, 0.1, 0.5) == pytest.approx(0.5)
    assert ibp_kappa(0.2, 0.1, 0.5) == pytest.approx(0.5)
    assert ibp_kappa(0.1, 0.1, 0.0) == 0.0


def test_eps_is_zero_in_the_nominal_warmup_then_ramps_linearly() -> None:
    adv = AdversarialConfig(method="ibp", eps=0.1, ibp_warmup_epochs=1, eps_warmup_epochs=2)  # type: ignore[arg-type]
    spe = 10  # steps per epoch
    assert [adv.eps_at(s, spe) for s in range(10)] == [0.0] * 10
    assert adv.eps_at(10, spe) == pytest.approx(0.1 / 20)
    assert adv.eps_at(19, spe) == pytest.approx(0.05)
    assert adv.eps_at(29, spe) == pytest.approx(0.1)
    assert adv.eps_at(100, spe) == pytest.approx(0.1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3)
    )


def test_loss_mixes_nominal_and_worst_case_cross_entropy() -> None:
    net = _net().eval()
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    loss, logits, worst = ibp_training_loss(net, x, y, 0.05, 0.25)
    margins = margin_lower_bounds(net, input_box(x, 0.05), y)
    expected = 0.25 * F.cross_entropy(net(x), y) + 0.75 * F.cross_entropy(-margins, y)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(logits, net(x))
    assert (worst.gather(1, y[:, None]) == 0).all()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    loss0, _, worst0 = ibp_training_loss(net, x, y, 0.0, 1.0)  # the nominal warm-up
    torch.testing.assert_close(loss0, F.cross_entropy(net(x), y))
    assert worst0 is not None


def test_robust_loss_dispatches_ibp_with_the_scheduled_kappa() -> None:
    net = _net().train()
    x, y = torch.rand(8, 1, 8, 8), torch.arange(8) % 3
    adv = AdversarialConfig(method="ibp", eps=0.1, ibp_kappa=0.5)  # type: ignore[arg-type]
    got = robust_loss(net, x, y, adv, 0.05)  # half-way: kappa 0.75
    net.eval()
    want, _, _ = ibp_training_loss(net, x, y, 0.05, 0.75)
    assert not torch.allclose(got.loss, want)  # train mode: batch statistics, not running ones
    net.train()
    torch.manual_seed(0)
    again = robust_loss(net, x, y, adv, 0.05)
    torch.testing.assert_close(got.loss, again.loss)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"method": "ibp", "eps": 0.1, "norm": "l2"}, "L-infinity box only"),
        ({"method": "ibp", "eps": 0.1, "ibp_kappa": 1.5}, "--ibp-kappa in [0, 1]"),
        ({"method": "pgd", "eps": 0.1, "ibp_kappa": 0.2}, "for --adversarial ibp only"),
        ({"method": "ibp", "eps": 0.0}, "needs --adv-eps > 0"),
    ],
)
def test_ibp_settings_are_checked(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError) as info:
        AdversarialConfig(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_warmup_and_ramp_must_end_before_training() -> None:
    adv = adversarial_from_dict({"method": "ibp", "eps": 0.1, "ibp_warmup_epochs": 1})
    adv.check_warmup(2)
    ramped = dataclasses.replace(adv, eps_warmup_epochs=1.5)
    with pytest.raises(UserError, match="do not end before training"):
        ramped.check_warmup(2)


def test_ibp_training_with_campfire_masks_records_the_schedule(tmp_path: Path) -> None:
    job = tiny_job(0.7, "window", epochs=2, start=0.0, end=1.0, update_every=2)
    adv = AdversarialConfig(
        method="ibp",  # type: ignore[arg-type]
        eps=0.05,
        ibp_warmup_epochs=0.3,
        eps_warmup_epochs=1.0,
        val_steps=2,
    )
    with single_thread():
        ck = run_train_job(
            dataclasses.replace(job, adversarial=adv), tmp_path / "i", progress=False
        )
    rec = ck.meta["adversarial_training"]
    assert rec["method"] == "ibp" and rec["eps"] == 0.05 and rec["norm"] == "linf"
    assert rec["ibp_kappa"] == 0.5 and rec["ibp_warmup_epochs"] == 0.3
    assert rec["label"] == "IBP (linf 0.05)" and rec["steps"] == 0
    state, masks = read_weights_file(tmp_path / "i")
    assert masks and all(bool((state[name][~m] == 0).all()) for name, m in masks.items())
    assert any(bool((~m).any()) for m in masks.values())
