"""Adversarial training (robustbench_sparse.adversarial and its use by fit / run_train_job).

Invariants: a training adversarial lies in its ball and [0, 1]; TRADES' loss equals a value
computed by hand; crafting leaves parameters, gradients and BatchNorm statistics alone; pruned
weights stay exactly zero and frozen masks unchanged through AT with SGD+momentum, Adam and AdamW;
an interrupted AT run resumes bit for bit on CPU; bad settings are one-line user errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustbench_sparse.train_job as train_job_module
from attacks.norms import Norm, verify_adversarials
from robustbench_sparse.adversarial import (
    AdversarialConfig,
    AdversarialMethod,
    BatchNormMode,
    craft,
    crafting_mode,
    parse_fraction,
    robust_loss,
    threat_label,
    trades_loss,
)
from robustbench_sparse.checkpoint import META_FILE
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.train_job import TrainJob, run_train_job
from robustbench_sparse.training import Checkpointer, fit
from tests.core_helpers import (
    WIDTH,
    assert_tensors_identical,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_job,
    tiny_train_config,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    with single_thread():
        yield


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = tiny_digits().info
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )


def _batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    data = tiny_digits().train
    xs, ys = zip(*(data[i] for i in range(n)), strict=True)
    return torch.stack(xs), torch.tensor(ys)


# ------------------------------------------------------------------------------ crafting
@pytest.mark.parametrize("method", ["pgd", "trades", "fast"])
@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_training_adversarial_is_inside_its_ball_and_unit_box(
    method: str, norm: str, eps: float
) -> None:
    model = _model()
    x, y = _batch()
    cfg = AdversarialConfig(method=method, norm=norm, eps=eps, steps=3)  # type: ignore[arg-type]
    with crafting_mode(model, cfg.bn_mode):
        adv = craft(model, x, y, cfg, eps, clean_logits=model(x).detach())
    assert adv.shape == x.shape and not adv.requires_grad
    assert bool(verify_adversarials(adv, x, eps, Norm(norm)).all())
    assert float((adv - x).abs().max()) > 0  # it moved


def test_pgd_crafting_raises_the_loss() -> None:
    model = _model().eval()
    x, y = _batch(32)
    cfg = AdversarialConfig(method="pgd", eps=0.2, steps=5)  # type: ignore[arg-type]
    adv = craft(model, x, y, cfg, 0.2)
    ce = nn.functional.cross_entropy
    with torch.no_grad():
        assert float(ce(model(adv), y)) > float(ce(model(x), y))


def test_crafting_leaves_parameters_grads_and_batchnorm_alone() -> None:
    model = _model()
    model.train()
    x, y = _batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for mode in BatchNormMode:
        cfg = AdversarialConfig(method="pgd", eps=0.1, steps=2, bn_mode=mode)  # type: ignore[arg-type]
        with crafting_mode(model, cfg.bn_mode):
            craft(model, x, y, cfg, 0.1)
        assert model.training  # restored
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # running stats restored bit for bit


def test_trades_loss_equals_a_hand_computed_value() -> None:
    clean = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    adv = torch.tensor([[1.0, 1.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    beta = 3.0

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v) for v in row]
        return [v / sum(e) for v in e]

    ce = sum(-math.log(softmax(clean[i].tolist())[int(y[i])]) for i in range(2)) / 2
    kl = 0.0
    for i in range(2):
        p, q = softmax(clean[i].tolist()), softmax(adv[i].tolist())
        kl += sum(pj * math.log(pj / qj) for pj, qj in zip(p, q, strict=True))
    expected = ce + beta * kl / 2
    assert float(trades_loss(clean, adv, y, beta)) == pytest.approx(expected, rel=1e-6)
    # beta = 0 is plain cross-entropy; identical logits have zero KL.
    assert float(trades_loss(clean, clean, y, 5.0)) == pytest.approx(ce, rel=1e-6)


def test_robust_loss_gives_parameter_gradients_only_through_the_loss() -> None:
    model = _model()
    x, y = _batch()
    for method in ("pgd", "trades", "fast"):
        cfg = AdversarialConfig(method=method, eps=0.1, steps=2)  # type: ignore[arg-type]
        out = robust_loss(model, x, y, cfg, 0.1)
        assert all(p.grad is None for p in model.parameters())
        out.loss.backward()
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in model.parameters())
        model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------ config
def test_step_size_defaults_and_warmup() -> None:
    assert AdversarialConfig(method="pgd", eps=0.1, steps=10).stepsize(0.1) == pytest.approx(0.025)  # type: ignore[arg-type]
    assert AdversarialConfig(method="fast", eps=0.1).stepsize(0.1) == pytest.approx(0.125)  # type: ignore[arg-type]
    assert AdversarialConfig(method="fast", eps=0.1).effective_steps == 1  # type: ignore[arg-type]
    assert AdversarialConfig(method="pgd", eps="8/255", step_size="2/255").stepsize(  # type: ignore[arg-type]
        8 / 255
    ) == pytest.approx(2 / 255)
    cfg = AdversarialConfig(method="pgd", eps=0.3, rel_step_size=0.1, eps_warmup_epochs=2.0)  # type: ignore[arg-type]
    assert cfg.stepsize(0.3) == pytest.approx(0.03)
    ramp = [cfg.eps_at(t, 5) for t in range(12)]
    assert ramp[0] == pytest.approx(0.03) and ramp[9] == pytest.approx(0.3)
    assert ramp == sorted(ramp) and ramp[11] == 0.3


def test_record_and_labels() -> None:
    rec = AdversarialConfig(method="pgd", eps=0.1, steps=10).record()  # type: ignore[arg-type]
    assert rec["label"] == "AT (linf 0.1, PGD-10)" and rec["step_size"] == pytest.approx(0.025)
    assert rec["bn_mode"] == "train" and rec["trades_beta"] is None
    assert AdversarialConfig().record()["label"] == "standard"
    assert threat_label("trades", "linf", 8 / 255, 10, 6.0) == "TRADES (linf 8/255, PGD-10, beta 6)"
    assert threat_label("fast", "l2", 0.5, 1) == "fast AT (l2 0.5, FGSM-RS)"
    assert parse_fraction("8/255", "eps") == pytest.approx(8 / 255)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"method": "madry", "eps": 0.1}, "adversarial method 'madry' is unknown"),
        ({"method": "pgd", "norm": "l0", "eps": 0.1}, "adversarial norm 'l0' is unknown"),
        ({"method": "pgd", "norm": "l1", "eps": 0.1}, "'l1' is for evaluation only"),
        ({"method": "pgd", "eps": 0}, "needs --adv-eps > 0"),
        ({"method": "pgd", "eps": "eight"}, "is not a number"),
        ({"method": "pgd", "eps": 0.1, "steps": 0}, "steps must be an integer >= 1"),
        ({"method": "pgd", "eps": 0.1, "step_size": -1}, "step_size must be > 0"),
        ({"method": "pgd", "eps": 0.1, "step_size": 0.1, "rel_step_size": 0.2}, "not both"),
        ({"method": "trades", "eps": 0.1, "trades_beta": -1}, "trades_beta must be >= 0"),
        ({"method": "pgd", "eps": 0.1, "eps_warmup_epochs": -1}, "eps_warmup_epochs"),
        ({"method": "pgd", "eps": 0.1, "bn_mode": "frozen"}, "bn_mode 'frozen' is unknown"),
    ],
)
def test_bad_settings_are_one_line_user_errors(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError, match=None) as info:
        AdversarialConfig(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------------ training
@pytest.mark.parametrize(
    "optimizer,method",
    [("sgd", "pgd"), ("adam", "pgd"), ("adamw", "pgd"), ("sgd", "trades"), ("adamw", "fast")],
)
def test_at_keeps_pruned_weights_zero_and_frozen_masks_unchanged(
    optimizer: str, method: str
) -> None:
    cfg = tiny_train_config(epochs=3, optimizer=optimizer, lr=0.01 if optimizer != "sgd" else 0.05)
    sparsity = SparsityConfig(target=0.7, granularity=Granularity.WINDOW, start=0.0, end=1.0)
    adv = AdversarialConfig(method=method, eps=0.1, steps=2)  # type: ignore[arg-type]
    masks_per_epoch: list[dict[str, torch.Tensor]] = []

    def save_last(model: nn.Module, sparsifier: Any, history: Any, state: Any) -> None:
        masks_per_epoch.append(sparsifier.masks)
        params = dict(model.named_parameters())
        for name, mask in sparsifier.masks.items():
            # exactly +0.0 at every pruned position, after every epoch
            assert torch.equal(params[name].detach()[~mask], torch.zeros(int((~mask).sum())))

    result = fit(
        _model(),
        tiny_digits(),
        cfg,
        sparsity,
        checkpointer=Checkpointer(save_last=save_last),
        progress=False,
        adversarial=adv,
    )
    assert [h.masks_frozen for h in result.history] == [True, True, True]
    for later in masks_per_epoch[1:]:
        for name, mask in later.items():
            assert torch.equal(mask, masks_per_epoch[0][name]), name
    last = result.history[-1]
    assert last.train_adv_accuracy is not None and last.val_robust_accuracy is not None
    assert last.adv_eps == 0.1 and last.val_accuracy is not None
    assert 0.0 <= last.val_robust_accuracy <= 1.0


def _at_job(**adv: Any) -> TrainJob:
    job = tiny_job(0.7, "window", epochs=3, start=0.5, end=2.0, update_every=2)
    settings = {"method": "pgd", "eps": 0.1, "steps": 2, "eps_warmup_epochs": 1.5, **adv}
    return dataclasses.replace(job, adversarial=AdversarialConfig(**settings))


class _Interrupted(KeyboardInterrupt):
    pass


def test_at_resume_is_bitwise_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    job = _at_job()
    a = run_train_job(job, tmp_path / "a", progress=False)

    real = Checkpointer

    def factory(**kwargs: Any) -> Checkpointer:
        save_last = kwargs["save_last"]

        def save_then_stop(model: Any, sparsifier: Any, history: Any, state: Any) -> None:
            save_last(model, sparsifier, history, state)
            if len(history) == 1:
                raise _Interrupted

        return real(**{**kwargs, "save_last": save_then_stop})

    monkeypatch.setattr(train_job_module, "Checkpointer", factory)
    with pytest.raises(_Interrupted):
        run_train_job(job, tmp_path / "b", progress=False)
    monkeypatch.undo()
    b = run_train_job(job, tmp_path / "b", resume=True, progress=False)
    for sub in ("", "best", "best-robust"):
        state_a, masks_a = read_weights_file(tmp_path / "a" / sub)
        state_b, masks_b = read_weights_file(tmp_path / "b" / sub)
        assert_tensors_identical(masks_a, masks_b)
        assert_tensors_identical(state_a, state_b)
    keys = ["train_loss", "train_adv_loss", "adv_eps", "val_accuracy", "val_robust_accuracy"]
    assert [[h[k] for k in keys] for h in a.meta["history"]] == [
        [h[k] for k in keys] for h in b.meta["history"]
    ]


def test_checkpoint_records_the_threat_model_and_best_robust(tmp_path: Path) -> None:
    job = _at_job(method="trades", trades_beta=2.0)
    ck = run_train_job(job, tmp_path / "t", progress=False)
    rec = ck.meta["adversarial_training"]
    assert rec["method"] == "trades" and rec["eps"] == 0.1 and rec["steps"] == 2
    assert rec["trades_beta"] == 2.0 and rec["eps_warmup_epochs"] == 1.5
    assert rec["bn_mode"] == "train" and rec["label"].startswith("TRADES (linf 0.1")
    assert (tmp_path / "t" / "best-robust" / META_FILE).is_file()
    best_robust = json.loads((tmp_path / "t" / "best-robust" / META_FILE).read_text())
    hist = ck.meta["history"]
    # best-robust/ counts final-mask epochs at the full budget (none of the eps warm-up)
    frozen = [h for h in hist if h["masks_frozen"] and h["adv_eps"] >= rec["eps"]]
    chosen = max(frozen, key=lambda h: (h["val_robust_accuracy"], -h["epoch"]))
    assert ck.meta["best_epoch"] in {h["epoch"] for h in frozen}
    assert ck.meta["best_robust_epoch"] == chosen["epoch"]
    assert best_robust["epochs_completed"] == chosen["epoch"]
    assert AdversarialMethod(rec["method"]) is AdversarialMethod.TRADES


# ------------------------------------------------------------------------------ budget checks
@pytest.mark.parametrize("eps", [8, 3.0, 1, "255/255", 0.5, 0.75])
def test_a_linf_training_budget_from_half_the_pixel_range_up_is_refused(eps: Any) -> None:
    with pytest.raises(UserError) as info:
        AdversarialConfig(method="pgd", eps=eps)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "not below 0.5" in message and "--adv-eps" in message
    value = parse_fraction(eps, "eps")
    if value >= 1:
        assert f"did you mean {value:g}/255 = {value / 255:.4g}?" in message
    else:
        assert "8/255" in message and "did you mean" not in message


@pytest.mark.parametrize("eps", [0.3, "8/255", 0.4999, 0.1])
def test_plausible_linf_training_budgets_pass(eps: Any) -> None:
    cfg = AdversarialConfig(method="trades", eps=eps)  # type: ignore[arg-type]
    cfg.check_budget((3, 32, 32))
    assert cfg.eps == pytest.approx(parse_fraction(eps, "eps"))


def test_an_unused_budget_is_not_checked() -> None:
    AdversarialConfig(method="none", eps=8).check_budget((1, 8, 8))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "shape,eps,refused",
    [
        ((1, 8, 8), 20.0, True),  # half the diagonal of [0, 1]^64 is 4
        ((1, 8, 8), 4.0, True),
        ((1, 8, 8), 3.9, False),
        ((1, 28, 28), 20.0, True),  # 14
        ((1, 28, 28), 3.0, False),
        ((3, 32, 32), 20.0, False),  # 27.7: plausible-looking yet possible
        ((3, 32, 32), 30.0, True),
    ],
)
def test_an_l2_training_budget_is_checked_against_the_input_size(
    shape: tuple[int, int, int], eps: float, refused: bool
) -> None:
    cfg = AdversarialConfig(method="pgd", norm="l2", eps=eps)  # type: ignore[arg-type]
    cfg.check_budget(None)  # l2 needs the size: nothing to say without it
    if not refused:
        cfg.check_budget(shape)
        return
    with pytest.raises(UserError, match=r"\(l2\) on \[0, 1\] pixels .*not below 0\.5 x sqrt"):
        cfg.check_budget(shape)


@pytest.mark.parametrize(
    "norm,step,shape", [("linf", 2, None), ("linf", 1, None), ("l2", 9, (1, 8, 8))]
)
def test_an_absolute_step_size_spanning_the_input_space_is_refused(
    norm: str, step: float, shape: tuple[int, ...] | None
) -> None:
    cfg = dict(method="pgd", norm=norm, eps=0.1, step_size=step)
    with pytest.raises(UserError, match=r"step size .* spans the whole"):
        AdversarialConfig(**cfg).check_budget(shape)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "warmup,epochs,fits",
    [(5, 2, False), (2, 2, False), (2.5, 2, False), (1.5, 2, True), (0, 1, True)],
)
def test_an_eps_warmup_must_end_before_training_does(
    warmup: float, epochs: int, fits: bool
) -> None:
    cfg = AdversarialConfig(method="pgd", eps=0.15, eps_warmup_epochs=warmup)  # type: ignore[arg-type]
    if fits:
        cfg.check_warmup(epochs)
        return
    with pytest.raises(UserError) as info:
        cfg.check_warmup(epochs)
    message = str(info.value)
    assert "--adv-eps-warmup" in message and "--epochs" in message and "\n" not in message
    reached = 0.15 * min(1.0, epochs / warmup)
    assert (f"{reached:.3g} at most" in message) == (reached < 0.15)


def test_a_checkpoint_saved_during_the_warmup_says_the_budget_it_reached() -> None:
    cfg = AdversarialConfig(method="pgd", eps=0.15, steps=3, eps_warmup_epochs=5)  # type: ignore[arg-type]
    during = cfg.record(0.06)
    assert during["eps_reached"] == 0.06 and during["eps"] == 0.15
    assert during["label"] == "AT (linf 0.15, PGD-3) [eps warm-up: reached 0.06]"
    after = cfg.record(0.15)
    assert after["label"] == "AT (linf 0.15, PGD-3)" and after["eps_reached"] == 0.15
    assert AdversarialConfig().record(None)["eps_reached"] == 0.0


# ------------------------------------------------------------------------------ gaussian noise
def test_gaussian_loss_is_the_cross_entropy_on_unclipped_noise_at_sigma() -> None:
    model, (x, y) = _model(), _batch(8)
    model.eval()
    cfg = AdversarialConfig(method="gaussian", sigma=0.5)  # type: ignore[arg-type]
    torch.manual_seed(3)
    out = robust_loss(model, x, y, cfg, 0.0)
    torch.manual_seed(3)
    noisy = x + 0.5 * torch.randn_like(x)  # not clipped to [0, 1] (Cohen et al.'s train.py)
    assert float(noisy.min()) < 0 and float(noisy.max()) > 1
    expected = nn.functional.cross_entropy(model(noisy), y)
    assert float(out.loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert torch.allclose(out.logits_clean, model(x), atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"method": "gaussian"}, "needs --noise-sigma in (0, 4]"),
        ({"method": "gaussian", "sigma": -0.1}, "needs --noise-sigma"),
        ({"method": "gaussian", "sigma": 0.25, "eps": 0.1}, "not --adv-eps"),
        ({"method": "pgd", "eps": 0.1, "sigma": 0.25}, "for --adversarial gaussian only"),
    ],
)
def test_gaussian_settings_are_checked(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError) as info:
        AdversarialConfig(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_gaussian_training_with_campfire_masks_records_sigma(tmp_path: Path) -> None:
    job = tiny_job(0.7, "window", epochs=2, start=0.0, end=1.0, update_every=2)
    adv = AdversarialConfig(method="gaussian", sigma=0.25)  # type: ignore[arg-type]
    ck = run_train_job(dataclasses.replace(job, adversarial=adv), tmp_path / "g", progress=False)
    rec = ck.meta["adversarial_training"]
    assert rec["method"] == "gaussian" and rec["sigma"] == 0.25 and rec["eps"] == 0.0
    assert rec["label"] == "Gaussian noise (σ 0.25)" and rec["steps"] == 0
    hist = ck.meta["history"]
    assert all(h["val_robust_accuracy"] is None for h in hist)  # no budget to attack at
    assert all(h["train_adv_accuracy"] is not None for h in hist)  # accuracy on the noisy inputs
    state, masks = read_weights_file(tmp_path / "g")
    assert masks and all(bool((state[name][~m] == 0).all()) for name, m in masks.items())
