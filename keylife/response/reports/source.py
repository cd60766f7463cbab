"""Where a report's registry snapshot comes from, always bound to one signed checkpoint.

* ``live_snapshot``: on a running serve, a task on the writer thread (``Ledger.run_exclusive``:
  nothing appends meanwhile) commits the registry, signs a checkpoint at the current size unless the
  last one already has it, and pins a read transaction of a fresh read-only connection; the figures
  are then read outside the writer thread from exactly that state.
* ``replayed``: the journal's first ``size`` entries replayed into a scratch registry, for offline
  reports and for ``keylife report check`` (the auditor's recomputation).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from keylife.ingest.ledger import Ledger
from keylife.journal.reader import iter_entries, journal_origin, pruned_upto
from keylife.journal.verify_status import STATUS_FILE
from keylife.journal.writer import Journal
from keylife.registry.projection import rebuild
from keylife.registry.queries import open_readonly
from keylife.response.reports.model import iso


def last_verification(journal_dir: Path) -> dict[str, Any] | None:
    """The last periodic or offline verification (``verify-status.json``), as the report states it."""
    try:
        status = orjson.loads((Path(journal_dir) / STATUS_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return {"at": iso(float(status["time"])), "ok": bool(status["ok"]), "faults": int(status["faults"]),
            "entries": int(status["entries"])}  # fmt: skip


def live_snapshot(
    ledger: Ledger, journal: Journal, registry_path: Path, timeout: float = 60.0
) -> tuple[sqlite3.Connection, str]:
    """(a read-only connection inside a read transaction, the signed checkpoint it reflects)."""

    def task() -> tuple[sqlite3.Connection, str]:
        held = journal.last_checkpoint
        cp = held if held is not None and held.size == journal.committed_size else journal.checkpoint()
        conn = open_readonly(registry_path)
        conn.execute("BEGIN")
        conn.execute("SELECT value FROM meta WHERE name = 'last_applied_seq'").fetchone()  # pins the snapshot
        return conn, cp.render()

    return ledger.run_exclusive(task).result(timeout)


@contextmanager
def replayed(journal_dir: Path, size: int, scratch: Path) -> Iterator[sqlite3.Connection]:
    """A read-only registry of the journal's first ``size`` entries, built under ``scratch``."""
    if pruned_upto(journal_dir):
        raise ValueError("the journal was pruned: its first entries' bodies are gone, a report cannot be replayed")
    path = Path(scratch) / "report-registry.sqlite"
    stats = rebuild(itertools.islice(iter_entries(journal_dir), size), path, origin=journal_origin(journal_dir))
    if stats.entries != size:
        raise ValueError(f"the journal holds {stats.entries} entries, fewer than the checkpoint's {size}")
    conn = open_readonly(path)
    try:
        yield conn
    finally:
        conn.close()
