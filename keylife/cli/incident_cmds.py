"""``keylife incident list|show|open|note|assign|resolve|close|export``."""

from __future__ import annotations

from typing import Any


def register(isub: Any) -> None:
    """Add the incident workflow (to be built: issue 14 items 10-11)."""
