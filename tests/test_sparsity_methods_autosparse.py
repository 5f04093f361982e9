"""AutoSparse (robustbench_sparse.sparsity.methods.autosparse): learned thresholds, GA, baking.

Faithfulness (issue 26): the thresholds receive weight decay in the optimizer ``fit`` builds (a
1-D threshold left to the builder's no-decay rule fails); logits are identical before and after
baking, and the baked kept weights are ``sign(W)(|W| - sigmoid(s))`` (masking the raw ``W``
changes the logits); ``alpha`` follows the schedule across epochs inside the sparsifier; masked
positions get an alpha-scaled gradient. End to end: a tiny ``rbs train --method autosparse`` on
the digits writes exact zeros where its masks prune and reports the achieved sparsity.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robustbench_sparse.train_job as train_job_module
from rbs.cli import main
from robustbench_sparse.checkpoint import META_FILE
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.sparsity.methods import AutoSparseSparsifier, create_sparsifier
from robustbench_sparse.sparsity.methods.annealing import ga_alpha
from robustbench_sparse.train_job import run_train_job
from robustbench_sparse.training import Checkpointer, build_optimizer
from tests.core_helpers import (
    BATCH_SIZE,
    TEST_LIMIT,
    TRAIN_LIMIT,
    WIDTH,
    assert_tensors_identical,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_job,
    tiny_train_config,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model() -> nn.Module:
    torch.manual_seed(0)
    info = tiny_digits().info
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )


def _config(**changes: Any) -> SparsityConfig:
    base: dict[str, Any] = {"target": 0.7, "method": "autosparse", "end": 4.0}
    base.update(changes)
    return SparsityConfig(**base)


def _prepared(**changes: Any) -> tuple[nn.Module, AutoSparseSparsifier]:
    model = _model()
    sp = create_sparsifier(_config(**changes), steps_per_epoch=2)
    assert isinstance(sp, AutoSparseSparsifier)
    sp.prepare(model)
    return model, sp


def _x() -> torch.Tensor:
    data = tiny_digits().train
    return torch.stack([data[i][0] for i in range(16)])


def test_config_is_unstructured_and_checked() -> None:
    assert _config(granularity="window").granularity is Granularity.UNSTRUCTURED
    assert _config().label == "autosparse"
    with pytest.raises(UserError, match="ga_alpha0"):
        _config(ga_alpha0=1.5)
    with pytest.raises(UserError, match="autosparse_threshold"):
        _config(autosparse_threshold="kernel")
    with pytest.raises(UserError, match="autosparse_search_runs"):
        _config(autosparse_search_runs=-1)
    with pytest.raises(UserError, match="--prune-end > 0"):
        _config(end=0.0)


@pytest.mark.parametrize(("kind", "rows"), [("layer", None), ("channel", "K")])
def test_thresholds_are_2d_and_sit_in_a_weight_decay_group(kind: str, rows: str | None) -> None:
    model, sp = _prepared(autosparse_threshold=kind)
    train = tiny_train_config(weight_decay=5e-4)
    optimizer = build_optimizer(model, train)
    sp.attach_optimizer(optimizer, train.weight_decay)  # what fit does right after building it
    for name, s in sp.thresholds.items():
        k = sp.weights[name].shape[0]
        assert tuple(s.shape) == ((k, 1) if rows == "K" else (1, 1))
        groups = [g for g in optimizer.param_groups if any(p is s for p in g["params"])]
        assert len(groups) == 1 and groups[0]["weight_decay"] == pytest.approx(5e-4)


def test_threshold_decay_overrides_the_run_weight_decay_for_thresholds_only() -> None:
    model, sp = _prepared(autosparse_threshold_decay=0.02)
    optimizer = build_optimizer(model, tiny_train_config(weight_decay=5e-4))
    sp.attach_optimizer(optimizer, 5e-4)
    s = next(iter(sp.thresholds.values()))
    (group,) = [g for g in optimizer.param_groups if any(p is s for p in g["params"])]
    assert group["weight_decay"] == 0.02
    assert [g["weight_decay"] for g in optimizer.param_groups[:2]] == [5e-4, 0.0]  # unchanged
    with pytest.raises(UserError, match="autosparse_threshold_decay"):
        _config(autosparse_threshold_decay=-1.0)


def test_weight_decay_raises_the_threshold_without_data_gradient() -> None:
    model, sp = _prepared()
    train = tiny_train_config(weight_decay=0.1, lr=0.5, momentum=0.0, nesterov=False)
    optimizer = build_optimizer(model, train)
    sp.attach_optimizer(optimizer, train.weight_decay)
    before = {n: float(s.detach()) for n, s in sp.thresholds.items()}
    (model(_x()).sum() * 0.0).backward()  # zero data gradient: only the decay moves s
    optimizer.step()
    sp.step(optimizer)
    for name, s in sp.thresholds.items():  # s <- s - lr * wd * s: toward 0, threshold up
        assert float(s.detach()) == pytest.approx(before[name] * (1 - 0.5 * 0.1), rel=1e-6)


def test_step_without_attached_optimizer_is_refused() -> None:
    model, sp = _prepared()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="attach_optimizer"):
        sp.step(optimizer)


def test_masked_positions_get_an_alpha_scaled_gradient() -> None:
    model, sp = _prepared(autosparse_threshold_init=-3.0)
    name = sp.pruned_names[0]
    layer = sp.layers[name]
    latent = sp.state_dict()["latent"]["weights"][name]
    masked = ~layer.mask
    assert bool(masked.any()) and bool(layer.mask.any())
    model(_x()).square().sum().backward()
    grad_p = layer.param.grad
    assert grad_p is not None
    # recompute dL/dW_s without the hook: the hook's result must be g on kept, alpha * g on masked
    model2 = copy.deepcopy(model)
    for p in model2.parameters():
        p.grad = None
    # (a deep copy carries no tensor hooks: model2's gradient is the plain dL/dW_s)
    model2(_x()).square().sum().backward()
    g = model2.get_parameter(name).grad
    assert g is not None
    assert torch.allclose(grad_p[layer.mask], g[layer.mask], rtol=1e-5, atol=1e-8)
    assert torch.allclose(grad_p[masked], sp.alpha * g[masked], rtol=1e-5, atol=1e-8)
    assert sp.alpha == pytest.approx(0.75) and bool((grad_p[masked] != 0).any())
    assert torch.equal(layer.param.detach() == 0, ~layer.mask) and latent.shape == grad_p.shape


def test_alpha_follows_the_schedule_across_epochs() -> None:
    _, sp = _prepared(end=10.0, ga_alpha_reset=0.9)
    seen = [sp.alpha]
    for epoch in range(10):
        sp.on_epoch_end(epoch)
        seen.append(sp.alpha)
    assert seen == [ga_alpha(t, 0.75, 10.0, 9.0) for t in range(11)]
    assert seen[9] == 0.0 and seen[8] > 0.0


def test_baking_keeps_the_logits_and_writes_the_shrunk_weights() -> None:
    model, sp = _prepared(autosparse_threshold_init=-3.5)
    train = tiny_train_config(weight_decay=5e-4)
    optimizer = build_optimizer(model, train)
    sp.attach_optimizer(optimizer, train.weight_decay)
    x = _x()
    for _ in range(3):  # a few real steps so the thresholds and latents moved
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), torch.arange(16) % 10).backward()
        optimizer.step()
        sp.step(optimizer)
    model.eval()
    latent = {n: w.clone() for n, w in sp.state_dict()["latent"]["weights"].items()}
    sigma = {n: torch.sigmoid(s.detach()) for n, s in sp.thresholds.items()}
    with torch.no_grad():
        before = model(x)
    sp.on_train_end(3)
    with torch.no_grad():
        after = model(x)
    assert torch.equal(before, after)
    assert sp.frozen and not sp.latent_active
    for name, layer in sp.layers.items():
        w = layer.param.detach()
        assert torch.equal(w == 0, ~layer.mask)
        assert not bool(torch.signbit(w[~layer.mask]).any())  # +0.0 exactly
        raw = latent[name]
        expected = torch.sign(raw) * (raw.abs() - sigma[name])
        assert torch.allclose(w[layer.mask], expected[layer.mask], rtol=0, atol=1e-7)
    # the sloppy bake (mask the raw latent weights) changes the logits
    sloppy = copy.deepcopy(model)
    with torch.no_grad():
        for name, layer in sp.layers.items():
            sloppy.get_parameter(name).copy_(latent[name] * layer.mask)
        assert not torch.allclose(sloppy(x), after, atol=1e-4)


def test_state_dict_round_trip_restores_latents_thresholds_and_alpha() -> None:
    model, sp = _prepared(autosparse_threshold_init=-3.5)
    optimizer = build_optimizer(model, tiny_train_config())
    sp.attach_optimizer(optimizer, 5e-4)
    for epoch in range(2):
        optimizer.zero_grad()
        model(_x()).square().mean().backward()
        optimizer.step()
        sp.step(optimizer)
        sp.on_epoch_end(epoch)
    state = sp.state_dict()
    model2 = _model()
    model2.load_state_dict(model.state_dict())
    sp2 = create_sparsifier(_config(autosparse_threshold_init=-3.5), steps_per_epoch=2)
    assert isinstance(sp2, AutoSparseSparsifier)
    sp2.prepare(model2)
    sp2.load_state_dict(state)
    assert sp2.alpha == sp.alpha and sp2.step_count == sp.step_count
    for name in sp.pruned_names:
        assert torch.equal(sp2.thresholds[name], sp.thresholds[name])
        assert torch.equal(model2.get_parameter(name), model.get_parameter(name))
        assert torch.equal(sp2.masks[name], sp.masks[name])
    with pytest.raises(UserError, match="latent"):
        sp2.load_state_dict({k: v for k, v in state.items() if k != "latent"})


@pytest.fixture
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    package = logging.getLogger("robustbench_sparse")
    package_level = package.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    package.setLevel(package_level)


@pytest.mark.usefixtures("_restore_logging")
def test_rbs_train_autosparse_end_to_end(tmp_path: Path) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(f"[model]\narch = 'small_cnn'\nwidth = {WIDTH}\n")
    out = tmp_path / "as"
    args = ["-q", "train", "--config", str(config), "--out", str(out)]
    args += ["--train-limit", str(TRAIN_LIMIT), "--test-limit", str(TEST_LIMIT)]
    args += ["--batch-size", str(BATCH_SIZE), "--epochs", "3", "--device", "cpu", "--seed", "1"]
    args += ["--method", "autosparse", "--sparsity", "0.7", "--prune-end", "2"]
    args += ["--autosparse-threshold-init", "-3.5", "--ga-alpha0", "0.5"]
    assert main(args) == 0
    meta = json.loads((out / META_FILE).read_text())
    state, masks = read_weights_file(out)
    assert meta["method"] == "autosparse" and meta["granularity"] == "autosparse"
    assert meta["sparsity"]["autosparse_threshold_init"] == -3.5
    assert meta["masks_frozen"] is True and sorted(masks) == sorted(meta["pruned_layers"])
    zeros = total = 0
    for name, mask in masks.items():
        w = state[name]
        assert torch.equal(w == 0, ~mask)  # pruned exactly zero, kept non-zero
        zeros, total = zeros + int((~mask).sum()), total + mask.numel()
    achieved = meta["sparsity_report"]["achieved_pruned"]
    assert achieved == pytest.approx(zeros / total) and 0.0 < achieved < 1.0
    assert meta["sparsity_target"] == 0.7  # beside the achieved one
    for layer in meta["sparsity_report"]["layers"]:  # learned: no per-layer target to round to
        if layer["pruned"]:
            assert layer["granularity"] == "autosparse"
            assert layer["rounded_target"] == layer["achieved"]
    assert not any(k.endswith("threshold") for k in state)  # an ordinary model's keys


class _Interrupted(Exception):
    pass


def test_resume_after_an_interruption_is_bitwise_on_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tiny_job(0.7, "unstructured", epochs=3, start=0.0, end=2.0)
    sparsity = dataclasses.replace(
        job.sparsity,
        method="autosparse",  # type: ignore[arg-type]
        autosparse_threshold_init=-3.5,
    )
    job = dataclasses.replace(job, sparsity=sparsity)
    a = run_train_job(job, tmp_path / "a", progress=False)
    real = Checkpointer

    def factory(**kwargs: Any) -> Checkpointer:
        save_last = kwargs["save_last"]

        def save_then_stop(model: Any, sparsifier: Any, history: Any, state: Any) -> None:
            save_last(model, sparsifier, history, state)
            if len(history) == 1:  # the latents, thresholds and alpha are in the state now
                raise _Interrupted

        return real(**{**kwargs, "save_last": save_then_stop})

    monkeypatch.setattr(train_job_module, "Checkpointer", factory)
    with pytest.raises(_Interrupted):
        run_train_job(job, tmp_path / "b", progress=False)
    monkeypatch.undo()
    b = run_train_job(job, tmp_path / "b", resume=True, progress=False)
    state_a, masks_a = read_weights_file(tmp_path / "a")
    state_b, masks_b = read_weights_file(tmp_path / "b")
    assert_tensors_identical(masks_a, masks_b)
    assert_tensors_identical(state_a, state_b)
    assert a.meta["sparsity_report"] == b.meta["sparsity_report"]
