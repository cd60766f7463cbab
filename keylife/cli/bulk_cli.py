"""``keylife bulk ...``, ``keylife incident lockdown`` and ``keylife incident release``."""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add ``bulk`` (to be built: issue 14 items 5-7, 15)."""


def register_incident(isub: Any) -> None:
    """Add ``incident lockdown`` and ``incident release`` (to be built: issue 14 items 8-9)."""
