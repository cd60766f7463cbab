"""One owner per directory: an advisory lock held for the life of the process that owns it.

``data_dir``: two processes appending to one journal would interleave chains; a registry rebuilt
under a running server would lose the server's WAL. ``keylife serve`` and ``keylife registry
rebuild`` take ``keylife.lock`` first and refuse plainly.

The forwarder's ``state_dir`` (``forwarder.lock``): two forwarders on one state directory
(``keylife serve`` with sinks and ``keylife forward`` on the same config) would both ship from the
same cursors, so every entry would arrive twice. Whichever comes second is refused.

``flock`` locks belong to the open file description: the kernel drops them when the holder exits,
however it exits (SIGKILL included), so a lock is never stale. The file keeps the holder's
command and pid only to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DataDirBusy(RuntimeError):
    """Another keylife process holds the directory."""


class DataLock:
    def __init__(self, directory: Path, filename: str = "keylife.lock", what: str = "") -> None:
        self.path = Path(directory) / filename
        self.what = what  # how the refusal names the directory ("" for the data directory)
        self._fd = -1

    def acquire(self, purpose: str) -> DataLock:
        """Take the lock as ``keylife <purpose>``, or raise ``DataDirBusy`` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            where = f"{self.what} {self.path.parent}" if self.what else str(self.path.parent)
            raise DataDirBusy(f"{where} is in use by {holder}; stop it first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"keylife {purpose} (pid {os.getpid()})\n".encode())
        self._fd = fd
        return self

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing drops the flock
            self._fd = -1
