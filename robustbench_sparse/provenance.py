"""Provenance: package versions, git revision, device and host facts recorded with every artefact."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

_PACKAGES = (
    "robustbench-sparse",
    "torch",
    "torchvision",
    "torchattacks",
    "foolbox",
    "numpy",
    "pandas",
    "seaborn",
    "safetensors",
)


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape results (``"missing"`` where not installed)."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def git_revision(path: str | Path | None = None) -> str | None:
    """The git commit of the source tree (``+dirty`` when modified), or ``None`` outside git."""
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        )
        suffix = "+dirty" if dirty.stdout.strip() else ""
        return rev.stdout.strip() + suffix
    except (OSError, subprocess.SubprocessError):
        return None


def device_description(device: torch.device) -> str:
    """Human-readable device name, e.g. ``cpu (2 threads, x86_64)`` or ``cuda:0 (NVIDIA H100)``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"cpu ({torch.get_num_threads()} threads, {platform.machine()})"


def provenance(device: torch.device | None = None) -> dict[str, Any]:
    """All provenance facts as a JSON-safe dict."""
    dev = device if device is not None else torch.device("cpu")
    return {
        "versions": package_versions(),
        "git_revision": git_revision(),
        "device": device_description(dev),
        "platform": platform.platform(),
    }
