"""The post-training interface: config checks, option defaults, the result contract, the registry."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustbench_sparse.errors import UserError
from robustbench_sparse.posttrain import (
    POST_TRAINING_METHODS,
    PostTrainConfig,
    PostTrainMethod,
    PostTrainResult,
    get_post_training_method,
)


def test_config_refuses_bad_sparsity_and_unknown_options() -> None:
    with pytest.raises(UserError, match=r"\[0, 1\)"):
        PostTrainConfig("calibrated", 1.0)
    with pytest.raises(UserError, match="number"):
        PostTrainConfig("calibrated", True)  # type: ignore[arg-type]
    cfg = PostTrainConfig("calibrated", 0.5, options={"steps": 3})
    filled = cfg.with_defaults({"steps": 10, "lr": 1e-5})
    assert filled.options == {"steps": 3, "lr": 1e-5}
    with pytest.raises(UserError, match="unknown calibrated option 'stpes'"):
        PostTrainConfig("calibrated", 0.5, options={"stpes": 3}).with_defaults({"steps": 1})
    assert filled.to_dict()["options"] == {"steps": 3, "lr": 1e-5}


def test_result_check_catches_nonzero_pruned_weights_and_bad_masks() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 0] = False
    result = PostTrainResult(model, {"0.weight": mask}, None, ["0.weight"], "x")
    with pytest.raises(ValueError, match="not zero"):
        result.check()
    with torch.no_grad():
        model[0].weight[0, 0] = 0.0
    result.check()
    with pytest.raises(ValueError, match="bool"):
        PostTrainResult(model, {"0.weight": mask.float()}, None, [], "x").check()
    with pytest.raises(ValueError, match="no parameter"):
        PostTrainResult(model, {"nope.weight": mask}, None, [], "x").check()


def test_registry_entries_satisfy_the_protocol_and_unknown_names_are_one_line() -> None:
    for name, method in POST_TRAINING_METHODS.items():
        assert isinstance(method, PostTrainMethod)
        assert method.name == name
        assert method.granularities and method.data in ("none", "calibration", "train")
        assert get_post_training_method(name.upper()) is method
    with pytest.raises(UserError, match="unknown post-training method 'nonesuch'") as info:
        get_post_training_method("nonesuch")
    assert "\n" not in str(info.value)
