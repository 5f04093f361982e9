"""train_job: output-dir rules, config precedence, and the issue #2 acceptance checks.

(a) the structure read back from the saved ``checkpoint.safetensors`` file is exactly balanced;
(b) an interrupted-then-resumed run reproduces the uninterrupted run bit for bit (CPU, seeded);
(c) (slow) at the defaults, window-0.7 ``small_cnn`` is within 1 point of dense on full digits.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import robustbench_sparse.train_job as train_job_module
from robustbench_sparse.checkpoint import META_FILE, WEIGHTS_FILE, load_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity import Granularity, kept_per_group
from robustbench_sparse.sparsity.masks import combined_counts
from robustbench_sparse.train_job import (
    TrainJob,
    is_finished,
    prepare_out_dir,
    run_train_job,
    train_job_from_config,
)
from robustbench_sparse.training import Checkpointer, LRSchedule, OptimizerName
from tests.core_helpers import (
    assert_tensors_identical,
    read_weights_file,
    single_thread,
    tiny_digits,
    tiny_job,
)

PRUNED = ["net.conv2.0.weight", "net.conv3.0.weight", "net.conv4.0.weight", "net.conv5.0.weight"]
DENSE = ["net.conv1.0.weight", "net.fc.weight"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _train(job: TrainJob, out: Path, **kwargs: Any) -> Any:
    return run_train_job(job, out, progress=False, data=tiny_digits(), **kwargs)


# --------------------------------------------------------------------------- output directory
def test_prepare_out_dir_rules(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "dir"
    prepare_out_dir(fresh, overwrite=False, resume=False)
    assert fresh.is_dir()
    prepare_out_dir(fresh, overwrite=False, resume=False)  # empty directory: fine

    (fresh / "checkpoint.json").write_text("precious")
    with pytest.raises(UserError, match="--overwrite") as info:
        prepare_out_dir(fresh, overwrite=False, resume=False)
    assert "--resume" in str(info.value)
    assert (fresh / "checkpoint.json").read_text() == "precious"

    prepare_out_dir(fresh, overwrite=False, resume=True)  # resume keeps the files
    assert (fresh / "checkpoint.json").read_text() == "precious"

    prepare_out_dir(fresh, overwrite=True, resume=False)
    assert fresh.is_dir() and list(fresh.iterdir()) == []


def test_run_refuses_existing_dir_and_overwrite_replaces_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(UserError, match="already exists"):
        _train(tiny_job(epochs=1, end=1.0), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]

    ck = _train(tiny_job(epochs=1, start=0.0, end=1.0), out, overwrite=True)
    assert not (out / "notes.txt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["best", META_FILE, WEIGHTS_FILE]
    assert ck.meta["kind"] == "final" and ck.meta["epochs_completed"] == 1
    assert ck.name == "run"
    assert is_finished(out)


def test_prune_end_beyond_epochs_is_refused_before_touching_out(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.json").write_text("old")
    job = tiny_job(target=0.7, epochs=2, start=0.5, end=3.0)
    with pytest.raises(UserError, match=r"pruning ends at epoch 3\.0 but training has only 2"):
        _train(job, out, overwrite=True)
    assert (out / "checkpoint.json").read_text() == "old"  # --overwrite did not wipe it first
    with pytest.raises(UserError, match="pruning ends"):
        _train(job, tmp_path / "other")
    assert not (tmp_path / "other").exists()


def test_is_finished(tmp_path: Path) -> None:
    assert not is_finished(tmp_path)
    meta_path = tmp_path / META_FILE
    meta_path.write_text("{not json")
    assert not is_finished(tmp_path)
    meta = {"kind": "final", "epochs_completed": 3, "training": {"epochs": 3}}
    meta_path.write_text(json.dumps(meta))
    assert is_finished(tmp_path)
    meta_path.write_text(json.dumps({**meta, "kind": "last"}))
    assert not is_finished(tmp_path)
    meta_path.write_text(json.dumps({**meta, "epochs_completed": 2}))
    assert not is_finished(tmp_path)


def test_resume_of_finished_run_returns_it_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "done"
    _train(tiny_job(epochs=1, start=0.0, end=1.0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def no_training(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a finished run must not be trained again")

    monkeypatch.setattr(train_job_module, "fit", no_training)
    ck = _train(tiny_job(epochs=1, start=0.0, end=1.0), out, resume=True)
    assert ck.meta["kind"] == "final"
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


# ---------------------------------------------------------------------- config composition
def test_precedence_cli_over_file_over_dataset_defaults() -> None:
    config = {
        "data": {"dataset": "digits", "train_limit": 500},
        "model": {"arch": "small_cnn", "width": 0.5},
        "train": {"epochs": 8, "lr": 0.01, "optimizer": "adam"},
        "sparsity": {"target": 0.5, "granularity": "channel", "start": 1.0},
        "name": "from-file",
    }
    job = train_job_from_config(
        config,
        data_overrides={"train_limit": 200, "test_limit": None},
        train_overrides={"epochs": 4, "lr": None, "seed": 7},
        sparsity_overrides={"target": 0.7, "granularity": None},
    )
    # CLI > file
    assert job.data.train_limit == 200
    assert job.train.epochs == 4 and job.train.seed == 7
    assert job.sparsity.target == 0.7
    # file > defaults (a None override does not erase the file's value)
    assert job.train.lr == 0.01
    assert job.train.optimizer is OptimizerName.ADAM
    assert job.sparsity.granularity is Granularity.CHANNEL
    assert job.sparsity.start == 1.0
    assert job.arch == "small_cnn" and job.arch_kwargs == (("width", 0.5),)
    assert job.name == "from-file"
    # dataset defaults where neither says anything
    assert job.train.batch_size == 64 and job.train.warmup_epochs == 1.0
    assert job.train.lr_schedule is LRSchedule.COSINE
    # default prune end follows the *final* epoch count (4, the CLI's), not the file's 8
    assert job.sparsity.end == 2.0


def test_default_prune_window_is_10_and_50_percent_of_epochs() -> None:
    job = train_job_from_config({}, train_overrides={"epochs": 20})
    assert (job.sparsity.start, job.sparsity.end) == (2.0, 10.0)
    job = train_job_from_config({})
    assert job.train.epochs == 30 and (job.sparsity.start, job.sparsity.end) == (3.0, 15.0)
    assert job.arch == "small_cnn" and job.data.dataset == "digits" and job.name is None


def test_dataset_defaults_follow_the_dataset() -> None:
    job = train_job_from_config({"data": {"dataset": "mnist"}})
    assert (job.train.epochs, job.train.batch_size) == (12, 128)
    job = train_job_from_config(
        {}, data_overrides={"dataset": "cifar10"}, arch="resnet20", name="n"
    )
    assert (job.train.epochs, job.train.lr) == (160, 0.1)
    assert job.arch == "resnet20" and job.name == "n"


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({"trian": {}}, "did you mean 'train'"),
        ({"train": {"epoch": 3}}, "did you mean 'epochs'"),
        ({"sparsity": {"targt": 0.5}}, "did you mean 'target'"),
        ({"data": {"datset": "digits"}}, "did you mean 'dataset'"),
        ({"sparsity": {"target": 1.5}}, "target must be in"),
        ({"sparsity": {"granularity": "block"}}, "window"),
        ({"train": {"epochs": 0}}, "epochs must be"),
    ],
)
def test_config_errors(config: dict[str, Any], fragment: str) -> None:
    with pytest.raises(UserError, match=fragment):
        train_job_from_config(config)


def test_unknown_dataset_is_refused_before_creating_out(tmp_path: Path) -> None:
    job = train_job_from_config({}, data_overrides={"dataset": "digitz"})
    with pytest.raises(UserError, match="Did you mean 'digits'"):
        run_train_job(job, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------- acceptance (a): file structure
def _file_structure(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    state, masks = read_weights_file(out)
    assert sorted(masks) == PRUNED
    for name in DENSE:  # first conv and classifier stay dense
        assert name not in masks
        assert int((state[name] != 0).sum()) == state[name].numel(), name
    for name, mask in masks.items():
        w = state[name]
        assert torch.all(w[~mask] == 0), name
        assert torch.equal(w != 0, mask), name  # every kept weight is a live (nonzero) weight
    return state, masks


def _per_kernel_nnz(w: torch.Tensor) -> torch.Tensor:
    return (w != 0).reshape(w.shape[0], w.shape[1], -1).sum(-1)  # (K, C)


def _check_1x1_balanced(w: torch.Tensor) -> None:
    rows = (w != 0).reshape(w.shape[0], -1).sum(1)  # (K,)
    assert set(rows.tolist()) == {kept_per_group(w.shape[1], 0.7)}


def _report_layer(meta: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in meta["sparsity_report"]["layers"] if layer["name"] == name)


@pytest.fixture(scope="module")
def structured_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("structured")
    with single_thread():
        for granularity in ("window", "channel", "combined"):
            _train(tiny_job(0.7, granularity, epochs=3, start=0.5, end=2.0), root / granularity)
    return {g: root / g for g in ("window", "channel", "combined")}


def test_window_structure_in_the_saved_file(structured_runs: dict[str, Path]) -> None:
    out = structured_runs["window"]
    state, _ = _file_structure(out)
    assert kept_per_group(9, 0.7) == 3  # documented rounding: 0.7 of 9 -> keep 3 (66.7 %)
    for name in PRUNED[:3]:  # 3x3 convs: every kernel keeps exactly 3
        counts = _per_kernel_nnz(state[name])
        assert set(counts.flatten().tolist()) == {3}, name
    _check_1x1_balanced(state["net.conv5.0.weight"])
    meta = json.loads((out / META_FILE).read_text())
    assert meta["pruned_layers"] == PRUNED and meta["masks_frozen"] is True
    assert _report_layer(meta, "net.conv5.0.weight")["granularity"] == "balanced-filter"
    assert _report_layer(meta, "net.conv1.0.weight")["pruned"] is False
    assert _report_layer(meta, "net.fc.weight")["granularity"] == "dense"
    layer = _report_layer(meta, "net.conv3.0.weight")
    assert (layer["kernel_nnz_min"], layer["kernel_nnz_max"]) == (3, 3)
    assert layer["achieved"] == pytest.approx(6 / 9)


def test_channel_structure_in_the_saved_file(structured_runs: dict[str, Path]) -> None:
    state, _ = _file_structure(structured_runs["channel"])
    for name in PRUNED[:3]:
        counts = _per_kernel_nnz(state[name])  # (K, C)
        assert set(counts.flatten().tolist()) <= {0, 9}, name  # whole kernels only
        per_filter = (counts > 0).sum(1)
        assert set(per_filter.tolist()) == {kept_per_group(state[name].shape[1], 0.7)}, name
    _check_1x1_balanced(state["net.conv5.0.weight"])


def test_combined_structure_in_the_saved_file(structured_runs: dict[str, Path]) -> None:
    state, _ = _file_structure(structured_runs["combined"])
    for name in PRUNED[:3]:
        w = state[name]
        counts = _per_kernel_nnz(w)
        alive = counts[counts > 0]
        n_w = set(alive.tolist())
        assert len(n_w) == 1, f"{name}: kept kernels hold {sorted(n_w)} nonzeros"
        per_filter = set((counts > 0).sum(1).tolist())
        assert len(per_filter) == 1, f"{name}: filters keep {sorted(per_filter)} kernels"
        n_c, n_w_fresh = combined_counts(w.shape[1], 9, 0.7)
        (kept_c,), (kept_w,) = per_filter, n_w
        # Both levels are pruned, at (or, through the monotone capping, near) the fresh counts.
        assert kept_c < w.shape[1] and kept_w < 9
        assert 1 - kept_c * kept_w / (w.shape[1] * 9) == pytest.approx(0.7, abs=0.08)
        assert abs(kept_c - n_c) <= 1 and abs(kept_w - n_w_fresh) <= 1
    _check_1x1_balanced(state["net.conv5.0.weight"])


# ------------------------------------------------------------ acceptance (b): resume = bitwise
class _Interrupted(KeyboardInterrupt):
    pass


def interrupt_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make run_train_job's checkpointer raise KeyboardInterrupt once epoch ``epoch`` is saved."""
    real = Checkpointer

    def factory(**kwargs: Any) -> Checkpointer:
        save_last = kwargs["save_last"]

        def save_then_stop(model: Any, sparsifier: Any, history: Any, state: Any) -> None:
            save_last(model, sparsifier, history, state)
            if len(history) == epoch:
                raise _Interrupted

        return real(**{**kwargs, "save_last": save_then_stop})

    monkeypatch.setattr(train_job_module, "Checkpointer", factory)


def test_resume_reproduces_masks_and_weights_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Interrupt mid-ramp (prune window 0.5..3 of 4 epochs), so masks must keep evolving after resume.
    job = tiny_job(0.7, "combined", epochs=4, start=0.5, end=3.0, update_every=2)
    a = _train(job, tmp_path / "a")

    interrupt_after(monkeypatch, 2)
    with pytest.raises(_Interrupted):
        _train(job, tmp_path / "b")
    partial = json.loads((tmp_path / "b" / META_FILE).read_text())
    assert partial["kind"] == "last" and partial["epochs_completed"] == 2
    assert partial["masks_frozen"] is False
    assert (tmp_path / "b" / "train_state.pt").is_file()
    assert not is_finished(tmp_path / "b")
    _, masks_at_2 = read_weights_file(tmp_path / "b")

    monkeypatch.undo()
    b = _train(job, tmp_path / "b", resume=True)
    assert b.meta["epochs_completed"] == 4 and b.meta["kind"] == "final"
    assert not (tmp_path / "b" / "train_state.pt").exists()

    state_a, masks_a = read_weights_file(tmp_path / "a")
    state_b, masks_b = read_weights_file(tmp_path / "b")
    assert_tensors_identical(masks_a, masks_b)
    assert_tensors_identical(state_a, state_b)
    assert any(not torch.equal(masks_at_2[k], masks_a[k]) for k in masks_a)  # ramp went on
    hist = ["train_loss", "test_accuracy", "lr", "sparsity", "masks_frozen"]
    assert [[h[k] for k in hist] for h in a.meta["history"]] == [
        [h[k] for k in hist] for h in b.meta["history"]
    ]
    assert a.meta["clean_accuracy"] == b.meta["clean_accuracy"]


# -------------------------------------------------------------- acceptance (c): the defaults
@pytest.mark.slow
def test_default_window_07_within_one_point_of_dense(tmp_path: Path) -> None:
    accuracies: dict[str, float] = {}
    for name, target in (("dense", 0.0), ("window-0.7", 0.7)):
        job = train_job_from_config({}, sparsity_overrides={"target": target})
        assert job.train.epochs == 30 and job.data.train_limit is None
        ck = run_train_job(job, tmp_path / name, progress=False)
        assert ck.meta["test_n"] == 450  # the full digits test split
        accuracies[name] = 100.0 * ck.meta["clean_accuracy"]
        if target:
            assert ck.meta["sparsity_report"]["achieved_pruned"] > 0.6
    dense, window = accuracies["dense"], accuracies["window-0.7"]
    message = f"dense {dense:.2f}% vs window-0.7 {window:.2f}% test accuracy (digits, defaults)"
    assert dense > 90.0, message
    assert window >= dense - 1.0, message
    for name in accuracies:
        assert load_checkpoint(tmp_path / name).meta["clean_accuracy"] == pytest.approx(
            accuracies[name] / 100
        )


# ------------------------------------------------- derived epoch settings vs the user's epochs


def test_imagefolder_defaults_fit_one_epoch(caplog: pytest.LogCaptureFixture) -> None:
    # Issue 14: `rbs train --dataset imagefolder --epochs 1` failed on the default 5 warmup epochs.
    with caplog.at_level("INFO", logger="robustbench_sparse"):
        job = train_job_from_config(
            {}, data_overrides={"dataset": "imagefolder"}, train_overrides={"epochs": 1}
        )
    assert job.train.epochs == 1
    assert job.train.warmup_epochs == pytest.approx(5 / 90, abs=1e-3)  # 5 of 90, rescaled
    said = [r.getMessage() for r in caplog.records if "warmup_epochs" in r.getMessage()]
    assert len(said) == 1 and "--warmup-epochs" in said[0] and "written for 90 epochs" in said[0]
    # the cosine schedule has no step: its step_size is left alone (and not logged)
    assert job.train.step_size == 30.0
    assert sum("rescaled" in r.getMessage() for r in caplog.records) == 1


def test_recipe_schedule_rescaled_to_the_users_epochs() -> None:
    from robustbench_sparse.recipes import load_recipe, training_sections

    config = training_sections(load_recipe("imagenet-resnet50-campfire"))
    job = train_job_from_config(config, train_overrides={"epochs": 9})
    assert job.train.warmup_epochs == 5.0  # 5 <= 9 fits: untouched
    assert job.train.milestones == (3.0, 6.0, 8.0)  # [30, 60, 80] of 90 -> of 9
    assert (job.sparsity.start, job.sparsity.end) == (0.5, 3.0)  # 5..30 of 90, together
    job = train_job_from_config(config, train_overrides={"epochs": 1})
    assert job.train.warmup_epochs == pytest.approx(0.056)
    assert job.train.milestones == pytest.approx((0.333, 0.667, 0.889))
    assert (job.sparsity.start, job.sparsity.end) == pytest.approx((0.056, 0.333))


@pytest.mark.parametrize("dataset", ["digits", "mnist", "cifar10", "svhn", "imagefolder"])
@pytest.mark.parametrize("recipe", [None, "cifar10-resnet20", "imagenet-resnet50-campfire"])
@pytest.mark.parametrize("epochs", [1, 2, 3])
def test_every_default_and_recipe_builds_for_few_epochs(
    dataset: str, recipe: str | None, epochs: int
) -> None:
    from robustbench_sparse.recipes import load_recipe, training_sections

    config = training_sections(load_recipe(recipe)) if recipe else {}
    job = train_job_from_config(
        config, data_overrides={"dataset": dataset}, train_overrides={"epochs": epochs}
    )
    assert 0 <= job.train.warmup_epochs <= epochs
    assert all(m < epochs for m in job.train.milestones)
    assert 0 <= job.sparsity.start <= job.sparsity.end <= epochs


@pytest.mark.parametrize(
    ("config", "overrides", "fragment"),
    [
        # warmup and epochs both from the user (flags): the user's own value is kept and refused
        ({}, {"epochs": 1, "warmup_epochs": 5.0}, r"epochs = 1\] \(got 5.0\); lower --warmup"),
        # both from the same config file
        ({"train": {"epochs": 2, "warmup_epochs": 3.0}}, {}, r"epochs = 2\] \(got 3.0\)"),
        # a warmup flag above the file's epochs
        ({"train": {"epochs": 2}}, {"warmup_epochs": 3.0}, "--warmup-epochs"),
    ],
)
def test_users_own_epoch_settings_are_never_changed(
    config: dict[str, Any], overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(UserError, match=fragment):
        train_job_from_config(config, train_overrides=overrides)


def test_users_own_prune_window_is_never_changed(tmp_path: Path) -> None:
    job = train_job_from_config(
        {"sparsity": {"start": 1.0, "end": 6.0}, "train": {"epochs": 4}},
    )
    assert (job.sparsity.start, job.sparsity.end) == (1.0, 6.0)  # same layer as epochs
    with pytest.raises(UserError, match="lower --prune-end or raise --epochs"):
        run_train_job(job, tmp_path / "out")
    assert not (tmp_path / "out").exists()
