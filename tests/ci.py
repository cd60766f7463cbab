"""The one rule for a test that needs something the suite cannot make itself (a system binary such
as promtool or rsyslogd, the shared DataFold samples, a module): on a developer's machine the
test is skipped with the reason; under CI it fails, because a CI run that passes by skipping has
tested nothing. Every such check in tests/ goes through ``require`` or ``unavailable``.

CI is on when the ``CI`` variable holds anything but an empty or negative value ("", 0, false,
no, off): GitHub, GitLab and most runners set ``CI=true``, ``.ci/run`` sets it too, and an odd
value errs on the side of failing rather than silently skipping.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

__all__ = ["REPO", "in_ci", "require", "require_binary", "unavailable"]

REPO = Path(__file__).resolve().parents[1]
_OFF = frozenset({"", "0", "false", "no", "off"})
T = TypeVar("T")


def in_ci() -> bool:
    """True under CI (see the module docstring for the values that count)."""
    return os.environ.get("CI", "").strip().lower() not in _OFF


def unavailable(why: str) -> NoReturn:
    """Skip the calling test, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{why}; CI must not skip it", pytrace=False)
    pytest.skip(why)


def require(condition: T, why: str) -> T:
    """``condition`` when it is truthy (a path that exists counts as truthy only if it exists);
    otherwise skip, or fail under CI, with ``why``."""
    ok = condition.exists() if isinstance(condition, Path) else bool(condition)
    if not ok:
        unavailable(why)
    return condition


def require_binary(name: str, hint: str, *dirs: str) -> str:
    """The path of the executable ``name``: on PATH, else in one of ``dirs`` (daemons live in
    /usr/sbin, often not on a user's PATH). ``hint`` says how to install it."""
    for place in (None, *dirs):
        found = shutil.which(name, path=place)
        if found:
            return found
    unavailable(f"{name} not found ({hint})")
