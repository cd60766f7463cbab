"""Where the DataFold sample lines are: ``shared/datafold/samples`` beside the repository (CI
clones the repo with a copy of shared/ beside it), else the workplace's copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "datafold" / "samples",
    Path("/work/shared/datafold/samples"),
)


def samples_dir() -> Path:
    for candidate in _CANDIDATES:
        if candidate.is_dir():
            return candidate
    if os.environ.get("CI") == "true":
        raise AssertionError(f"DataFold samples not found in {[str(c) for c in _CANDIDATES]}")
    pytest.skip("shared/datafold/samples is not beside this checkout")
    raise AssertionError("unreachable")


SAMPLES = next((c for c in _CANDIDATES if c.is_dir()), _CANDIDATES[0])
