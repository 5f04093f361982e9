"""cost.model: per-layer costs, totals that are the sums, the JSON object, user errors."""

from __future__ import annotations

import json

import pytest
import torch

from robustbench_sparse.cost import ENGINES, MAC_KEYS, MAPPINGS, AcceleratorSpec, model_cost
from robustbench_sparse.errors import UserError
from robustbench_sparse.sparsity.granularity import Granularity
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, small_cnn


def test_json_object_has_the_documented_keys_and_totals_are_sums() -> None:
    model = small_cnn(width=0.5)
    masks = apply_masks(model, Granularity.WINDOW, 0.7, SMALL_CNN_PRUNED)
    d = json.loads(json.dumps(model_cost(model, masks, (1, 8, 8)).to_dict(), allow_nan=False))
    for layer in d["layers"]:
        assert {"name", *MAC_KEYS, "imbalance", "metadata_bits"} <= set(layer)
        assert set(layer["imbalance"]) == set(MAPPINGS)
    for key in MAC_KEYS:
        assert d["total"][key] == sum(layer[key] for layer in d["layers"])
    assert d["total"]["speedup_effective"] == pytest.approx(
        d["total"]["macs_dense"] / d["total"]["macs_effective"]
    )
    assert set(d["roofline"]["engines"]) == set(ENGINES)
    assert "modelled" in d["roofline"]["label"] and "modelled" in d["labels"]["imbalance"]


def test_sparse_weights_cost_fewer_bytes_and_run_faster_in_the_model() -> None:
    model = small_cnn(width=1.0)
    masks = apply_masks(model, Granularity.WINDOW, 0.9, SMALL_CNN_PRUNED)
    cost = model_cost(model, masks, (1, 8, 8), spec=AcceleratorSpec(value_bits=16), batch=64)
    t = cost.total()
    skip = "zero-skip/kernel-per-lane"
    assert t["weight_bytes"][skip] < t["weight_bytes"]["dense"]
    assert t["weight_bytes"]["compact"] == t["weight_bytes"]["dense"]
    times = cost.times
    assert times[skip].seconds_batch < times["dense"].seconds_batch
    assert times["compact"].seconds_batch == times["dense"].seconds_batch
    dense_bytes = (
        sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1)
        * 2
    )
    assert t["weight_bytes"]["dense"] == dense_bytes


def test_masks_are_used_over_zeros_for_the_metadata() -> None:
    model = small_cnn(width=0.5)
    masks = apply_masks(model, Granularity.WINDOW, 0.5, SMALL_CNN_PRUNED)
    full = {k: torch.ones_like(v) for k, v in masks.items()}  # nothing pruned by the mask
    by_mask = model_cost(model, full, (1, 8, 8)).layers[1]
    assert by_mask.metadata_bits["rank"] == 0  # a full mask needs no position codes
    assert by_mask.macs.effective < by_mask.macs.dense  # the zeros are still skipped


def test_user_errors() -> None:
    model = small_cnn(width=0.5)
    with pytest.raises(UserError, match="input shape"):
        model_cost(model, None, (3, 8, 8))  # the model takes 1 channel
    with pytest.raises(UserError, match="input shape"):
        model_cost(model, None, (1, 0, 8))
    bad = {"net.conv2.0.weight": torch.ones(2, 2, dtype=torch.bool)}
    with pytest.raises(UserError, match="does not fit"):
        model_cost(model, bad, (1, 8, 8))
