"""A roofline estimate of inference time on a named, configurable accelerator (modelled).

Each engine runs each layer in ``max(compute, memory)`` time per input example:

* compute = ``MACs_engine · imbalance_engine / (mac_lanes · clock)``: the lanes wait for the
  slowest (:mod:`robustbench_sparse.cost.imbalance`); dense, compact and 2:4 engines are balanced;
* memory = ``(weight_bytes_engine / batch + activation_bytes_engine) / bandwidth``: weights are
  streamed once per batch, activations once per example (no on-chip reuse across layers).

So at batch 1 a sparse layer is mostly weight-streaming bound (its speed-up follows the weight
bytes, values plus position metadata), at a large batch compute bound (the speed-up follows the
MACs over the imbalance). Engines (the rows of ``rbs cost``):

==========================  ==============================================================
``dense``                   dense MACs, dense weights
``compact``                 compact MACs and shapes (a dense engine on the thinned model)
``zero-skip/<mapping>``     effective MACs × the mapping's imbalance; kept values + the
                            packed export's rank codes
``2to4``                    2:4 MACs; half the values + 2 bits per stored value where
                            compliant, dense elsewhere
==========================  ==============================================================

The default :class:`AcceleratorSpec` is **illustrative** (an edge NPU class device: 1024 int8 MAC
lanes at 1 GHz, 25.6 GB/s of DRAM bandwidth), not a product; every number from here is a model,
labelled so, never a measurement (``rbs speed`` measures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustbench_sparse.errors import UserError

__all__ = ["AcceleratorSpec", "EngineTime", "LayerLoad", "roofline"]


@dataclass(frozen=True)
class AcceleratorSpec:
    """A modelled accelerator: MAC lanes, clock, memory bandwidth and value width.

    Defaults are illustrative (an edge NPU class device), not a product.
    """

    name: str = "illustrative-npu"
    mac_lanes: int = 1024
    clock_ghz: float = 1.0
    bandwidth_gbs: float = 25.6  # GB/s = 1e9 bytes/s
    value_bits: int = 8  # weights and activations

    def __post_init__(self) -> None:
        if self.mac_lanes < 1 or self.clock_ghz <= 0 or self.bandwidth_gbs <= 0:
            raise UserError(
                f"accelerator {self.name!r}: MAC lanes, clock and bandwidth must be positive"
            )
        if self.value_bits < 1:
            raise UserError(f"accelerator {self.name!r}: value bits must be >= 1")

    @property
    def macs_per_second(self) -> float:
        """Peak MACs per second."""
        return self.mac_lanes * self.clock_ghz * 1e9

    @property
    def bytes_per_second(self) -> float:
        """Memory bandwidth in bytes per second."""
        return self.bandwidth_gbs * 1e9


@dataclass(frozen=True)
class LayerLoad:
    """One layer's work per engine: MACs, imbalance, weight bytes and activation bytes."""

    macs: Mapping[str, int]
    imbalance: Mapping[str, float]
    weight_bytes: Mapping[str, float]
    activation_bytes: Mapping[str, float]


@dataclass(frozen=True)
class EngineTime:
    """Modelled seconds per input example of one engine, at batch 1 and at a large batch."""

    seconds_batch1: float
    seconds_batch: float
    memory_bound_layers_batch1: int
    memory_bound_layers_batch: int


def _layer_time(
    load: LayerLoad, engine: str, spec: AcceleratorSpec, batch: int
) -> tuple[float, bool]:
    imb = load.imbalance.get(engine, 1.0)
    imb = 1.0 if not math.isfinite(imb) else imb
    compute = load.macs[engine] * imb / spec.macs_per_second
    memory = (
        load.weight_bytes[engine] / batch + load.activation_bytes[engine]
    ) / spec.bytes_per_second
    return max(compute, memory), memory > compute


def roofline(
    layers: Sequence[LayerLoad], engines: Sequence[str], spec: AcceleratorSpec, batch: int
) -> dict[str, EngineTime]:
    """Modelled seconds per example of each engine over all layers (sum of layer times).

    Raises:
        UserError: ``batch < 1``.
    """
    if batch < 1:
        raise UserError(f"batch must be >= 1, got {batch}")
    out: dict[str, EngineTime] = {}
    for engine in engines:
        one = [_layer_time(load, engine, spec, 1) for load in layers]
        big = [_layer_time(load, engine, spec, batch) for load in layers]
        out[engine] = EngineTime(
            seconds_batch1=sum(t for t, _ in one),
            seconds_batch=sum(t for t, _ in big),
            memory_bound_layers_batch1=sum(m for _, m in one),
            memory_bound_layers_batch=sum(m for _, m in big),
        )
    return out
