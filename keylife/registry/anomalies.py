"""Usage baselines projected from the journal's usage reports, and the anomaly flags they raise.

Each ``usage_report`` updates its key's state and its (key, node) seasonal baseline
(``keylife.registry.anomaly_model``) and is judged against them first: a spike or a drop, a node
that never used the key, an operation the key never did, an hour the key is never used at. A
judgement is a row of ``anomaly_flags`` keyed by the report's seq and the kind, so a rebuild
stages the same flags; ``keylife.response.anomalies`` journals each as an ``anomaly`` record
(``source_seq`` + ``kind`` in its details), and projecting that record marks the flag journaled,
so a start-up finds the flags a stop left unjournaled.

Cost on the ingest path: the states of recently used keys stay in memory (a bounded cache), so a
report is a few dict lookups and float operations; a flush writes the touched states as blobs.
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
CREATE TABLE IF NOT EXISTS anomaly_key_nodes (key_id TEXT NOT NULL, node TEXT NOT NULL, ops TEXT NOT NULL,
  state BLOB NOT NULL, PRIMARY KEY (key_id, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS anomaly_flags (seq INTEGER NOT NULL, kind TEXT NOT NULL, key_id TEXT NOT NULL,
  node TEXT, operation TEXT, at TEXT NOT NULL, score REAL NOT NULL, details TEXT NOT NULL,
  journaled INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (seq, kind)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS anomaly_flags_at ON anomaly_flags (at);
CREATE INDEX IF NOT EXISTS anomaly_flags_pending ON anomaly_flags (journaled, seq);
"""

_USAGE = str(EventType.USAGE_REPORT)
_ANOMALY = str(EventType.ANOMALY)
_CACHE_MAX = 50_000  # keys kept in memory between flushes; cleared (after a flush) beyond this


def _f(value: float) -> str:
    return f"{value:.3f}"


class AnomaliesExtension(Extension):
    name = "anomalies"
    schema = SCHEMA
    types = frozenset({_USAGE, _ANOMALY})

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self._keys: dict[str, m.KeyState] = {}  # a cache: each key with all its (key, node) states
        self._dirty: set[tuple[str, str]] = set()
        self._flags: dict[tuple[int, str], dict[str, Any]] = {}
        self._journaled: set[tuple[int, str]] = set()

    # ----- projection (writer thread) -------------------------------------------------------------
    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        if ev["type"] == _ANOMALY:
            details = ev.get("details") or {}
            src, kind = details.get("source_seq"), details.get("kind")
            if isinstance(src, int) and isinstance(kind, str):
                flag = self._flags.get((src, kind))
                if flag is not None:
                    flag["journaled"] = 1
                else:
                    self._journaled.add((src, kind))
            return
        key_id: str = ev["key_id"]
        node: str = ev.get("node") or ""
        usage: dict[str, int] = ev["usage"]
        hour, dow, span = m.report_time(ev, at)
        key = self._keys.get(key_id) or self._key(key_id)
        state = key.nodes.get(node)
        ops = key.ops
        total = 0
        for op, n in usage.items():  # one pass: the total, and any operation the key never did
            total += n
            if n and op not in ops:
                if key.reports >= m.WARM_KEY:
                    known = {"key_reports": key.reports, "known": sorted(ops)[:256]}
                    self._flag(seq, "new_operation", key_id, node, op, at, float(key.reports), known)
                ops.add(op)
            if n and state is not None and op not in state.ops:
                state.ops.add(op)
        if key.reports >= m.WARM_KEY:
            if state is None:
                self._flag(seq, "new_node", key_id, node, None, at, float(key.reports), {"key_reports": key.reports})
            unusual, share = m.unusual_hour(key, hour)
            if unusual:
                score = key.reports / (key.hours[hour] + 1)
                figures = {"key_reports": key.reports, "hour": hour, "share": _f(share)}
                self._flag(seq, "unusual_hour", key_id, node, None, at, score, figures)
        if state is None:
            state = key.nodes[node] = m.NodeState(ops={op for op, n in usage.items() if n})
        judged = state.step(m.rate_value(total, span), hour, dow, span)
        if judged is not None and (judged[0] > 0 or self._drop_counts(key_id)):
            z, expected, scale, n = judged
            figures = {"key_reports": key.reports, "observed_ops_per_hour": _f(total / span),
                       "expected_ops_per_hour": _f(max(0.0, math.expm1(expected))), "log_scale": _f(scale),
                       "bucket_observations": n, "hour": hour, "weekday": dow}  # fmt: skip
            self._flag(seq, "spike" if z > 0 else "drop", key_id, node, None, at, z, figures)
        state.count(hour)
        key.reports += 1
        key.hours[hour] += 1
        self._dirty.add((key_id, node))

    def _drop_counts(self, key_id: str) -> bool:
        """Whether a drop is news: not when the key was replaced (its successor takes the use over) or is no
        longer active. Asked only for a drop, so it costs nothing on the common path."""
        record = self.registry.key_record(key_id)
        return record is None or (record.get("state") in (None, "active") and not record.get("successor"))

    def _key(self, key_id: str) -> m.KeyState:
        """The key with every (key, node) state it has: one range read of the primary key."""
        key = self._keys[key_id] = m.KeyState()
        rows = self.registry.db.execute("SELECT node, ops, state FROM anomaly_key_nodes WHERE key_id = ?", (key_id,))
        for node, ops, blob in rows:
            key.add(node, m.NodeState.decode(ops, blob))
        return key

    def _flag(
        self, seq: int, kind: str, key_id: str, node: str, op: str | None, at: str, score: float, fig: dict[str, Any]
    ) -> None:
        details = {"kind": kind, "source_seq": seq, "score": _f(score)} | fig
        if node:
            details["node"] = node
        if op:
            details["operation"] = op
        self._flags[(seq, kind)] = {"seq": seq, "kind": kind, "key_id": key_id, "node": node or None,
                                    "operation": op, "at": at, "score": round(score, 3), "details": details,
                                    "journaled": int((seq, kind) in self._journaled)}  # fmt: skip

    # ----- the transaction -------------------------------------------------------------------------
    def flush(self, db: sqlite3.Connection) -> None:
        keys = self._keys
        db.executemany(
            "INSERT OR REPLACE INTO anomaly_key_nodes VALUES (?, ?, ?, ?)",
            [(k, n, *keys[k].nodes[n].encode()) for k, n in sorted(self._dirty)],
        )
        db.executemany(
            "INSERT OR IGNORE INTO anomaly_flags VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(f["seq"], f["kind"], f["key_id"], f["node"], f["operation"], f["at"], f["score"],
              json.dumps(f["details"], sort_keys=True), f["journaled"]) for f in self._flags.values()],
        )  # fmt: skip
        db.executemany("UPDATE anomaly_flags SET journaled = 1 WHERE seq = ? AND kind = ?", sorted(self._journaled))

    def delta(self) -> list[Any]:
        return [f for f in self._flags.values() if not f["journaled"]]

    def reset(self) -> None:
        self._flags.clear()
        self._journaled.clear()
        self._dirty.clear()
        # After a rollback (no transaction open) the cache may hold staged states: reload from the tables.
        if not self.registry.in_transaction or len(self._keys) > _CACHE_MAX:
            self._keys.clear()


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
