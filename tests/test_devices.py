"""devices.resolve_device: auto/cpu/cuda mapping and the user errors where CUDA is absent."""

from __future__ import annotations

import pytest
import torch

from robustbench_sparse.devices import resolve_device
from robustbench_sparse.errors import UserError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


@no_cuda
def test_auto_is_cpu_without_cuda() -> None:
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device() == torch.device("cpu")


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu "])
def test_cpu_is_case_and_space_insensitive(name: str) -> None:
    assert resolve_device(name) == torch.device("cpu")


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_cuda_is_a_user_error(name: str) -> None:
    with pytest.raises(UserError, match="CUDA is not available") as info:
        resolve_device(name)
    assert "--device cpu" in str(info.value)


@pytest.mark.parametrize("name", ["gpu", "tpu", "mps0", ""])
def test_unknown_device_lists_valid_ones(name: str) -> None:
    with pytest.raises(UserError, match="valid: auto, cpu, cuda, cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_index_beyond_visible_devices_is_a_user_error() -> None:
    with pytest.raises(UserError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
