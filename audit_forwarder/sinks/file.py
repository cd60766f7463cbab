"""A local NDJSON file sink: one JSON object per record, fsync'd before it counts as delivered.

For a SIEM agent that picks files up (Filebeat, the Splunk universal forwarder, Vector's
``file`` source) or an air-gapped archive. Each line is
``{"seq", "hash", "checkpoint", "observed_at", "event"}`` with the event as journaled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import orjson

from audit_forwarder.shipper.contract import Prepared, Record, Refused, Retryable
from audit_forwarder.shipper.settings import SinkSettings


class FileSinkConfig(SinkSettings):
    type: Literal["file"]
    path: Path
    max_line_bytes: int = 1024 * 1024


class FileSink:
    def __init__(self, config: FileSinkConfig) -> None:
        self.name = config.name
        self.path = config.path
        self.max_line_bytes = config.max_line_bytes
        self._fd = -1

    def prepare(self, record: Record) -> Prepared:
        entry = record.entry
        line = (
            orjson.dumps(
                {
                    "seq": entry.seq,
                    "hash": entry.hash.hex(),
                    "checkpoint": record.checkpoint,
                    "observed_at": entry.observed_at,
                    "event": entry.event,
                }
            )
            + b"\n"
        )
        if len(line) > self.max_line_bytes:
            raise Refused("too_large", f"record is {len(line)} bytes; the file sink takes {self.max_line_bytes}")
        return Prepared(record, line, len(line))

    def send(self, batch: list[Prepared]) -> None:
        data = b"".join(item.payload for item in batch)
        try:
            if self._fd < 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fdatasync(self._fd)
        except OSError as exc:
            self.close()
            raise Retryable("io", f"cannot write {self.path}: {exc.strerror}") from None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def build(config: FileSinkConfig) -> FileSink:
    return FileSink(config)
