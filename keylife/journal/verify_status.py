"""The result of the latest end-to-end verification, kept beside the journal for the exporter.

``keylife verify`` and the periodic check inside ``keylife serve`` both record here, so the
metrics say when the chain was last proven whole and whether it was.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from keylife.journal.note import Checkpoint
from keylife.journal.signing import Verifier
from keylife.journal.verify import Fault, Report, verify

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
    """Verify the whole journal in a background thread at start and then every ``interval``.

    With ``held`` (the checkpoint the writer signed last, trusted because this process signed
    it or checked it at start-up) the journal is verified up to that checkpoint and must contain
    it, so a rewrite, a truncation or deleted checkpoints are caught on a quiet journal too; the
    live tail past it is checked on the next run. ``standing`` is a fault already known (the
    start-up check failed): it is added to every report so the alert keeps firing.
    ``on_fault`` is told the first fault (the writer goes read-only). A run with faults is
    repeated once before it counts, so a segment sealed while it was read is not a fault.
    """

    def __init__(
        self,
        directory: Path,
        trusted: list[Verifier],
        interval: float,
        *,
        held: Callable[[], Checkpoint | None] | None = None,
        standing: Callable[[], str | None] | None = None,
        on_fault: Callable[[str], None] | None = None,
    ) -> None:
        self.directory, self.trusted, self.interval = directory, trusted, interval
        self.held, self.standing, self.on_fault = held, standing, on_fault
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="keylife-verify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def run_once(self) -> Report:
        """One verification: recorded for the metrics, a fault reported to ``on_fault``."""
        report = self._verify()
        if not report.ok and not self._standing():
            report = self._verify()  # a race with sealing or a roll does not repeat
        known = self._standing()
        if known:
            report.faults.append(Fault("integrity", None, known))
        record(self.directory, report)
        if not report.ok:
            log.error("journal verification found faults", extra={"faults": [str(f) for f in report.faults[:20]]})
            if self.on_fault is not None and not known:
                self.on_fault(f"verification found {len(report.faults)} fault(s), first: {report.faults[0]}")
        return report

    def _standing(self) -> str | None:
        return self.standing() if self.standing is not None else None

    def _verify(self) -> Report:
        if self.held is None:
            return verify(self.directory, self.trusted)
        held = self.held()  # before the files are read: the writer logs a checkpoint before it holds it
        return verify(self.directory, self.trusted, held=held, upto=held.size if held else 0, grace=None)

    def _run(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("journal verification could not run")
            if self._stop.wait(self.interval):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
