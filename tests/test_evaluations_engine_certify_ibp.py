"""verified_ibp (evaluations/engine/certify_ibp.py): exact on a linear classifier, sound against
the product's APGD on the same examples, refusals."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from attacks.registry import get_attack
from evaluations.engine.certify_ibp import verified_ibp
from robustbench_sparse.datasets import load_dataset
from robustbench_sparse.errors import UserError
from robustbench_sparse.models.normalize import NormalizedModel


def _linear_digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A linear classifier trained briefly on sklearn's digits (bundled): (model, x, y)."""
    torch.manual_seed(0)
    splits = load_dataset("digits", train_limit=600, test_limit=120, augment=False, seed=0)
    x_tr, y_tr = next(iter(DataLoader(splits.train, batch_size=10_000)))
    model = NormalizedModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()
    x, y = next(iter(DataLoader(splits.test, batch_size=10_000)))
    return model.eval(), x, y


def test_exact_on_a_linear_classifier_away_from_the_pixel_range() -> None:
    """With the elision, IBP on one linear layer is the exact L-infinity margin:
    verified iff m_j - eps * ||w_y - w_j||_1 / std > 0 for all j (inputs kept off 0 and 1)."""
    torch.manual_seed(1)
    layer = nn.Linear(16, 4)
    model = NormalizedModel(nn.Sequential(nn.Flatten(), layer), [0.5], [0.5]).eval()
    x = 0.3 + 0.4 * torch.rand(200, 1, 4, 4)
    y = model(x).argmax(1)
    y[::7] = (y[::7] + 1) % 4  # some misclassified
    eps = [0.0, 0.002, 0.01, 0.05]  # within 0.3 of the pixel range: no clipping
    got = verified_ibp(model, x, y, eps, batch_size=64)
    assert got.shape == (4, 200) and got.dtype == torch.bool
    with torch.no_grad():
        z = model(x)
        w = layer.weight / 0.5  # (4, 16), pixels -> logits
        for k, e in enumerate(eps):
            margin = z.gather(1, y[:, None]) - z  # (200, 4)
            l1 = (w[y].unsqueeze(1) - w.unsqueeze(0)).abs().sum(-1)  # (200, 4)
            lower = (margin - e * l1).scatter(1, y[:, None], float("inf"))
            exact = (lower > 0).all(1)
            assert torch.equal(got[k], exact), e
    assert 0 < int(got[2].sum()) < int(got[0].sum())  # the test separates the cases


def test_never_above_apgd_robust_accuracy_on_the_same_examples() -> None:
    """Verified examples are a subset of the examples APGD fails to break (soundness)."""
    model, x, y = _linear_digits_model()
    eps = [0.0, 0.01, 0.02, 0.05]
    verified = verified_ibp(model, x, y, eps, batch_size=50)
    result = get_attack("apgd-ce", steps=50, seed=0)(model, x, y, epsilons=eps)
    robust = ~result.success  # (4, N)
    assert not (verified & ~robust).any()
    assert (verified.sum(1) <= robust.sum(1)).all()
    assert verified[1].sum() > 0  # a real comparison, not 0 <= anything
    assert (verified[:-1].int() >= verified[1:].int()).all()  # monotone in eps


def test_restores_training_mode_and_refuses_bad_eps() -> None:
    model, x, y = _linear_digits_model()
    model.train()
    verified_ibp(model, x[:4], y[:4], [0.01], batch_size=2)
    assert model.training
    for bad in ([], [-0.1], [8.0], [float("nan")]):
        with pytest.raises(UserError, match="eps"):
            verified_ibp(model, x[:4], y[:4], bad, batch_size=2)


def test_a_forward_the_walk_does_not_reproduce_is_refused() -> None:
    model, x, y = _linear_digits_model()
    linear = model.get_submodule("net.1")
    linear.register_forward_hook(lambda m, i, o: -o)  # forward no longer the structure
    with pytest.raises(RuntimeError, match="differs from its forward"):
        verified_ibp(model, x[:4], y[:4], [0.01], batch_size=4)
