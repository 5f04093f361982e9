"""Device selection: ``auto`` / ``cpu`` / ``cuda[:i]`` with a clear error where CUDA is absent."""

from __future__ import annotations

import torch

from robustbench_sparse.errors import UserError


def resolve_device(name: str = "auto") -> torch.device:
    """Map a user device string to a :class:`torch.device`.

    ``auto`` picks CUDA when available, else CPU. Asking for CUDA where none exists is a user error.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(
                f"--device {name} was requested but CUDA is not available on this machine; "
                "use --device cpu or --device auto"
            )
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) visible"
            )
        return device
    raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
