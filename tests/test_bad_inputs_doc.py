"""Every bad input of issue #5, run for real, against the table in ``docs/bad-inputs.md``.

Each case runs ``rbs`` in-process inside a scratch workspace (relative paths, so the messages do
not depend on where the test runs) and checks: exit status 2, one error line without a traceback,
no file that existed before changed and no new file appeared, and the message equals the one
the doc lists. The table between the ``BEGIN``/``END`` markers is generated from these cases::

    python -m tests.test_bad_inputs_doc --write     # rewrite docs/bad-inputs.md's table
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import evaluations.engine.spec as spec_module
from attacks import get_attack
from rbs import cli
from rbs.cli import main
from robustbench_sparse.checkpoint import META_FILE, WEIGHTS_FILE, save_checkpoint
from robustbench_sparse.datasets import dataset_info, default_eps_grid
from robustbench_sparse.models import create_model

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"
BEGIN = "<!-- BEGIN GENERATED: python -m tests.test_bad_inputs_doc --write -->"
END = "<!-- END GENERATED -->"
WIDTH = 0.25


@dataclass(frozen=True)
class Case:
    """One bad input: the command shown in the doc and how to run it."""

    group: str
    what: str
    command: str  # `rbs ...` (run through cli.main) or a Python expression shown as is
    run: Callable[[Path], str] | None = None  # library cases: returns the error message
    new_dir: str | None = None  # a new output directory the case may leave (OOM only)


def _rbs(command: str) -> Callable[[Path], str]:
    def run(ws: Path) -> str:
        argv = shlex.split(command)[1:]
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse errors
                rc = int(exc.code or 0)
        lines = [line for line in err.getvalue().splitlines() if line.strip()]
        assert rc == 2, (command, rc, err.getvalue())
        assert lines and not any("Traceback" in line for line in lines), err.getvalue()
        return lines[-1]

    return run


def _raises(fn: Callable[[], Any]) -> str:
    try:
        fn()
    except Exception as exc:  # the doc shows the exception type and message
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError("no error raised")


def _attack_out_of_range(ws: Path) -> str:
    model = create_model("small_cnn", num_classes=10, in_channels=1, width=WIDTH)
    x, y = torch.full((2, 1, 8, 8), 0.75), torch.tensor([0, 1])
    return _raises(lambda: get_attack("fgsm")(model, x * 2, y, epsilons=[0.1]))


class _Outputs(torch.nn.Module):
    """The digits model with its logits passed through ``fn`` (a model breaking the contract)."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.net = create_model("small_cnn", num_classes=10, in_channels=1, width=WIDTH)
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self.net(x))


def _attack_contract(
    fn: Callable[[torch.Tensor], Any] = lambda z: z,
    labels: Any = (0, 1),
    dtype: torch.dtype = torch.long,
    attack: str = "pgd",
    backend: str = "native",
) -> Callable[[Path], str]:
    """An issue-14 library case: ``attack`` (pgd) on two 8x8 inputs with a bad model output or
    bad labels (issue 29: too few classes for the attack's loss)."""

    def run(ws: Path) -> str:
        torch.manual_seed(0)
        model = _Outputs(fn).eval()
        x, y = torch.full((2, 1, 8, 8), 0.5), torch.tensor(labels, dtype=dtype)
        chosen = get_attack(attack, backend=backend)
        return _raises(lambda: chosen(model, x, y, epsilons=[0.0, 0.1]))

    return run


def _ibp_unknown_layer(ws: Path) -> str:
    from robustbench_sparse.bounds import interval_bounds

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh())
    return _raises(lambda: interval_bounds(net, (torch.zeros(1, 4), torch.ones(1, 4))))


def _unknown_norm(ws: Path) -> str:
    return _raises(lambda: default_eps_grid("digits", "l3"))


def _no_cuda(command: str) -> Callable[[Path], str]:
    def run(ws: Path) -> str:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(torch.cuda, "is_available", lambda: False)
            return _rbs(command)(ws)

    return run


class _OomAbove8:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Any:
        if x.shape[0] > 8:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(model, x, y, **kw)


def _oom(command: str) -> Callable[[Path], str]:
    def run(ws: Path) -> str:
        real = spec_module.get_attack
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(spec_module, "get_attack", lambda name, **kw: _OomAbove8(real(name, **kw)))
            return _rbs(command)(ws)

    return run


USER_NETS = """
import torch
from torch import nn


class LeNet(nn.Module):
    def __init__(self, num_classes, in_channels, width=4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, width, 3, padding=1)
        self.fc = nn.Linear(width * 64, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class ThreeClasses(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""


@contextlib.contextmanager
def _user_code_importable(ws: Path) -> Iterator[None]:
    """``ws/user_nets.py`` importable (no bytecode written); forgotten afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ws))
        mp.setattr(sys, "dont_write_bytecode", True)
        mp.delenv("RBS_DATA_DIR", raising=False)
        try:
            yield
        finally:
            sys.modules.pop("user_nets", None)


def _user_code(command: str) -> Callable[[Path], str]:
    def run(ws: Path) -> str:
        with _user_code_importable(ws):
            return _rbs(command)(ws)

    return run


A = "rbs attack --checkpoint ck --out new-results"
T = "rbs train --out new-train"
P = "rbs prune ck --out new-prune"
PC = f"{P} --method calibrated --sparsity 0.7"
PF = f"{P} --method filtersketch --sparsity 0.5"
CASES: list[Case] = [
    # --------------------------------------------------------------------------- epsilons
    Case("epsilon", "negative epsilon", f"{A} --eps=-0.1"),
    Case("epsilon", "NaN epsilon", f"{A} --eps 0,nan"),
    Case("epsilon", "infinite epsilon", f"{A} --eps 0,inf"),
    Case("epsilon", "non-numeric epsilon", f"{A} --eps 0,abc"),
    Case("epsilon", "division by zero in a fraction", f"{A} --eps 0,8/0"),
    Case("epsilon", "duplicate epsilons (refused)", f"{A} --eps 0,0.1,0.1"),
    Case("epsilon", "duplicate epsilons in a run config", "rbs run dup-eps.toml --out new-run"),
    # --------------------------------------------------------------------------- sparsity
    Case("sparsity", "sparsity 1 (must be < 1)", "rbs train --out new-train --sparsity 1"),
    Case("sparsity", "negative sparsity", "rbs train --out new-train --sparsity=-0.1"),
    Case("sparsity", "NaN sparsity", "rbs train --out new-train --sparsity nan"),
    Case("sparsity", "run config target outside (0, 1)", "rbs run bad-target.toml --out new-run"),
    # --------------------------------------------------------------------------- names
    Case("names", "unknown dataset", "rbs train --out new-train --dataset mnits"),
    Case("names", "unknown arch", "rbs train --out new-train --arch resnet21 --epochs 1"),
    Case("names", "unknown attack", f"{A} --attack pgd-linf"),
    Case("names", "unknown backend", f"{A} --backend foolbx"),
    Case("names", "unknown granularity (flag)", "rbs train --out new-train --granularity windows"),
    Case("names", "unknown granularity (run config)", "rbs run bad-gran.toml --out new-run"),
    Case(
        "names",
        "unknown norm (library; the CLI has no norm flag: pgd/fgsm are Linf, pgd-l2/cw are L2)",
        'default_eps_grid("digits", "l3")',
        run=_unknown_norm,
    ),
    Case("names", "unknown device", f"{A} --device tpu"),
    Case("names", "dataset name in the wrong case", "rbs train --out new-train --dataset MNIST"),
    Case("names", "misspelled subcommand flag", "rbs train --out new-train --granularty window"),
    Case("names", "`--threads 0`", "rbs models --threads 0"),
    # --------------------------------------------------------------------------- data
    Case(
        "data",
        "`--data-root` missing (train)",
        "rbs train --out new-train --dataset mnist --data-root nodata",
    ),
    Case(
        "data",
        "`--data-root` without the dataset (train)",
        "rbs train --out new-train --dataset mnist --data-root emptydir",
    ),
    Case("data", "`--data-root` missing (attack)", f"{A} --dataset mnist --data-root nodata"),
    Case(
        "data",
        "`--data-root` without the dataset (attack)",
        f"{A} --dataset mnist --data-root emptydir",
    ),
    # --------------------------------------------------------------------------- checkpoints
    Case("checkpoint", "checkpoint path missing", "rbs attack --checkpoint nothere --out new-r"),
    Case("checkpoint", "truncated weights (checksum in the JSON)", "rbs inspect truncated"),
    Case("checkpoint", "corrupt safetensors header", "rbs inspect corrupt-header"),
    Case("checkpoint", "header claiming an absurd size", "rbs inspect absurd-header"),
    Case("checkpoint", "tensor offsets beyond the file", "rbs inspect absurd-offsets"),
    Case("checkpoint", "checkpoint.json missing", "rbs inspect no-json"),
    Case("checkpoint", "checkpoint.json malformed", "rbs inspect bad-json"),
    Case("checkpoint", "weights do not match the arch", "rbs inspect wrong-arch"),
    Case(
        "checkpoint",
        "plain state dict of another arch",
        "rbs attack --checkpoint plain.pt --arch resnet20 --dataset digits --out new-r",
    ),
    Case(
        "checkpoint",
        "class count does not match the dataset",
        "rbs attack --checkpoint ck --dataset cifar100 --out new-r",
    ),
    Case("checkpoint", "NaN / Inf weights", "rbs inspect nan-weights"),
    Case(
        "checkpoint",
        "`.pt` with a pickle payload (never runs)",
        "rbs attack --checkpoint evil.pt --arch small_cnn --dataset digits --out new-r",
    ),
    Case("checkpoint", "`.pt` without --arch", "rbs attack --checkpoint plain.pt --out new-r"),
    Case("checkpoint", "packed `.rbsp` file edited after export", "rbs inspect edited.rbsp"),
    Case("checkpoint", "packed `.rbsp` file without metadata", "rbs inspect bare.rbsp"),
    # --------------------------------------------------------------------------- attacks
    Case(
        "attack",
        "input batch outside [0, 1] given to an attack (library)",
        "get_attack('fgsm')(model, x * 2, y, epsilons=[0.1])",
        run=_attack_out_of_range,
    ),
    Case("attack", "unknown attack parameter", f"{A} --attack pgd --param pgd.stepz=10"),
    Case("attack", "malformed --param", f"{A} --param steps=10"),
    Case("attack", "--limit 0", f"{A} --limit 0"),
    Case("cost", "`--input-shape` not C,H,W", "rbs cost ck --input-shape 8,8"),
    Case("cost", "`--input-shape` with the wrong channels", "rbs cost ck --input-shape 3,8,8"),
    Case(
        "attack",
        "model returning a tuple (library; wrap it with attacks.wrappers.select_output)",
        "get_attack('pgd')(model_returning_logits_and_features, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(lambda z: (z, z[:, :4])),
    ),
    Case(
        "attack",
        "model returning a dict (library)",
        "get_attack('pgd')(model_returning_a_dict, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(lambda z: {"logits": z, "features": z[:, :4]}),
    ),
    Case(
        "attack",
        "logits of shape (N, 1, 10) (library)",
        "get_attack('pgd')(model_with_3d_logits, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(lambda z: z.unsqueeze(1)),
    ),
    Case(
        "attack",
        "labels 1..10 for a 10-class model (library)",
        "get_attack('pgd')(model, x, torch.tensor([3, 10]), epsilons=[0, 0.1])",
        run=_attack_contract(labels=(3, 10)),
    ),
    Case(
        "attack",
        "one-hot labels (library)",
        "get_attack('pgd')(model, x, one_hot(y, 10), epsilons=[0, 0.1])",
        run=_attack_contract(labels=((1,) + (0,) * 9, (0, 1) + (0,) * 8)),
    ),
    Case(
        "attack",
        "float labels (library)",
        "get_attack('pgd')(model, x, torch.tensor([0.0, 1.0]), epsilons=[0, 0.1])",
        run=_attack_contract(dtype=torch.float32),
    ),
    Case(
        "attack",
        "model with NaN logits on clean inputs (library)",
        "get_attack('pgd')(model_with_log_of_its_logits, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(torch.log),
    ),
    Case(
        "attack",
        "APGD-T on a 3-class model (library; `--attack apgd-t` the same, any backend)",
        "get_attack('apgd-t')(three_class_model, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(lambda z: z[:, :3], attack="apgd-t"),
    ),
    Case(
        "attack",
        "pyautoattack's AutoAttack on a 2-class model (library; `--backend autoattack`)",
        "get_attack('autoattack', backend='autoattack')(two_class_model, x, y, epsilons=[0, 0.1])",
        run=_attack_contract(lambda z: z[:, :2], attack="autoattack", backend="autoattack"),
    ),
    # --------------------------------------------------------------------------- outputs
    Case("output", "`rbs train` into an existing directory", "rbs train --out ck"),
    Case("output", "`rbs attack` into a directory holding another run", f"{A[:-11]}old-results"),
    Case("output", "`rbs attack` into a foreign directory", f"{A[:-11]}ck"),
    Case("output", "`rbs run` into a foreign directory", "rbs run --out ck"),
    # --------------------------------------------------------------------------- config
    Case("config", "unknown key in a train config", "rbs train --config bad-key.toml --out new-t"),
    Case("config", "unknown key in a run config", "rbs run bad-run-key.toml --out new-run"),
    Case("config", "unknown section in a run config", "rbs run bad-section.toml --out new-run"),
    Case("config", "wrong value type", "rbs train --config bad-type.toml --out new-t"),
    Case("config", "config file is not TOML", "rbs train --config not-toml.toml --out new-t"),
    Case("config", "config file missing", "rbs run missing.toml --out new-run"),
    Case("config", "--set: misspelled key", "rbs train --out new-t --set train.epoch=3"),
    Case("config", "--set: misspelled section", "rbs train --out new-t --set trian.epochs=3"),
    Case("config", "--set without a value", "rbs train --out new-t --set train.epochs"),
    Case("config", "--set: wrong value type", "rbs train --out new-t --set train.epochs=three"),
    Case(
        "config",
        "a flag and --set on one key",
        "rbs train --out new-t --epochs 2 --set train.epochs=3",
    ),
    Case(
        "config",
        "warmup longer than training, both given by the user",
        "rbs train --out new-train --epochs 1 --warmup-epochs 5",
    ),
    # --------------------------------------------------------------------------- adversarial training
    Case("adversarial", "unknown --adversarial", "rbs train --out new-train --adversarial madry"),
    Case("adversarial", "adversarial training without --adv-eps", f"{T} --adversarial pgd"),
    Case("adversarial", "non-numeric --adv-eps", f"{T} --adversarial pgd --adv-eps 8/O"),
    Case(
        "adversarial",
        "step size both absolute and relative",
        f"{T} --adversarial pgd --adv-eps 0.1 --adv-step-size 0.01 --adv-rel-step-size 0.25",
    ),
    Case("adversarial", "no steps", f"{T} --adversarial trades --adv-eps 0.1 --adv-steps 0"),
    Case(
        "adversarial",
        "adversarial training under the L1 threat model (evaluation only)",
        f"{T} --adversarial pgd --adv-eps 0.1 --set adversarial.norm=l1",
    ),
    Case("adversarial", "validation fraction above 0.5", f"{T} --val-fraction 0.9"),
    Case("adversarial", "training eps on the 0..255 scale", f"{T} --adversarial pgd --adv-eps 8"),
    Case(
        "adversarial",
        "L2 training eps from half the input range up",
        f"{T} --adversarial pgd --adv-norm l2 --adv-eps 20",
    ),
    Case(
        "adversarial",
        "eps warm-up that does not end before training does",
        f"{T} --adversarial pgd --adv-eps 0.15 --adv-eps-warmup 5 --epochs 2",
    ),
    Case("data", "unknown --augment", f"{T} --augment flip"),
    # --------------------------------------------------------------------------- devices
    Case(
        "device",
        "CUDA requested where none exists (train)",
        "rbs train --out new-train --device cuda --epochs 1",
        run=_no_cuda("rbs train --out new-train --device cuda --epochs 1"),
    ),
    Case(
        "device",
        "CUDA requested where none exists (attack)",
        f"{A} --device cuda",
        run=_no_cuda(f"{A} --device cuda"),
    ),
    Case(
        "device",
        "out of memory on a batch, also after the retry with half the batch (simulated)",
        f"{A} --attack fgsm --batch-size 32 --limit 40 --no-report",
        run=_oom(f"{A} --attack fgsm --batch-size 32 --limit 40 --no-report"),
        new_dir="new-results",
    ),
    # --------------------------------------------------------------------------- argparse
    Case("usage", "missing required flag", "rbs attack --checkpoint ck"),
    Case("usage", "non-integer --epochs", "rbs train --out new-train --epochs three"),
    # --------------------------------------------------- third-party checkpoints (issue 14: 7, 8)
    Case(
        "checkpoint",
        "`torch.nn.utils.prune` state dict with a `weight_orig` but no `weight_mask`",
        "rbs inspect half-pruned.pt --arch small_cnn --dataset digits",
    ),
    Case(
        "checkpoint",
        "`torch.nn.utils.prune` mask with values other than 0 and 1",
        "rbs inspect soft-mask.pt --arch small_cnn --dataset digits",
    ),
    Case(
        "checkpoint",
        "`--normalize` that is neither dataset, none nor MEAN,STD",
        "rbs attack --checkpoint plain.pt --arch small_cnn --dataset digits --normalize imagenet "
        "--out new-r",
    ),
    Case(
        "checkpoint",
        "`--normalize` for a checkpoint directory (it records its own)",
        "rbs attack --checkpoint ck --normalize none --out new-r",
    ),
    Case(
        "data",
        "imagefolder with another class count than the checkpoint's",
        "rbs attack --checkpoint if-ck --data-root folder3 --out new-r",
    ),
    Case(
        "data",
        "evaluation images of another size than the checkpoint was trained on",
        "rbs attack --checkpoint if-ck --data-root folder16 --out new-r",
    ),
    # --------------------------------------------------------------------------- protocols
    Case("protocol", "unknown protocol", f"{A} --protocol fast"),
    Case("protocol", "unknown protocol (rbs run)", "rbs run --protocol fast --out new-run"),
    Case("protocol", "--protocol together with --attack", f"{A} --protocol quick --attack pgd"),
    Case("protocol", "unknown `--masking` mode", f"{A} --masking some"),
    Case("protocol", "unknown `--masking` mode (rbs run)", "rbs run --masking some --out new-run"),
    # ------------------------------------------------------ common corruptions (issue 28)
    Case("corruptions", "unknown corruption name", f"{A} --protocol corruptions --corruption rain"),
    Case(
        "corruptions",
        "`--corruption` without `--protocol corruptions`",
        f"{A} --attack fgsm --corruption fog",
    ),
    Case(
        "corruptions",
        "`[certify]` without a table per method (rbs run)",
        "rbs run --set certify.sigma=0.25 --out new-run",
    ),
    # ---------------------------------------- plain .pt wrappers and image files (issue 29: 5-7)
    Case(
        "checkpoint",
        "`.pt` holding two state dicts (`{'ema': ..., 'model': ...}`) and no --state-dict-key",
        "rbs inspect ema-model.pt --arch small_cnn --dataset digits",
    ),
    Case(
        "checkpoint",
        "`--state-dict-key` naming an entry the `.pt` lacks",
        "rbs inspect ema-model.pt --arch small_cnn --dataset digits --state-dict-key emma",
    ),
    Case(
        "checkpoint",
        "`--state-dict-key` naming an entry that is no state dict",
        "rbs inspect kuangliu.pt --arch small_cnn --dataset digits --state-dict-key acc",
    ),
    Case(
        "checkpoint",
        "`--state-dict-key` for a checkpoint directory (it holds one model)",
        "rbs attack --checkpoint ck --state-dict-key model --out new-r",
    ),
    Case(
        "checkpoint",
        "`.pt` holding no state dict of tensors",
        "rbs inspect no-weights.pt --arch small_cnn --dataset digits",
    ),
    Case(
        "data",
        "floating-point image with values outside [0, 1]",
        "rbs attack --checkpoint if-ck --data-root float-images --out new-r",
    ),
    Case(
        "data",
        "32-bit integer image whose values do not fit its depth",
        "rbs attack --checkpoint if-ck --data-root int32-images --out new-r",
    ),
    # --------------------------------------------------- your own architecture (issue 29)
    Case(
        "arch",
        "`--arch module:Class` whose module is not on the Python path",
        f"{T} --arch no_such_pkg.nets:LeNet",
        run=_user_code(f"{T} --arch no_such_pkg.nets:LeNet"),
    ),
    Case(
        "arch",
        "`--arch module:Class` naming no class of the module",
        f"{T} --arch user_nets:LeNett",
        run=_user_code(f"{T} --arch user_nets:LeNett"),
    ),
    Case(
        "arch",
        "`--arch-kwargs` the class does not take",
        f"{T} --arch user_nets:LeNet --arch-kwargs widht=4",
        run=_user_code(f"{T} --arch user_nets:LeNet --arch-kwargs widht=4"),
    ),
    Case(
        "arch",
        "a class whose logits are not (N, num_classes)",
        f"{T} --arch user_nets:ThreeClasses",
        run=_user_code(f"{T} --arch user_nets:ThreeClasses"),
    ),
    Case(
        "arch",
        "`--arch-kwargs` without KEY=VALUE",
        f"{T} --arch-kwargs width",
        run=_user_code(f"{T} --arch-kwargs width"),
    ),
    Case(
        "arch",
        "`--arch-kwargs` setting what the dataset decides",
        f"{T} --arch user_nets:LeNet --arch-kwargs num_classes=3",
        run=_user_code(f"{T} --arch user_nets:LeNet --arch-kwargs num_classes=3"),
    ),
    Case(
        "arch",
        "a checkpoint of your own class, loaded without naming it (its module never runs)",
        "rbs inspect user-ck",
        run=_user_code("rbs inspect user-ck"),
    ),
    Case(
        "arch",
        "`rbs speed` on a checkpoint of your own class, without naming it",
        "rbs speed user-ck --batch 1",
        run=_user_code("rbs speed user-ck --batch 1"),
    ),
    Case(
        "checkpoint",
        "`rbs export` / `rbs speed` on a plain `.pt` state dict (they read product checkpoints)",
        "rbs export kuangliu.pt --format thin --out new-thin",
    ),
    # --------------------------------------------------- where a checkpoint's data came from
    Case(
        "data",
        "imagefolder checkpoint whose recorded data root has moved",
        "rbs attack --checkpoint moved-if-ck --out new-r",
        run=_user_code("rbs attack --checkpoint moved-if-ck --out new-r"),
    ),
    Case(
        "data",
        "imagefolder checkpoint without a recorded root, nothing at the default root",
        "rbs attack --checkpoint if-ck --out new-r",
        run=_user_code("rbs attack --checkpoint if-ck --out new-r"),
    ),
    # ------------------------------------------------ transfer and saved adversarials (#29)
    Case("transfer", "`--adversarials` that does not exist", f"{A} --adversarials nothere"),
    Case(
        "transfer",
        "`--adversarials` holding a file that --save-adversarials did not write",
        f"{A} --adversarials ck",
    ),
    Case(
        "transfer",
        "`--transfer-in-worst-case` with nothing to transfer",
        f"{A} --attack fgsm --transfer-in-worst-case",
    ),
    Case(
        "transfer",
        "`--transfer-from` with no other checkpoint to score",
        "rbs attack --checkpoint ck --transfer-from ck --attack fgsm --out new-r",
    ),
    # ------------------------------------------ randomized smoothing: rbs certify, train (#28)
    Case(
        "certify",
        "`rbs certify --method smoothing` without the noise level",
        "rbs certify ck --method smoothing --out new-c",
    ),
    Case(
        "certify",
        "`rbs certify` failure probability out of range",
        "rbs certify ck --method smoothing --sigma 0.25 --alpha 0.5 --out new-c",
    ),
    Case(
        "certify",
        "`rbs certify` radius grid with a negative radius",
        "rbs certify ck --method smoothing --sigma 0.25 --radii 0,-0.5 --out new-c",
    ),
    Case("train", "Gaussian noise training without `--noise-sigma`", f"{T} --adversarial gaussian"),
    Case(
        "train",
        "`--noise-sigma` with another training method",
        f"{T} --adversarial pgd --adv-eps 0.1 --noise-sigma 0.25",
    ),
    # ------------------------------------------ interval bound propagation (#28)
    Case(
        "train", "IBP training in the L2 norm", f"{T} --adversarial ibp --adv-eps 0.1 --adv-norm l2"
    ),
    Case(
        "train",
        "`--ibp-kappa` with another training method",
        f"{T} --adversarial pgd --adv-eps 0.1 --ibp-kappa 0.3",
    ),
    Case("train", "IBP kappa outside [0, 1]", f"{T} --adversarial ibp --adv-eps 0.1 --ibp-kappa 2"),
    Case(
        "certify",
        "`rbs certify --method ibp` eps on the 0..255 scale",
        "rbs certify ck --method ibp --eps 8 --out new-c",
    ),
    Case(
        "certify",
        "IBP on a layer type it has no rule for (library)",
        "interval_bounds(Sequential(Linear(4, 4), Tanh()), box)",
        run=_ibp_unknown_layer,
    ),
    # ------------------------------------------ ToST (issue 26)
    Case(
        "train",
        "`--mask-from` a dense checkpoint",
        f"{T} --method tost --sparsity 0.7 --mask-from ck",
    ),
    Case(
        "train",
        "`--mask-from` a checkpoint of another width (masks of other shapes)",
        f"{T} --method tost --sparsity 0.7 --mask-from pruned-ck",
    ),
    Case(
        "train",
        "`--mask-from` with another pruning method",
        f"{T} --method campfire --sparsity 0.7 --mask-from pruned-ck",
    ),
    Case(
        "train",
        "`--label-smoothing` with `--method tost` (ToST sets its own)",
        f"{T} --method tost --sparsity 0.7 --label-smoothing 0.1",
    ),
    # ------------------------------------------ AutoSparse / GA on top-k (issue 26)
    Case(
        "train",
        "gradient-annealing `--ga-alpha0` outside [0, 1]",
        f"{T} --method autosparse --sparsity 0.7 --ga-alpha0 2",
    ),
    Case(
        "train",
        "`--method autosparse` with `--prune-end 0` (alpha's decay horizon)",
        f"{T} --method autosparse --sparsity 0.7 --prune-start 0 --prune-end 0",
    ),
    Case(
        "train",
        "`--method campfire-ga` with `--granularity nm`",
        f"{T} --method campfire-ga --sparsity 0.7 --granularity nm",
    ),
    # ------------------------------------------ rbs prune (issue 26)
    Case("prune", "unknown post-training method", f"{P} --method snip --sparsity 0.5"),
    Case("prune", "a granularity the method lacks", f"{PC} --granularity nm"),
    Case("prune", "`--sparsity 0` (nothing to prune)", f"{P} --method calibrated --sparsity 0"),
    Case("prune", "unknown method option", f"{PC} --option stpes=3"),
    Case("prune", "method option of the wrong type", f"{PC} --option tune=maybe"),
    Case("prune", "`--option` without a value", f"{PC} --option lr"),
    Case("prune", "`--calibration 0`", f"{PC} --calibration 0"),
    Case("prune", "more calibration images than the training split", f"{PC} --calibration 99999"),
    Case(
        "prune",
        "an already pruned checkpoint",
        "rbs prune pruned-ck --method calibrated --sparsity 0.7 --out new-prune",
    ),
    Case(
        "prune",
        "`--out` not empty, no `--overwrite`",
        "rbs prune ck --method calibrated --sparsity 0.7 --out old-results",
    ),
    Case(
        "prune",
        "`--out` is the checkpoint being pruned",
        "rbs prune ck --method calibrated --sparsity 0.7 --out ck --overwrite",
    ),
    # ------------------------------------------ rbs prune --method filtersketch (issue 26)
    Case("prune", "filtersketch: negative fine-tune epochs", f"{PF} --option finetune_epochs=-1"),
    Case(
        "prune",
        "filtersketch: Campfire masks of an unknown granularity",
        f"{PF} --option mask_granularity=blocks",
    ),
    Case(
        "prune",
        "filtersketch: Campfire masks without a fine-tune to set them in",
        f"{PF} --option mask_granularity=window --option finetune_epochs=0",
    ),
]

# ------------------------------------------------------------------------------- workspace


def _digits_model(width: float = WIDTH, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    info = dataset_info("digits")
    return create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=width
    )


def _meta() -> dict[str, Any]:
    info = dataset_info("digits")
    return {
        "name": "ck",
        "arch": "small_cnn",
        "arch_kwargs": {"width": WIDTH},
        "dataset": "digits",
        "num_classes": 10,
        "in_channels": 1,
        "normalization": {"mean": list(info.mean), "std": list(info.std)},
    }


def _resign(ckpt: Path, data: bytes) -> None:
    (ckpt / WEIGHTS_FILE).write_bytes(data)
    meta = json.loads((ckpt / META_FILE).read_text())
    meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
    (ckpt / META_FILE).write_text(json.dumps(meta))


class _Payload:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        import builtins

        return (builtins.open, (str(self.target), "w"))


def _prune_files(ws: Path) -> None:
    """``torch.nn.utils.prune`` state dicts: one pair missing its mask, one with a soft mask."""
    from torch.nn.utils import prune

    net = _digits_model(width=1.0).net
    prune.l1_unstructured(net.fc, "weight", amount=0.5)
    pairs = net.state_dict()
    torch.save({k: v for k, v in pairs.items() if k != "fc.weight_mask"}, ws / "half-pruned.pt")
    pairs["fc.weight_mask"] = pairs["fc.weight_mask"] * 0.5
    torch.save(pairs, ws / "soft-mask.pt")


def _imagefolder_files(ws: Path) -> None:
    """A 2-class 8x8 imagefolder checkpoint, a 3-class folder and a 2-class folder of 16x16 images."""
    from PIL import Image

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, in_channels=3, width=WIDTH)
    meta = {
        "name": "if-ck",
        "arch": "small_cnn",
        "arch_kwargs": {"width": WIDTH},
        "dataset": "imagefolder",
        "num_classes": 2,
        "in_channels": 3,
        "input_shape": [3, 8, 8],
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }
    save_checkpoint(ws / "if-ck", model, meta)
    for folder, classes, size in (("folder3", "abc", 8), ("folder16", "ab", 16)):
        for split in ("train", "val"):
            for c in classes:
                (ws / folder / split / c).mkdir(parents=True)
                Image.new("RGB", (size, size), (40, 80, 120)).save(
                    ws / folder / split / c / "0.png"
                )


def _issue29_files(ws: Path) -> None:
    """Wrapped ``.pt`` files and imagefolders of images no depth can scale (issue 29: 5, 7)."""
    import numpy as np
    from PIL import Image

    sd = _digits_model(width=1.0).net.state_dict()
    torch.save({"ema": sd, "model": sd}, ws / "ema-model.pt")
    torch.save({"net": sd, "acc": 95.3, "epoch": 200}, ws / "kuangliu.pt")
    torch.save({"epoch": 200, "acc": 95.3}, ws / "no-weights.pt")
    ramp = np.linspace(0.0, 1.0, 64).reshape(8, 8)
    for folder, pixels in (
        ("float-images", (ramp * 4.0).astype(np.float32)),
        ("int32-images", (ramp * 4e9 - 2e9).astype(np.int32)),
    ):
        for split in ("train", "val"):
            for c in "ab":
                (ws / folder / split / c).mkdir(parents=True)
                Image.fromarray(pixels).save(ws / folder / split / c / "0.tif")


def _user_arch_files(ws: Path) -> None:
    """``user_nets.py``, a checkpoint of its LeNet, and an imagefolder checkpoint whose recorded
    data root is gone."""
    (ws / "user_nets.py").write_text(USER_NETS)
    with _user_code_importable(ws):
        torch.manual_seed(0)
        model = create_model("user_nets:LeNet", num_classes=10, in_channels=1)
        meta = {**_meta(), "name": "user-ck", "arch": "user_nets:LeNet", "arch_kwargs": {}}
        save_checkpoint(ws / "user-ck", model, meta)
    moved = ws / "moved-if-ck"
    shutil.copytree(ws / "if-ck", moved)
    meta = json.loads((moved / META_FILE).read_text())
    meta.update(name="moved-if-ck", data_root="/nonexistent/rbs-images")
    (moved / META_FILE).write_text(json.dumps(meta))


def build_workspace(ws: Path) -> None:
    """Every file the cases refer to (relative to ``ws``)."""
    ws.mkdir(parents=True, exist_ok=True)
    ck = save_checkpoint(ws / "ck", _digits_model(), _meta())
    weights = (ck / WEIGHTS_FILE).read_bytes()

    def variant(name: str) -> Path:
        shutil.copytree(ck, ws / name)
        return ws / name

    (variant("truncated") / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    _resign(variant("corrupt-header"), struct.pack("<Q", 20) + b"{not a json header..." + b"\0")
    _resign(variant("absurd-header"), struct.pack("<Q", 2**62) + b"{}")
    header = json.dumps({"w": {"dtype": "F32", "shape": [2**38], "data_offsets": [0, 2**40]}})
    _resign(variant("absurd-offsets"), struct.pack("<Q", len(header)) + header.encode())
    (variant("no-json") / META_FILE).unlink()
    (variant("bad-json") / META_FILE).write_text('{"format": "robustbench-sparse-checkpoint",')
    wrong = variant("wrong-arch")
    meta = json.loads((wrong / META_FILE).read_text())
    meta["arch_kwargs"] = {"width": 0.5}
    (wrong / META_FILE).write_text(json.dumps(meta))
    nan_model = _digits_model()
    with torch.no_grad():
        dict(nan_model.named_parameters())["net.fc.weight"][0, 0] = float("nan")
    save_checkpoint(ws / "nan-weights", nan_model, _meta())
    torch.save(_digits_model(width=1.0).state_dict(), ws / "plain.pt")
    from robustbench_sparse.export import pack_checkpoint, pack_tensors

    pack_checkpoint(ck, ws / "packed.rbsp")
    raw = bytearray((ws / "packed.rbsp").read_bytes())
    raw[-3] ^= 0x40  # one bit of a stored value
    (ws / "edited.rbsp").write_bytes(bytes(raw))
    from safetensors.torch import load_file

    (ws / "bare.rbsp").write_bytes(pack_tensors(load_file(str(ck / WEIGHTS_FILE)))[0])
    torch.save({"state_dict": {}, "x": _Payload(ws / "PWNED")}, ws / "evil.pt")
    _prune_files(ws)
    _imagefolder_files(ws)
    _user_arch_files(ws)
    _issue29_files(ws)
    masks = {"net.conv2.0.weight": torch.ones(16, 8, 3, 3, dtype=torch.bool)}  # width 0.25
    save_checkpoint(ws / "pruned-ck", _digits_model(), _meta(), masks)  # --mask-from (ToST)

    (ws / "nodata").mkdir(exist_ok=True)
    shutil.rmtree(ws / "nodata")
    (ws / "emptydir").mkdir()
    old = ws / "old-results"
    old.mkdir()
    (old / "request.json").write_text(json.dumps({"fingerprint": "0123456789abcdef"}) + "\n")
    (old / "results.csv").write_text("checkpoint,attack\nck,fgsm\n")

    tomls = {
        "dup-eps.toml": "[epsilons]\nlinf = [0, 0.1, 0.1]\n",
        "bad-target.toml": "[models]\ntargets = [0.5, 1.0]\n",
        "bad-gran.toml": '[models]\ngranularities = ["windows"]\n',
        "bad-key.toml": "[train]\nlr_rate = 0.1\n",
        "bad-run-key.toml": "[attack]\nbatchsize = 100\n",
        "bad-section.toml": "[atack]\nlimit = 100\n",
        "bad-type.toml": '[train]\nepochs = "ten"\n',
        "not-toml.toml": "[train\nepochs = 1\n",
    }
    for name, text in tomls.items():
        (ws / name).write_text(text)


def _snapshot(ws: Path) -> dict[str, str]:
    return {
        str(p.relative_to(ws)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(ws.rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def _in_dir(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def run_case(case: Case, ws: Path) -> str:
    """Run one case in ``ws``; returns its message and checks nothing in ``ws`` changed."""
    before = _snapshot(ws)
    with _in_dir(ws):
        message = (case.run or _rbs(case.command))(ws)
    if case.new_dir:
        shutil.rmtree(ws / case.new_dir, ignore_errors=True)
    assert _snapshot(ws) == before, f"{case.command} changed files"
    assert not (ws / "PWNED").exists()
    return message


def _cell(text: str) -> str:
    text = text.replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(messages: list[str]) -> str:
    """The generated table: one row per case."""
    lines = [
        BEGIN,
        "",
        "| # | bad input | command | message (stderr; exit status 2) |",
        "|---|---|---|---|",
    ]
    for i, (case, message) in enumerate(zip(CASES, messages, strict=True), 1):
        lines.append(f"| {i} | {case.what} | {_cell(case.command)} | {_cell(message)} |")
    return "\n".join([*lines, "", END])


def _generated_block(text: str) -> str:
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[start:stop]


# ------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    ws = tmp_path_factory.mktemp("bad-inputs")
    build_workspace(ws)
    yield ws
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def messages(workspace: Path) -> list[str]:
    return [run_case(case, workspace) for case in CASES]


def test_every_bad_input_is_an_exit_2_one_liner_that_changes_nothing(messages: list[str]) -> None:
    assert len(messages) == len(CASES)
    for case, message in zip(CASES, messages, strict=True):
        assert "\n" not in message
        if case.run is None or case.command.startswith("rbs "):
            assert message.startswith("rbs "), (case.what, message)


def test_doc_table_matches_the_real_messages(messages: list[str]) -> None:
    doc = _generated_block(DOC.read_text(encoding="utf-8"))
    expected = render(messages)
    assert doc == expected, (
        "docs/bad-inputs.md is stale; run `python -m tests.test_bad_inputs_doc --write`"
    )


def test_messages_name_what_to_do(messages: list[str]) -> None:
    by_what = {c.what: m for c, m in zip(CASES, messages, strict=True)}
    assert "valid: cifar10, cifar100, digits" in by_what["unknown dataset"]
    assert "Did you mean 'mnist'?" in by_what["unknown dataset"]
    assert all(f" {a}," in by_what["unknown attack"] for a in ("cw", "fgsm", "pgd"))
    assert "native, torchattacks, foolbox" in by_what["unknown backend"]
    assert "'window'" in by_what["unknown granularity (flag)"]
    assert "valid: window" in by_what["unknown granularity (run config)"]
    norm = next(m for w, m in by_what.items() if w.startswith("unknown norm"))
    assert "linf" in norm and "l2" in norm
    for what in ("`--data-root` missing (train)", "`--data-root` without the dataset (attack)"):
        assert "--download" in by_what[what] and "--data-root" in by_what[what]
    assert "does not exist" in by_what["`--data-root` missing (attack)"]
    assert "'net.conv1.0.weight'" in by_what["weights do not match the arch"]
    assert "did you mean 'lr'?" in by_what["unknown key in a train config"]
    assert "did you mean 'batch_size'?" in by_what["unknown key in a run config"]
    assert "did you mean 'attack'?" in by_what["unknown section in a run config"]
    assert "--overwrite" in by_what["`rbs train` into an existing directory"]
    assert "--resume" in by_what["`rbs train` into an existing directory"]
    assert "--resume" in by_what["`rbs attack` into a directory holding another run"]
    oom = "out of memory on a batch, also after the retry with half the batch (simulated)"
    assert "--batch-size" in by_what[oom]


# ------------------------------------------------------------------- the error contract of every command
MINIMAL_ARGV = {
    "run": ["run"],
    "train": ["train", "--out", "o"],
    "inspect": ["inspect", "ck"],
    "attack": ["attack", "--checkpoint", "ck", "--out", "o"],
    "plot": ["plot", "r"],
    "report": ["report", "r"],
    "models": ["models"],
}


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _every_handler_raises(mp: pytest.MonkeyPatch, exc: BaseException) -> None:
    real = cli.build_parser

    def build() -> argparse.ArgumentParser:
        parser = real()
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for sub in action.choices.values():
            sub.set_defaults(handler=lambda args: (_ for _ in ()).throw(exc))
        return parser

    mp.setattr(cli, "build_parser", build)


def _user_errors() -> list[BaseException]:
    from attacks import AttackConfigError, AttackInputError
    from robustbench_sparse.errors import UserError

    return [
        UserError("bad thing; do this instead"),
        AttackInputError("inputs must lie in [0, 1]"),
        AttackConfigError("unknown attack 'x'"),
    ]


def test_the_core_commands_are_all_covered() -> None:
    assert set(MINIMAL_ARGV) <= set(_subcommands())


@pytest.mark.parametrize("exc", _user_errors(), ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("command", sorted(MINIMAL_ARGV))
def test_every_command_maps_user_errors_to_one_line_and_exit_2(
    command: str, exc: BaseException, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _every_handler_raises(mp, exc)
        assert main(MINIMAL_ARGV[command]) == 2
        err = capsys.readouterr().err
        assert err == f"rbs {command}: error: {exc}\n"
        with pytest.raises(type(exc)):  # --debug shows the traceback instead
            main(["--debug", *MINIMAL_ARGV[command]])


@pytest.mark.parametrize("command", sorted(MINIMAL_ARGV))
def test_bugs_keep_their_traceback(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        _every_handler_raises(mp, ZeroDivisionError("a bug"))
        with pytest.raises(ZeroDivisionError):
            main(MINIMAL_ARGV[command])
    assert "error:" not in capsys.readouterr().err


def test_a_bug_prints_a_traceback_in_a_real_process(tmp_path: Path) -> None:
    """An unexpected exception is not a user error: Python's traceback and exit status 1."""
    code = (
        "import sys, rbs.cli as c, rbs.commands.misc as m\n"
        "m.cmd_models = lambda args: 1 / 0\n"
        "sys.exit(c.main(['models']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().endswith("ZeroDivisionError: division by zero")


if __name__ == "__main__":  # pragma: no cover - the doc generator
    import tempfile

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(tmp) / "ws"
        build_workspace(ws)
        rendered = render([run_case(case, ws) for case in CASES])
    if "--write" in sys.argv:
        text = DOC.read_text(encoding="utf-8")
        DOC.write_text(text.replace(_generated_block(text), rendered), encoding="utf-8")
    else:
        print(rendered)
