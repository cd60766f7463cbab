"""The registry's SQL (schema, the writer's flush statements) and its read side.

``keylife.registry.projection`` says what the tables mean and owns the writer. ``RegistryReader`` serves
any thread with a read-only connection of its own, so readers never wait on the writer and
see committed data only; multi-query reads run in one read transaction, so a key's row,
transitions and usage come from the same WAL snapshot even while the writer commits.
"""

from __future__ import annotations

import operator
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from keylife.domain.lifecycle import KeyState

MAX_PAGE = 1000
# Counters saturate here instead of overflowing SQLite's INTEGER: each reported count is at most
# 2^53, but a key's sum of them may pass 2^63, and an overflow at projection would stop the
# registry (and start-up) on a journal that verifies. docs/registry.md says so.
MAX_COUNT = 2**63 - 1
VIOLATION_KINDS = ("conflicting_use", "skipped_transition", "unknown_key", "policy_breach")
# The column holding when the key first entered each state.
STATE_AT = {s.value: "activated_at" if s == KeyState.ACTIVE else f"{s.value}_at" for s in KeyState}
KEY_COLUMNS = (
    "key_id", "state", "algorithm", "key_size", "curve", "purpose", "owner", "expires_at",
    "predecessor", "successor", "created_at", "state_changed_at", *STATE_AT.values(), "usage_total",
    "last_used_at", "violation_count", "last_seq", "data_instances", "attributes",
)  # fmt: skip

# What a usage report changes; a key whose other columns are unchanged gets a narrow UPDATE
# that leaves the keys_* indexes alone (the write cost of the hot path).
HOT_COLUMNS = ("usage_total", "last_used_at", "violation_count", "last_seq")
COLD_COLUMNS = tuple(c for c in KEY_COLUMNS if c not in HOT_COLUMNS)
cold_values = operator.itemgetter(*COLD_COLUMNS)
hot_values = operator.itemgetter(*HOT_COLUMNS, "key_id")
UPDATE_HOT = f"UPDATE keys SET {', '.join(c + ' = ?' for c in HOT_COLUMNS)} WHERE key_id = ?"
SELECT_KEYS = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys WHERE key_id IN "

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
CREATE TABLE IF NOT EXISTS key_users (key_id TEXT NOT NULL, node TEXT NOT NULL, last_used_at TEXT NOT NULL,
  PRIMARY KEY (key_id, node)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS key_users_node ON key_users (node, key_id);
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
    "usage": "INSERT INTO usage VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET count = "
    f"CASE WHEN count > {MAX_COUNT} - excluded.count THEN {MAX_COUNT} ELSE count + excluded.count END",
    "nodes": "INSERT INTO nodes VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
    "last_seen_at = max(last_seen_at, excluded.last_seen_at), events = events + excluded.events",
    "key_users": "INSERT INTO key_users VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET "
    "last_used_at = max(last_used_at, excluded.last_used_at)",
    "node_keys": "INSERT INTO node_keys VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
    "applied_state = excluded.applied_state, applied_at = excluded.applied_at, seq = excluded.seq "
    "WHERE excluded.seq > node_keys.seq",
}
_JSON_COLUMNS = ("data_instances", "attributes")
_KEY_SELECT = "SELECT * FROM keys"
# The keys a node holds (two parameters: the node twice): applied a state of it, or used it.
HELD_BY_NODE = "SELECT key_id FROM node_keys WHERE node = ? UNION SELECT key_id FROM key_users WHERE node = ?"


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


def open_writer(path: Path) -> sqlite3.Connection:
    """The write connection: WAL (readers never block it), synchronous=NORMAL (a commit is durable
    at the next checkpoint; the journal, not the registry, is what must survive a power cut)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA cache_size=-65536")  # 64 MiB: hot key pages stay in memory
    db.execute("PRAGMA wal_autocheckpoint=0")  # WalCheckpointer does it off the ack path
    db.execute("PRAGMA journal_size_limit=67108864")  # the WAL file shrinks back to 64 MiB after a reset
    db.executescript(SCHEMA)
    return db


class WalCheckpointer:
    """Folds the WAL into the database from its own connection and thread, every few seconds.

    SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, stalling
    that commit (and every producer waiting on it) for tens of milliseconds. A PASSIVE
    checkpoint from another connection runs beside the writer instead of in front of it.
    """

    def __init__(self, path: Path, interval: float = 5.0) -> None:
        self._path, self._interval = path, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="registry-wal-checkpoint", daemon=True)
        self._thread.start()

    RESTART_ABOVE = 256 * 1024 * 1024

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=2.0)
        wal = Path(f"{self._path}-wal")
        try:
            while not self._stop.wait(self._interval):
                try:
                    # PASSIVE never blocks the writer; if the WAL still grows past the limit
                    # (a writer that never pauses), RESTART briefly waits for it so the WAL
                    # starts over instead of growing without bound.
                    big = wal.exists() and wal.stat().st_size > self.RESTART_ABOVE
                    db.execute(f"PRAGMA wal_checkpoint({'RESTART' if big else 'PASSIVE'})")
                except sqlite3.OperationalError:
                    continue  # busy: the next round catches up
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def ts(value: str) -> str:
    """An RFC 3339 time as ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (fixed width, so text order = time order)."""
    if len(value) == 27 and value[19] == "." and value[26] == "Z":
        return value
    if len(value) == 20 and value[19] == "Z":
        return value[:19] + ".000000Z"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC).replace(tzinfo=None)
    # isoformat, not strftime: glibc's %Y writes year 1 as "1", not "0001" (not fixed width).
    return parsed.isoformat(timespec="microseconds") + "Z"


def sum_exact(conn: sqlite3.Connection, column: str, table_sql: str, params: Sequence[Any] = ()) -> int:
    """``sum(column)`` without SQLite's "integer overflow" error: the high and low 32 bits are
    summed apart (neither sum can overflow below 2^31 rows) and joined in Python."""
    row = conn.execute(
        f"SELECT coalesce(sum({column} >> 32), 0), coalesce(sum({column} & 4294967295), 0) {table_sql}", params
    ).fetchone()
    return (row[0] << 32) + row[1]


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


def open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection to a registry file: it can never write, whoever else is writing."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


class RegistryReader:
    """Read-only queries over a registry file, safe from any number of threads."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_readonly(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def list_keys(
        self,
        *,
        state: str | None = None,
        algorithm: str | None = None,
        purpose: str | None = None,
        owner: str | None = None,
        node: str | None = None,
        limit: int = 100,
        after: str | None = None,
    ) -> list[dict[str, Any]]:
        """Keys ordered by key_id, filtered (``node``: keys that node holds, see ``key_nodes``), at most
        ``limit`` (capped at MAX_PAGE). Keyset pagination: pass the last key_id as ``after``;
        stable under concurrent inserts and no OFFSET scans."""
        if limit < 1:
            raise ValueError("limit must be at least 1")
        filters = {"state": state, "algorithm": algorithm, "purpose": purpose, "owner": owner}
        where = [f"{column} = ?" for column, value in filters.items() if value is not None]
        params: list[Any] = [value for value in filters.values() if value is not None]
        if node is not None:
            where.append(f"key_id IN ({HELD_BY_NODE})")
            params += [node, node]
        if after is not None:
            where.append("key_id > ?")
            params.append(after)
        sql = _KEY_SELECT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY key_id LIMIT ?"
        return [decode_key(row) for row in _rows(self._reader(), sql, [*params, min(limit, MAX_PAGE)])]

    def get_key(self, key_id: str, *, recent: int = 100) -> dict[str, Any] | None:
        """The key row plus ``transitions``, ``usage`` per operation, ``nodes`` (what each node
        applied), the ``recent`` latest ``violations`` and ``history_seqs`` (ascending;
        ``violation_count`` and ``history_total`` give the totals), all from one snapshot."""
        conn = self._reader()
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
            nodes = _rows(
                conn,
                "SELECT node, applied_state, applied_at, seq FROM node_keys WHERE key_id = ? ORDER BY node",
                (key_id,),
            )
            key["nodes"] = {row.pop("node"): row for row in nodes}
            key["used_on"] = dict(
                conn.execute("SELECT node, last_used_at FROM key_users WHERE key_id = ? ORDER BY node", (key_id,))
            )
            violations = _rows(
                conn,
                "SELECT seq, kind, detail, occurred_at FROM violations WHERE key_id = ? "
                "ORDER BY seq DESC, kind DESC LIMIT ?",
                (key_id, recent),
            )
            key["violations"] = violations[::-1]
            seqs = conn.execute(
                "SELECT seq FROM key_events WHERE key_id = ? ORDER BY seq DESC LIMIT ?", (key_id, recent)
            ).fetchall()
            key["history_seqs"] = [s for (s,) in reversed(seqs)]
            total = conn.execute("SELECT count(*) FROM key_events WHERE key_id = ?", (key_id,))
            key["history_total"] = total.fetchone()[0]
            return key

    def key_nodes(self, key_id: str) -> list[str]:
        """The nodes that hold the key: those that reported applying a state of it (propagation)
        and those that reported using it. These are the nodes a revocation must reach."""
        rows = self._reader().execute(
            "SELECT node FROM node_keys WHERE key_id = ? UNION SELECT node FROM key_users WHERE key_id = ?",
            (key_id, key_id),
        )
        return sorted(node for (node,) in rows)

    def key_history_seqs(self, key_id: str, *, after: int = -1, limit: int | None = None) -> list[int]:
        """Journal seqs of the events that name the key, ascending, after ``after`` (fetch the
        events themselves from the journal: the registry keeps no payloads)."""
        rows = self._reader().execute(
            "SELECT seq FROM key_events WHERE key_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (key_id, after, -1 if limit is None else limit),
        )
        return [seq for (seq,) in rows]

    def counts(self) -> dict[str, Any]:
        """Fleet totals, zero-filled so a metric built from them never disappears: keys by state
        (``unknown`` = keys seen only in usage/propagation), usage, violations by kind, nodes."""
        conn = self._reader()
        with _snapshot(conn):
            by_state = dict.fromkeys([*(s.value for s in KeyState), "unknown"], 0)
            for state, n in conn.execute("SELECT state, count(*) FROM keys GROUP BY state"):
                by_state[state or "unknown"] = n
            by_kind = dict.fromkeys(VIOLATION_KINDS, 0)
            for kind, n in conn.execute("SELECT kind, count(*) FROM violations GROUP BY kind"):
                by_kind[kind] = n
            usage_total = sum_exact(conn, "usage_total", "FROM keys")  # may pass 2^63 across keys
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

    def seen(self, event_id: str) -> tuple[int, bytes] | None:
        """(seq, digest) of the committed event with this id."""
        row = self._reader().execute("SELECT seq, digest FROM events WHERE id = ?", (event_id,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def key_state(self, key_id: str) -> KeyState | None:
        """The committed lifecycle state; None for no key or a key never generated."""
        row = self._reader().execute("SELECT state FROM keys WHERE key_id = ?", (key_id,)).fetchone()
        return KeyState(row[0]) if row and row[0] is not None else None

    def key_exists(self, key_id: str) -> bool:
        return self._reader().execute("SELECT 1 FROM keys WHERE key_id = ?", (key_id,)).fetchone() is not None

    def close(self) -> None:
        """Close every reader connection (their threads must be done with them)."""
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
