"""training.evaluation: clean accuracy counts (eval mode restored), the all-ranks variant."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.models import create_model_for
from robustbench_sparse.training.evaluation import evaluate, evaluate_all
from tests.core_helpers import WIDTH, single_thread, tiny_digits


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    info = tiny_digits().info
    return create_model_for("small_cnn", info, width=WIDTH)


def test_evaluate_counts_and_restores_mode() -> None:
    model = _model()
    model.train()
    loss, correct, n = evaluate(model, tiny_digits().test, device=torch.device("cpu"))
    assert n == len(tiny_digits().test)  # type: ignore[arg-type]
    assert 0 <= correct <= n and math.isfinite(loss) and loss > 0
    assert model.training


def test_evaluate_all_is_evaluate_in_a_single_process() -> None:
    model = _model(1)
    device = torch.device("cpu")
    test = tiny_digits().test
    assert evaluate_all(model, test, device=device) == evaluate(model, test, device=device)
    assert (
        evaluate_all(model, test, device=device, batch_size=7)[1:]
        == evaluate(model, test, device=device)[1:]
    )
