"""Measured inference speed of a pruned model on real engines, with the evidence beside each number.

What is timed (forward passes in ``torch.inference_mode``, eval mode, one process):

- ``masked``: the checkpoint as trained, zeros and all, on the dense engine (oneDNN on CPU,
  cuDNN on CUDA). The reference of every ratio.
- ``thin``: the same model with every exactly-zero channel removed
  (:func:`robustbench_sparse.thin.thin_model`). Its *predicted* speed-up is the MAC ratio
  masked / thin (:func:`~robustbench_sparse.thin.count_macs`), and per batch the layer-time
  prediction (:mod:`robustbench_sparse.speed_prediction`: each layer's masked time scaled by its
  own work ratio; layers that are not thinned, such as the first conv and pooling, keep theirs).
- ``csr`` (CPU only): every conv as unfold + ``torch.sparse.mm`` with the weight in CSR and every
  Linear as CSR x dense: the *honest negative control*; at Campfire's densities CSR kernels run
  slower than the dense engine (measured 0.17-0.74x in the project's research note).
- ``2:4`` (CUDA only): every layer whose weight is a valid 2:4 pattern along the input channels
  (granularity ``nm``) as a GEMM with ``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt /
  CUTLASS; a 3x3 conv is an unfold in (r, s, c) order + GEMM, the unfold's cost counted), in
  half precision against the same GEMM model dense. Without CUDA it is reported as skipped.

Timing: warm-up calls, then ``repeats`` blocks of calls each at least ``min_block_s`` long;
variants are interleaved block by block so load drift hits all alike; the median seconds per call
is reported with its spread. Every record carries device, versions, threads, batch and the load
average (:func:`environment`). Ratios closer to 1 than the masked/masked noise are noise.
"""

from __future__ import annotations

import copy
import logging
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.speed_prediction import layer_time_prediction
from robustbench_sparse.thin import thin_model

__all__ = [
    "GemmConv",
    "batches_from",
    "environment",
    "gemm_model",
    "interleaved_medians",
    "measure_speed",
    "semi_structured_eligible",
    "sparse_csr_model",
]

logger = logging.getLogger(__name__)


def environment(device: torch.device) -> dict[str, Any]:
    """Device, versions, threads and load: the sidecar of every timing."""
    env: dict[str, Any] = {
        "device": str(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["capability"] = list(torch.cuda.get_device_capability(device))
        env["cuda"] = torch.version.cuda
        cusparselt = getattr(torch.backends, "cusparselt", None)
        env["cusparselt"] = (
            cusparselt.version() if cusparselt and cusparselt.is_available() else None
        )
    return env


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    *,
    repeats: int = 7,
    warmup: int = 3,
    min_block_s: float = 0.05,
) -> dict[str, dict[str, float]]:
    """Median seconds per call of each function, blocks interleaved; also min and max.

    Each function is warmed up ``warmup`` times and calibrated to run ``n`` calls per block
    (at least ``min_block_s``); then ``repeats`` rounds run one block of every function in turn.
    """
    calls: dict[str, int] = {}
    for name, fn in fns.items():
        for _ in range(warmup):
            fn()
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        one = max(time.perf_counter() - t0, 1e-7)
        calls[name] = max(1, int(min_block_s / one))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(calls[name]):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) / calls[name])
    return {
        name: {"median_s": statistics.median(s), "min_s": min(s), "max_s": max(s)}
        for name, s in samples.items()
    }


# ---------------------------------------------------------------- conv as unfold + GEMM
class GemmConv(nn.Module):
    """A ``Conv2d`` (groups = 1) computed as unfold + one GEMM, columns in (r, s, c) order.

    ``weight``: ``(K, R*S*C)`` from ``W.permute(0, 2, 3, 1)``, so 4 consecutive columns are 4
    consecutive input channels at one kernel position: a 2:4 mask along ``C`` (granularity
    ``nm``) is a 2:4 matrix, the layout ``to_sparse_semi_structured`` takes. ``weight`` may be
    dense, CSR (``torch.sparse.mm``) or semi-structured (CUDA).
    """

    def __init__(self, conv: nn.Conv2d, weight: Tensor) -> None:
        super().__init__()
        self.kernel_size = conv.kernel_size
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.weight: Tensor  # (K, R*S*C), a buffer (inference only): moves with .to()
        self.bias: Tensor | None
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if conv.bias is None else conv.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """``(N, C, H, W)`` -> ``(N, K, Ho, Wo)``."""
        n, c = x.shape[0], x.shape[1]
        kh, kw = self.kernel_size
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)  # type: ignore[arg-type]
        p = cols.shape[-1]  # Ho*Wo
        cols = cols.reshape(n, c, kh * kw, p).permute(2, 1, 0, 3).reshape(kh * kw * c, n * p)
        if self.weight.layout == torch.sparse_csr:
            out = torch.sparse.mm(self.weight, cols)  # (K, N*P)
        else:
            out = self.weight @ cols  # (K, N*P)
        if self.bias is not None:
            out = out + self.bias[:, None]
        ho = _out_size(x.shape[2], kh, self.stride[0], self.padding[0], self.dilation[0])
        return out.reshape(self.out_channels, n, ho, p // ho).transpose(0, 1)


def _out_size(size: int, kernel: int, stride: int, padding: Any, dilation: int) -> int:
    """Output length of a conv along one axis (``padding`` an int; "same"/"valid" unsupported)."""
    return (size + 2 * int(padding) - dilation * (kernel - 1) - 1) // stride + 1


class _SparseLinear(nn.Module):
    """``Linear`` with a CSR weight: ``y = (W_csr @ x^T)^T + b``."""

    def __init__(self, linear: nn.Linear, weight: Tensor) -> None:
        super().__init__()
        self.weight: Tensor
        self.bias: Tensor | None
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        """``(N, F)`` -> ``(N, K)``."""
        out = torch.sparse.mm(self.weight, x.t()).t()
        return out if self.bias is None else out + self.bias


def _rsc(conv: nn.Conv2d) -> Tensor:
    return conv.weight.detach().permute(0, 2, 3, 1).reshape(conv.out_channels, -1).contiguous()


def _replace(model: nn.Module, make: Callable[[str, nn.Module], nn.Module | None]) -> int:
    """Replace modules in place by ``make(name, module)`` (None: keep); returns the count."""
    count = 0
    for name, module in list(model.named_modules()):
        new = make(name, module)
        if new is None:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
        count += 1
    return count


def gemm_model(model: nn.Module) -> nn.Module:
    """A copy with every ungrouped ``Conv2d`` as :class:`GemmConv` (dense weights; same outputs)."""
    out = copy.deepcopy(model).eval()

    def make(_name: str, m: nn.Module) -> nn.Module | None:
        return GemmConv(m, _rsc(m)) if isinstance(m, nn.Conv2d) and m.groups == 1 else None

    _replace(out, make)
    return out


def sparse_csr_model(model: nn.Module) -> nn.Module:
    """A copy computing every conv (unfold + GEMM) and Linear with CSR weights (CPU control)."""
    out = copy.deepcopy(model).eval()

    def make(_name: str, m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
                warnings.simplefilter("ignore", UserWarning)
                return GemmConv(m, _rsc(m).to_sparse_csr())
        if isinstance(m, nn.Linear):
            return _SparseLinear(m, m.weight.detach().to_sparse_csr())
        return None

    _replace(out, make)
    return out


def semi_structured_eligible(weight: Tensor) -> bool:
    """True when a ``(K, F)`` GEMM weight is 2:4 in every row group of 4 and fits the kernels.

    cuSPARSELt / CUTLASS need (half precision) rows and columns in multiples of 64 / 128 on
    some versions; the conservative rule here: ``K % 64 == 0`` and ``F % 128 == 0``.
    """
    k, f = weight.shape
    if k % 64 or f % 128:
        return False
    groups = (weight != 0).reshape(k, f // 4, 4).sum(dim=-1)  # (K, F/4)
    return bool((groups <= 2).all())


def semi_structured_model(
    model: nn.Module, dtype: torch.dtype, device: torch.device
) -> tuple[nn.Module, int, int]:
    """CUDA: a :func:`gemm_model` in ``dtype`` with eligible weights as 2:4 semi-structured.

    Returns (model on ``device``, converted layers, dense-left layers). Needs CUDA and sm80+.
    """
    from torch.sparse import to_sparse_semi_structured

    out = gemm_model(model).to(device=device, dtype=dtype)
    converted = left = 0
    for module in out.modules():
        if isinstance(module, GemmConv | nn.Linear):
            weight = module.weight.detach()
            if semi_structured_eligible(weight):
                sparse = to_sparse_semi_structured(weight.contiguous())
                if isinstance(module, nn.Linear):
                    module.weight = nn.Parameter(sparse, requires_grad=False)
                else:
                    module.weight = sparse
                converted += 1
            else:
                left += 1
    return out, converted, left


def batches_from(text: str | Sequence[int]) -> list[int]:
    """``"1,32,256"`` -> ``[1, 32, 256]`` (positive integers)."""
    try:
        values = [int(v) for v in (text.split(",") if isinstance(text, str) else text)]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise UserError(f"--batch takes positive integers separated by commas, got {text!r}")
    return values


def _variants(
    model: nn.Module, input_shape: Sequence[int], device: torch.device
) -> tuple[dict[str, nn.Module], dict[str, Any]]:
    """The models to time on ``device`` and what is known about them (MACs, skips)."""
    info: dict[str, Any] = {"skipped": {}}
    masked = copy.deepcopy(model).eval()
    thin = thin_model(masked, input_shape)
    info["macs_masked"], info["macs_thin"] = thin.macs_before, thin.macs_after
    info["predicted_thin_speedup"] = thin.macs_before / max(thin.macs_after, 1)
    info["channels_removed"] = sum(thin.removed.values())
    models: dict[str, nn.Module] = {"masked": masked, "thin": thin.model}
    if device.type == "cpu":
        models["csr"] = sparse_csr_model(masked)
        info["skipped"]["2:4"] = "needs CUDA (sparse tensor cores, sm80+)"
    else:
        info["skipped"]["csr"] = "the CSR negative control runs on CPU only"
        try:
            half, converted, left = semi_structured_model(masked, torch.float16, device)
        except (RuntimeError, ImportError) as exc:  # no cuSPARSELt / CUTLASS for this GPU
            info["skipped"]["2:4"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        else:
            info["layers_2to4"], info["layers_2to4_dense"] = converted, left
            models["gemm_fp16"] = gemm_model(masked).to(torch.float16)
            if converted:
                models["2:4_fp16"] = half
            else:
                info["skipped"]["2:4"] = "no layer holds a valid 2:4 pattern (train with nm)"
    return {k: m.to(device).eval() for k, m in models.items()}, info


def _probe_2to4(
    models: dict[str, nn.Module],
    x: Tensor,
    batch: int,
    fns: dict[str, Callable[[], object]],
    info: dict[str, Any],
) -> None:
    """Run the 2:4 model once: drop it for this batch if the kernel refuses the shape, else
    record its largest difference from the dense GEMM model (both fp16)."""
    try:
        with torch.inference_mode():
            got, want = models["2:4_fp16"](x), models["gemm_fp16"](x)
    except RuntimeError as exc:
        info["skipped"][f"2:4 batch {batch}"] = f"{type(exc).__name__}: {str(exc)[:160]}"
        del fns["2:4_fp16"]
        return
    info.setdefault("max_abs_diff_2to4_vs_dense_fp16", {})[batch] = float(
        (got.float() - want.float()).abs().max()
    )


def _forward(model: nn.Module, x: Tensor) -> Callable[[], object]:
    return lambda: model(x)


def measure_speed(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: str | torch.device = "cpu",
    batches: Sequence[int] = (1, 32, 256),
    repeats: int = 7,
    min_block_s: float = 0.05,
) -> dict[str, Any]:
    """Time the masked, thin, CSR (CPU) and 2:4 (CUDA) forms of ``model`` at every batch size.

    ``input_shape``: one example ``(C, H, W)``, pixels in [0, 1]. Returns ``environment``,
    ``info`` (MACs, predicted thin speed-up, skipped variants with the reason) and ``records``:
    one per (batch, variant) with ``median_s`` (seconds per forward of the whole batch),
    ``min_s``, ``max_s`` and ``speedup_vs_masked`` (ratio of medians; half-precision 2:4 is
    compared with the same GEMM model in half precision, ``gemm_fp16``); the ``thin`` record also
    has ``predicted_speedup_layer_time``.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible; use --device cpu")
    models, info = _variants(model, input_shape, dev)
    records: list[dict[str, Any]] = []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        x = torch.rand(batch, *input_shape, generator=gen).to(dev)  # (N, C, H, W)
        xh = x.half()
        fns: dict[str, Callable[[], object]] = {}
        for name, m in models.items():
            inp = xh if name.endswith("fp16") else x
            fns[name] = _forward(m, inp)
        if "2:4_fp16" in fns:
            _probe_2to4(models, xh, batch, fns, info)
        with torch.inference_mode():
            times = interleaved_medians(fns, dev, repeats=repeats, min_block_s=min_block_s)
        layer = layer_time_prediction(models["masked"], models["thin"], x, repeats=repeats)
        for name, t in times.items():
            base = times["gemm_fp16" if name == "2:4_fp16" else "masked"]["median_s"]
            record = {
                "batch": batch,
                "variant": name,
                **t,
                "speedup_vs_masked": base / t["median_s"],
            }
            if name == "thin":  # Amdahl: each layer's masked time scaled by its own work ratio
                record["predicted_speedup_layer_time"] = layer["predicted_speedup"]
            records.append(record)
        logger.info(
            "speed batch %d: %s", batch, {k: f"{v['median_s']:.3g}s" for k, v in times.items()}
        )
    return {"environment": environment(dev), "info": info, "records": records}
