"""``ReportService``: compliance reports of a running serve, each at a checkpoint signed for it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keylife.ingest.ledger import Ledger
from keylife.journal.writer import Journal
from keylife.response.reports.model import Period, Rules, compute
from keylife.response.reports.source import last_verification, live_snapshot
from keylife.response.selector import Selector


class ReportService:
    def __init__(self, ledger: Ledger, journal: Journal, registry_path: Path, rules: Rules) -> None:
        self.ledger, self.journal, self.registry_path, self.rules = ledger, journal, Path(registry_path), rules

    def compliance(self, period: Period, generated_at: str, selector: Selector | None = None) -> dict[str, Any]:
        """The report at a checkpoint of the current size (signed now if none has it yet)."""
        conn, note = live_snapshot(self.ledger, self.journal, self.registry_path)
        try:
            return compute(conn, checkpoint=note, rules=self.rules, period=period, generated_at=generated_at,
                           selector=selector, verification=last_verification(self.journal.directory))  # fmt: skip
        finally:
            conn.close()
