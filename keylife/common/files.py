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


def replace_durably(path: Path, data: bytes, mode: int) -> None:
    """Replace ``path`` with ``data`` atomically and durably: written whole and fsynced under a
    temporary name with ``mode``, renamed over ``path``, the directory fsynced. A reader sees the
    old file or the new one, never a part; a failure leaves no temporary file behind (on a full
    disk a leftover would keep it full)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # O_EXCL below: a leftover would keep its old mode
        create_durably(tmp, data, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
