"""Usage baselines projected from the journal's usage reports, and the anomaly flags they raise.

Each ``usage_report`` adds to its key's open hour (``keylife.registry.anomaly_model``); the first
report of a later hour closes it: the hour that ended is judged (a drop) against the key's seasonal
baseline and learned, once per key per hour. A report is also checked at once for what cannot wait
for the hour: a node that never used the key, an operation the key never did, an hour the key is
never used at, and a count already past the hour's spike limit. A judgement is a row of
``anomaly_flags`` keyed by a report's seq and the kind, so a rebuild stages the same flags;
``keylife.response.anomalies`` journals each as an ``anomaly`` record (``source_seq`` + ``kind`` in
its details), and projecting that record marks the flag journaled, so a start-up finds the flags a
stop left unjournaled. A ``rotated`` event hands the key's baseline to its successor.

Cost on the ingest path: the states of recently used keys stay in memory (a bounded cache). A
report is a few dict lookups, a sum and a comparison: the hour's count is the key's ``usage_total``
(which the core projection keeps and writes anyway) minus its value when the hour opened, so the
open hour needs no write of its own. The arithmetic and the one ``anomaly_keys`` row write happen
once per key per hour.
"""

from __future__ import annotations

import json
import math
import sqlite3
from typing import Any

from keylife.domain.events import EventType
from keylife.registry import anomaly_model as m
from keylife.registry.extension import Extension

SCHEMA = """
CREATE TABLE IF NOT EXISTS anomaly_keys (key_id TEXT PRIMARY KEY, state BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anomaly_key_sets (key_id TEXT PRIMARY KEY, ops TEXT NOT NULL, nodes TEXT NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anomaly_flags (seq INTEGER NOT NULL, kind TEXT NOT NULL, key_id TEXT NOT NULL,
  node TEXT, operation TEXT, at TEXT NOT NULL, score REAL NOT NULL, details TEXT NOT NULL,
  journaled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (seq, kind)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS anomaly_flags_at ON anomaly_flags (at);
CREATE INDEX IF NOT EXISTS anomaly_flags_pending ON anomaly_flags (journaled, seq);
"""

_USAGE = str(EventType.USAGE_REPORT)
_ANOMALY = str(EventType.ANOMALY)
_ROTATED = str(EventType.ROTATED)
_CACHE_MAX = 50_000  # keys kept in memory; beyond this, a checkpoint writes them and the cache is cleared
_LOAD = ("SELECT k.key_id, k.state, s.ops, s.nodes FROM anomaly_keys k JOIN anomaly_key_sets s USING (key_id) "
         "WHERE ")  # fmt: skip


def _f(value: float) -> str:
    return f"{value:.3f}"


class AnomaliesExtension(Extension):
    name = "anomalies"
    schema = SCHEMA
    types = frozenset({_USAGE, _ANOMALY, _ROTATED})
    deferred = True  # states written by ``checkpoint``; the flags at every flush

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self._keys: dict[str, m.KeyState] = {}  # a cache of key states
        self._dirty: set[str] = set()  # keys whose state changed since the last checkpoint
        self._sets: set[str] = set()  # keys with a new node or operation
        self._flags: dict[tuple[int, str], dict[str, Any]] = {}
        self._journaled: set[tuple[int, str]] = set()

    # ----- projection (writer thread) -------------------------------------------------------------
    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        kind = ev["type"]
        if kind == _USAGE:
            self._usage(ev, seq, at)
        elif kind == _ROTATED:
            self._inherit(ev["key_id"], ev.get("successor"))
        else:
            details = ev.get("details") or {}
            src, flagged = details.get("source_seq"), details.get("kind")
            if isinstance(src, int) and isinstance(flagged, str):
                flag = self._flags.get((src, flagged))
                if flag is not None:
                    flag["journaled"] = 1
                else:
                    self._journaled.add((src, flagged))

    def _usage(self, ev: dict[str, Any], seq: int, at: str) -> None:
        key_id: str = ev["key_id"]
        node: str = ev.get("node") or ""
        usage: dict[str, int] = ev["usage"]
        key = self._keys.get(key_id) or self._key(key_id)
        if not key.ops.issuperset(usage):
            self._new_operations(key_id, key, node, usage, seq, at)
        if node and node not in key.nodes:  # a report without a node names none
            if key.buckets >= m.WARM_KEY and key.nodes:
                self._flag(seq, "new_node", key_id, node, None, at, float(key.buckets), {"key_hours": key.buckets})
            key.nodes.add(node)
            self._sets.add(key_id)
        start = ev.get("interval_start")
        hid = (start or at)[:13]
        if hid > key.hid:  # a later hour: the open one ended (a late report counts in the hour it arrives in)
            self._next_hour(key_id, key, node, hid, start, ev.get("interval_end") if start else None, seq, at)
        count = key.count = min(key.count + sum(usage.values()), m.OPS_MAX)  # saturating, like the registry's
        self._dirty.add(key_id)
        if count >= key.limit and not key.flagged:  # this report crosses the hour's spike limit
            key.flagged = True
            hour, dow, _ = m.hour_of(key.hid)
            z, expected, scale = key.score(m.rate_value(count, key.span), hour, dow, key.span)
            self._judged(seq, "spike", key_id, node, at, key, count, (z, expected, scale, key.hours(hour)))

    def _new_operations(
        self, key_id: str, key: m.KeyState, node: str, usage: dict[str, int], seq: int, at: str
    ) -> None:
        ops = key.ops
        for op, n in usage.items():
            if n and op not in ops:
                if key.buckets >= m.WARM_KEY:
                    known = {"key_hours": key.buckets, "known": sorted(ops)[:256]}
                    self._flag(seq, "new_operation", key_id, node, op, at, float(key.buckets), known)
                ops.add(op)
                self._sets.add(key_id)

    def _next_hour(
        self, key_id: str, key: m.KeyState, node: str, hid: str, start: str | None, end: str | None, seq: int, at: str
    ) -> None:
        """Close the open hour (judge and learn it), then open ``hid``: an unusual hour is judged here."""
        if key.hid:
            self._close(key_id, key, key.count, seq, at)
        hour = int(hid[11:13])
        if key.buckets >= m.WARM_KEY:
            unusual, share = m.unusual_hour(key, hour)
            if unusual:
                score = key.buckets / (key.hours(hour) + 1)
                figures = {"key_hours": key.buckets, "hour": hour, "share": _f(share)}
                self._flag(seq, "unusual_hour", key_id, node, None, at, score, figures)
        key.open(hid, start, end)

    def _close(self, key_id: str, key: m.KeyState, count: int, seq: int, at: str) -> None:
        """Judge the hour that ended (a drop: spikes were judged as they came), then learn it."""
        hour, dow, _ = m.hour_of(key.hid)
        judged = key.step(m.rate_value(max(count, 0), key.span), hour, dow, key.span)
        if judged is not None and judged[0] < 0 and self._drop_counts(key_id):
            self._judged(seq, "drop", key_id, None, at, key, count, judged)

    def _judged(
        self, seq: int, kind: str, key_id: str, node: str | None, at: str, key: m.KeyState, count: int,
        judged: tuple[float, float, float, int],
    ) -> None:  # fmt: skip
        z, expected, scale, n = judged
        hour, dow, _ = m.hour_of(key.hid)
        figures = {"observed_ops_per_hour": _f(count / key.span), "observed_ops": count, "hour_span": _f(key.span),
                   "expected_ops_per_hour": _f(max(0.0, math.expm1(expected))), "log_scale": _f(scale),
                   "bucket_observations": n, "hour_judged": key.hid, "hour": hour, "weekday": dow}  # fmt: skip
        self._flag(seq, kind, key_id, node or "", None, at, z, figures)

    def _inherit(self, key_id: str, successor: str | None) -> None:
        """A rotation hands the key's use to its successor: the successor starts from the key's baseline
        (not cold), unless it already has its own."""
        if not successor:
            return
        old = self._keys.get(key_id) or self._key(key_id)
        new = self._keys.get(successor) or self._key(successor)
        if new.buckets or not old.buckets:
            return
        heir = old.inherit()
        heir.ops |= new.ops
        heir.nodes |= new.nodes
        self._keys[successor] = heir
        self._dirty.add(successor)
        self._sets.add(successor)

    def _drop_counts(self, key_id: str) -> bool:
        """Whether a drop is news: not when the key was replaced (its successor takes the use over) or is no
        longer active. Asked only for a drop, so it costs nothing on the common path."""
        record = self.registry.key_record(key_id)
        return record is None or (record.get("state") in (None, "active") and not record.get("successor"))

    def _key(self, key_id: str) -> m.KeyState:
        row = self.registry.db.execute(_LOAD + "key_id = ?", (key_id,)).fetchone()
        key = self._keys[key_id] = m.KeyState.decode(*row[1:]) if row else m.KeyState()
        return key

    def prefetch(self, key_ids: list[str]) -> None:
        """The states of a batch's keys not cached yet, in ``IN (...)`` reads; a key without a row gets a
        fresh state."""
        missing = [k for k in key_ids if k not in self._keys]
        db, keys = self.registry.db, self._keys
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            for row in db.execute(_LOAD + f"key_id IN ({', '.join('?' * len(chunk))})", chunk):
                keys[row[0]] = m.KeyState.decode(*row[1:])
            for key_id in chunk:
                if key_id not in keys:
                    keys[key_id] = m.KeyState()

    def _flag(
        self, seq: int, kind: str, key_id: str, node: str, op: str | None, at: str, score: float, fig: dict[str, Any]
    ) -> None:
        details = {"kind": kind, "source_seq": seq, "score": _f(score)} | fig
        if node:
            details["node"] = node
        if op:
            details["operation"] = op
        self._flags.setdefault((seq, kind), {"seq": seq, "kind": kind, "key_id": key_id, "node": node or None,
                                             "operation": op, "at": at, "score": round(score, 3),
                                             "details": details,
                                             "journaled": int((seq, kind) in self._journaled)})  # fmt: skip

    # ----- the transaction -------------------------------------------------------------------------
    def flush(self, db: sqlite3.Connection) -> None:
        """The flags, at every flush: they are what readers and the journaling service wait for."""
        if self._flags:
            db.executemany(
                "INSERT OR IGNORE INTO anomaly_flags VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(f["seq"], f["kind"], f["key_id"], f["node"], f["operation"], f["at"], f["score"],
                  json.dumps(f["details"], sort_keys=True), f["journaled"]) for f in self._flags.values()],
            )  # fmt: skip
        if self._journaled:
            db.executemany("UPDATE anomaly_flags SET journaled = 1 WHERE seq = ? AND kind = ?", sorted(self._journaled))

    def checkpoint(self, db: sqlite3.Connection) -> None:
        """The states that changed since the last checkpoint (every few seconds, not at every flush: a
        key's state changes with each of its reports)."""
        keys = self._keys
        if self._sets:
            db.executemany(
                "INSERT OR REPLACE INTO anomaly_key_sets VALUES (?, ?, ?)",
                [(k, ",".join(sorted(keys[k].ops)), ",".join(sorted(keys[k].nodes))) for k in sorted(self._sets)],
            )
        if self._dirty:
            db.executemany(
                "INSERT OR REPLACE INTO anomaly_keys VALUES (?, ?)",
                [(k, keys[k].encode()) for k in sorted(self._dirty)],
            )
        self._dirty.clear()
        self._sets.clear()
        if len(keys) > _CACHE_MAX:  # everything is written: the cache may go
            keys.clear()

    def wants_checkpoint(self) -> bool:
        return len(self._keys) > _CACHE_MAX

    def delta(self) -> list[Any]:
        return [f for f in self._flags.values() if not f["journaled"]]

    def reset(self) -> None:
        self._flags.clear()
        self._journaled.clear()
        if not self.registry.in_transaction:  # a rollback: memory is ahead of the tables; the registry replays
            self._keys.clear()
            self._dirty.clear()
            self._sets.clear()


# ----- reader side (any thread: pass ``registry._reader()``) -------------------------------------
_FLAG_COLUMNS = ("seq", "kind", "key_id", "node", "operation", "at", "score", "details", "journaled")


def _flag_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(_FLAG_COLUMNS, row, strict=True))
    out["details"] = json.loads(out["details"])
    return out


def pending_flags(db: sqlite3.Connection, limit: int = 10_000) -> list[dict[str, Any]]:
    """Flags not yet journaled as ``anomaly`` records, oldest first."""
    sql = f"SELECT {', '.join(_FLAG_COLUMNS)} FROM anomaly_flags WHERE journaled = 0 ORDER BY seq LIMIT ?"
    return [_flag_row(r) for r in db.execute(sql, (limit,))]


def recent_flags(db: sqlite3.Connection, since: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Flags of reports at or after ``since`` (a normalised time), newest first."""
    sql = f"SELECT {', '.join(_FLAG_COLUMNS)} FROM anomaly_flags WHERE at >= ? ORDER BY at DESC, seq DESC LIMIT ?"
    return [_flag_row(r) for r in db.execute(sql, (since, limit))]


def recent_counts(db: sqlite3.Connection, since: str) -> list[tuple[str, str, int, str]]:
    """(key_id, kind, flags, latest at) per key and kind since ``since``, most recent first."""
    sql = (
        "SELECT key_id, kind, count(*), max(at) FROM anomaly_flags WHERE at >= ? "
        "GROUP BY key_id, kind ORDER BY max(at) DESC, key_id, kind"
    )
    return [(k, kind, n, at) for k, kind, n, at in db.execute(sql, (since,))]
