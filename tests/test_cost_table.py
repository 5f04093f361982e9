"""cost.table: the human table names every layer, the totals and labels what is modelled."""

from __future__ import annotations

from robustbench_sparse.cost import format_cost, model_cost
from robustbench_sparse.sparsity.granularity import Granularity
from tests.cost_helpers import SMALL_CNN_PRUNED, apply_masks, small_cnn


def test_table_lists_layers_totals_and_labels() -> None:
    model = small_cnn(width=0.5)
    masks = apply_masks(model, Granularity.WINDOW, 0.7, SMALL_CNN_PRUNED)
    cost = model_cost(model, masks, (1, 8, 8))
    text = format_cost(cost)
    lines = text.splitlines()
    for name in ("net.conv1.0", "net.conv5.0", "net.fc", "total"):
        assert any(line.startswith(name) for line in lines)
    conv2 = next(line for line in lines if line.startswith("net.conv2.0"))
    assert "33.3 %" in conv2  # n_w = 3 of 9
    assert "modelled" in text and "roofline" in text
    assert f"effective {cost.total()['speedup_effective']:.2f}x" in text
