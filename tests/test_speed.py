"""speed: the GEMM / CSR / 2:4 forms compute the model's outputs; timings carry their evidence."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, SparsityConfig, compute_mask, create_sparsifier
from robustbench_sparse.speed import (
    batches_from,
    gemm_model,
    interleaved_medians,
    measure_speed,
    semi_structured_eligible,
    sparse_csr_model,
)
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _nm_resnet(target: float = 0.75) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, in_channels=3).eval()
    sp = create_sparsifier(SparsityConfig(target=target, granularity="nm", end=0.0), 1)
    sp.prepare(model)
    return model


def test_gemm_and_csr_forms_match_the_conv_model() -> None:
    model = _nm_resnet()
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
        assert torch.allclose(gemm_model(model)(x), ref, atol=1e-5, rtol=1e-4)
        assert torch.allclose(sparse_csr_model(model)(x), ref, atol=1e-5, rtol=1e-4)


def test_gemm_weight_of_an_nm_conv_is_a_2to4_matrix_in_rsc_order() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(128, 64, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.mul_(compute_mask(conv.weight, 0.5, Granularity.NM))
    weight = gemm_model(nn.Sequential(conv))[0].weight  # (K, R*S*C)
    assert weight.shape == (64, 9 * 128)
    assert semi_structured_eligible(weight)
    # the same weight in PyTorch's (c, r, s) order is not 2:4: the order matters
    assert not semi_structured_eligible(conv.weight.detach().reshape(64, -1))
    window = nn.Conv2d(128, 64, 3, bias=False)
    with torch.no_grad():
        window.weight.mul_(compute_mask(window.weight, 0.7, Granularity.WINDOW))
    assert not semi_structured_eligible(gemm_model(nn.Sequential(window))[0].weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="2:4 semi-structured needs CUDA (sm80+)")
def test_to_sparse_semi_structured_accepts_nm_masks() -> None:  # pragma: no cover - GPU only
    from torch.sparse import to_sparse_semi_structured

    torch.manual_seed(0)
    w = torch.randn(128, 256, device="cuda", dtype=torch.float16)
    w = w * compute_mask(w, 0.5, Granularity.NM)
    x = torch.randn(256, 64, device="cuda", dtype=torch.float16)
    sparse = to_sparse_semi_structured(w)
    assert torch.allclose(sparse @ x, w @ x, atol=1e-2, rtol=1e-2)


def test_measure_speed_records_every_variant_with_its_evidence() -> None:
    result = measure_speed(_nm_resnet(), (3, 8, 8), batches=[2], repeats=1, min_block_s=0.0)
    env = result["environment"]
    for key in ("device", "torch", "threads", "loadavg_1_5_15"):
        assert key in env
    assert env["threads"] == 1
    info = result["info"]
    assert info["macs_masked"] > info["macs_thin"] and info["channels_removed"] > 0
    assert info["predicted_thin_speedup"] == pytest.approx(info["macs_masked"] / info["macs_thin"])
    assert "CUDA" in info["skipped"]["2:4"]
    variants = {r["variant"] for r in result["records"]}
    assert variants == {"masked", "thin", "csr"}
    for r in result["records"]:
        assert r["batch"] == 2 and r["min_s"] <= r["median_s"] <= r["max_s"]
    masked = next(r for r in result["records"] if r["variant"] == "masked")
    assert masked["speedup_vs_masked"] == 1.0


def test_interleaved_medians_and_batches() -> None:
    calls = {"a": 0}

    def fn() -> None:
        calls["a"] += 1

    out = interleaved_medians({"a": fn}, torch.device("cpu"), repeats=3, warmup=2, min_block_s=0)
    assert out["a"]["median_s"] >= 0 and calls["a"] == 2 + 1 + 3
    assert batches_from("1,32, 256") == [1, 32, 256]
    for bad in ("0", "a", ""):
        with pytest.raises(UserError, match="positive integers"):
            batches_from(bad)
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            measure_speed(_nm_resnet(), (3, 8, 8), device="cuda", batches=[1], repeats=1)
