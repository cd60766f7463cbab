"""Revocations: the feed of keys withdrawn, and which node confirmed each withdrawal, when.

keylife cannot push a revocation into a DataFold node (its key rotation must be signed by the old
private key, which keylife never holds), so it publishes the decision (the signed feed,
``keylife.response.feed``) and confirms it from what the nodes report. Both are projected here,
as a pure function of the journal (times from the events, never a clock):

* ``revocation_feed``: one row per transition of a key into ``revoked`` or ``compromised``, by
  command or by observation; ``version`` is the row's position, 1, 2, 3 ... (monotonic, so a
  poller asks for what came after the version it holds).
* ``revocations``: per key, since when it is withdrawn, how many nodes are expected to confirm,
  how many did, and when the last expected one did (``complete_at``).
* ``revocation_nodes``: per (key, node): expected because it held the key when the revocation
  was journaled (``registry.staged_key_nodes``: it propagated or used the key), or joined later
  (it used or propagated the key afterwards); confirmed by a ``propagated`` with a sealed state
  (revoked, compromised, destroyed) or by a sealed-state observation carrying ``node`` (a
  DataFold key status answer saying revoked becomes one, ``keylife.datafold.status``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from keylife.registry.extension import Extension

WITHDRAWN = frozenset({"revoked", "compromised"})  # a transition into these makes a feed row
SEALED = frozenset({"revoked", "compromised", "destroyed"})  # a node reporting these refuses the key

SCHEMA = """
CREATE TABLE IF NOT EXISTS revocation_feed (version INTEGER PRIMARY KEY, key_id TEXT NOT NULL,
  state TEXT NOT NULL, at TEXT NOT NULL, seq INTEGER NOT NULL, origin TEXT NOT NULL, actor TEXT,
  reason TEXT, correlation_id TEXT);
CREATE INDEX IF NOT EXISTS revocation_feed_key ON revocation_feed (key_id, version);
CREATE TABLE IF NOT EXISTS revocations (key_id TEXT PRIMARY KEY, state TEXT NOT NULL,
  revoked_at TEXT NOT NULL, seq INTEGER NOT NULL, version INTEGER NOT NULL, expected INTEGER NOT NULL,
  confirmed INTEGER NOT NULL, complete_at TEXT, complete_seconds REAL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revocation_nodes (key_id TEXT NOT NULL, node TEXT NOT NULL,
  joined TEXT NOT NULL, joined_at TEXT NOT NULL, confirmed_at TEXT, confirmed_seq INTEGER,
  confirmed_state TEXT, via TEXT, PRIMARY KEY (key_id, node)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revocation_nodes_open ON revocation_nodes (node, key_id) WHERE confirmed_at IS NULL;
"""

_KEY_COLUMNS = ("key_id", "state", "revoked_at", "seq", "version", "expected", "confirmed", "complete_at",
                "complete_seconds")  # fmt: skip
_NODE_COLUMNS = ("key_id", "node", "joined", "joined_at", "confirmed_at", "confirmed_seq", "confirmed_state", "via")
_FEED_COLUMNS = ("version", "key_id", "state", "at", "seq", "origin", "actor", "reason", "correlation_id")


def _seconds(start: str, end: str) -> float:
    """``end - start`` in seconds (never negative: a node's clock may run behind keylife's)."""
    parse = datetime.fromisoformat
    return max(0.0, (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds())


@dataclass
class _Key:
    row: dict[str, Any]
    nodes: dict[str, dict[str, Any]]
    dirty_nodes: set[str]


class Revocations(Extension):
    """The writer side; readers use the functions below on their own connection."""

    name: ClassVar[str] = "revocations"
    schema: ClassVar[str] = SCHEMA
    types: ClassVar[frozenset[str]] = frozenset({"revoked", "compromised", "destroyed", "propagated", "usage_report"})

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self.reset()

    def reset(self) -> None:
        self._keys: dict[str, _Key | None] = {}  # staged picture of the keys touched; None: no revocation
        self._feed: list[tuple[Any, ...]] = []
        self._next_version: int | None = None
        self._changes: list[tuple[Any, ...]] = []

    # ----- projection -------------------------------------------------------------------------
    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        key_id = ev.get("key_id")
        if key_id is None:
            return
        record = self.registry.key_record(key_id)
        state = None if record is None else record["state"]
        if state not in SEALED:  # the usual case (a usage report of a live key): no SQL at all
            return
        kind = ev["type"]
        node = ev.get("node")
        key = self._load(key_id)
        if kind in WITHDRAWN and state == kind and (key is None or key.row["state"] != state):
            key = self._withdraw(ev, key_id, state, seq, at, key)
        if key is None or node is None:
            return
        if kind == "propagated":
            sealed = ev["state"] in SEALED
            self._node(key, node, seq, at, ev["state"] if sealed else None, "propagated")
        elif kind == "usage_report":
            self._node(key, node, seq, at, None, None)
        else:  # a sealed-state observation from a node (a key status answer saying revoked)
            self._node(key, node, seq, at, kind, "observation" if ev.get("origin") != "command" else None)

    def _withdraw(self, ev: dict[str, Any], key_id: str, state: str, seq: int, at: str, key: _Key | None) -> _Key:
        """A new feed row; the first withdrawal also fixes the nodes expected to confirm it."""
        if self._next_version is None:
            (last,) = self.registry.db.execute("SELECT coalesce(max(version), 0) FROM revocation_feed").fetchone()
            self._next_version = last + 1
        version, self._next_version = self._next_version, self._next_version + 1
        origin = ev.get("origin", "observation")
        self._feed.append(
            (version, key_id, state, at, seq, origin, ev.get("actor"), ev.get("reason"), ev.get("correlation_id"))
        )
        self._changes.append(("withdrawn", key_id, state, version, at))
        if key is not None:  # revoked, now compromised: the confirmations so far stand (both sealed)
            key.row.update(state=state, version=version)
            return key
        row = dict(zip(_KEY_COLUMNS, (key_id, state, at, seq, version, 0, 0, None, None), strict=True))
        key = self._keys[key_id] = _Key(row, {}, set())
        holders = sorted(self.registry.staged_key_nodes(key_id))
        applied = self.registry.staged_node_states(key_id, holders)
        for node in holders:
            self._expect(key, node, "at_revocation", at)
            node_state, node_at, node_seq = applied.get(node, (None, None, None))
            if node_state in SEALED:  # it reported refusing the key before keylife withdrew it
                self._confirm(key, node, node_seq, max(node_at, at), node_state, "propagated")
        self._settle(key)
        return key

    def _node(self, key: _Key, node: str, seq: int, at: str, sealed: str | None, via: str | None) -> None:
        if node not in key.nodes:
            self._expect(key, node, "later", at)
        if sealed is not None and key.nodes[node]["confirmed_at"] is None:
            self._confirm(key, node, seq, at, sealed, via or "observation")
        self._settle(key)

    def _expect(self, key: _Key, node: str, joined: str, at: str) -> None:
        values = (key.row["key_id"], node, joined, at, None, None, None, None)
        key.nodes[node] = dict(zip(_NODE_COLUMNS, values, strict=True))
        key.dirty_nodes.add(node)
        key.row["expected"] += 1
        self._changes.append(("expected", key.row["key_id"], node, at))

    def _confirm(self, key: _Key, node: str, seq: int, at: str, state: str, via: str) -> None:
        key.nodes[node].update(confirmed_at=at, confirmed_seq=seq, confirmed_state=state, via=via)
        key.dirty_nodes.add(node)
        key.row["confirmed"] += 1
        self._changes.append(("confirmed", key.row["key_id"], node, at))

    def _settle(self, key: _Key) -> None:
        """``complete_at``: when the last expected node confirmed (none while one is missing)."""
        row = key.row
        done = row["expected"] > 0 and row["confirmed"] == row["expected"]
        if done and row["complete_at"] is None:
            row["complete_at"] = max(n["confirmed_at"] for n in key.nodes.values())
            row["complete_seconds"] = _seconds(row["revoked_at"], row["complete_at"])
            self._changes.append(("complete", row["key_id"], row["complete_seconds"]))
        elif not done and row["complete_at"] is not None:  # a node joined after completion
            row["complete_at"] = row["complete_seconds"] = None

    def _load(self, key_id: str) -> _Key | None:
        if key_id in self._keys:
            return self._keys[key_id]
        db = self.registry.db
        found = db.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM revocations WHERE key_id = ?", (key_id,)).fetchone()
        key = None
        if found is not None:
            nodes = db.execute(f"SELECT {', '.join(_NODE_COLUMNS)} FROM revocation_nodes WHERE key_id = ?", (key_id,))
            key = _Key(dict(zip(_KEY_COLUMNS, found, strict=True)),
                       {r[1]: dict(zip(_NODE_COLUMNS, r, strict=True)) for r in nodes}, set())  # fmt: skip
        self._keys[key_id] = key
        return key

    # ----- writing ----------------------------------------------------------------------------
    def flush(self, db: sqlite3.Connection) -> None:
        db.executemany(f"INSERT INTO revocation_feed VALUES ({', '.join('?' * len(_FEED_COLUMNS))})", self._feed)
        keys = [k for k in self._keys.values() if k is not None]
        db.executemany(
            f"INSERT OR REPLACE INTO revocations VALUES ({', '.join('?' * len(_KEY_COLUMNS))})",
            [tuple(k.row[c] for c in _KEY_COLUMNS) for k in keys],
        )
        db.executemany(
            f"INSERT OR REPLACE INTO revocation_nodes VALUES ({', '.join('?' * len(_NODE_COLUMNS))})",
            [tuple(k.nodes[n][c] for c in _NODE_COLUMNS) for k in keys for n in sorted(k.dirty_nodes)],
        )
        for k in keys:
            k.dirty_nodes.clear()
        self._feed = []
        self._keys = {}  # written: later entries of this transaction read them back from the db

    def delta(self) -> list[Any]:
        """("withdrawn", key, state, version, at) | ("expected", key, node, at) | ("confirmed", key,
        node, at) | ("complete", key, seconds)."""
        changes, self._changes = self._changes, []
        return changes


# ----- reader side (any thread, on its own read-only connection: ``registry._reader()``) -----------
def feed_version(conn: sqlite3.Connection) -> int:
    """The feed's current version (0 when nothing was ever withdrawn)."""
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM revocation_feed").fetchone()[0])


def feed_entries(conn: sqlite3.Connection, since: int, upto: int) -> list[dict[str, Any]]:
    """The feed rows with ``since < version <= upto``, in version order."""
    rows = conn.execute(
        f"SELECT {', '.join(_FEED_COLUMNS)} FROM revocation_feed WHERE version > ? AND version <= ? ORDER BY version",
        (since, upto),
    )
    return [{c: v for c, v in zip(_FEED_COLUMNS, row, strict=True) if v is not None} for row in rows]


def revocation(conn: sqlite3.Connection, key_id: str) -> dict[str, Any] | None:
    """A key's withdrawal and its confirmation per node, from one read snapshot; None if never withdrawn."""
    with _snapshot(conn):
        row = conn.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM revocations WHERE key_id = ?", (key_id,)).fetchone()
        if row is None:
            return None
        out = dict(zip(_KEY_COLUMNS, row, strict=True))
        nodes = conn.execute(
            f"SELECT {', '.join(_NODE_COLUMNS)} FROM revocation_nodes WHERE key_id = ? ORDER BY node", (key_id,)
        )
        out["nodes"] = [dict(zip(_NODE_COLUMNS[1:], r[1:], strict=True)) for r in nodes]
        feed = conn.execute(
            f"SELECT {', '.join(_FEED_COLUMNS)} FROM revocation_feed WHERE key_id = ? ORDER BY version", (key_id,)
        )
        out["feed"] = [{c: v for c, v in zip(_FEED_COLUMNS, r, strict=True) if v is not None} for r in feed]
    out["unconfirmed"] = [n["node"] for n in out["nodes"] if n["confirmed_at"] is None]
    return out


def unconfirmed_by_node(conn: sqlite3.Connection) -> dict[str, int]:
    """Unconfirmed (key, node) pairs per node (every node: the gauge is not capped)."""
    rows = conn.execute("SELECT node, count(*) FROM revocation_nodes WHERE confirmed_at IS NULL GROUP BY node")
    return dict(rows.fetchall())


def unconfirmed_pairs(conn: sqlite3.Connection, limit: int) -> tuple[list[tuple[str, str, str]], int]:
    """The oldest ``limit`` unconfirmed pairs as (key_id, node, expected since) and how many there are."""
    (total,) = conn.execute("SELECT count(*) FROM revocation_nodes WHERE confirmed_at IS NULL").fetchone()
    rows = conn.execute(
        "SELECT n.key_id, n.node, max(n.joined_at, r.revoked_at) AS since FROM revocation_nodes n "
        "JOIN revocations r ON r.key_id = n.key_id WHERE n.confirmed_at IS NULL ORDER BY since, n.key_id, n.node "
        "LIMIT ?",
        (limit,),
    )
    return [tuple(r) for r in rows], int(total)


def completion_seconds(conn: sqlite3.Connection) -> list[float]:
    """Seconds from withdrawal to the last expected node's confirmation, per fully confirmed key."""
    return [s for (s,) in conn.execute("SELECT complete_seconds FROM revocations WHERE complete_at IS NOT NULL")]


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction, so a key's row and its nodes come from the same WAL snapshot."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")
