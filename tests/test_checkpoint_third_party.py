"""Checkpoints from elsewhere: measured sparsity of plain state dicts, prune pairs folded, data checks.

Issue 14 items 7 and 8: a plain ``.pt`` gets its sparsity and granularity from its zeros (in
``load_checkpoint``, ``rbs inspect`` and the results of ``rbs attack``); an ``imagefolder``'s class
count comes from its folders; data that does not fit a checkpoint is refused (shape) or warned about
(clean accuracy far below the recorded one / at chance), in the sidecar and the report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.data import TensorDataset

from evaluations.engine.grid import run_grid
from evaluations.engine.spec import AttackSpec, GridConfig
from evaluations.present.report import write_report
from evaluations.record.results import write_sidecar
from rbs.cli import main
from robustbench_sparse.checkpoint import load_checkpoint
from robustbench_sparse.datasets import load_split
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, compute_mask
from tests.core_helpers import single_thread

ARCH_KWARGS = {"width": 0.25}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small_cnn", num_classes=10, in_channels=1, **ARCH_KWARGS).net


def _prunable(net: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _unstructured_pt(tmp_path: Path, *, remove: bool, amount: float = 0.495) -> Path:
    net = _net()
    prune.global_unstructured(_prunable(net), pruning_method=prune.L1Unstructured, amount=amount)
    if remove:
        for module, name in _prunable(net):
            prune.remove(module, name)
    path = tmp_path / ("removed.pt" if remove else "pairs.pt")
    torch.save(net.state_dict(), path)
    return path


def _zeros_fraction(net: nn.Module) -> float:
    weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / sum(w.numel() for w in weights)


@pytest.mark.parametrize("amount", [0.3, 0.495, 0.8])
def test_prune_removed_state_dict_is_measured(tmp_path: Path, amount: float) -> None:
    ckpt = load_checkpoint(
        _unstructured_pt(tmp_path, remove=True, amount=amount),
        arch="small_cnn",
        dataset="digits",
        arch_kwargs=ARCH_KWARGS,
    )
    assert ckpt.granularity == "unstructured"
    assert ckpt.sparsity_achieved == pytest.approx(_zeros_fraction(ckpt.model), abs=1e-9)
    assert ckpt.sparsity_achieved == pytest.approx(amount, abs=0.01)
    assert ckpt.sparsity_target == ckpt.sparsity_achieved  # no target recorded: the measured one
    report = ckpt.sparsity_report()
    assert report.achieved_pruned == ckpt.sparsity_achieved
    assert {layer.granularity for layer in report.layers if layer.pruned} == {"unstructured"}


def test_prune_pairs_are_folded(tmp_path: Path) -> None:
    removed = load_checkpoint(
        _unstructured_pt(tmp_path, remove=True),
        arch="small_cnn",
        dataset="digits",
        arch_kwargs=ARCH_KWARGS,
    )
    folded = load_checkpoint(
        _unstructured_pt(tmp_path, remove=False),
        arch="small_cnn",
        dataset="digits",
        arch_kwargs=ARCH_KWARGS,
    )
    a, b = removed.model.state_dict(), folded.model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert folded.sparsity_achieved == removed.sparsity_achieved
    params = dict(folded.model.named_parameters())
    layers = folded.model.net.named_modules()  # type: ignore[operator]
    expected = [f"net.{n}.weight" for n, m in layers if isinstance(m, nn.Conv2d | nn.Linear)]
    assert sorted(folded.masks) == sorted(expected)
    for name, mask in folded.masks.items():
        assert torch.equal(mask, params[name] != 0)
    assert folded.meta["prune_masks_folded"] == sorted(folded.masks)


@pytest.mark.parametrize(
    ("granularity", "sparsity"),
    [(Granularity.WINDOW, 0.7), (Granularity.CHANNEL, 0.5), (Granularity.COMBINED, 0.7)],
)
def test_campfire_pattern_of_a_plain_state_dict(
    tmp_path: Path, granularity: Granularity, sparsity: float
) -> None:
    net = _net(1)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)][1:]  # first conv stays dense
    with torch.no_grad():
        for conv in convs:
            conv.weight.mul_(compute_mask(conv.weight, sparsity, granularity))
    path = tmp_path / "campfire.pt"
    torch.save(net.state_dict(), path)
    ckpt = load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs=ARCH_KWARGS)
    assert ckpt.granularity == granularity.value
    assert 0.0 < ckpt.sparsity_achieved < 1.0


def test_dense_state_dict_stays_dense(tmp_path: Path) -> None:
    path = tmp_path / "dense.pt"
    torch.save(_net().state_dict(), path)
    ckpt = load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs=ARCH_KWARGS)
    assert (ckpt.granularity, ckpt.sparsity_achieved, ckpt.sparsity_target) == ("dense", 0.0, 0.0)
    assert ckpt.masks == {}


def test_inspect_a_plain_state_dict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.pt"
    # small_cnn's default width: the CLI passes no arch kwargs.
    full = create_model("small_cnn", num_classes=10, in_channels=1).net
    prune.global_unstructured(_prunable(full), pruning_method=prune.L1Unstructured, amount=0.5)
    torch.save(full.state_dict(), path)
    assert main(["inspect", str(path), "--arch", "small_cnn", "--dataset", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["granularity"] == "unstructured"
    assert out["sparsity_report"]["achieved_pruned"] == pytest.approx(0.5, abs=0.01)
    assert out["sparsity_report"]["method"] == "measured"
    assert main(["inspect", str(path)]) == 2
    assert "pass --arch and --dataset" in capsys.readouterr().err


def test_attack_results_carry_measured_columns(tmp_path: Path) -> None:
    full = create_model("small_cnn", num_classes=10, in_channels=1).net
    prune.global_unstructured(_prunable(full), pruning_method=prune.L1Unstructured, amount=0.495)
    for module, name in _prunable(full):
        prune.remove(module, name)
    path = tmp_path / "third.pt"
    torch.save({"module." + k: v for k, v in full.state_dict().items()}, path)
    out = tmp_path / "res"
    argv = [
        "attack",
        "--checkpoint",
        str(path),
        "--arch",
        "small_cnn",
        "--dataset",
        "digits",
        "--normalize",
        "none",
        "--attack",
        "fgsm",
        "--eps",
        "0,0.1",
        "--limit",
        "20",
        "--out",
        str(out),
        "--no-report",
    ]
    assert main(argv) == 0
    df = pd.read_csv(out / "results.csv")
    assert set(df["granularity"]) == {"unstructured"}
    assert df["sparsity_achieved"].iloc[0] == pytest.approx(0.495, abs=0.002)
    side = json.loads((out / "results.json").read_text())
    # Random weights: chance-level clean accuracy, and the sidecar says so.
    assert "chance" in (side["clean_checks"][0]["warning"] or "")


def _ckpt_dir(tmp_path: Path) -> Path:
    from robustbench_sparse.train_job import run_train_job
    from tests.eval_helpers import train_job

    out = tmp_path / "dense"
    run_train_job(train_job("dense"), out, progress=False)
    return out


def _grid() -> GridConfig:
    return GridConfig(
        attacks=(AttackSpec("fgsm", "native"),), linf_epsilons=(0.0, 0.1), limit=None, device="cpu"
    )


def test_far_below_recorded_accuracy_is_warned_in_sidecar_and_report(tmp_path: Path) -> None:
    ckpt = load_checkpoint(_ckpt_dir(tmp_path))
    test = load_split("digits", "test", limit=60)
    x = torch.stack([test[i][0] for i in range(len(test))])  # type: ignore[arg-type]
    y = torch.tensor([int(test[i][1]) for i in range(len(test))])  # type: ignore[arg-type]
    good = run_grid([ckpt], TensorDataset(x, y), _grid(), progress=False)
    assert good.clean_checks[0]["warning"] is None
    wrong = TensorDataset(x, (y + 1) % 10)  # the wrong labels: accuracy collapses
    bad = run_grid(
        [ckpt], TensorDataset(*wrong.tensors), _grid(), out_dir=tmp_path / "r", progress=False
    )
    warning = bad.clean_checks[0]["warning"]
    assert warning is not None and "far below" in warning
    write_sidecar(tmp_path / "r", {"clean_checks": bad.clean_checks})
    md, _ = write_report(tmp_path / "r")
    assert "WARNING: " + warning in md.read_text()


@pytest.mark.parametrize("shape", [(6, 1, 16, 16), (6, 1, 28, 28), (6, 3, 8, 8)])
def test_other_input_shape_is_refused_before_any_work(
    tmp_path: Path, shape: tuple[int, ...]
) -> None:
    ckpt = load_checkpoint(_ckpt_dir(tmp_path))
    data = TensorDataset(torch.rand(shape), torch.zeros(shape[0], dtype=torch.long))
    with pytest.raises(UserError, match="trained on 1x8x8 inputs"):
        run_grid([ckpt], data, _grid(), out_dir=tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "results.csv").exists()


def _image_folder(root: Path, classes: tuple[str, ...], per_class: int, size: int) -> Path:
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                base = torch.full((size, size, 3), 60.0 + 120.0 * c)
                noise = torch.randint(-40, 40, (size, size, 3), generator=gen).float()
                pixels = (base + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_two_class_imagefolder_trains_inspects_and_attacks(tmp_path: Path) -> None:
    data = _image_folder(tmp_path / "data", ("cat", "dog"), per_class=6, size=8)
    out = tmp_path / "ck"
    train = ["train", "--dataset", "imagefolder", "--data-root", str(data), "--out", str(out)]
    train += ["--epochs", "1", "--warmup-epochs", "0", "--batch-size", "4"]
    assert main(train) == 0
    meta = json.loads((out / "checkpoint.json").read_text())
    assert meta["num_classes"] == 2
    assert main(["inspect", str(out)]) == 0
    res = tmp_path / "res"
    attack = ["attack", "--checkpoint", str(out), "--data-root", str(data), "--out", str(res)]
    attack += ["--attack", "fgsm", "--eps", "0,2/255", "--no-report"]
    assert main(attack) == 0
    side = json.loads((res / "results.json").read_text())
    assert side["clean_checks"][0]["n"] == 12
    # A three-class folder is not the one the checkpoint was trained on.
    other = _image_folder(tmp_path / "other", ("a", "b", "c"), per_class=2, size=8)
    attack_other = [*attack[:4], str(other), "--out", str(tmp_path / "res2"), *attack[7:]]
    assert main(attack_other) == 2


# ------------------------------------------- issue 29 (4, 5): normalization said, nested weights
def _inner(model: nn.Module) -> nn.Module:
    """The network inside a NormalizedModel (plain state dicts hold its keys)."""
    net = model.net
    assert isinstance(net, nn.Module)
    return net


def _wrapped(tmp_path: Path, name: str, wrap: object) -> Path:
    path = tmp_path / name
    torch.save(wrap, path)
    return path


@pytest.mark.parametrize(
    ("wrap", "key"),
    [
        (
            lambda sd: {"net": {"module." + k: v for k, v in sd.items()}, "acc": 95.3, "epoch": 9},
            "net",
        ),
        (lambda sd: {"model_state": sd}, "model_state"),
        (
            lambda sd: {"state_dict": sd, "optimizer": {"state": {}, "param_groups": []}},
            "state_dict",
        ),
        (lambda sd: {"ckpt": {"weights": sd, "step": 3}}, "ckpt/weights"),
    ],
)
def test_a_state_dict_under_any_key_loads_and_says_which(
    tmp_path: Path, wrap: Any, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    net = _net(3)
    path = _wrapped(tmp_path, "w.pt", wrap(net.state_dict()))
    with caplog.at_level("INFO"):
        ckpt = load_checkpoint(path, arch="small_cnn", dataset="digits", arch_kwargs=ARCH_KWARGS)
    assert ckpt.meta["state_dict_key"] == key
    assert f"weights taken from its entry {key!r}" in caplog.text
    loaded = _inner(ckpt.model).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in net.state_dict().items())


def test_two_state_dicts_need_the_key_in_inspect_and_attack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ema, model = _net(1), _net(2)
    path = _wrapped(tmp_path, "ema.pt", {"ema": ema.state_dict(), "model": model.state_dict()})
    inspect = ["inspect", str(path), "--arch", "small_cnn", "--dataset", "digits"]
    assert main([*inspect, "--json"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds 2 state dicts ('ema', 'model')" in err[0]
    assert "--state-dict-key KEY" in err[0]
    for key, net in (("ema", ema), ("model", model)):
        ckpt = load_checkpoint(
            path, arch="small_cnn", dataset="digits", arch_kwargs=ARCH_KWARGS, state_dict_key=key
        )
        loaded = _inner(ckpt.model).state_dict()
        assert torch.equal(loaded["fc.weight"], net.state_dict()["fc.weight"])
    attack = ["attack", "--checkpoint", str(path), "--arch", "small_cnn", "--dataset", "digits"]
    attack += ["--out", str(tmp_path / "r"), "--attack", "fgsm", "--eps", "0", "--limit", "4"]
    assert main(attack) == 2  # the same refusal before any output
    assert "--state-dict-key KEY" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_state_dict_key_for_a_checkpoint_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"applies to plain \.pt/\.pth files only"):
        load_checkpoint(_ckpt_dir(tmp_path), state_dict_key="model")


@pytest.mark.slow
def test_plain_state_dict_normalization_is_said_recorded_and_flagged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trained digits model shipped as a bare .pt (its network expects normalized inputs)."""
    from evaluations.engine.grid import grid_evidence

    trained = load_checkpoint(_ckpt_dir(tmp_path))
    state = _inner(trained.model).state_dict()
    path = _wrapped(tmp_path, "bare.pt", {"net": state, "epoch": 3})
    test = load_split("digits", "test", limit=60)
    outcomes = {}
    for normalize in (None, "none"):
        caplog.clear()
        with caplog.at_level("INFO"):
            ckpt = load_checkpoint(
                path,
                arch="small_cnn",
                dataset="digits",
                arch_kwargs=ARCH_KWARGS,
                normalize=normalize,
            )
            out = tmp_path / f"r-{normalize}"
            run = run_grid([ckpt], test, _grid(), out_dir=out, progress=False)
        write_sidecar(out, grid_evidence(run, [ckpt], _grid()))
        md, _ = write_report(out)
        text = md.read_text().replace("\\[", "[").replace("\\]", "]")  # markdown escapes
        outcomes[normalize] = (json.loads((out / "results.json").read_text()), text)
        outcomes[f"log-{normalize}"] = caplog.text  # type: ignore[assignment]
    side, report = outcomes[None]
    log = str(outcomes["log-None"])
    assert "inputs normalized with the dataset's mean/std" in log and "assumed" in log
    assert "pass --normalize none" in log
    entry = side["checkpoints"][0]
    assert entry["normalization"]["source"] == "dataset" and entry["normalization"]["assumed"]
    assert entry["state_dict_key"] == "net"
    assert side["clean_checks"][0]["warning"] is None  # the assumption was right
    assert (
        "is a plain state dict, weights from its entry 'net': inputs normalized with the " in report
    )
    side, report = outcomes["none"]
    warning = side["clean_checks"][0]["warning"]
    assert warning is not None and "near chance (1/10)" in warning
    assert "normalized with none (raw [0, 1] inputs): pass --normalize dataset" in warning
    assert "WARNING: " + warning in report
    assert warning in str(outcomes["log-none"])
