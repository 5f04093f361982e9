"""ToST (robustbench_sparse.sparsity.methods.tost): a fixed mask trained with ghosts, labels, init.

Faithfulness (issue 26), each failing for the sloppy version named:

- ToST's label-smoothing targets are 0.90 / 0.0111 on 10 classes (torch's ``label_smoothing=0.1``,
  0.91 / 0.01, fails), and ``fit`` trains with them;
- the kept-weight bitmap is identical at the start and at the end of training (a sparsifier
  that re-selects masks fails);
- ghost paths are gone at the end and removing them leaves the logits bit for bit (removing
  them before their strength reached 0 fails);
- ghost parameters are trained but in no mask and no sparsity denominator;
- end to end, ``rbs train --method tost`` writes a checkpoint whose pruned weights are exactly
  zero and which loads and is attacked like any other.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rbs.cli import main
from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import SparsityConfig, create_sparsifier, sparsity_report
from robustbench_sparse.sparsity.methods import TostSparsifier
from robustbench_sparse.sparsity.methods.tost import check_tost_job, tost_label_smoothing
from robustbench_sparse.sparsity.methods.tost_ghosts import GHOST_NAME, GhostActivation
from robustbench_sparse.training import Checkpointer, build_optimizer, fit
from tests.core_helpers import WIDTH, single_thread, tiny_digits, tiny_train_config


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = tiny_digits().info
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )


def _config(**changes: Any) -> SparsityConfig:
    return SparsityConfig(**{"target": 0.7, "method": "tost", "start": 0.0, "end": 1.0, **changes})


def _tost(config: SparsityConfig) -> TostSparsifier:
    sp = create_sparsifier(config, 4)
    assert isinstance(sp, TostSparsifier)
    return sp


def _x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(6, 1, 8, 8)


# ------------------------------------------------------------------ label smoothing
def _targets(beta: float) -> torch.Tensor:
    """The target distribution torch's cross-entropy with ``beta`` trains towards (true = 0)."""
    logits = torch.randn(1, 10, dtype=torch.float64, requires_grad=True)
    F.cross_entropy(logits, torch.tensor([0]), label_smoothing=beta).backward()
    assert logits.grad is not None
    return (F.softmax(logits, 1) - logits.grad)[0].detach()  # grad = softmax - q


def test_label_smoothing_targets_are_tosts_090_and_00111_on_ten_classes() -> None:
    q = _targets(tost_label_smoothing(0.1, 10))
    assert q[0].item() == pytest.approx(0.90, abs=1e-9)
    assert q[1:].tolist() == pytest.approx([0.1 / 9] * 9, abs=1e-9)  # 0.0111
    sloppy = _targets(0.1)  # torch's own convention at alpha: 0.91 / 0.01
    assert sloppy[0].item() == pytest.approx(0.91, abs=1e-9)
    assert abs(sloppy[0].item() - q[0].item()) > 5e-3


def test_label_smoothing_loss_equals_tosts_formula_on_fixed_logits() -> None:
    torch.manual_seed(0)
    logits, y = torch.randn(5, 10, dtype=torch.float64), torch.tensor([0, 3, 9, 3, 1])
    q = torch.full((5, 10), 0.1 / 9, dtype=torch.float64)
    q[torch.arange(5), y] = 0.9
    tost = -(q * F.log_softmax(logits, 1)).sum(1).mean()
    ours = F.cross_entropy(logits, y, label_smoothing=tost_label_smoothing(0.1, 10))
    assert ours.item() == pytest.approx(tost.item(), abs=1e-12)
    assert abs(F.cross_entropy(logits, y, label_smoothing=0.1).item() - tost.item()) > 1e-4


def test_label_smoothing_hook_and_its_refusals() -> None:
    sp = TostSparsifier(_config(), 4)
    assert sp.label_smoothing(10, 0.0) == pytest.approx(0.1 * 10 / 9)
    assert sp.label_smoothing(3, 0.0) == pytest.approx(0.1 * 3 / 2)
    with pytest.raises(UserError, match="drop --label-smoothing"):
        sp.label_smoothing(10, 0.1)
    assert TostSparsifier(_config(tost_label_smoothing=0.0), 4).label_smoothing(10, 0.2) == 0.2
    with pytest.raises(UserError, match="drop --label-smoothing"):
        check_tost_job(_config(), 0.1, _model())


def test_fit_trains_with_tosts_label_smoothing(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []

    class Recording(nn.CrossEntropyLoss):
        def __init__(self, **kwargs: Any) -> None:
            seen.append(float(kwargs.get("label_smoothing", 0.0)))
            super().__init__(**kwargs)

    monkeypatch.setattr(nn, "CrossEntropyLoss", Recording)
    fit(_model(), tiny_digits(), tiny_train_config(epochs=1), _config(), progress=False)
    assert seen == [pytest.approx(0.1 * 10 / 9)]


# ------------------------------------------------------------------ masks over training
def _bitmaps(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach() != 0 for n in names}


def test_kept_weight_bitmap_is_identical_at_start_and_end_of_training() -> None:
    config = _config(start=0.5, end=2.0)
    start_model = _model()
    probe = create_sparsifier(config, 4)
    probe.prepare(start_model)  # the same seeded init, prepared as fit prepares it
    names = probe.pruned_names
    start = _bitmaps(start_model, names)
    per_epoch: list[dict[str, torch.Tensor]] = []

    def save_last(model: nn.Module, sparsifier: Any, history: Any, state: Any) -> None:
        per_epoch.append(_bitmaps(model, names))

    result = fit(
        _model(),
        tiny_digits(),
        tiny_train_config(epochs=3),
        config,
        checkpointer=Checkpointer(save_last=save_last),
        progress=False,
    )
    assert result.sparsifier is not None and result.sparsifier.pruned_names == names
    for bitmap in [*per_epoch, _bitmaps(result.model, names)]:
        for name in names:
            assert torch.equal(bitmap[name], start[name]), name
    for name, mask in result.sparsifier.masks.items():
        assert torch.equal(mask, start[name])
    assert 0.6 < float(1 - torch.cat([m.flatten() for m in start.values()]).float().mean()) < 0.72
    # Not final while the ghosts live: no "best" before epoch 2 ends.
    assert [h.masks_frozen for h in result.history] == [False, True, True]
    assert result.best_epoch >= 2


# ------------------------------------------------------------------ ghosts
def test_ghost_parameters_are_trained_but_in_no_mask_or_denominator() -> None:
    model, config = _model(), _config()
    plain = sparsity_report(_model(), config, _tost(config).select_layers(_model()))
    sp = _tost(config)
    sp.prepare(model)
    ghosts = {n: p for n, p in model.named_parameters() if GHOST_NAME in n}
    assert len(ghosts) == len(sp.pruned_names) == 4  # one 1x1 path per pruned conv
    assert not any(GHOST_NAME in n for n in sp.masks) and not any(
        GHOST_NAME in n for n in sp.weights
    )
    report = sp.report()
    assert report.numel_all == plain.numel_all and report.numel_pruned == plain.numel_pruned
    assert not any(GHOST_NAME in layer.name for layer in report.layers)
    optimizer = build_optimizer(model, tiny_train_config())
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in trained for p in ghosts.values())


def _advance(sp: TostSparsifier, steps: int) -> None:
    for _ in range(steps):
        sp.on_batch_start(None)  # type: ignore[arg-type]
        sp.step(None)


def test_ghosts_anneal_then_vanish_with_the_logits_unchanged() -> None:
    model, x = _model(), _x()
    sp = _tost(_config(start=0.5, end=1.0))
    sp.prepare(model)
    model.eval()
    full = model(x).detach()
    assert [sp.ghost_strength(t) for t in range(5)] == [1.0, 1.0, 1.0, 0.5, 0.0]
    _advance(sp, 3)
    sp.on_batch_start(None)  # type: ignore[arg-type]
    assert not sp.ghosts.removed and not sp.frozen
    sp.step(None)  # t = 4 = end: the next hook sets strength 0 and removes
    sp.ghosts.set_strength(0.0)
    at_zero = model(x).detach()
    assert not torch.equal(at_zero, full)  # the ghosts did contribute
    sp.on_epoch_end(0)
    assert sp.ghosts.removed and sp.frozen
    assert torch.equal(model(x).detach(), at_zero)
    assert not any(GHOST_NAME in k for k in model.state_dict())
    assert not any(isinstance(m, GhostActivation) for m in model.modules())
    assert sum(isinstance(m, nn.ReLU) for m in model.modules()) == 5


def test_end_beyond_training_removes_the_ghosts_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = _model()
    sp = _tost(_config(start=0.0, end=5.0))
    sp.prepare(model)
    _advance(sp, 4)
    sp.on_train_end(1)
    assert sp.frozen and sp.ghosts.removed
    assert "before the ToST ghost window" in caplog.text


def test_resume_after_removal_loads_the_plain_model_and_removes_the_new_ghosts() -> None:
    model = _model()
    sp = _tost(_config())
    sp.prepare(model)
    _advance(sp, 4)
    sp.on_batch_start(None)  # type: ignore[arg-type]
    state, weights = sp.state_dict(), copy.deepcopy(model.state_dict())
    assert state["tost"]["ghosts_removed"] is True
    again = _model()
    sp2 = _tost(_config())
    sp2.prepare(again)  # fresh ghosts, as fit prepares before loading
    again.load_state_dict(weights)  # no ghost tensors saved: not an error
    sp2.load_state_dict(state)
    assert sp2.ghosts.removed and sp2.frozen
    assert again.state_dict().keys() == weights.keys()


def test_resume_inside_the_ghost_window_restores_the_ghost_weights() -> None:
    model = _model()
    sp = _tost(_config(start=0.0, end=2.0))
    sp.prepare(model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if GHOST_NAME in name:
                p.fill_(0.5)
    _advance(sp, 2)
    sp.on_batch_start(None)  # type: ignore[arg-type]  # strength at t = 2: 0.75
    state, weights = sp.state_dict(), copy.deepcopy(model.state_dict())
    again = _model()
    sp2 = _tost(_config(start=0.0, end=2.0))
    sp2.prepare(again)
    again.load_state_dict(weights)
    sp2.load_state_dict(state)
    assert not sp2.ghosts.removed and sp2.ghosts.skips[0][1].scale == pytest.approx(0.75)
    again.eval()
    model.eval()
    assert torch.equal(again(_x()), model(_x()))


def test_a_checkpoint_saved_inside_the_ghost_window_is_refused_with_a_hint(
    tmp_path: Path,
) -> None:
    """Its ghost paths exist only while training: loading says so and what to do (one line),
    not which state-dict tensor the architecture lacks."""
    from robustbench_sparse.checkpoint import save_checkpoint

    model = _model()
    sp = _tost(_config(start=0.0, end=2.0))
    sp.prepare(model)
    assert any(GHOST_NAME in n for n, _ in model.named_parameters())
    info = tiny_digits().info
    meta = {
        "arch": "small_cnn",
        "arch_kwargs": {"width": WIDTH},
        "num_classes": 10,
        "in_channels": 1,
        "input_shape": [1, 8, 8],
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
        "dataset": "digits",
        "method": "tost",
        "sparsity": _config(start=0.0, end=2.0).to_dict(),
        "epochs_completed": 1,
    }
    path = save_checkpoint(tmp_path / "mid", model, meta)
    with pytest.raises(UserError, match="inside ToST's ghost window") as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message and "--resume" in message and "epoch 1" in message
    assert "ends at epoch 2" in message


def test_random_erk_masks_and_no_ghosts_freeze_at_once() -> None:
    config = _config(tost_mask="random", random_distribution="erk", tost_activation="relu")
    sp = _tost(dataclass_replace(config, tost_skip=False))
    model = _model()
    sp.prepare(model)
    assert sp.frozen and sp.ghosts.removed and sp.mask_seed is not None
    kept = sum(int(m.sum()) for m in sp.masks.values())
    total = sum(m.numel() for m in sp.masks.values())
    assert 1 - kept / total == pytest.approx(0.7, abs=0.01)
    assert config.label == "tost-random-erk" and _config().label == "tost-window"


def dataclass_replace(config: SparsityConfig, **changes: Any) -> SparsityConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_tost_refuses_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustbench_sparse import distributed as rdist

    monkeypatch.setattr(rdist, "is_distributed", lambda: True)
    with pytest.raises(UserError, match="torchrun"):
        _tost(_config()).prepare(_model())


# ------------------------------------------------------------------ end to end
@pytest.mark.slow
def test_rbs_train_method_tost_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "tost"
    argv = [
        "train", "--out", str(out), "--dataset", "digits", "--method", "tost",
        "--sparsity", "0.7", "--granularity", "window", "--epochs", "3", "--prune-start", "0.5",
        "--prune-end", "2", "--train-limit", "400", "--test-limit", "100", "--device", "cpu",
        "--arch-kwargs", f"width={WIDTH}", "--batch-size", "64",
    ]  # fmt: skip
    assert main(argv) == 0
    ck = load_checkpoint(out)
    assert ck.meta["method"] == "tost" and ck.meta["granularity"] == "tost-window"
    assert ck.meta["masks_frozen"] is True
    params = dict(ck.model.named_parameters())
    assert not any(GHOST_NAME in n for n in params)
    assert set(ck.masks) == {f"net.conv{i}.0.weight" for i in range(2, 6)}
    for name, mask in ck.masks.items():
        w = params[name].detach()
        assert bool((w[~mask] == 0).all()) and bool((w[mask] != 0).all())
    assert 0.6 < ck.meta["sparsity_report"]["achieved_pruned"] < 0.72
    results = tmp_path / "attacked"
    code = main(
        ["attack", "--checkpoint", str(out), "--attack", "fgsm", "--eps", "0,0.1",
         "--limit", "50", "--out", str(results), "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["sparsity"]["tost_activation"] == "swish"
    # the label smoothing the losses used (ToST's 0.1 on 10 classes as torch's), not the flag's 0
    assert meta["training"]["label_smoothing"] == pytest.approx(tost_label_smoothing(0.1, 10))
    assert meta["training"]["label_smoothing"] == pytest.approx(1 / 9)


def test_mask_from_trains_exactly_that_checkpoints_masks_from_the_seeded_init(
    tmp_path: Path,
) -> None:
    from robustbench_sparse.checkpoint import save_checkpoint

    donor = _model(seed=5)
    torch.manual_seed(2)
    masks = {
        name: torch.rand(p.shape) > 0.8
        for name, p in donor.named_parameters()
        if name in ("net.conv3.0.weight", "net.fc.weight")
    }
    meta = {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "dataset": "digits"}
    save_checkpoint(tmp_path / "ck", donor, meta, masks)
    config = _config(mask_from=str(tmp_path / "ck"), tost_rescale=False)
    assert config.label == "tost-masks"
    model, init = _model(), _model()
    sp = _tost(config)
    sp.prepare(model)
    assert sp.pruned_names == ["net.conv3.0.weight", "net.fc.weight"]  # the fc too, as saved
    params, init_params = dict(model.named_parameters()), dict(init.named_parameters())
    for name, mask in masks.items():
        assert torch.equal(sp.masks[name], mask)
        assert torch.equal(params[name].detach(), init_params[name].detach() * mask)  # rewound
    assert sp.current_sparsity == pytest.approx(
        1 - sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
    )
    wide = create_model("small_cnn", num_classes=10, in_channels=1, width=0.5)
    with pytest.raises(UserError, match="has shape"):
        check_tost_job(config, 0.0, wide)
    with pytest.raises(UserError, match="applies to --method tost only"):
        SparsityConfig(target=0.7, mask_from=str(tmp_path / "ck"))


class _Stop(Exception):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("stop_after", [1, 2])  # inside the ghost window / after the removal
def test_resume_reproduces_the_uninterrupted_run_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stop_after: int
) -> None:
    import dataclasses

    from robustbench_sparse import train_job as train_job_module
    from robustbench_sparse.train_job import run_train_job
    from tests.core_helpers import assert_tensors_identical, read_weights_file, tiny_job

    job = tiny_job(0.7, "window", epochs=3, start=0.5, end=1.5)
    job = dataclasses.replace(job, sparsity=dataclasses.replace(job.sparsity, method="tost"))  # type: ignore[arg-type]
    run_train_job(job, tmp_path / "a", progress=False)
    real = Checkpointer

    def factory(**kwargs: Any) -> Checkpointer:
        save_last = kwargs["save_last"]

        def save_then_stop(model: Any, sparsifier: Any, history: Any, state: Any) -> None:
            save_last(model, sparsifier, history, state)
            if len(history) == stop_after:
                raise _Stop

        return real(**{**kwargs, "save_last": save_then_stop})

    monkeypatch.setattr(train_job_module, "Checkpointer", factory)
    with pytest.raises(_Stop):
        run_train_job(job, tmp_path / "b", progress=False)
    if stop_after == 1:  # written inside the window: carries the ghosts, so it is refused
        with pytest.raises(UserError):
            load_checkpoint(tmp_path / "b")
    monkeypatch.undo()
    run_train_job(job, tmp_path / "b", resume=True, progress=False)
    for x, y in zip(
        read_weights_file(tmp_path / "a"), read_weights_file(tmp_path / "b"), strict=True
    ):
        assert_tensors_identical(x, y)


@pytest.mark.slow
def test_lottery_rewinding_retrains_a_campfire_runs_masks_from_the_seeded_init(
    tmp_path: Path,
) -> None:
    import dataclasses

    from robustbench_sparse.train_job import run_train_job
    from tests.core_helpers import tiny_job

    campfire = run_train_job(tiny_job(0.7, "channel", epochs=2), tmp_path / "c", progress=False)
    job = tiny_job(0.7, "channel", epochs=2, start=0.0, end=1.0)
    sparsity = dataclasses.replace(job.sparsity, method="tost", mask_from=str(tmp_path / "c"))  # type: ignore[arg-type]
    ticket = run_train_job(
        dataclasses.replace(job, sparsity=sparsity), tmp_path / "t", progress=False
    )
    assert ticket.meta["granularity"] == "tost-masks"
    assert ticket.masks.keys() == campfire.masks.keys()
    params = dict(ticket.model.named_parameters())
    for name, mask in campfire.masks.items():
        assert torch.equal(ticket.masks[name], mask)
        assert bool((params[name].detach()[~mask] == 0).all())
