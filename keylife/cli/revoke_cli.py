"""``keylife incident revoke KEY --wait`` and ``keylife revocations export``."""

from __future__ import annotations

from typing import Any


def register(isub: Any) -> None:
    """Add ``incident revoke`` (to be built: issue 14 item 3)."""


def register_feed(sub: Any) -> None:
    """Add ``revocations export`` (to be built: issue 14 item 2)."""
