"""Durable files: new files written whole and fsynced, and directory changes (a new or renamed file's
name survives a crash only once its directory is fsynced)."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_durably(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` (O_EXCL: never an existing file) with ``mode``, write ``data`` whole, fsync.

    O_EXCL is why callers that replace a leftover remove it first: an existing file would keep
    its old mode."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
