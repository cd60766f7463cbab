"""Scheduled compliance reports: the period just completed, written to a directory, announced.

Each schedule (``reports.schedules``) covers the last completed UTC day, ISO week (Monday to Monday)
or month. A thread of its own looks every ``check_interval_seconds`` for a schedule whose last
period has no report file yet; it then computes the report (``ReportService``: at a checkpoint
signed for it), writes each format atomically as ``<name>_<from>_<to>.<format>``, journals a
``report`` record (details: kind, schedule, period, checkpoint size, digest, file name; the id is
``report-<name>-<from>``, so a retry is a duplicate, never a second record) and keeps the newest
``retention`` reports of the schedule. A failed run is counted (``keylife_report_failures_total``,
which pages ``KeylifeReportFailed``), logged, and tried again at the next look.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from keylife.config import ReportSchedule, ReportsConfig
from keylife.domain.events import EventType
from keylife.ingest.ledger import Ledger
from keylife.response.reports import machine
from keylife.response.reports.html import to_html
from keylife.response.reports.model import Period
from keylife.response.reports.service import ReportService
from keylife.response.selector import parse_selector

log = logging.getLogger("keylife.reports")
RENDER: dict[str, Callable[[dict[str, Any]], bytes]] = {"json": machine.to_json, "csv": machine.to_csv, "html": to_html}


def last_period(every: str, now: datetime) -> Period:
    """The last completed period before ``now`` (UTC)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if every == "daily":
        return Period(day - timedelta(days=1), day)
    if every == "weekly":
        monday = day - timedelta(days=day.weekday())
        return Period(monday - timedelta(days=7), monday)
    first = day.replace(day=1)
    return Period((first - timedelta(days=1)).replace(day=1), first)


def stem(schedule: ReportSchedule, period: Period) -> str:
    return f"{schedule.name}_{period.start:%Y-%m-%d}_{period.end:%Y-%m-%d}"


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


class ReportScheduler:
    def __init__(self, config: ReportsConfig, directory: Path, service: ReportService, ledger: Ledger,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:  # fmt: skip
        self.config, self.directory, self.service, self.ledger, self.clock = config, directory, service, ledger, clock
        self.generated: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.last_success: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.config.schedules:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="keylife-reports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.run_due()
            self._stop.wait(self.config.check_interval_seconds)

    def run_due(self) -> list[str]:
        """Generate every schedule's report for its last completed period that is not on disk yet."""
        written = []
        for schedule in self.config.schedules:
            period = last_period(schedule.every, self.clock())
            name = stem(schedule, period)
            if all((self.directory / f"{name}.{fmt}").exists() for fmt in schedule.formats):
                continue
            try:
                self._generate(schedule, period, name)
            except Exception:  # counted and paged; tried again at the next look
                self.failures[schedule.name] += 1
                log.exception("scheduled report %s for %s failed", schedule.name, name)
            else:
                self.generated[schedule.name] += 1
                self.last_success[schedule.name] = time.time()
                written.append(name)
        return written

    def _generate(self, schedule: ReportSchedule, period: Period, name: str) -> None:
        selector = parse_selector(schedule.selector) if schedule.selector else None
        generated_at = self.clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        report = self.service.compliance(period, generated_at, selector)
        for fmt in schedule.formats:
            _write(self.directory / f"{name}.{fmt}", RENDER[fmt](report))
        details = {"kind": "compliance", "schedule": schedule.name, "period_from": report["period"]["from"],
                   "period_to": report["period"]["to"], "checkpoint_size": report["checkpoint"]["size"],
                   "digest": report["digest"], "path": name, "formats": list(schedule.formats)}  # fmt: skip
        event = self.ledger.system_event(
            EventType.REPORT, id=f"report-{schedule.name}-{period.start:%Y-%m-%d}", details=details,
            reason=f"scheduled {schedule.every} compliance report",
        )  # fmt: skip
        (outcome,) = self.ledger.submit([event]).result(timeout=60)
        if outcome.status not in ("accepted", "duplicate"):
            raise RuntimeError(f"report record not journaled: {outcome.error or outcome.status}")
        self._prune(schedule)

    def _prune(self, schedule: ReportSchedule) -> None:
        """Keep the newest ``retention`` periods of this schedule (file names sort by date)."""
        mine = re.compile(rf"^{re.escape(schedule.name)}_\d{{4}}-\d\d-\d\d_\d{{4}}-\d\d-\d\d$")
        stems = sorted({s for p in self.directory.iterdir() if mine.match(s := p.name.split(".", 1)[0])}, reverse=True)
        for old in stems[self.config.retention :]:
            for path in self.directory.glob(f"{old}.*"):
                path.unlink(missing_ok=True)
