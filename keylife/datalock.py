"""One writer per data directory: an advisory lock held for the life of ``keylife serve``.

Two processes appending to one journal would interleave chains; a registry rebuilt under a
running server would lose the server's WAL. Both take this lock first and refuse plainly.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirBusy(RuntimeError):
    """Another keylife process holds the data directory."""


class DataLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "keylife.lock"
        self._fd = -1

    def acquire(self, purpose: str) -> DataLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DataDirBusy(f"{self.path.parent} is in use by {holder}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"keylife {purpose} (pid {os.getpid()})\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1
