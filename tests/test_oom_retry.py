"""Out-of-memory on an attack batch: retried once with half the batch, then a clear user error."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import evaluations.engine.spec as spec_module
from attacks import Attack, get_attack
from evaluations.engine.cell_attack import attack_cell
from rbs.cli import main
from robustbench_sparse.checkpoint import save_checkpoint
from robustbench_sparse.datasets import dataset_info
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from tests.core_helpers import WIDTH, single_thread

EPS = [0.0, 0.1, 0.2]
OOM_MESSAGE = (
    "out of memory on a batch of 32 examples even after retrying with 16; "
    "pass a smaller --batch-size"
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


class OomAbove:
    """Wraps an attack; raises ``error`` for batches larger than ``limit`` (records every size)."""

    def __init__(self, inner: Attack, limit: int, error: BaseException | None = None) -> None:
        self.inner, self.limit = inner, limit
        self.error = error or torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate")
        self.sizes: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, **kw: Any) -> Any:
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise self.error
        return self.inner(model, x, y, **kw)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    info = dataset_info("digits")
    model = create_model(
        "small_cnn", num_classes=10, in_channels=1, mean=info.mean, std=info.std, width=WIDTH
    )
    return model.eval()


def _data(n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _cell(attack: Any, batch_size: int) -> Any:
    x, y = _data()
    return attack_cell(
        _model(), attack, x, y, EPS, batch_size=batch_size, device=torch.device("cpu")
    )


@pytest.mark.parametrize(
    "error",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: out of memory"),
        MemoryError(),
    ],
    ids=["cuda-oom", "runtime-oom", "memory-error"],
)
def test_oom_batch_is_retried_once_with_half_the_batch(
    error: BaseException, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = OomAbove(get_attack("pgd", steps=3), limit=16, error=error)
    with caplog.at_level(logging.WARNING, logger="evaluations.engine.cell_attack"):
        cell = _cell(flaky, batch_size=32)
    # 32 fails, then the rest runs at 16: [0:16], [16:32], [32:40].
    assert flaky.sizes == [32, 16, 16, 8]
    assert "retrying with 16" in caplog.text
    reference = _cell(get_attack("pgd", steps=3), batch_size=16)
    assert cell.robust.shape == (len(EPS), 40)
    np.testing.assert_array_equal(cell.robust, reference.robust)
    np.testing.assert_array_equal(cell.clean_correct, reference.clean_correct)
    np.testing.assert_array_equal(cell.norms, reference.norms)


def test_second_oom_is_a_user_error_naming_both_sizes() -> None:
    flaky = OomAbove(get_attack("fgsm"), limit=8)
    with pytest.raises(UserError) as info:
        _cell(flaky, batch_size=32)
    assert str(info.value) == OOM_MESSAGE
    assert flaky.sizes == [32, 16]  # exactly one retry


def test_oom_at_batch_size_one_is_a_user_error() -> None:
    flaky = OomAbove(get_attack("fgsm"), limit=0)
    with pytest.raises(UserError, match="batch of 1 example"):
        _cell(flaky, batch_size=1)
    assert flaky.sizes == [1]


def test_other_runtime_errors_are_bugs_and_propagate() -> None:
    flaky = OomAbove(get_attack("fgsm"), limit=8, error=RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        _cell(flaky, batch_size=32)
    assert flaky.sizes == [32]


def test_rbs_attack_reports_oom_in_one_line_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    info = dataset_info("digits")
    ckpt = save_checkpoint(
        tmp_path / "ck",
        _model(),
        {
            "name": "ck",
            "arch": "small_cnn",
            "arch_kwargs": {"width": WIDTH},
            "dataset": "digits",
            "num_classes": 10,
            "in_channels": 1,
            "normalization": {"mean": list(info.mean), "std": list(info.std)},
        },
    )
    real = spec_module.get_attack
    monkeypatch.setattr(
        spec_module, "get_attack", lambda name, **kw: OomAbove(real(name, **kw), limit=8)
    )
    argv = ["attack", "--checkpoint", str(ckpt), "--attack", "fgsm", "--limit", "40"]
    argv += ["--batch-size", "32", "--no-report", "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"rbs attack: error: {OOM_MESSAGE}"
    assert not any("Traceback" in line for line in err)
