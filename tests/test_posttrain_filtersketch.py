"""FilterSketch (robustbench_sparse.posttrain.filtersketch): which layers are sketched, the sketched
weights, BatchNorm handling, the published ResNet-56 MAC count, and a thinned checkpoint that loads
wherever a checkpoint loads.

The reference code (lmbxmu/FilterSketch) is a set of scripts, not an installable package: the
published number checked is its README's "73.36M FLOPs" for ResNet-56 at sketch rate 0.6.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.cost.model import model_cost
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.models.normalize import NormalizedModel
from robustbench_sparse.models.widths import apply_widths
from robustbench_sparse.posttrain.base import CalibrationData, PostTrainConfig
from robustbench_sparse.posttrain.filtersketch import (
    FILTERSKETCH,
    kept_filters,
    recalibrate_batchnorm,
    sketch_model,
    sketch_plan,
)
from robustbench_sparse.posttrain.frequent_directions import frequent_directions
from tests.core_helpers import single_thread, tiny_digits, tiny_job

#: lmbxmu/FilterSketch README: ResNet-56 on CIFAR-10, sketch rate [0.6]*27, "73.36M" FLOPs
#: (multiply-accumulates of the option-A network, counted by thop), dense 125.49M.
PUBLISHED_MACS = 73_360_000
DENSE_OPTION_A_MACS = 125_485_696
#: this product's resnet56 has option-B shortcuts: two 1x1 stride-2 convs, 16->32 at 16x16 and
#: 32->64 at 8x8, 131,072 MACs each, the same in the dense and the thin model.
OPTION_B_OFFSET = 2 * 131_072


def _conv_weight(model: nn.Module, name: str) -> torch.Tensor:
    conv = model.get_submodule(name)
    assert isinstance(conv, nn.Conv2d)
    return conv.weight.detach()


def _small_cnn(width: float = 0.25, seed: int = 0) -> NormalizedModel:
    torch.manual_seed(seed)
    return create_model("small_cnn", num_classes=10, in_channels=1, width=width)


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=gen) + 0.5
            m.bias.data = torch.randn(m.num_features, generator=gen)
            m.running_mean = torch.randn(m.num_features, generator=gen)


def test_resnet56_at_rate_06_has_the_published_macs() -> None:
    with single_thread():
        model = create_model("resnet56", num_classes=10, in_channels=3)
        result = sketch_model(model, 0.4, (3, 32, 32))  # rate 0.6 keeps 60 % of the filters
        cost = model_cost(result.model, None, (3, 32, 32))
    middles = {la.producer: la.keep for la in result.layers if la.sketched}
    assert len(middles) == 27 and set(middles.values()) == {9, 19, 38}
    total = cost.total()["macs_dense"]
    shortcuts = sum(lc.macs.dense for lc in cost.layers if "downsample" in lc.name)
    assert shortcuts == OPTION_B_OFFSET
    assert total - shortcuts == PUBLISHED_MACS
    assert result.macs_after == PUBLISHED_MACS + OPTION_B_OFFSET
    assert result.macs_before == DENSE_OPTION_A_MACS + OPTION_B_OFFSET
    # parameters (conv + BN + fc): option A 853,018 -> 506,446; option B adds 2,752 to both
    assert (result.params_before, result.params_after) == (855_770, 509_198)


@pytest.mark.parametrize(
    ("filters", "sparsity", "keep"),
    [
        (16, 0.4, 9),
        (32, 0.4, 19),
        (64, 0.4, 38),
        (10, 0.9, 1),
        (10, 0.7, 3),
        (8, 0.5, 4),
        (3, 0.99, 1),
    ],
)
def test_kept_filters(filters: int, sparsity: float, keep: int) -> None:
    assert kept_filters(filters, sparsity) == keep


def test_plan_small_cnn_sketches_every_conv_feeding_a_conv() -> None:
    model = _small_cnn().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan = sketch_plan(model, (1, 8, 8), 0.5)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert [la.producer for la in plan] == [f"net.conv{i}.0" for i in range(1, 5)]
    assert [la.consumers for la in plan] == [[f"net.conv{i}.0"] for i in range(2, 6)]
    assert [la.bn for la in plan] == [f"net.conv{i}.1" for i in range(1, 5)]
    assert all(la.sketched for la in plan)


def test_plan_resnet_sketches_only_the_first_conv_of_each_block() -> None:
    model = create_model("resnet20", num_classes=10, in_channels=3)
    plan = sketch_plan(model, (3, 32, 32), 0.5)
    blocks = [f"net.layer{s}.{b}" for s in (1, 2, 3) for b in range(3)]
    assert [la.producer for la in plan] == [f"{b}.conv1" for b in blocks]
    assert [la.consumers for la in plan] == [[f"{b}.conv2"] for b in blocks]


def test_a_layer_with_fan_in_below_its_keep_is_left_whole() -> None:
    """small_cnn at width 1 on 1-channel 8x8: conv1 has 32 filters of fan-in 9; 16 kept filters
    cannot be independent, so it stays at 32 (as the reference leaves such a layer)."""
    result = sketch_model(_small_cnn(width=1.0), 0.5, (1, 8, 8))
    first = result.layers[0]
    assert first.producer == "net.conv1.0" and not first.sketched and "fan-in 9" in first.reason
    assert "net.conv1.0" not in result.widths
    assert result.widths["net.conv2.0"] == {"in": 32, "out": 32, "groups": 1}


def test_sketched_weights() -> None:
    """conv1 (only a producer): unit rows of the FD sketch of its filters. conv5 (only a
    consumer): the FD sketch of its input slices W[:, c], transposed back, so that the slices'
    Gram matrix obeys the FD bound (a ``view`` instead of a transpose breaks it)."""
    model = _small_cnn()
    with single_thread():
        thin = sketch_model(model, 0.5, (1, 8, 8)).model
    w1 = _conv_weight(model, "net.conv1.0")  # (8, 1, 3, 3)
    b1 = frequent_directions(w1.reshape(8, -1), 4)
    want1 = (b1 / b1.norm(dim=1, keepdim=True)).reshape(4, 1, 3, 3)
    assert torch.allclose(_conv_weight(thin, "net.conv1.0"), want1, atol=1e-6)
    w5 = _conv_weight(model, "net.conv5.0")  # (32, 32, 1, 1): (K₂, K, 1, 1)
    got5 = _conv_weight(thin, "net.conv5.0")  # (32, 16, 1, 1)
    assert got5.shape == (32, 16, 1, 1)
    s, s_new = (
        w5.transpose(0, 1).reshape(32, -1).double(),
        got5.transpose(0, 1).reshape(16, -1).double(),
    )
    err = s.T @ s - s_new.T @ s_new
    bound = float(s.square().sum()) / 16
    assert float(torch.linalg.matrix_norm(err, ord=2)) <= bound * (1 + 1e-6)
    assert float(torch.linalg.eigvalsh(err).min()) >= -1e-6 * bound


def test_batchnorm_reset_after_sketched_convs_and_copied_elsewhere() -> None:
    model = create_model("resnet20", num_classes=10, in_channels=3)
    _randomise_batchnorm(model)
    thin = sketch_model(model, 0.5, (3, 32, 32)).model
    reset = thin.get_submodule("net.layer2.1.bn1")
    assert isinstance(reset, nn.BatchNorm2d) and reset.num_features == 16
    assert torch.equal(reset.weight, torch.ones(16)) and torch.equal(reset.bias, torch.zeros(16))
    for name in ("net.bn1", "net.layer2.1.bn2", "net.layer3.0.downsample.1"):
        kept, orig = thin.get_submodule(name), model.get_submodule(name)
        assert isinstance(kept, nn.BatchNorm2d) and isinstance(orig, nn.BatchNorm2d)
        assert torch.equal(kept.weight, orig.weight) and torch.equal(kept.bias, orig.bias)
        assert torch.equal(kept.running_mean, orig.running_mean)  # type: ignore[arg-type]


def test_recalibrate_batchnorm_sets_the_input_statistics() -> None:
    model = _small_cnn()
    _randomise_batchnorm(model)
    images = torch.rand(48, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    bn = model.get_submodule("net.conv3.1")
    assert isinstance(bn, nn.BatchNorm2d)
    seen: list[torch.Tensor] = []
    handle = bn.register_forward_hook(lambda _m, i, _o: seen.append(i[0].detach()))
    recalibrate_batchnorm(model, images, batch_size=16)
    handle.remove()
    x = torch.cat(seen)  # (48, 16, 4, 4): the BatchNorm's inputs over all images (equal batches)
    assert torch.allclose(bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-5)  # type: ignore[arg-type]
    within = torch.stack([b.var(dim=(0, 2, 3)) for b in x.split(16)]).mean(0)  # unbiased per batch
    assert torch.allclose(bn.running_var, within, atol=1e-5)  # type: ignore[arg-type]
    assert not model.training and bn.momentum == 0.1


def test_sparsity_zero_changes_nothing() -> None:
    model = _small_cnn()
    result = sketch_model(model, 0.0, (1, 8, 8))
    assert result.widths == {} and not any(la.sketched for la in result.layers)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(result.model(x), model.eval()(x))


def test_a_thin_source_is_recorded_against_the_architecture() -> None:
    """Sketching an already thin model: the widths are relative to the registry's default
    build, so rebuilding from them loads the result."""
    once = sketch_model(_small_cnn(), 0.5, (1, 8, 8)).model
    twice = sketch_model(once, 0.5, (1, 8, 8))
    fresh = create_model("small_cnn", num_classes=10, in_channels=1, width=0.25)
    apply_widths(fresh, twice.widths)
    fresh.load_state_dict(twice.model.state_dict())
    assert twice.widths["net.conv2.0"] == {"in": 2, "out": 4, "groups": 1}


def test_nothing_to_sketch_is_refused() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(144, 10))
    model = NormalizedModel(net, (0.0,), (1.0,))
    with pytest.raises(UserError, match="nothing it can sketch"):
        sketch_model(model, 0.5, (1, 8, 8))


def _calibration(n: int = 64) -> CalibrationData:
    data = tiny_digits()
    images = torch.stack([data.train[i][0] for i in range(n)])  # (n, 1, 8, 8)
    return CalibrationData(images, None, "train", train_set=data.train)


@pytest.mark.parametrize(
    ("granularity", "options", "message"),
    [
        ("window", {}, "granularity window"),
        ("filter", {"finetune_epochs": -1}, "finetune_epochs"),
        ("filter", {"lr": 0.0}, "lr"),
        ("filter", {"batch_size": 1.5}, "batch_size"),
        ("filter", {"mask_granularity": "bogus"}, "mask_granularity must be none or one of"),
        ("filter", {"mask_granularity": "window", "mask_sparsity": 1.0}, "mask_sparsity"),
        ("filter", {"mask_granularity": "window", "finetune_epochs": 0}, "needs finetune_epochs"),
    ],
)
def test_run_refuses_bad_settings(
    granularity: str, options: dict[str, object], message: str
) -> None:
    config = PostTrainConfig("filtersketch", 0.5, granularity, options=options)
    with pytest.raises(UserError, match=message):
        FILTERSKETCH.run(_small_cnn(), config, _calibration())


def test_run_needs_images() -> None:
    config = PostTrainConfig("filtersketch", 0.5, "filter")
    with pytest.raises(UserError, match="training images"):
        FILTERSKETCH.run(_small_cnn(), config, None)


def test_campfire_masks_during_the_fine_tune() -> None:
    """Sketch first, then Campfire window masks ramped in on the thin model: every 3x3 kernel of
    a pruned layer keeps the same number of weights, masked weights are zero, the section says so."""
    options = {"finetune_epochs": 2, "mask_granularity": "window", "mask_sparsity": 0.5}
    config = PostTrainConfig("filtersketch", 0.5, "filter", options=options)
    with single_thread():
        result = FILTERSKETCH.run(_small_cnn(), config, _calibration())
    result.check()  # masks fit their weights, weights outside them are exactly zero
    assert result.granularity == "filtersketch+window" and result.sparsity is not None
    assert result.sparsity["target"] == 0.5 and result.pruned_layers
    assert set(result.masks) == set(result.pruned_layers)
    mask = result.masks["net.conv3.0.weight"]  # (8, 8, 3, 3) on the thin model
    assert mask.shape == (8, 8, 3, 3)
    counts = mask.reshape(-1, 9).sum(dim=1)
    assert counts.min() == counts.max() and 0 < int(counts[0]) < 9


def _inspect(path: Path) -> dict[str, object]:
    from rbs.cli import main

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["inspect", str(path), "--json"]) == 0
    out: dict[str, object] = json.loads(buf.getvalue())
    return out


@pytest.mark.slow
def test_end_to_end_tiny_digits(tmp_path: Path) -> None:
    """Train a tiny dense digits model; ``rbs prune --method filtersketch --sparsity 0.5`` with a
    1-epoch fine-tune; the checkpoint loads (its recorded accuracy is the loaded model's), and
    rbs inspect, rbs cost and rbs attack read it and report its widths."""
    from rbs.cli import main
    from robustbench_sparse.train_job import run_train_job
    from robustbench_sparse.training import evaluate

    out, attack_out = tmp_path / "sketched", tmp_path / "attacked"
    prune = ["prune", str(tmp_path / "dense"), "--method", "filtersketch", "--sparsity", "0.5"]
    prune += ["--option", "finetune_epochs=1", "--calibration", "64", "--out", str(out)]
    attack = ["attack", "--checkpoint", str(out), "--attack", "fgsm", "--eps", "0,0.1"]
    with single_thread(), redirect_stdout(io.StringIO()):
        run_train_job(tiny_job(epochs=3), tmp_path / "dense", progress=False)
        assert main(prune) == 0
        assert main(["cost", str(out)]) == 0
        assert main([*attack, "--limit", "20", "--no-report", "--out", str(attack_out)]) == 0
    loaded = load_checkpoint(out)
    widths = loaded.meta["thin"]["widths"]
    assert widths["net.conv2.0"] == {"in": 4, "out": 8, "groups": 1}  # width 0.25: 8 -> 4 -> 8
    assert _conv_weight(loaded.model, "net.conv2.0").shape == (8, 4, 3, 3)
    assert loaded.granularity == "filtersketch" and not loaded.masks
    settings = loaded.meta["post_training"]["settings"]
    assert settings["finetune_epochs"] == 1 and len(settings["finetune_history"]) == 1
    _, correct, n = evaluate(loaded.model, tiny_digits().test, device=torch.device("cpu"))
    assert (correct, n) == (loaded.meta["test_correct"], loaded.meta["test_n"])
    assert _inspect(out)["thin_widths"] == widths
    (entry,) = json.loads((attack_out / "results.json").read_text())["checkpoints"]
    assert entry["thin_widths"] == widths
