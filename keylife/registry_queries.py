"""The registry's SQL: schema, the statements the writer flushes with, and the read queries.

``keylife.registry`` says what the tables mean. Read functions take the calling thread's
read-only connection; multi-query reads run in one read transaction, so a key's row,
transitions and usage come from the same WAL snapshot even while the writer commits.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import orjson

from keylife.lifecycle import KeyState

MAX_PAGE = 1000
# The column holding when the key first entered each state.
STATE_AT = {s.value: "activated_at" if s == KeyState.ACTIVE else f"{s.value}_at" for s in KeyState}
KEY_COLUMNS = (
    "key_id", "state", "algorithm", "key_size", "curve", "purpose", "owner", "expires_at",
    "predecessor", "successor", "created_at", "state_changed_at", *STATE_AT.values(), "usage_total",
    "last_used_at", "violation_count", "last_seq", "data_instances", "attributes",
)  # fmt: skip

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS keys (
  key_id TEXT PRIMARY KEY, state TEXT, algorithm TEXT, key_size INTEGER, curve TEXT, purpose TEXT,
  owner TEXT, expires_at TEXT, predecessor TEXT, successor TEXT, created_at TEXT NOT NULL,
  state_changed_at TEXT, {", ".join(c + " TEXT" for c in STATE_AT.values())},
  usage_total INTEGER NOT NULL, last_used_at TEXT, violation_count INTEGER NOT NULL,
  last_seq INTEGER NOT NULL, data_instances TEXT, attributes TEXT);
CREATE INDEX IF NOT EXISTS keys_state ON keys (state, key_id);
CREATE INDEX IF NOT EXISTS keys_algorithm ON keys (algorithm, key_id);
CREATE INDEX IF NOT EXISTS keys_purpose ON keys (purpose, key_id);
CREATE INDEX IF NOT EXISTS keys_owner ON keys (owner, key_id);
CREATE TABLE IF NOT EXISTS transitions (key_id TEXT NOT NULL, seq INTEGER NOT NULL,
  event_type TEXT NOT NULL, from_state TEXT, to_state TEXT NOT NULL, occurred_at TEXT NOT NULL,
  origin TEXT NOT NULL, PRIMARY KEY (key_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage (key_id TEXT NOT NULL, operation TEXT NOT NULL,
  count INTEGER NOT NULL, PRIMARY KEY (key_id, operation)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node_keys (key_id TEXT NOT NULL, node TEXT NOT NULL,
  applied_state TEXT NOT NULL, applied_at TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (key_id, node)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS node_keys_node ON node_keys (node, key_id);
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, last_seen_at TEXT NOT NULL,
  events INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS violations (key_id TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
  detail TEXT NOT NULL, occurred_at TEXT NOT NULL, PRIMARY KEY (key_id, seq, kind)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS violations_kind ON violations (kind);
CREATE TABLE IF NOT EXISTS key_events (key_id TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (key_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, digest BLOB NOT NULL)
  WITHOUT ROWID;
"""
UPSERT_KEY = (
    f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({', '.join('?' * len(KEY_COLUMNS))}) "
    f"ON CONFLICT (key_id) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in KEY_COLUMNS[1:])}"
)
FLUSH_SQL = {
    "events": "INSERT OR IGNORE INTO events (id, seq, digest) VALUES (?, ?, ?)",
    "key_events": "INSERT OR IGNORE INTO key_events (key_id, seq) VALUES (?, ?)",
    "transitions": "INSERT INTO transitions VALUES (?, ?, ?, ?, ?, ?, ?)",
    "violations": "INSERT OR IGNORE INTO violations VALUES (?, ?, ?, ?, ?)",
    "usage": "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET count = count + excluded.count",
    "nodes": "INSERT INTO nodes VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
    "last_seen_at = max(last_seen_at, excluded.last_seen_at), events = events + excluded.events",
    "node_keys": "INSERT INTO node_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
    "applied_state = excluded.applied_state, applied_at = excluded.applied_at, seq = excluded.seq "
    "WHERE excluded.seq > node_keys.seq",
}
_JSON_COLUMNS = ("data_instances", "attributes")
_KEY_SELECT = "SELECT * FROM keys"


def decode_key(row: dict[str, Any]) -> dict[str, Any]:
    for name in _JSON_COLUMNS:
        if row[name] is not None:
            row[name] = orjson.loads(row[name])
    return row


def encode_key(record: dict[str, Any], columns: Sequence[str]) -> tuple[Any, ...]:
    """A key record as a row; JSON columns with sorted keys, so equal records give equal bytes."""
    values = dict(record)
    for name in _JSON_COLUMNS:
        if values[name] is not None:
            values[name] = orjson.dumps(values[name], option=orjson.OPT_SORT_KEYS).decode()
    return tuple(values[c] for c in columns)


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        conn.execute("COMMIT")


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def list_keys(
    conn: sqlite3.Connection,
    filters: dict[str, str | None],
    *,
    node: str | None,
    limit: int,
    after: str | None,
) -> list[dict[str, Any]]:
    """Keyset pagination by key_id: stable under concurrent inserts, no OFFSET scans."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    where: list[str] = []
    params: list[Any] = []
    for column, value in filters.items():
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if node is not None:
        where.append("key_id IN (SELECT key_id FROM node_keys WHERE node = ?)")
        params.append(node)
    if after is not None:
        where.append("key_id > ?")
        params.append(after)
    sql = _KEY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY key_id LIMIT ?"
    params.append(min(limit, MAX_PAGE))
    return [decode_key(row) for row in _rows(conn, sql, params)]


def get_key(conn: sqlite3.Connection, key_id: str, recent: int) -> dict[str, Any] | None:
    with _snapshot(conn):
        found = _rows(conn, _KEY_SELECT + " WHERE key_id = ?", (key_id,))
        if not found:
            return None
        key = decode_key(found[0])
        key["transitions"] = _rows(
            conn,
            "SELECT seq, event_type, from_state, to_state, occurred_at, origin FROM transitions "
            "WHERE key_id = ? ORDER BY seq",
            (key_id,),
        )
        key["usage"] = dict(
            conn.execute("SELECT operation, count FROM usage WHERE key_id = ? ORDER BY operation", (key_id,))
        )
        key["nodes"] = {
            row.pop("node"): row
            for row in _rows(
                conn,
                "SELECT node, applied_state, applied_at, seq FROM node_keys WHERE key_id = ? ORDER BY node",
                (key_id,),
            )
        }
        violations = _rows(
            conn,
            "SELECT seq, kind, detail, occurred_at FROM violations WHERE key_id = ? "
            "ORDER BY seq DESC, kind LIMIT ?",
            (key_id, recent),
        )
        key["violations"] = violations[::-1]
        seqs = conn.execute(
            "SELECT seq FROM key_events WHERE key_id = ? ORDER BY seq DESC LIMIT ?", (key_id, recent)
        ).fetchall()
        key["history_seqs"] = [s for (s,) in reversed(seqs)]
        key["history_total"] = conn.execute(
            "SELECT count(*) FROM key_events WHERE key_id = ?", (key_id,)
        ).fetchone()[0]
        return key


def key_history_seqs(conn: sqlite3.Connection, key_id: str, after: int, limit: int | None) -> list[int]:
    rows = conn.execute(
        "SELECT seq FROM key_events WHERE key_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        (key_id, after, -1 if limit is None else limit),
    )
    return [seq for (seq,) in rows]


def counts(conn: sqlite3.Connection, states: Sequence[str], kinds: Sequence[str]) -> dict[str, Any]:
    """Zero-filled so a metric built from it never disappears; ``unknown`` = keys without a state."""
    with _snapshot(conn):
        by_state = dict.fromkeys([*states, "unknown"], 0)
        for state, n in conn.execute("SELECT state, count(*) FROM keys GROUP BY state"):
            by_state[state or "unknown"] = n
        by_kind = dict.fromkeys(kinds, 0)
        for kind, n in conn.execute("SELECT kind, count(*) FROM violations GROUP BY kind"):
            by_kind[kind] = n
        usage_total = conn.execute("SELECT coalesce(sum(usage_total), 0) FROM keys").fetchone()[0]
        nodes = conn.execute("SELECT count(*) FROM nodes").fetchone()[0]
        last = conn.execute("SELECT value FROM meta WHERE name = 'last_applied_seq'").fetchone()
        return {
            "keys_total": sum(by_state.values()),
            "keys_by_state": by_state,
            "usage_total": usage_total,
            "violations_total": sum(by_kind.values()),
            "violations_by_kind": by_kind,
            "nodes": nodes,
            "last_applied_seq": last[0] if last else -1,
        }
