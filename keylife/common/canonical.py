"""Canonical JSON (RFC 8785, JCS) for journal entries.

orjson with sorted keys produces the JCS form for the values the event model admits: no
floats, integers within 2**53, ASCII object keys (so UTF-8 and UTF-16 key order agree) and
JCS's string escaping. ``tests/test_canonical.py`` proves byte-equality with the reference
``rfc8785`` package on generated events; ``canonical`` refuses what it could get wrong.
"""

from __future__ import annotations

from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS


def canonical(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (dicts, lists, str, int, bool, None)."""
    return orjson.dumps(value, option=_OPTIONS)


def check_canonical_safe(value: Any, path: str = "$") -> None:
    """Raise ValueError where ``value`` holds something orjson and JCS might encode differently."""
    if isinstance(value, float):
        raise ValueError(f"{path}: floats are not allowed in journal entries")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53 - 1:
        raise ValueError(f"{path}: integer {value} is outside the I-JSON range")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise ValueError(f"{path}: object keys must be ASCII strings, got {key!r}")
            check_canonical_safe(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_canonical_safe(item, f"{path}[{index}]")
