"""model_section: ``[model]`` layers -> (arch, constructor keywords), keys or a ``kwargs`` table."""

from __future__ import annotations

import pytest

from robustbench_sparse.errors import UserError
from robustbench_sparse.model_section import DEFAULT_ARCH, model_section
from robustbench_sparse.train_job import train_job_from_config


def test_default_arch_and_no_kwargs() -> None:
    assert model_section([]) == (DEFAULT_ARCH, {})
    assert model_section([{}, {}]) == (DEFAULT_ARCH, {})


def test_keys_and_kwargs_table_are_the_same_keywords() -> None:
    flat = model_section([{"arch": "m:Net", "width": 0.5}])
    table = model_section([{"arch": "m:Net", "kwargs": {"width": 0.5}}])
    assert flat == table == ("m:Net", {"width": 0.5})


@pytest.mark.parametrize(
    ("lower", "upper", "width"),
    [
        ({"width": 1}, {"kwargs": {"width": 2}}, 2),
        ({"kwargs": {"width": 1}}, {"width": 2}, 2),  # a higher layer wins in either form
        ({"kwargs": {"width": 1, "depth": 3}}, {"kwargs": {"width": 2}}, 2),
    ],
)
def test_higher_layers_win_key_by_key(
    lower: dict[str, object], upper: dict[str, object], width: int
) -> None:
    arch, kwargs = model_section([{"arch": "a:B", **lower}, upper])
    assert arch == "a:B" and kwargs["width"] == width
    assert kwargs.get("depth", 3) == 3


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ({"kwargs": 3}, "must be a table of keywords"),
        ({"width": 1, "kwargs": {"width": 2}}, "both as a key and in kwargs"),
        ({"kwargs": {"arch": "x:Y"}}, "'arch' is not a keyword"),
        ({"arch": 3}, "arch must be a model name"),
        ({"kwargs": {"num_classes": 3}}, "'num_classes' comes from the dataset"),
        ({"in_channels": 3}, "'in_channels' comes from the dataset"),
    ],
)
def test_bad_sections_are_one_line_errors(table: dict[str, object], expected: str) -> None:
    with pytest.raises(UserError, match=expected):
        model_section([table])


def test_train_job_reads_the_kwargs_table() -> None:
    job = train_job_from_config(
        {"model": {"arch": "small_cnn", "kwargs": {"width": 0.25}}},
        {"model": {"kwargs": {"width": 0.5}}},
    )
    assert job.arch == "small_cnn" and dict(job.arch_kwargs) == {"width": 0.5}
