"""The witness's durable record: the latest cosigned checkpoint per log origin, in SQLite.

tlog-witness (*add-checkpoint*) requires that checking the old size and persisting the new
checkpoint be atomic, or two requests could roll the record back. ``advance`` is that
compare-and-swap: one in-process lock plus ``BEGIN IMMEDIATE`` (so a second process on the same
file waits too); the row changes only if the stored size is still the one the caller checked,
and the transaction is committed with ``synchronous=FULL`` before the caller answers.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    hash BLOB NOT NULL,
    note TEXT NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    origin TEXT NOT NULL,
    received REAL NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    note TEXT NOT NULL
)
"""


@dataclass(frozen=True)
class Latest:
    size: int
    hash: bytes | None  # None: never cosigned a checkpoint of this log
    note: str = ""


class WitnessState:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # committed means on disk, before we answer
        self._db.executescript(SCHEMA)
        self.lock = threading.Lock()

    def latest(self, origin: str) -> Latest:
        with self.lock:
            return self._read(origin)

    def _read(self, origin: str) -> Latest:
        row = self._db.execute("SELECT size, hash, note FROM checkpoints WHERE origin = ?", (origin,)).fetchone()
        return Latest(0, None) if row is None else Latest(row[0], bytes(row[1]), row[2])

    def all(self) -> dict[str, Latest]:
        with self.lock:
            rows = self._db.execute("SELECT origin, size, hash, note FROM checkpoints").fetchall()
        return {origin: Latest(size, bytes(h), note) for origin, size, h, note in rows}

    def advance(self, origin: str, expected: Latest, size: int, root: bytes, note: str, now: float) -> Latest | None:
        """Store (size, root, note) if the record still equals ``expected``; else return what it holds."""
        with self.lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._read(origin)
                if (current.size, current.hash) != (expected.size, expected.hash):
                    self._db.execute("ROLLBACK")
                    return current
                self._db.execute(
                    "INSERT INTO checkpoints (origin, size, hash, note, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(origin) DO UPDATE SET size = excluded.size, hash = excluded.hash, "
                    "note = excluded.note, updated = excluded.updated",
                    (origin, size, root, note, now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return None

    def keep_evidence(self, origin: str, status: int, reason: str, note: str, now: float) -> None:
        """A validly signed checkpoint refused as a fork or an inconsistent history: kept, because it is
        proof the log misbehaved (tlog-witness lets a witness log such requests). Only checkpoints the
        log's key signed get here, so a stranger cannot fill the table."""
        with self.lock:
            self._db.execute(
                "INSERT INTO evidence (origin, received, status, reason, note) VALUES (?, ?, ?, ?, ?)",
                (origin, now, status, reason, note),
            )

    def evidence(self, origin: str) -> list[tuple[int, str, str]]:
        with self.lock:
            rows = self._db.execute(
                "SELECT status, reason, note FROM evidence WHERE origin = ? ORDER BY rowid", (origin,)
            ).fetchall()
        return [(status, reason, note) for status, reason, note in rows]

    def close(self) -> None:
        with self.lock:
            self._db.close()
