"""The result of the latest end-to-end verification, kept beside the journal for the exporter.

``keylife verify`` and the periodic check inside ``keylife serve`` both record here, so the
metrics say when the chain was last proven whole and whether it was.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import orjson

from keylife.journal.signing import Verifier
from keylife.journal.verify import Report, verify

STATUS_FILE = "verify-status.json"
log = logging.getLogger("keylife.verify")


def record(directory: Path, report: Report, when: float | None = None) -> None:
    """Write the status atomically; a read-only journal (an auditor's copy) is left alone."""
    status = {"time": time.time() if when is None else when, "ok": report.ok, "faults": len(report.faults),
              "entries": report.entries}  # fmt: skip
    path = directory / STATUS_FILE
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(orjson.dumps(status))
        tmp.replace(path)
    except OSError:
        pass


def read(directory: Path) -> dict[str, float]:
    try:
        status = orjson.loads((directory / STATUS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return {
        "keylife_journal_verify_timestamp_seconds": float(status["time"]),
        "keylife_journal_verify_ok": 1.0 if status["ok"] else 0.0,
        "keylife_journal_verify_faults": float(status["faults"]),
    }


class PeriodicVerify:
    """Verify the whole journal in a background thread at start and then every ``interval``."""

    def __init__(self, directory: Path, trusted: list[Verifier], interval: float) -> None:
        self.directory, self.trusted, self.interval = directory, trusted, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keylife-verify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                report = verify(self.directory, self.trusted)
                record(self.directory, report)
                if not report.ok:
                    log.error(
                        "journal verification found faults", extra={"faults": [str(f) for f in report.faults[:20]]}
                    )
            except Exception:
                log.exception("journal verification could not run")
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
