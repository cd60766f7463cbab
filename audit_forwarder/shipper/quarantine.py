"""Per-sink quarantine: records a destination refused for good, kept and journaled, never dropped.

A refused record is appended to ``<state>/<sink>/quarantine.ndjson`` (fsync'd before the
cursor moves past it) with the reason, the destination's words, and the entry itself. Then a
signed ``forward_quarantined`` event is written to the journal through a ``Reporter`` (the
ledger in-process, keylife's API for ``keylife forward``). ``quarantine.journaled`` counts the
lines already journaled, so a notice that could not be journaled (keylife down) is retried,
also after a restart; the event id is derived from sink and seq, so a retry never doubles it.

A notice about a record that is itself a ``forward_quarantined`` event is not journaled again
(it is kept in the file and counted): a sink that refuses those must not feed itself forever.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import orjson

from audit_forwarder.shipper.contract import Record
from keylife.journal.reader import format_observed

log = logging.getLogger("keylife.forwarder")

NOTICE_TYPE = "forward_quarantined"
REPORT_RETRY_SECONDS = 5.0  # a reporter that failed (keylife unreachable) is tried again after this


class Reporter(Protocol):
    def report(self, notice: dict[str, Any]) -> None:
        """Make the notice durable in the journal; raise when that failed (it is retried)."""
        ...


def notice_for(line: dict[str, Any]) -> dict[str, Any]:
    """The journal event (``forward_quarantined``) describing one quarantine line."""
    event = line["event"]
    what = "checkpoint" if event.get("type") == "checkpoint" else "entry"
    attributes = {
        "sink": line["sink"],
        "seq": str(line["seq"]),
        "reason": line["reason"],
        "entry_hash": line["hash"],
        "entry_type": str(event.get("type", "unknown"))[:256],
    }
    if event.get("key_id"):
        attributes["entry_key_id"] = str(event["key_id"])[:256]
    return {
        "id": f"keylife-quarantine-{line['sink']}-{what}-{line['seq']}",
        "type": NOTICE_TYPE,
        "occurred_at": line["quarantined_at"],
        "actor": "keylife",
        "reason": f"sink {line['sink']} refused {what} seq {line['seq']} ({line['reason']}): {line['detail']}"[:1024],
        "attributes": attributes,
    }


class Quarantine:
    def __init__(self, directory: Path, sink: str, reporter: Reporter | None) -> None:
        self.directory = Path(directory)
        self.sink = sink
        self.reporter = reporter
        self.path = self.directory / "quarantine.ndjson"
        self.mark_path = self.directory / "quarantine.journaled"
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._lines = self._read_lines()
        self._journaled = self._read_mark()
        self.last_error: str | None = None
        self._retry_at = 0.0  # after a failed report, wait before trying again

    @property
    def count(self) -> int:
        return len(self._lines)

    @property
    def unjournaled(self) -> int:
        return len(self._lines) - self._journaled

    def add(self, record: Record, reason: str, detail: str) -> None:
        """Keep the record (durably) and try to journal its notice."""
        line = {
            "sink": self.sink,
            "seq": record.seq,
            "hash": record.entry.hash.hex(),
            "checkpoint": record.checkpoint,
            "reason": reason,
            "detail": detail[:2000],
            "quarantined_at": format_observed(time.time()),
            "observed_at": record.entry.observed_at,
            "event": record.entry.event,
        }
        data = orjson.dumps(line) + b"\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._lines.append(line)
        log.warning(
            "quarantined",
            extra={"sink": self.sink, "seq": record.seq, "reason": reason, "detail": detail[:500]},
        )
        self.journal_pending()

    def journal_pending(self) -> bool:
        """Journal the notices not journaled yet; False when the reporter failed (retried later)."""
        with self._lock:
            if self.reporter is None or self._journaled >= len(self._lines):
                return self._journaled >= len(self._lines)
            if time.monotonic() < self._retry_at:
                return False
            while self._journaled < len(self._lines):
                line = self._lines[self._journaled]
                if line["event"].get("type") != NOTICE_TYPE:
                    try:
                        self.reporter.report(notice_for(line))
                    except Exception as exc:
                        self.last_error = str(exc)[:500]
                        return False
                self._journaled += 1
                self._write_mark()
            self.last_error = None
            return True

    def _read_lines(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # a torn last line (crash mid-append) is not a quarantined record
        if end < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
        return [orjson.loads(raw) for raw in data[:end].splitlines() if raw]

    def _read_mark(self) -> int:
        try:
            return min(int(self.mark_path.read_text()), len(self._lines))
        except (FileNotFoundError, ValueError):
            return 0

    def _write_mark(self) -> None:
        tmp = self.mark_path.with_name(self.mark_path.name + ".tmp")
        tmp.write_text(str(self._journaled))
        os.replace(tmp, self.mark_path)
