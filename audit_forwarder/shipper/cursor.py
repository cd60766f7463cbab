"""A sink's durable cursor: how far the destination has acknowledged the journal.

The file holds the next seq to ship, the chain hash after the last acknowledged entry (so the
reader resumes without rehashing the journal) and the size of the last checkpoint shipped. It
is replaced atomically (write, fsync, rename, fsync the directory): after a crash it holds
either the old position or the new one, never a torn one. It moves only after the sink
acknowledged a batch, so a restart resends at most the batch that was in flight.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from keylife.common.files import fsync_dir

FORMAT = 1


class CursorError(RuntimeError):
    """The cursor file is unreadable or belongs to another journal."""


@dataclass(frozen=True)
class Position:
    next_seq: int
    head: bytes  # chain hash after entry next_seq - 1
    checkpoints_shipped: int


class Cursor:
    def __init__(self, path: Path, origin: str) -> None:
        self.path = Path(path)
        self.origin = origin
        self.position: Position | None = None
        self.updated_at = 0.0

    def load(self) -> Position | None:
        try:
            value = orjson.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except orjson.JSONDecodeError as exc:
            raise CursorError(f"cursor {self.path} is not JSON ({exc}); move it aside to restart the sink") from None
        if value.get("origin") != self.origin:
            raise CursorError(
                f"cursor {self.path} follows journal {value.get('origin')!r}, not {self.origin!r}; "
                "a cursor belongs to one journal"
            )
        self.position = Position(value["next_seq"], bytes.fromhex(value["head"]), value["checkpoints_shipped"])
        self.updated_at = value.get("updated_at", 0.0)
        return self.position

    def save(self, position: Position) -> None:
        self.updated_at = time.time()
        data = orjson.dumps(
            {
                "format": FORMAT,
                "origin": self.origin,
                "next_seq": position.next_seq,
                "head": position.head.hex(),
                "checkpoints_shipped": position.checkpoints_shipped,
                "updated_at": self.updated_at,
            }
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(self.path.parent)
        self.position = position
