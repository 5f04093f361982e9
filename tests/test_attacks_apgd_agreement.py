"""Native APGD-CE / APGD-T (Linf) agree with the original AutoAttack on adversarially trained models.

Issue 29: at equal steps, restarts and targets, on the same examples, the mean robust accuracy over
seeds of the native attacks is within 0.5 points of pyautoattack's (``APGDAttack`` /
``APGDAttack_targeted``, backend ``autoattack``) at every epsilon, on two PGD-trained models made
here: the tests' tiny CNN on digits (Linf 0.1) and a small CNN on MNIST (Linf 0.3, from the shared
MNIST test set, images ``1000:`` for training and the first ones attacked; skipped where absent).
The full-size figures (500 MNIST images, 100 steps) are in BENCHMARKS.md
(``benchmarks/apgd_agreement.py``).
"""

from __future__ import annotations

import functools
import statistics
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from attacks import get_attack
from robustbench_sparse.adversarial import AdversarialConfig, AdversarialMethod, craft
from tests.attack_helpers import Normalize, digits, tiny_cnn

pytest.importorskip("pyautoattack")

MNIST_T10K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist-t10k"
SEEDS = [0, 1, 2]
STEPS = 20


def pgd_trained(model: nn.Module, x: Tensor, y: Tensor, eps: float, steps: int) -> nn.Module:
    """PGD-AT (Madry et al. 2018, the product's ``craft``, 5 steps), Adam 3e-3, batches of 128,
    eps ramped over the first 40 % of ``steps``; returned in eval mode."""
    config = AdversarialConfig(method=AdversarialMethod.PGD, eps=eps, steps=5)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for step in range(steps):
        idx = torch.randint(0, len(y), (128,), generator=gen)
        model.train()
        adv = craft(model, x[idx], y[idx], config, eps * min(1.0, (step + 1) / (0.4 * steps)))
        loss = nn.functional.cross_entropy(model(adv), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


@functools.cache
def digits_at() -> tuple[nn.Module, Tensor, Tensor, list[float]]:
    """The tiny CNN PGD-trained at Linf 0.1 on the 1347 digits; its 450 held-out test images."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    torch.manual_seed(0)
    model = pgd_trained(tiny_cnn(), x[:-450], y[:-450], 0.1, 200)
    test = digits()  # the same held-out split
    # budgets up to the training one, as for MNIST; at 0.15 (1.5x) the mean gap over 8 seeds is
    # 0.50 points at 1 restart (native lower) and 0.39 at 3 (native higher): BENCHMARKS.md
    return model, test.x, test.y, [0.05, 0.075, 0.1]


@functools.cache
def mnist_at() -> tuple[nn.Module, Tensor, Tensor, list[float]]:
    """A small CNN PGD-trained at Linf 0.3 on MNIST test images 1000:; the first 300 attacked."""
    import gzip

    import numpy as np

    def idx(name: str) -> np.ndarray:
        with gzip.open(MNIST_T10K / name, "rb") as f:
            raw = f.read()
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * raw[3]).reshape(dims)

    x = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz").copy()).float().unsqueeze(1) / 255.0
    y = torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz").copy()).long()
    torch.manual_seed(0)
    model = nn.Sequential(
        Normalize(0.1307, 0.3081),
        nn.Conv2d(1, 16, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv2d(16, 32, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )
    model = pgd_trained(model, x[1000:], y[1000:], 0.3, 300)
    return model, x[:300], y[:300], [0.1, 0.2, 0.3]


def _task(name: str) -> tuple[nn.Module, Tensor, Tensor, list[float]]:
    if name == "mnist" and not (MNIST_T10K / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"shared MNIST test set not found at {MNIST_T10K}")
    return mnist_at() if name == "mnist" else digits_at()


def _mean_robust(name: str, backend: str, params: dict[str, int], task: tuple) -> list[float]:
    model, x, y, eps = task
    runs = [
        get_attack(name, backend=backend, seed=s, **params)(model, x, y, epsilons=eps)
        for s in SEEDS
    ]
    return [statistics.mean(r.robust_accuracy()[k] for r in runs) for k in range(len(eps))]


@pytest.mark.slow
@pytest.mark.parametrize("task_name", ["digits", "mnist"])
@pytest.mark.parametrize(
    ("attack", "params"),
    [
        ("apgd-ce", {"steps": STEPS, "restarts": 1}),
        ("apgd-ce", {"steps": STEPS, "restarts": 3}),
        ("apgd-t", {"steps": STEPS, "restarts": 1, "n_target_classes": 3}),
    ],
)
def test_native_apgd_agrees_with_pyautoattack_on_adversarially_trained_models(
    task_name: str, attack: str, params: dict[str, int]
) -> None:
    task = _task(task_name)
    model, x, y, eps = task
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    native = _mean_robust(attack, "native", params, task)
    reference = _mean_robust(attack, "autoattack", params, task)
    assert clean > 0.8  # a trained model, and a robust one: the comparison is not trivial
    assert 0.2 < native[-1] < native[0] < clean, native
    for e, a, b in zip(eps, native, reference, strict=True):
        assert abs(a - b) <= 0.005 + 1e-9, (
            f"{task_name} {attack} {params} eps={e}: native {100 * a:.2f} % vs pyautoattack "
            f"{100 * b:.2f} % (mean over seeds {SEEDS})"
        )
