"""Sound output bounds of the registry's networks over input boxes (interval bound propagation)."""

from robustbench_sparse.bounds.ibp import (
    Box,
    input_box,
    interval_bounds,
    margin_lower_bounds,
    supported_layer_types,
)

__all__ = ["Box", "input_box", "interval_bounds", "margin_lower_bounds", "supported_layer_types"]
