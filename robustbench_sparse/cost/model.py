"""The cost model of a whole model: per-layer and total MACs, imbalance, metadata, bytes, roofline.

:func:`model_cost` traces one forward pass (:mod:`~robustbench_sparse.cost.trace`), finds the
compact shapes (:mod:`~robustbench_sparse.cost.channels`) and evaluates every conv / linear call:
MACs (:mod:`~robustbench_sparse.cost.macs`), load imbalance per mapping
(:mod:`~robustbench_sparse.cost.imbalance`), position-metadata bits per format
(:mod:`~robustbench_sparse.cost.metadata`), weight and activation bytes per engine, and a
roofline estimate (:mod:`~robustbench_sparse.cost.roofline`). Everything is a pure function of the
weights, the masks and the input shape; nothing is timed. MACs and metadata bits are exact counts;
imbalance, bytes and times are *modelled* for the named mapping / engine / accelerator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from robustbench_sparse.cost.channels import CompactShape, compact_channels
from robustbench_sparse.cost.imbalance import MAPPINGS, imbalance
from robustbench_sparse.cost.macs import LayerMacs, layer_macs, nm_compliant
from robustbench_sparse.cost.metadata import FORMATS, metadata_bits
from robustbench_sparse.cost.roofline import AcceleratorSpec, EngineTime, LayerLoad, roofline
from robustbench_sparse.cost.trace import LayerCall, trace_channels
from robustbench_sparse.errors import UserError

__all__ = ["ENGINES", "MAC_KEYS", "LayerCost", "ModelCost", "model_cost"]

#: the MAC counts of every layer and of the total, as named in ``--json``
MAC_KEYS = ("macs_dense", "macs_effective", "macs_compact", "macs_2to4")
#: engine -> the MAC count it runs
ENGINES: dict[str, str] = {
    "dense": "macs_dense",
    "compact": "macs_compact",
    **{f"zero-skip/{m}": "macs_effective" for m in MAPPINGS},
    "2to4": "macs_2to4",
}
MODELLED = "modelled, not measured"


@dataclass
class LayerCost:
    """The cost of one conv / linear call per input example (see :func:`model_cost`)."""

    name: str
    kind: str  # "conv" / "linear"
    weight_shape: tuple[int, ...]
    out_hw: tuple[int, int]
    macs: LayerMacs
    kept_filters: int
    kept_inputs: int
    nm_compliant: bool
    imbalance: dict[str, float]
    metadata_bits: dict[str, int | None]
    weight_bytes: dict[str, float]
    activation_bytes: dict[str, float]

    def load(self) -> LayerLoad:
        """The per-engine work the roofline needs."""
        macs = self.macs.as_dict()
        return LayerLoad(
            macs={e: macs[key] for e, key in ENGINES.items()},
            imbalance={f"zero-skip/{m}": v for m, v in self.imbalance.items()},
            weight_bytes=self.weight_bytes,
            activation_bytes=self.activation_bytes,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN imbalance -> null)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "weight_shape": list(self.weight_shape),
            "out_hw": list(self.out_hw),
            **self.macs.as_dict(),
            "kept_filters": self.kept_filters,
            "kept_inputs": self.kept_inputs,
            "nm_compliant": self.nm_compliant,
            "imbalance": {k: _finite(v) for k, v in self.imbalance.items()},
            "metadata_bits": dict(self.metadata_bits),
            "weight_bytes": dict(self.weight_bytes),
            "activation_bytes": dict(self.activation_bytes),
        }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class ModelCost:
    """Per-layer costs, their totals and the roofline estimate of one model."""

    input_shape: tuple[int, ...]
    layers: list[LayerCost]
    spec: AcceleratorSpec
    batch: int
    times: dict[str, EngineTime] = field(default_factory=dict)

    def total(self) -> dict[str, Any]:
        """Sums over layers: the MAC keys, speed-ups (dense / other), bytes, metadata bits, and the
        MAC-weighted imbalance per mapping (``sum eff·imb / sum eff``)."""
        out: dict[str, Any] = {k: sum(lc.macs.as_dict()[k] for lc in self.layers) for k in MAC_KEYS}
        dense = out["macs_dense"]
        for key in ("effective", "compact", "2to4"):
            other = out[f"macs_{key}"]
            out[f"speedup_{key}"] = dense / other if other else None
        eff = [lc.macs.effective for lc in self.layers]
        out["imbalance"] = {
            m: _finite(
                sum(e * lc.imbalance[m] for e, lc in zip(eff, self.layers, strict=True) if e)
                / sum(eff)
                if sum(eff)
                else math.nan
            )
            for m in MAPPINGS
        }
        out["metadata_bits"] = {
            f: sum(int(lc.metadata_bits[f] or 0) for lc in self.layers) for f in FORMATS
        }
        for kind in ("weight_bytes", "activation_bytes"):
            out[kind] = {e: sum(getattr(lc, kind)[e] for lc in self.layers) for e in ENGINES}
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``rbs cost --json`` object: ``layers``, ``total``, ``roofline`` and the labels."""
        dense = self.times.get("dense")
        engines = {}
        for name, t in self.times.items():
            engines[name] = {
                "seconds_batch1": t.seconds_batch1,
                "seconds_batch": t.seconds_batch,
                "speedup_batch1": dense.seconds_batch1 / t.seconds_batch1 if dense else None,
                "speedup_batch": dense.seconds_batch / t.seconds_batch if dense else None,
                "memory_bound_layers_batch1": t.memory_bound_layers_batch1,
                "memory_bound_layers_batch": t.memory_bound_layers_batch,
            }
        return {
            "input_shape": list(self.input_shape),
            "per": "one input example",
            "layers": [lc.to_dict() for lc in self.layers],
            "total": self.total(),
            "mappings": dict(MAPPINGS),
            "metadata_formats": dict(FORMATS),
            "roofline": {
                "label": f"{MODELLED}: roofline on accelerator {self.spec.name!r} (illustrative)",
                "accelerator": vars(self.spec).copy(),
                "batch": self.batch,
                "engines": engines,
            },
            "labels": {
                "macs": "exact counts of the model's layers (not timed)",
                "imbalance": f"{MODELLED}: max/mean nonzero weights per lane, per mapping",
                "bytes": f"{MODELLED}: {self.spec.value_bits}-bit values + position metadata",
            },
        }


def _nonzero(weight: Tensor, mask: Tensor | None) -> tuple[np.ndarray, np.ndarray]:
    w = weight.detach().to("cpu")
    nz = (w != 0).numpy()
    m = nz if mask is None else mask.detach().to("cpu", torch.bool).numpy()
    if m.shape != nz.shape:
        raise UserError(f"mask of shape {m.shape} does not fit weight of shape {nz.shape}")
    return nz & m, m


def _layer(
    call: LayerCall, weight: Tensor, mask: Tensor | None, shape: CompactShape, spec: AcceleratorSpec
) -> LayerCost:
    nonzero, kept = _nonzero(weight, mask)
    macs = layer_macs(
        call.weight_shape, call.out_hw, nonzero, shape.filters, shape.inputs, call.groups
    )
    meta = metadata_bits(kept)
    vb = spec.value_bits / 8
    numel = nonzero.size
    window = math.prod(call.weight_shape[2:]) if call.kind == "conv" else 1
    compliant = call.groups == 1 and nm_compliant(nonzero)
    compact_numel = shape.filters * shape.inputs * window if call.groups == 1 else numel
    weight_bytes = {
        "dense": numel * vb,
        "compact": compact_numel * vb,
        **{f"zero-skip/{m}": int(kept.sum()) * vb + int(meta["rank"] or 0) / 8 for m in MAPPINGS},
        "2to4": numel / 2 * vb + numel / 8 if compliant else numel * vb,
    }
    spatial = math.prod(call.in_shape[1:]) if len(call.in_shape) > 1 else 1
    positions = call.out_hw[0] * call.out_hw[1]
    dense_act = (math.prod(call.in_shape) + call.weight_shape[0] * positions) * vb
    compact_act = (shape.inputs * spatial + shape.filters * positions) * vb
    activation_bytes = {e: dense_act for e in ENGINES} | {"compact": compact_act}
    return LayerCost(
        name=call.name,
        kind=call.kind,
        weight_shape=call.weight_shape,
        out_hw=call.out_hw,
        macs=macs,
        kept_filters=shape.filters,
        kept_inputs=shape.inputs,
        nm_compliant=compliant,
        imbalance={m: imbalance(nonzero, m) for m in MAPPINGS},
        metadata_bits=meta,
        weight_bytes=weight_bytes,
        activation_bytes=activation_bytes,
    )


def model_cost(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None,
    input_shape: Sequence[int],
    *,
    spec: AcceleratorSpec | None = None,
    batch: int = 256,
) -> ModelCost:
    """The cost model of ``model`` for one input example of ``input_shape`` ``(C, H, W)``.

    ``masks`` maps weight parameter names (``"net.conv2.0.weight"``) to bool keep-masks of the
    weight's shape (a checkpoint's ``LoadedCheckpoint.masks``); a layer without a mask is described
    by its nonzero weights. ``batch`` is the large-batch regime of the roofline.

    Raises:
        UserError: an input shape the model cannot run, or a mask that does not fit its weight.
    """
    spec = spec or AcceleratorSpec()
    masks = masks or {}
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise UserError(f"input shape must be positive integers C,H,W, got {shape}")
    try:
        trace = trace_channels(model, shape)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"the model cannot run on input shape {shape}: {first}") from None
    params = dict(model.named_parameters())
    nonzero = {}
    for call in trace.layers:
        nz, _ = _nonzero(params[call.param], masks.get(call.param))
        nonzero[call.param] = nz.reshape(nz.shape[0], nz.shape[1], -1)  # (K, C, kh*kw)
    compact = compact_channels(trace, nonzero)
    layers = []
    seen: dict[str, int] = {}
    for call, cshape in zip(trace.layers, compact, strict=True):
        cost = _layer(call, params[call.param], masks.get(call.param), cshape, spec)
        seen[call.name] = seen.get(call.name, 0) + 1
        if seen[call.name] > 1:  # a module called twice (shared weights): one row per call
            cost.name = f"{call.name}#{seen[call.name]}"
        layers.append(cost)
    result = ModelCost(shape, layers, spec, batch)
    result.times = roofline([lc.load() for lc in layers], list(ENGINES), spec, batch)
    return result
