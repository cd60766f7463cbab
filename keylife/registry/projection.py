"""The registry: the audit journal projected into SQLite, rebuildable by replay.

The journal is the source of truth; every row here is a pure, deterministic function of the
journal entries applied in seq order, so ``rebuild`` from the journal gives the same tables.
Nothing reads a clock: times come from the events (``occurred_at``), normalised to one
fixed-width, sortable form (``2024-01-01T00:00:00.000000Z``) so that ``max`` on text is ``max``
on time.

Write side (one writer thread): ``begin`` / ``apply`` / ``apply_many`` / ``commit`` /
``rollback``. Applying works on an in-memory picture of the touched keys and pending rows and
writes them with ``executemany`` at ``commit`` (or when the pending set grows large), so
``seen`` and ``key_state`` on the writer see what was staged earlier in the open transaction,
and a usage report costs no SQL statement of its own. Read side: any thread, each with its own
read-only connection, seeing only committed data (WAL snapshots).
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keylife.common.files import fsync_dir
from keylife.domain.events import event_digest
from keylife.domain.lifecycle import TARGET_STATE, KeyState, observed_state, use_conflicts
from keylife.journal.writer import Entry
from keylife.registry import queries as q
from keylife.registry.deferred import Deferred
from keylife.registry.extension import Extension
from keylife.registry.extensions import EXTENSIONS
from keylife.registry.queries import MAX_COUNT, MAX_PAGE, VIOLATION_KINDS, RegistryReader, ts

__all__ = ["MAX_PAGE", "VIOLATION_KINDS", "RebuildStats", "Registry", "RegistryError", "RegistryReader",
           "rebuild", "ts"]  # fmt: skip

_log = logging.getLogger("keylife.registry")
SCHEMA_VERSION = 2  # 2: the incident-response extensions (keylife.registry.extensions)
_COPIED_TO_SUCCESSOR = ("algorithm", "key_size", "curve", "purpose", "owner")
_PLAIN_META = ("algorithm", "key_size", "curve", "purpose", "owner", "predecessor")
_FLUSH_AT = 50_000  # pending rows before an early (same-transaction) write, to bound memory
_CACHE_MAX = 50_000  # key records kept once written (across flushes and transactions)


class RegistryError(RuntimeError):
    """The registry cannot follow the journal as asked (a gap, another origin, old schema)."""


class RegistrySchemaOld(RegistryError):
    """The file was written by an older keylife: rebuild it from the journal (serve does so)."""


@dataclass(frozen=True)
class RebuildStats:
    entries: int
    keys: int
    last_seq: int
    seconds: float


@dataclass
class ProjectionDelta:
    """What one committed registry transaction changed, for in-memory views (the exporter's
    fleet index) that must follow the registry without re-reading it: handed to listeners
    only after COMMIT, and dropped on rollback, so a listener never counts a change twice."""

    keys: list[dict[str, Any]] = field(default_factory=list)  # changed key records, as stored
    transitions: list[tuple[Any, ...]] = field(default_factory=list)  # (key_id, seq, type, from, to, at, origin)
    violations: list[tuple[Any, ...]] = field(default_factory=list)  # (key_id, seq, kind, detail, at)
    usage: list[tuple[str, str, int]] = field(default_factory=list)  # (key_id, operation, added count)
    node_keys: list[tuple[str, str, str, str, int]] = field(default_factory=list)  # (key, node, state, at, seq)
    nodes: list[tuple[str, str, int]] = field(default_factory=list)  # (node, last_seen_at, added events)
    extensions: dict[str, list[Any]] = field(default_factory=dict)  # Extension.name -> its delta()

    def merge(self, other: ProjectionDelta) -> None:
        for name in ("keys", "transitions", "violations", "usage", "node_keys", "nodes"):
            getattr(self, name).extend(getattr(other, name))
        for name, items in other.extensions.items():
            self.extensions.setdefault(name, []).extend(items)


def _new_key(key_id: str, at: str) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(q.KEY_COLUMNS)
    record.update(key_id=key_id, created_at=at, usage_total=0, violation_count=0)
    return record


class Registry(RegistryReader):
    """One SQLite file: a writer connection for the writer thread, read-only ones per reader thread."""

    def __init__(
        self,
        path: Path,
        *,
        origin: str | None = None,
        background_checkpoint: bool = True,
        disabled: Iterable[str] = (),
    ) -> None:
        """``disabled``: names of extensions that project nothing (their tables exist, empty or as
        they were, for readers)."""
        super().__init__(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = q.open_writer(self.path)
        # A server checkpoints beside its writer; a batch job (rebuild) lets SQLite do it inline.
        self._checkpointer = q.WalCheckpointer(self.path) if background_checkpoint else None
        if self._checkpointer is None:
            self._db.execute("PRAGMA wal_autocheckpoint=1000")
        meta = dict(self._db.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
            self._db.close()
            raise RegistrySchemaOld(
                f"registry {self.path} has schema {meta['schema_version']}, not "
                f"{SCHEMA_VERSION}; rebuild it from the journal"
            )
        if origin and meta.get("origin") not in (None, origin):
            raise RegistryError(f"registry {self.path} projects origin {meta['origin']!r}, not {origin!r}")
        self.origin: str | None = meta.get("origin") or origin
        self._db.executemany(
            "INSERT OR IGNORE INTO meta VALUES (?, ?)",
            [("schema_version", SCHEMA_VERSION), ("last_applied_seq", -1), ("origin", self.origin)],
        )
        self._db.execute("UPDATE meta SET value = ? WHERE name = 'origin' AND value IS NULL", (self.origin,))
        self._committed_seq: int = self._db.execute(
            "SELECT value FROM meta WHERE name = 'last_applied_seq'"
        ).fetchone()[0]
        self._last_seq = self._committed_seq
        self._in_txn = False
        self._open = True
        self._known_nodes: set[str] = {node for (node,) in self._db.execute("SELECT node FROM nodes")}
        self.extensions: list[Extension] = []
        for cls in EXTENSIONS:
            self._db.executescript(cls.schema)
            if cls.name not in disabled:
                self.extensions.append(cls(self))
        self._by_type: dict[str, list[Extension]] = {}
        for ext in self.extensions:
            for kind in ext.types:
                self._by_type.setdefault(kind, []).append(ext)
        self._deferred = Deferred(self.extensions)
        self._deferred.load(self._db, self._committed_seq)
        self._owner: int | None = None  # the writer thread: the last to call begin()
        self._keys: dict[str, dict[str, Any] | None] = {}  # None: known not to exist
        self._base: dict[str, tuple[Any, ...]] = {}  # cold columns as last written
        self._dirty: set[str] = set()
        self._reset_pending()
        self._delta = ProjectionDelta()
        self.listeners: list[Callable[[ProjectionDelta], None]] = []

    def _reset_pending(self) -> None:
        self._events: dict[str, tuple[int, bytes]] = {}
        self._rows: dict[str, list[tuple[Any, ...]]] = {"key_events": [], "transitions": [], "violations": []}
        self._usage: dict[tuple[str, str], int] = {}
        self._nodes: dict[str, list[Any]] = {}
        self._node_keys: dict[tuple[str, str], tuple[str, str, int]] = {}
        self._users: dict[tuple[str, str], str] = {}  # (key_id, node) -> last used at
        self._pending = 0
        for ext in getattr(self, "extensions", ()):
            ext.reset()

    # ----- for extensions (writer thread) ---------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        """The write connection, inside the open transaction (extensions read and write through it)."""
        return self._db

    def key_record(self, key_id: str) -> dict[str, Any] | None:
        """The key as projected so far in the open transaction (staged changes included); read-only."""
        return self._load(key_id)

    def staged_key_nodes(self, key_id: str) -> set[str]:
        """``key_nodes`` on the writer thread, staged rows included (for extensions)."""
        rows = self._db.execute(
            "SELECT node FROM node_keys WHERE key_id = ? UNION SELECT node FROM key_users WHERE key_id = ?",
            (key_id, key_id),
        )
        nodes = {node for (node,) in rows}
        if self._node_keys or self._users:  # staged: probe per known node (few) rather than scan the rows (many)
            for node in (*self._known_nodes, *self._nodes):
                if (key_id, node) in self._node_keys or (key_id, node) in self._users:
                    nodes.add(node)
        return nodes

    def staged_node_states(self, key_id: str, nodes: Iterable[str]) -> dict[str, tuple[str, str, int]]:
        """node -> (applied state, at, seq) of the key's propagations by ``nodes``, staged rows included."""
        sql = "SELECT node, applied_state, applied_at, seq FROM node_keys WHERE key_id = ?"
        states = {node: (state, at, seq) for node, state, at, seq in self._db.execute(sql, (key_id,))}
        for node in nodes:
            staged = self._node_keys.get((key_id, node))
            if staged is not None:
                states[node] = staged
        return states

    # ----- writer side ------------------------------------------------------------------------
    def last_applied_seq(self) -> int:
        """The seq of the last applied entry (-1 when empty): on the writer thread including the
        open transaction's, on other threads the last committed one."""
        return self._last_seq if self._writer_view() else self._committed_seq

    @property
    def in_transaction(self) -> bool:
        return self._in_txn

    def begin(self) -> None:
        """Open the write transaction that ``apply`` stages into (``BEGIN IMMEDIATE``)."""
        if self._in_txn:
            raise RegistryError("a registry transaction is already open")
        self._db.execute("BEGIN IMMEDIATE")
        self._in_txn = True
        self._owner = threading.get_ident()

    def commit(self) -> None:
        """Write everything staged and commit; readers see it from now on."""
        if not self._in_txn:
            raise RegistryError("commit without begin")
        self._flush_or_name()
        self._db.execute("UPDATE meta SET value = ? WHERE name = 'last_applied_seq'", (self._last_seq,))
        self._db.execute("COMMIT")
        self._in_txn = False
        self._committed_seq = self._last_seq
        delta, self._delta = self._delta, ProjectionDelta()
        for listener in self.listeners:
            try:
                listener(delta)
            except Exception:  # the commit stands; a broken view must not undo it
                _log.exception("a registry listener failed on a committed delta")

    def rollback(self) -> None:
        """Forget everything staged since ``begin`` (the cache too: it may hold staged states)."""
        if self._db.in_transaction:  # SQLite may already have rolled back a failed COMMIT
            self._db.execute("ROLLBACK")
        self._in_txn = False
        self._keys.clear()
        self._base.clear()
        self._dirty.clear()
        self._reset_pending()
        self._delta = ProjectionDelta()
        self._last_seq = self._committed_seq
        self._deferred.load(self._db, self._committed_seq)  # their memory went with the rollback: replay

    def seen(self, event_id: str) -> tuple[int, bytes] | None:
        """(seq, digest) of the event already applied under this id; on the writer thread staged
        ones included, on any other thread committed ones only (see ``_writer_view``)."""
        if not self._writer_view():
            return super().seen(event_id)
        staged = self._events.get(event_id)
        if staged is not None:
            return staged
        row = self._db.execute("SELECT seq, digest FROM events WHERE id = ?", (event_id,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def seen_many(self, event_ids: list[str]) -> dict[str, tuple[int, bytes]]:
        """``seen`` for a whole request at once: one ``IN (...)`` query per 500 ids (writer view)."""
        found = {i: self._events[i] for i in event_ids if i in self._events}
        rest = [i for i in event_ids if i not in found]
        for start in range(0, len(rest), 500):
            chunk = rest[start : start + 500]
            sql = f"SELECT id, seq, digest FROM events WHERE id IN ({', '.join('?' * len(chunk))})"
            for event_id, seq, digest in self._db.execute(sql, chunk):
                found[event_id] = (seq, bytes(digest))
        return found

    def key_state(self, key_id: str) -> KeyState | None:
        """The key's lifecycle state, or None when it has none (never seen, or never generated).

        None is what ``lifecycle.is_allowed`` / ``refusal_reason`` take for "no such key", so a
        command check is ``is_allowed(registry.key_state(k), type)``; ``key_exists`` tells the two
        None cases apart. Staged states count on the writer thread only, as for ``seen``.
        """
        if not self._writer_view():
            return super().key_state(key_id)
        record = self._load(key_id)
        return None if record is None or record["state"] is None else KeyState(record["state"])

    def key_exists(self, key_id: str) -> bool:
        """True when the key has a row (any event named it), state or not."""
        if not self._writer_view():
            return super().key_exists(key_id)
        return self._load(key_id) is not None

    def _writer_view(self) -> bool:
        """Only the thread that last called ``begin`` reads through the write connection and
        its cache; other threads (API handlers) get committed data from their own connection,
        so they neither see half-done groups nor race the writer's cache."""
        return threading.get_ident() == self._owner

    def apply_many(self, entries: Iterable[Entry], digests: list[bytes] | None = None) -> None:
        """Apply entries in seq order inside the open transaction; the keys they name are
        loaded up front with a few ``IN (...)`` queries instead of one SELECT each. ``digests``
        (``event_digest`` of each entry's event, when the caller has them) saves recomputing."""
        source = iter(entries)
        offset = 0
        while batch := list(itertools.islice(source, _FLUSH_AT)):
            names = {e.event.get("key_id") for e in batch} | {e.event.get("successor") for e in batch}
            named = [k for k in names if k is not None]
            self._prefetch([k for k in named if k not in self._keys])
            for ext in self.extensions:
                ext.prefetch(named)
            for n, entry in enumerate(batch):
                self.apply(entry, digests[offset + n] if digests is not None else None)
            offset += len(batch)

    def apply(self, entry: Entry, digest: bytes | None = None) -> None:
        """Project one journal entry. Entries at or below ``last_applied_seq`` are skipped (replay
        overlap); a gap raises, because a projection with holes would silently disagree with the
        journal (replay from ``last_applied_seq() + 1`` after a failed commit)."""
        if not self._in_txn:
            raise RegistryError("apply outside begin()/commit()")
        seq = entry.seq
        if seq <= self._last_seq:
            if self._deferred.stale:
                ev = entry.event
                self._deferred.replay(seq, ev, lambda: ts(ev["occurred_at"]), self._last_seq)
            return
        if seq != self._last_seq + 1:
            raise RegistryError(f"entry seq {seq} does not follow {self._last_seq}; replay the missing entries")
        try:
            self._project(entry.event, seq, digest)
        except Exception as exc:  # validation makes this unreachable; if not, say which entry
            raise RegistryError(
                f"journal entry seq {seq} cannot be projected ({type(exc).__name__}: {exc}); "
                "the registry stays at the last committed entry"
            ) from exc
        self._last_seq = seq
        self._pending += 1
        if self._pending >= _FLUSH_AT:
            self._flush_or_name()

    # ----- deferred extensions (keylife.registry.deferred) -------------------------------------
    def deferred_from(self) -> int:
        """The first seq a catch-up reads: the next entry, or earlier while a deferred extension's
        stored state is older than the registry."""
        return self._deferred.first_needed(self._last_seq + 1)

    def checkpoint_deferred(self) -> None:
        """Write the deferred extensions' state now (at a stop, or before a copy), in its own
        transaction; a no-op when none lags."""
        if self._in_txn or not self._deferred.lagging(self._last_seq):
            return
        self.begin()
        self._deferred.force = True
        self.commit()

    def _project(self, ev: dict[str, Any], seq: int, digest: bytes | None) -> None:
        kind = ev["type"]
        at = ts(ev["occurred_at"])
        key_id: str | None = ev.get("key_id")
        if "id" in ev and ev["id"] not in self._events:
            self._events[ev["id"]] = (seq, digest if digest is not None else event_digest(ev))
        node = ev.get("node")
        if node is not None:
            seen_node = self._nodes.get(node)
            if seen_node is None:
                self._nodes[node] = [at, 1]
            else:
                seen_node[0] = max(seen_node[0], at)
                seen_node[1] += 1
        if key_id is not None:
            self._rows["key_events"].append((key_id, seq))
            if kind in TARGET_STATE:
                self._state_event(ev, kind, key_id, seq, at)
            elif kind == "usage_report":
                self._usage_event(ev, key_id, seq, at)
            elif kind == "propagated":
                self._touch_observed(ev, key_id, seq, at)
                self._node_keys[(key_id, ev["node"])] = (ev["state"], at, seq)
            else:
                # A security event is about a key even if keylife never saw it made (an auth failure
                # naming a client key, a node signal): the key gets a row, with no state, so it is
                # findable with its history. Other kinds (a refused command) invent no key.
                record = self._touch(key_id, seq, at if kind == "security_event" else None)
                if kind == "policy_violation":
                    self._violation(record, key_id, seq, "policy_breach", ev["violation"], at)
        for ext in self._by_type.get(kind, ()):
            ext.project(ev, seq, at)

    # ----- projection rules ---------------------------------------------------------------------
    def _load(self, key_id: str) -> dict[str, Any] | None:
        if key_id not in self._keys:
            self._prefetch([key_id])
        return self._keys[key_id]

    def _prefetch(self, key_ids: list[str]) -> None:
        """Cache the stored records of keys not cached yet (None for those with no row)."""
        for start in range(0, len(key_ids), 500):
            chunk = key_ids[start : start + 500]
            sql = q.SELECT_KEYS + f"({', '.join('?' * len(chunk))})"
            for row in self._db.execute(sql, chunk):
                record = q.decode_key(dict(zip(q.KEY_COLUMNS, row, strict=True)))
                self._keys[record["key_id"]] = record
                self._base[record["key_id"]] = q.cold_values(record)
            for key_id in chunk:
                self._keys.setdefault(key_id, None)

    def _touch(self, key_id: str, seq: int, create_at: str | None) -> dict[str, Any] | None:
        """The key's record marked as changed at ``seq``; created when ``create_at`` is given."""
        record = self._load(key_id)
        if record is None:
            if create_at is None:
                return None
            record = self._keys[key_id] = _new_key(key_id, create_at)
        record["last_seq"] = seq
        self._dirty.add(key_id)
        return record

    def _touch_observed(self, ev: dict[str, Any], key_id: str, seq: int, at: str) -> dict[str, Any]:
        """Usage and propagation name keys that exist in the field: unknown ones are flagged."""
        record = self._touch(key_id, seq, at)
        assert record is not None
        if record["state"] is None:
            self._violation(record, key_id, seq, "unknown_key", f"{ev['type']} for a key never generated", at)
        self._metadata(record, ev)
        return record

    def _violation(self, record: dict[str, Any] | None, key_id: str, seq: int, kind: str, detail: str, at: str) -> None:
        self._rows["violations"].append((key_id, seq, kind, detail, at))
        if record is not None:
            record["violation_count"] += 1

    def _move(self, record: dict[str, Any], new: str | None, seq: int, kind: str, at: str, origin: str) -> None:
        old = record["state"]
        if new is None or new == old:
            return
        self._rows["transitions"].append((record["key_id"], seq, kind, old, new, at, origin))
        record["state"] = new
        record["state_changed_at"] = at
        column = q.STATE_AT[new]
        if record[column] is None:
            record[column] = at

    def _state_event(self, ev: dict[str, Any], kind: str, key_id: str, seq: int, at: str) -> None:
        record = self._touch(key_id, seq, at)
        assert record is not None
        current = record["state"]
        origin = ev.get("origin", "observation")
        if origin == "command":
            new, problem = TARGET_STATE[kind].value, None
        else:
            target, problem = observed_state(None if current is None else KeyState(current), kind)
            new = None if target is None else target.value
        if current is None and kind != "generated" and origin != "command":
            # A command reaching here was allowed by the ledger: the withdrawal of a seen, untracked key.
            problem, detail = "unknown_key", f"{kind} for a key never generated"
        else:
            kept = ", state kept" if new == current else ""
            detail = f"{kind} observed while {current}{kept}"
        if problem:
            self._violation(record, key_id, seq, problem, detail, at)
        self._move(record, new, seq, kind, at, origin)
        if kind == "rotated":
            self._rotate_to(ev, record, seq, at, origin)
        else:
            self._metadata(record, ev)

    def _rotate_to(self, ev: dict[str, Any], old: dict[str, Any], seq: int, at: str, origin: str) -> None:
        """The successor becomes active; it is checked as an observation even for a command
        (the caller checked only the old key), so a sealed successor stays sealed, flagged."""
        succ_id: str = ev["successor"]
        self._rows["key_events"].append((succ_id, seq))
        created = self._load(succ_id) is None
        succ = self._touch(succ_id, seq, at)
        assert succ is not None
        if created:
            for name in _COPIED_TO_SUCCESSOR:
                succ[name] = old[name]
        current = succ["state"]
        if current is None:
            new: str | None = KeyState.ACTIVE.value
        else:
            target, problem = observed_state(KeyState(current), "activated")
            new = None if target is None else target.value
            if problem:
                kept = ", state kept" if new == current else ""
                detail = f"rotated in as successor of {old['key_id']} while {current}{kept}"
                self._violation(succ, succ_id, seq, problem, detail, at)
        self._move(succ, new, seq, "rotated", at, origin)
        self._metadata(succ, ev)
        succ["predecessor"] = old["key_id"]
        old["successor"] = succ_id

    def _usage_event(self, ev: dict[str, Any], key_id: str, seq: int, at: str) -> None:
        record = self._touch_observed(ev, key_id, seq, at)
        counts: dict[str, int] = ev["usage"]
        usage = self._usage
        total = 0
        for op, count in counts.items():
            usage[(key_id, op)] = min(usage.get((key_id, op), 0) + count, MAX_COUNT)
            total += count
        if total:
            record["usage_total"] = min(record["usage_total"] + total, MAX_COUNT)
            end = ts(ev["interval_end"]) if "interval_end" in ev else at
            node = ev.get("node")
            if node is not None:
                users = self._users
                if users.get((key_id, node), "") < end:
                    users[(key_id, node)] = end
            if record["last_used_at"] is None or end > record["last_used_at"]:
                record["last_used_at"] = end
        state = record["state"]
        if state is not None and use_conflicts(KeyState(state), counts):
            bad = sorted(op for op, n in counts.items() if use_conflicts(KeyState(state), {op: n}))
            detail = ", ".join(f"{op}={counts[op]}" for op in bad) + f" while {state}"
            self._violation(record, key_id, seq, "conflicting_use", detail, at)

    @staticmethod
    def _metadata(record: dict[str, Any], ev: dict[str, Any]) -> None:
        """Descriptive fields: a value an event carries replaces the old one; attributes merge."""
        for name in _PLAIN_META:
            if name in ev:
                record[name] = ev[name]
        if "expires_at" in ev:
            record["expires_at"] = ts(ev["expires_at"])
        if "data_instances" in ev:
            record["data_instances"] = list(ev["data_instances"])
        if "attributes" in ev:
            record["attributes"] = {**(record["attributes"] or {}), **ev["attributes"]}

    def _flush_or_name(self) -> None:
        """``_flush``, naming the journal entries whose rows could not be written, if it fails."""
        try:
            self._flush()
        except Exception as exc:
            raise RegistryError(
                f"the projection of journal entries {self._committed_seq + 1}..{self._last_seq} cannot be "
                f"written ({type(exc).__name__}: {exc})"
            ) from exc

    def _flush(self) -> None:
        """Write the staged rows (same transaction); the key cache stays valid afterwards."""
        db = self._db
        db.executemany(q.FLUSH_SQL["events"], [(i, s, d) for i, (s, d) in self._events.items()])
        for table, rows in self._rows.items():
            db.executemany(q.FLUSH_SQL[table], rows)
        db.executemany(q.FLUSH_SQL["usage"], [(k, op, n) for (k, op), n in self._usage.items()])
        db.executemany(q.FLUSH_SQL["nodes"], [(n, at, c) for n, (at, c) in self._nodes.items()])
        self._known_nodes.update(self._nodes)
        db.executemany(q.FLUSH_SQL["node_keys"], [(k, n, *v) for (k, n), v in self._node_keys.items()])
        db.executemany(q.FLUSH_SQL["key_users"], [(k, n, at) for (k, n), at in self._users.items()])
        full: list[tuple[Any, ...]] = []
        hot: list[tuple[Any, ...]] = []
        for key_id in sorted(self._dirty):
            record = self._keys[key_id]
            assert record is not None
            cold = q.cold_values(record)
            if self._base.get(key_id) == cold:
                hot.append(q.hot_values(record))
            else:
                full.append(q.encode_key(record, q.KEY_COLUMNS))
                self._base[key_id] = cold
        db.executemany(q.UPSERT_KEY, full)
        db.executemany(q.UPDATE_HOT, hot)
        for ext in self.extensions:
            ext.flush(db)
        if self._deferred.due():
            self._deferred.checkpoint(db, self._last_seq)
        if self.listeners:
            self._delta.merge(
                ProjectionDelta(
                    keys=[dict(self._keys[k]) for k in self._dirty],  # type: ignore[arg-type]
                    transitions=list(self._rows["transitions"]),
                    violations=list(self._rows["violations"]),
                    usage=[(k, op, n) for (k, op), n in self._usage.items()],
                    node_keys=[(k, n, *v) for (k, n), v in self._node_keys.items()],
                    nodes=[(n, at, c) for n, (at, c) in self._nodes.items()],
                    extensions={ext.name: ext.delta() for ext in self.extensions},
                )
            )
        self._dirty.clear()
        self._reset_pending()
        if len(self._keys) > _CACHE_MAX:  # everything is written: the cache may go
            self._keys.clear()
            self._base.clear()

    def close(self) -> None:
        """Drop anything uncommitted and close every connection (readers must be idle); idempotent."""
        if self._open:
            if not self._in_txn and not self._deferred.stale:
                try:
                    self.checkpoint_deferred()  # a clean stop keeps what the deferred extensions learnt
                except (OSError, sqlite3.Error):
                    _log.exception("deferred extensions' state not written at close; replayed at the next start")
                    self.rollback()
            self._open = False
            if self._checkpointer is not None:
                self._checkpointer.stop()
            self.rollback()
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
        super().close()


def rebuild(
    journal_entries: Iterable[Entry],
    path: Path,
    *,
    origin: str | None = None,
    batch: int = 50_000,
    disabled: Iterable[str] = (),
) -> RebuildStats:
    """Replay the journal into ``<path>.tmp``, then swap it in atomically.

    No Registry may be open on ``path`` meanwhile (close it first, reopen after): its WAL
    belongs to the file being replaced.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    for stale in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm"))):
        stale.unlink(missing_ok=True)
    started = time.monotonic()
    reg = Registry(tmp, origin=origin, background_checkpoint=False, disabled=disabled)
    entries = 0
    try:
        source = iter(journal_entries)
        while chunk := list(itertools.islice(source, batch)):
            reg.begin()
            reg.apply_many(chunk)
            reg.commit()
            entries += len(chunk)
        reg.checkpoint_deferred()
        keys = reg._db.execute("SELECT count(*) FROM keys").fetchone()[0]
        last_seq = reg.last_applied_seq()
        reg._db.execute("PRAGMA journal_mode=DELETE")  # fold the WAL in: one self-contained file
    finally:
        reg.close()
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    for old in (path.with_name(path.name + s) for s in ("-wal", "-shm")):
        old.unlink(missing_ok=True)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return RebuildStats(entries, keys, last_seq, time.monotonic() - started)
