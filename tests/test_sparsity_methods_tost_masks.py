"""Where ToST's fixed mask comes from (robustbench_sparse.sparsity.methods.tost_masks).

Invariants: the Campfire mask at init is Campfire's ``compute_mask`` of the initial weights;
masks read back from a checkpoint equal the saved ones, and a dense, torn, foreign or
shape-incompatible checkpoint is a one-line ``UserError``; the layer-wise rescaling multiplies
each layer by ``1 / sqrt(density)`` (so a masked layer's output variance at init is the dense
layer's, within sampling noise).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from robustbench_sparse.checkpoint import WEIGHTS_FILE, save_checkpoint
from robustbench_sparse.errors import UserError
from robustbench_sparse.models import create_model
from robustbench_sparse.sparsity import Granularity, compute_mask, kept_per_group
from robustbench_sparse.sparsity.methods.tost_masks import (
    campfire_masks_at_init,
    checkpoint_masks,
    match_masks,
    rescale_kept,
)
from tests.core_helpers import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _model(width: float = 0.25) -> nn.Module:
    torch.manual_seed(0)
    return create_model("small_cnn", num_classes=10, in_channels=1, width=width)


def _conv2(model: nn.Module) -> torch.Tensor:
    return dict(model.named_parameters())["net.conv2.0.weight"]


def _meta() -> dict[str, object]:
    return {"arch": "small_cnn", "num_classes": 10, "in_channels": 1, "dataset": "digits"}


def test_campfire_mask_at_init_is_compute_mask_of_the_initial_weights() -> None:
    model = _model()
    weights = {n: p for n, p in model.named_parameters() if n.endswith("0.weight")}
    masks = campfire_masks_at_init(weights, 0.7, Granularity.WINDOW)
    for name, w in weights.items():
        assert torch.equal(masks[name], compute_mask(w, 0.7, Granularity.WINDOW))
    conv = masks["net.conv2.0.weight"]  # 3x3: every kernel keeps the same count
    kept = conv.reshape(conv.shape[0] * conv.shape[1], -1).sum(1)
    assert bool((kept == kept_per_group(9, 0.7)).all())


def test_checkpoint_masks_round_trip(tmp_path: Path) -> None:
    model = _model()
    torch.manual_seed(3)
    masks = {"net.conv2.0.weight": torch.rand(_conv2(model).shape) > 0.7}
    save_checkpoint(tmp_path / "ck", model, _meta(), masks)
    got = checkpoint_masks(tmp_path / "ck")
    assert got.keys() == masks.keys() and torch.equal(
        got["net.conv2.0.weight"], masks["net.conv2.0.weight"]
    )
    assert got["net.conv2.0.weight"].dtype == torch.bool


def test_bad_mask_sources_are_one_line_user_errors(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "dense", _model(), _meta())
    with pytest.raises(UserError, match="holds no masks"):
        checkpoint_masks(tmp_path / "dense")
    torch.save(_model().state_dict(), tmp_path / "plain.pt")
    for bad in (tmp_path / "plain.pt", tmp_path / "missing"):
        with pytest.raises(UserError, match="give a robustbench-sparse checkpoint directory"):
            checkpoint_masks(bad)
    model = _model()
    masks = {"net.conv2.0.weight": torch.ones_like(_conv2(model), dtype=torch.bool)}
    save_checkpoint(tmp_path / "torn", model, _meta(), masks)
    raw = bytearray((tmp_path / "torn" / WEIGHTS_FILE).read_bytes())
    raw[-1] ^= 1
    (tmp_path / "torn" / WEIGHTS_FILE).write_bytes(bytes(raw))
    with pytest.raises(UserError, match="torn pair"):
        checkpoint_masks(tmp_path / "torn")


def test_match_masks_refuses_unknown_names_and_other_shapes() -> None:
    small, wide = _model(0.25), _model(0.5)
    weights = {n: p for n, p in small.named_parameters()}
    other = {"net.conv2.0.weight": torch.ones_like(_conv2(wide), dtype=torch.bool)}
    with pytest.raises(
        UserError, match=r"has shape \(32, 16, 3, 3\), this model's weight \(16, 8, 3, 3\)"
    ) as err:
        match_masks(other, weights, "ck")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="names no Conv2d/Linear weight"):
        match_masks({"net.nope.weight": torch.ones(1, dtype=torch.bool)}, weights, "ck")
    ok = {"net.conv2.0.weight": torch.ones_like(_conv2(small), dtype=torch.bool)}
    assert torch.equal(
        match_masks(ok, weights, "ck")["net.conv2.0.weight"], ok["net.conv2.0.weight"]
    )


def test_rescale_is_one_over_sqrt_density_and_keeps_the_output_variance() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 256)
    mask = torch.rand(64, 256) < 0.1  # density ~0.1
    x = torch.randn(2048, 256)
    dense_var = float((x @ w.T).var())
    scaled = (w * mask).clone()
    factors = rescale_kept({"w": scaled}, {"w": mask})
    density = float(mask.float().mean())
    assert factors["w"] == pytest.approx(density**-0.5)
    assert torch.equal(scaled, (w * mask) * factors["w"])
    assert float((x @ scaled.T).var()) == pytest.approx(dense_var, rel=0.1)
    assert float((x @ (w * mask).T).var()) < 0.2 * dense_var  # without it: ~density x
    empty = torch.randn(3, 3)
    assert rescale_kept({"e": empty}, {"e": torch.zeros(3, 3, dtype=torch.bool)}) == {"e": 1.0}
