"""CPU throughput on CIFAR shape: the product vs plain hand-written loops at the same settings (issue 13).

Goal: the product within 1.1x of the plain loops. One process, one model architecture, the same
real CIFAR-10 JPEG images; contenders interleaved repeat by repeat (machine noise hits all alike),
ratio of medians reported.

Training (images/s over one epoch, JPEG decode + crop/flip included, ``num_workers=0`` for all):

* ``plain``          – the textbook loop: ``torchvision.datasets.ImageFolder`` with
  ``RandomCrop(32, padding=4)`` + ``RandomHorizontalFlip`` + ``ToTensor``, a ``DataLoader``,
  SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a per-step cosine ``LambdaLR``,
  forward / cross-entropy / backward / step, loss and accuracy summed per batch;
* ``rbs dense``      – :func:`robustbench_sparse.training.fit` (the function behind ``rbs train``)
  for one epoch on the product's ``cifar10`` dataset (the same folder), no validation split and a
  10-image test split (so the per-epoch evaluation is negligible), no checkpointing;
* ``rbs window-70``  – the same with Campfire window pruning ramping 0 -> 70 % over the epoch
  (mask updates every 20 steps, gradient-mask hooks, re-application after every step).

Attack (example-gradients/s; model from ``--checkpoint``, else a freshly initialised one). Like
every product attack, all contenders attack only the clean-correct examples (a misclassified one is
not robust at any epsilon) and skip eps = 0:

* ``plain PGD``      – a hand-written Linf PGD loop, one epsilon at a time: uniform random start,
  ``steps`` sign steps of ``0.125 * eps``, projection and [0, 1] clamp, every step for every example;
* ``rbs PGD, same work`` – the product's ``pgd`` with ``nested=False, early_stop=False`` called
  once per epsilon: exactly the plain loop's gradients, plus the product's input checks,
  verification of every adversarial (in [0, 1], inside the ball) and re-classification;
* ``rbs PGD, default`` – the product's default grid engine in one call (nested balls, early stop,
  warm start): fewer gradients; reported as gradients/s and as wall-time ratio.

    python benchmarks/cifar_throughput.py --threads 1 [--checkpoint runs/cifar10/checkpoints/dense]

Data: ``--data-root`` (a folder holding ``cifar10-jpeg/`` or its ``train``/``test``), else
``--per-class`` training and ``--test-per-class`` test images per class are read from the shared
archive ``../shared/data/cifar10-jpeg/cifar10-jpeg.tar.gz`` into a temporary folder (read member by
member, :func:`robustbench_sparse.imagefolder.extract_per_class`).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms

from attacks import get_attack
from robustbench_sparse.datasets import DatasetSplits, cifar10_folder, dataset_info, load_dataset
from robustbench_sparse.imagefolder import extract_per_class
from robustbench_sparse.models import create_model_for
from robustbench_sparse.sparsity import Granularity, SparsityConfig
from robustbench_sparse.training import TrainConfig, fit

CIFAR_ARCHIVE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg"
).resolve() / "cifar10-jpeg.tar.gz"
CIFAR_LINF = [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255]


def _model(arch: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_model_for(arch, dataset_info("cifar10"))


def plain_train_epoch(folder: Path, arch: str, batch_size: int, lr: float, seed: int) -> float:
    """A textbook torchvision training epoch; returns seconds (model construction excluded)."""
    model = _model(arch, seed)
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
        ]
    )
    t0 = time.perf_counter()
    train = torchvision.datasets.ImageFolder(str(folder / "train"), transform=tf)
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=0)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    criterion = nn.CrossEntropyLoss()
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    for x, y in loader:
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = criterion(logits, y)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.item() * y.numel()
        correct += int((logits.argmax(1) == y).sum())
        seen += y.numel()
    return time.perf_counter() - t0


def rbs_train_epoch(
    root: Path, arch: str, batch_size: int, lr: float, seed: int, target: float
) -> float:
    """One epoch of the product's ``fit`` (dense, or Campfire window ramping to ``target``)."""
    model = _model(arch, seed)
    t0 = time.perf_counter()
    data = load_dataset("cifar10", root=root)
    data = DatasetSplits(info=data.info, train=data.train, test=Subset(data.test, range(10)))
    config = TrainConfig(
        epochs=1,
        batch_size=batch_size,
        lr=lr,
        warmup_epochs=0.0,
        seed=seed,
        device="cpu",
        val_fraction=0.0,
    )
    sparsity = (
        SparsityConfig(
            target=target, granularity=Granularity.WINDOW, start=0.0, end=1.0, update_every=20
        )
        if target > 0
        else None
    )
    fit(model, data, config, sparsity, progress=False)
    return time.perf_counter() - t0


def plain_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid: list[float], steps: int
) -> tuple[int, list[float]]:
    """Hand-written Linf PGD per epsilon; (example-gradients, robust accuracy per eps)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        correct = model(x).argmax(1) == y  # (N,)
    xc, yc = x[correct], y[correct]  # (M, C, H, W), (M,): only these can be robust
    n = x.shape[0]
    grads, accs = 0, []
    for eps in eps_grid:
        if eps == 0:
            accs.append(float(correct.sum()) / n)
            continue
        alpha = 0.125 * eps
        delta = (torch.rand(xc.shape, generator=gen) * 2 - 1) * eps
        adv = (xc + delta).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = nn.functional.cross_entropy(model(adv), yc, reduction="sum")
            (g,) = torch.autograd.grad(loss, adv)
            grads += xc.shape[0]
            with torch.no_grad():
                adv = adv + alpha * g.sign()
                adv = torch.min(torch.max(adv, xc - eps), xc + eps).clamp(0, 1)
        with torch.no_grad():
            accs.append(float((model(adv).argmax(1) == yc).sum()) / n)
    return grads, accs


def rbs_pgd_per_eps(
    attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_grid: list[float]
) -> tuple[int, list[float]]:
    """The product's attack called once per epsilon (no stacking of the grid into one batch)."""
    grads, accs = 0, []
    for eps in eps_grid:
        res = attack(model, x, y, epsilons=[eps])
        grads += int(res.grad_evals)
        accs.append(float(res.robust_accuracy()[0]))
    return grads, accs


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20", help="the CPU config's model by default")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--per-class", type=int, default=150, help="training images per class")
    parser.add_argument("--test-per-class", type=int, default=20, help="attacked images per class")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="PGD steps (the quick protocol's)")
    parser.add_argument("--checkpoint", default=None, help="attack this checkpoint (else init)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-attack", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tmp = tempfile.TemporaryDirectory()
    if args.data_root:
        root = Path(args.data_root)
    else:
        if not CIFAR_ARCHIVE.is_file():
            raise SystemExit(f"{CIFAR_ARCHIVE} is absent; pass --data-root with the extracted copy")
        per_class = {"train": args.per_class, "test": args.test_per_class}
        root = extract_per_class(CIFAR_ARCHIVE, tmp.name, per_class).parent
    folder = cifar10_folder(root)
    if folder is None:
        raise SystemExit(f"no CIFAR-10 ImageFolder copy under {root}")
    n_train = sum(1 for _ in (folder / "train").rglob("*.jpg"))
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} intra-op / {torch.get_num_interop_threads()} inter-op threads, "
        f"arch {args.arch}, {n_train} training images, batch {args.batch_size}"
    )

    if not args.skip_train:
        contenders = {
            "plain torchvision loop": lambda: plain_train_epoch(
                folder, args.arch, args.batch_size, args.lr, 0
            ),
            "rbs fit, dense": lambda: rbs_train_epoch(
                root, args.arch, args.batch_size, args.lr, 0, 0.0
            ),
            "rbs fit, Campfire window 0->70 %": lambda: rbs_train_epoch(
                root, args.arch, args.batch_size, args.lr, 0, 0.7
            ),
        }
        times: dict[str, list[float]] = defaultdict(list)
        for fn in contenders.values():  # warm-up: imports, allocator, page cache
            fn()
        for _ in range(args.repeats):
            for name, fn in contenders.items():
                times[name].append(fn())
        base = statistics.median(times["plain torchvision loop"])
        print(f"\ntraining, one epoch, median of {args.repeats} interleaved repeats")
        print(f"{'contender':<36}{'median s':>10}{'images/s':>10}{'x plain':>9}")
        for name, ts in times.items():
            med = statistics.median(ts)
            print(f"{name:<36}{med:>10.2f}{n_train / med:>10.1f}{med / base:>9.3f}")

    if not args.skip_attack:
        if args.checkpoint:
            from robustbench_sparse.checkpoint import load_checkpoint

            model = load_checkpoint(args.checkpoint).model.eval()
        else:
            model = _model(args.arch, 0).eval()
        test = load_dataset("cifar10", root=root).test
        x = torch.stack([test[i][0] for i in range(len(test))])  # type: ignore[arg-type]
        y = torch.tensor([int(test[i][1]) for i in range(len(test))])  # type: ignore[arg-type]
        same = get_attack("pgd", steps=args.steps, nested=False, early_stop=False)
        default = get_attack("pgd", steps=args.steps)
        runs: dict[str, Any] = {
            "plain PGD loop": lambda: plain_pgd(model, x, y, CIFAR_LINF, args.steps),
            "rbs PGD, same work": lambda: rbs_pgd_per_eps(same, model, x, y, CIFAR_LINF),
            "rbs PGD, default engine": lambda: default(model, x, y, epsilons=CIFAR_LINF),
        }
        for fn in runs.values():
            fn()
        atimes: dict[str, list[float]] = defaultdict(list)
        grads: dict[str, int] = {}
        accs: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                dt, out = _timed(fn)
                atimes[name].append(dt)
                if isinstance(out, tuple):
                    grads[name], accs[name] = out
                else:
                    grads[name], accs[name] = int(out.grad_evals), out.robust_accuracy()
        base = statistics.median(atimes["plain PGD loop"])
        base_rate = grads["plain PGD loop"] / base
        print(
            f"\nLinf PGD-{args.steps}, {x.shape[0]} test images, eps x255 "
            f"{[round(e * 255) for e in CIFAR_LINF]}, median of {args.repeats} interleaved repeats"
        )
        print(
            f"{'contender':<26}{'median s':>9}{'grads':>9}{'grads/s':>9}"
            f"{'time x':>8}{'rate x':>8}   robust accuracy"
        )
        for name, ts in atimes.items():
            med = statistics.median(ts)
            rate = grads[name] / med
            acc = " ".join(f"{a:.3f}" for a in accs[name])
            print(
                f"{name:<26}{med:>9.2f}{grads[name]:>9,}{rate:>9.0f}"
                f"{med / base:>8.3f}{base_rate / rate:>8.3f}   {acc}"
            )
    tmp.cleanup()


if __name__ == "__main__":
    main()
