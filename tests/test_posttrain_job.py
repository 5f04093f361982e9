"""run_prune_job: the checkpoint it writes, and nothing half-written when writing fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustbench_sparse.checkpoint import load_checkpoint, save_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.posttrain import PostTrainConfig
from robustbench_sparse.posttrain import job as job_module
from robustbench_sparse.posttrain.job import PruneJob, check_output_dir, run_prune_job
from tests.core_helpers import single_thread

OPTIONS = {"iterations": 1, "samples_per_iteration": 40, "batch_size": 20}


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, input_shape=(1, 8, 8), width=0.25
    )
    meta = {
        "arch": "small_cnn",
        "arch_kwargs": {"width": 0.25},
        "num_classes": 10,
        "in_channels": 1,
        "dataset": "digits",
        "input_shape": [1, 8, 8],
        "granularity": "dense",
        "sparsity_target": 0.0,
        "clean_accuracy": 0.1,
        "data": {"test_limit": 50},
        "history": [{"epoch": 1}],
    }
    return save_checkpoint(tmp_path_factory.mktemp("job") / "dense", model, meta)


def _job(dense: Path, out: Path, granularity: str = "unstructured") -> PruneJob:
    config = PostTrainConfig("calibrated", 0.6, granularity, options=OPTIONS)
    return PruneJob(dense, out, config, calibration=40)


def test_the_checkpoint_loads_with_its_masks_and_records_the_source(
    dense: Path, tmp_path: Path
) -> None:
    with single_thread():
        out = run_prune_job(_job(dense, tmp_path / "p"))
    ckpt = load_checkpoint(out)
    assert ckpt.granularity == "calibrated" and ckpt.sparsity_target == 0.6
    assert sorted(ckpt.masks) == ckpt.meta["pruned_layers"]
    report = ckpt.sparsity_report()
    assert report.numel_pruned - report.nnz_pruned == int(0.6 * report.numel_pruned)
    post = ckpt.meta["post_training"]
    assert post["config"]["options"]["iterations"] == 1 and post["config"]["seed"] == 0
    assert post["source"]["clean_accuracy"] == 0.1 and len(post["source"]["weights_sha256"]) == 64
    assert [row["name"] for row in post["layers"]] == ckpt.meta["pruned_layers"]
    assert ckpt.meta["history"] == [{"epoch": 1}]  # how the pruned weights came about
    assert ckpt.meta["test_n"] == 50  # the source's test limit
    assert not list(tmp_path.glob(".p.rbs-prune-*"))


def test_a_failed_write_leaves_no_output_and_no_temporary(
    dense: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(out_dir: Path, *args: object, **kwargs: object) -> Path:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "checkpoint.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(job_module, "save_checkpoint", broken)
    with single_thread(), pytest.raises(OSError, match="disk full"):
        run_prune_job(_job(dense, tmp_path / "p"))
    assert list(tmp_path.iterdir()) == []


def test_output_checks_happen_before_any_work(dense: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        check_output_dir(tmp_path / "file", dense, False)
    with pytest.raises(UserError, match="being pruned"):
        check_output_dir(dense, dense / "checkpoint.safetensors", True)
    check_output_dir(tmp_path / "new", dense, False)  # absent: fine
    with pytest.raises(UserError, match="supports --granularity"):
        run_prune_job(_job(dense, tmp_path / "q", "filter"))
    assert not (tmp_path / "q").exists()
    json.loads((dense / "checkpoint.json").read_text())  # the source is untouched and valid


def test_plain_state_dicts_and_packed_files_are_sources_too(dense: Path, tmp_path: Path) -> None:
    from robustbench_sparse.checkpoint_files import sha256_file
    from robustbench_sparse.export import pack_checkpoint

    source = load_checkpoint(dense)
    plain = tmp_path / "net.pt"
    torch.save(source.model.net.state_dict(), plain)  # type: ignore[union-attr]
    packed = tmp_path / "dense.rbsp"
    pack_checkpoint(dense, packed)
    config = PostTrainConfig("calibrated", 0.6, options=OPTIONS)
    load = {"arch": "small_cnn", "dataset": "digits", "arch_kwargs": {"width": 0.25}}
    with single_thread():
        a = run_prune_job(PruneJob(plain, tmp_path / "a", config, calibration=40, load=load))
        b = run_prune_job(PruneJob(packed, tmp_path / "b", config, calibration=40))
    for out, src in ((a, plain), (b, packed)):
        ckpt = load_checkpoint(out)
        assert ckpt.meta["post_training"]["source"]["weights_sha256"] == sha256_file(src)
        assert ckpt.meta["method"] == "calibrated" and "source" not in ckpt.meta
        assert ckpt.sparsity_report().nnz_pruned < ckpt.sparsity_report().numel_pruned


def test_the_post_training_method_names_the_checkpoint_even_with_another_methods_masks(
    dense: Path, tmp_path: Path
) -> None:
    """FilterSketch fine-tuned under Campfire window masks: the row is FilterSketch's (meta
    ``method``), the masks' own config (method campfire) stays under ``sparsity``."""
    options = {
        "finetune_epochs": 1,
        "mask_granularity": "window",
        "mask_sparsity": 0.5,
        "batch_size": 20,
    }
    config = PostTrainConfig("filtersketch", 0.5, "filter", options=options)
    with single_thread():
        out = run_prune_job(PruneJob(dense, tmp_path / "fs", config, calibration=40))
    ckpt = load_checkpoint(out)
    assert ckpt.meta["method"] == "filtersketch"
    assert ckpt.meta["granularity"] == "filtersketch+window"
    assert ckpt.meta["sparsity"]["method"] == "campfire" and ckpt.masks
    assert ckpt.meta["post_training"]["method"] == "filtersketch"
    # achieved sparsity against the dense widths (removed filters and input slices, plus zeros),
    # counted independently here, and the same when recomputed from the loaded weights
    source = load_checkpoint(dense).model
    dense_n = {n: p.numel() for n, p in source.named_parameters() if n.endswith("weight")}
    thin = dict(ckpt.model.named_parameters())
    changed = [n for n, p in thin.items() if n in dense_n and p.ndim > 1 and p.numel() < dense_n[n]]
    assert changed
    removed = sum(dense_n[n] - int((thin[n] != 0).sum()) for n in changed)
    report = ckpt.meta["sparsity_report"]
    assert report["numel_pruned"] == sum(dense_n[n] for n in changed)
    assert report["achieved_pruned"] == pytest.approx(removed / report["numel_pruned"])
    assert report["achieved_pruned"] > 0.5 and ckpt.sparsity_achieved == report["achieved_pruned"]
    assert ckpt.sparsity_report().achieved_pruned == pytest.approx(report["achieved_pruned"])
