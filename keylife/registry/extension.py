"""Projections of their own: tables that follow a few event types, beside the core key tables.

Incident response adds state that is still a pure function of the journal (revocations and
their confirmations per node, incidents, bulk plans, lockdowns, approvals). Each lives in its
own module as an ``Extension``: the registry creates its tables, hands it every entry of the
types it names (after the core projection, so it sees the key's new state), asks it to write
what it staged at each flush (same transaction), to forget it on rollback, and passes what
changed to listeners in ``ProjectionDelta.extensions[name]``. ``rebuild`` replays them like the
rest, so they are never out of step with the journal.

Registering one: add its class to ``keylife.registry.extensions.EXTENSIONS`` and bump
``projection.SCHEMA_VERSION`` (an older registry is then rebuilt from the journal at start-up).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from keylife.registry.projection import Registry


class Extension:
    name: ClassVar[str] = ""
    schema: ClassVar[str] = ""  # CREATE TABLE IF NOT EXISTS ...; run on every open
    types: ClassVar[frozenset[str]] = frozenset()  # event types handed to ``project``
    # A deferred extension keeps its state in memory and writes it with ``checkpoint`` every
    # ``keylife.registry.deferred.EVERY`` seconds (and at close), not at every flush; its stored state
    # then lags the registry, and a catch-up replays the journal entries after it (``applied:<name>``
    # in ``meta``). For state that changes with nearly every entry and that no reader needs at once.
    deferred: ClassVar[bool] = False

    def __init__(self, registry: Registry) -> None:
        self.registry = registry  # the writer side: ``registry.db`` and ``registry.key_record``

    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        """Stage what entry ``seq`` changes (``at``: its ``occurred_at``, normalised)."""

    def prefetch(self, key_ids: list[str]) -> None:
        """Load what ``project`` will need for these keys in a few queries (``apply_many`` calls it
        once per batch); optional."""

    def flush(self, db: sqlite3.Connection) -> None:
        """Write what was staged, inside the open transaction."""

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """A deferred extension: write its state as of the last projected entry."""

    def wants_checkpoint(self) -> bool:
        """A deferred extension: its state must be written at this flush (its memory is full)."""
        return False

    def reset(self) -> None:
        """Forget what was staged (after a flush, or on rollback)."""

    def delta(self) -> list[Any]:
        """What the last flush changed, for listeners (called just before ``reset``)."""
        return []
