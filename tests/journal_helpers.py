"""Helpers shared by the journal tests: a real signer, a real journal, demo-like events."""

from __future__ import annotations

from pathlib import Path

from keylife.journal.signing import Signer
from keylife.journal.writer import Journal, JournalSettings

ORIGIN = "test.keylife/journal"


def signer(tmp: Path, name: str = ORIGIN) -> Signer:
    return Signer.load_or_create(tmp / f"{name.replace('/', '_')}.key", name)[0]


def open_journal(tmp: Path, sign: Signer | None = None, **settings: object) -> Journal:
    sign = sign or signer(tmp)
    options = {"seal_in_background": False, **settings}
    return Journal(tmp / "journal", sign, JournalSettings(origin=ORIGIN, **options))  # type: ignore[arg-type]


def usage_event(n: int) -> dict:
    return {
        "id": f"ev-{n}",
        "type": "usage_report",
        "key_id": f"key-{n % 17}",
        "occurred_at": "2026-11-28T12:00:00Z",
        "node": f"node-{n % 5}",
        "usage": {"encrypt": n % 100, "decrypt": n % 7},
    }


def fill(journal: Journal, count: int, per_commit: int = 10, start: int = 0) -> None:
    for base in range(start, start + count, per_commit):
        journal.append([usage_event(n) for n in range(base, min(base + per_commit, start + count))])
        journal.commit()
