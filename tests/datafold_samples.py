"""Where the DataFold sample lines are: ``shared/datafold/samples`` beside the repository root
(``../shared/``: CI clones the repository with a copy of ``shared/`` beside it). There is no
machine-specific fallback; without them a test skips locally and fails under CI (``tests/ci.py``)."""

from __future__ import annotations

from pathlib import Path

from tests.ci import REPO, require

SAMPLES = REPO.parent / "shared" / "datafold" / "samples"


def samples_dir() -> Path:
    """The samples directory, or skip (fail under CI) saying where it was looked for."""
    return require(SAMPLES, f"DataFold samples not found at {SAMPLES}: put shared/ beside the repository")
