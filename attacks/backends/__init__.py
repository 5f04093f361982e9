"""Adapters that run library attacks (torchattacks, foolbox) behind the :class:`Attack` protocol.

Each adapter module imports its library at import time; the registry imports them lazily.
"""

from __future__ import annotations

from attacks.backends.counting import GradCounter

__all__ = ["GradCounter"]
