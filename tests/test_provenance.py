"""provenance: package versions, git revision, device description, the combined dict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from robustbench_sparse.provenance import (
    device_description,
    git_revision,
    package_versions,
    provenance,
)

_REV = re.compile(r"[0-9a-f]{40}(\+dirty)?")


def test_package_versions_has_python_and_torch() -> None:
    versions = package_versions()
    assert torch.__version__.startswith(versions["torch"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", versions["python"])
    assert all(isinstance(v, str) and v for v in versions.values())
    assert "safetensors" in versions


def test_git_revision_is_none_or_hex() -> None:
    rev = git_revision()
    assert rev is None or _REV.fullmatch(rev), rev


def test_git_revision_outside_a_repository_is_none(tmp_path: Path) -> None:
    assert git_revision(tmp_path) is None


def test_git_revision_of_missing_directory_is_none(tmp_path: Path) -> None:
    assert git_revision(tmp_path / "nope") is None


def test_cpu_device_description_names_threads() -> None:
    text = device_description(torch.device("cpu"))
    assert text.startswith("cpu (")
    assert f"{torch.get_num_threads()} threads" in text


def test_provenance_is_json_safe_and_complete() -> None:
    facts = provenance()
    assert set(facts) == {"versions", "git_revision", "device", "platform"}
    assert facts["device"].startswith("cpu")
    assert json.loads(json.dumps(facts)) == facts
