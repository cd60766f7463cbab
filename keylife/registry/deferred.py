"""The registry's deferred extensions: state kept in memory, written every few seconds, replayed after a crash.

A deferred extension (``Extension.deferred``) changes its state with nearly every entry (the usage
baselines), so writing it at each registry flush would add a row write per entry to the ingest
path. Instead ``checkpoint`` writes it every ``EVERY`` seconds, at a clean stop, and whenever the
extension's memory is full, and ``meta`` records the seq the stored state is at
(``applied:<name>``). After an open or a rollback, an extension whose stored state is older than
the registry is *stale*: the registry's catch-up starts from ``first_needed`` and hands it the
entries the registry already has (``replay``), so it ends as if nothing had happened.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from keylife.registry.extension import Extension

_log = logging.getLogger("keylife.registry")

EVERY = 30.0  # seconds between writes of the deferred extensions' state


class Deferred:
    """The deferred extensions of one registry and where each one's stored state is."""

    def __init__(self, extensions: Sequence[Extension]) -> None:
        self.extensions = [ext for ext in extensions if ext.deferred]
        self.applied: dict[str, int] = {}  # name -> the seq its stored state is at
        self.stale: dict[str, int] = {}  # name -> the next seq it needs, while its memory lags the registry
        self.due_at = time.monotonic() + EVERY
        self.force = False

    def load(self, db: sqlite3.Connection, committed: int) -> None:
        """After an open or a rollback: the stored seqs (the registry's for one never written), and the
        extensions whose stored state is older than the registry."""
        for ext in self.extensions:
            row = db.execute("SELECT value FROM meta WHERE name = ?", (f"applied:{ext.name}",)).fetchone()
            self.applied[ext.name] = row[0] if row is not None else committed
        self.stale = {e.name: self.applied[e.name] + 1 for e in self.extensions if self.applied[e.name] < committed}

    def first_needed(self, next_seq: int) -> int:
        """The first seq a catch-up reads: the registry's next, or earlier for a stale extension."""
        return min([next_seq, *self.stale.values()])

    def lagging(self, last_seq: int) -> bool:
        """Whether some stored state is older than ``last_seq`` (a checkpoint would write something)."""
        return any(self.applied[e.name] < last_seq for e in self.extensions)

    def replay(self, seq: int, ev: dict[str, Any], at: Callable[[], str], last_seq: int) -> None:
        """Entry ``seq`` (which the registry already has) for the stale extensions that need it."""
        for ext in self.extensions:
            need = self.stale.get(ext.name)
            if need is None or need > seq:
                continue
            if need < seq:  # a gap (the journal was pruned past it): the state goes on from here
                _log.warning("deferred extension %s skips entries %d..%d", ext.name, need, seq - 1)
            if ev["type"] in ext.types:
                ext.project(ev, seq, at())
            if seq >= last_seq:
                del self.stale[ext.name]
                self.force = True
            else:
                self.stale[ext.name] = seq + 1

    def due(self) -> bool:
        return bool(self.extensions) and (
            self.force or time.monotonic() >= self.due_at or any(e.wants_checkpoint() for e in self.extensions)
        )

    def checkpoint(self, db: sqlite3.Connection, last_seq: int) -> None:
        """Write each up-to-date extension's state as of ``last_seq`` (inside the open transaction)."""
        for ext in self.extensions:
            need = self.stale.get(ext.name)
            if need is not None:
                if last_seq < need:
                    continue  # still being replayed
                _log.warning("deferred extension %s skips entries %d..%d", ext.name, need, last_seq)
                del self.stale[ext.name]  # it missed entries (pruned): it goes on from here
            ext.checkpoint(db)
            self.applied[ext.name] = last_seq
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"applied:{ext.name}", last_seq))
        self.due_at = time.monotonic() + EVERY
        self.force = False
