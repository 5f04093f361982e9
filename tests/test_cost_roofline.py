"""cost.roofline: max(compute, memory) per layer on a configurable accelerator (by hand)."""

from __future__ import annotations

import pytest

from robustbench_sparse.cost.roofline import AcceleratorSpec, LayerLoad, roofline
from robustbench_sparse.errors import UserError


def test_compute_and_memory_regimes_by_hand() -> None:
    spec = AcceleratorSpec(name="toy", mac_lanes=10, clock_ghz=1.0, bandwidth_gbs=1.0)
    load = LayerLoad(
        macs={"dense": 1000, "sparse": 250},
        imbalance={"sparse": 2.0},
        weight_bytes={"dense": 4000.0, "sparse": 1000.0},
        activation_bytes={"dense": 10.0, "sparse": 10.0},
    )
    t = roofline([load, load], ["dense", "sparse"], spec, batch=100)
    # batch 1: memory (4010 B / 1e9 B/s) beats compute (1000 / 1e10 MAC/s)
    assert t["dense"].seconds_batch1 == pytest.approx(2 * 4010e-9)
    assert t["dense"].memory_bound_layers_batch1 == 2
    # batch 100: weights amortised -> compute bound, 1000 MACs / 1e10 = 100 ns
    assert t["dense"].seconds_batch == pytest.approx(2 * 100e-9)
    assert t["dense"].memory_bound_layers_batch == 0
    # sparse: 250 MACs x imbalance 2 = 50 ns compute; memory 1000/100 + 10 = 20 B = 20 ns
    assert t["sparse"].seconds_batch == pytest.approx(2 * 50e-9)
    assert t["sparse"].seconds_batch1 == pytest.approx(2 * 1010e-9)


def test_bad_specs_and_batch_are_user_errors() -> None:
    with pytest.raises(UserError, match="positive"):
        AcceleratorSpec(mac_lanes=0)
    with pytest.raises(UserError, match="value bits"):
        AcceleratorSpec(value_bits=0)
    with pytest.raises(UserError, match="batch"):
        roofline([], ["dense"], AcceleratorSpec(), batch=0)
