"""Bulk plans, lockdowns and approvals as the journal records them (a registry extension).

* ``bulk_plans``: one row per plan, from its ``bulk_operation`` records (planned, started, finished).
* ``lockdowns``: one row per lockdown, from its ``lockdown`` records (applied, released).
* ``lockdown_keys``: every suspension a lockdown made (a ``suspended`` command whose
  correlation_id is the lockdown id), with its seq: a release reactivates a key only while that
  suspension is still the key's latest transition (``still_locked``), so a key suspended again
  by someone else, revoked or reactivated meanwhile is left alone.
* ``approvals``: dual control, from ``approval`` records (requested, granted, expired).

A pure function of the journal like the rest of the registry: times come from the events.
Reader functions take a read-only connection (``RegistryReader._reader()``).
"""

from __future__ import annotations

import sqlite3
from typing import Any, ClassVar

import orjson

from keylife.registry.extension import Extension

LOCKDOWN_PREFIX = "lock-"

SCHEMA = """
CREATE TABLE IF NOT EXISTS bulk_plans (plan TEXT PRIMARY KEY, phase TEXT NOT NULL, action TEXT,
  actor TEXT, approver TEXT, total INTEGER, seq INTEGER NOT NULL, at TEXT NOT NULL, details TEXT NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockdowns (lockdown TEXT PRIMARY KEY, phase TEXT NOT NULL, actor TEXT,
  rule TEXT, trigger_key TEXT, incident TEXT, applied_at TEXT, released_at TEXT, seq INTEGER NOT NULL,
  details TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lockdown_keys (lockdown TEXT NOT NULL, key_id TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (lockdown, key_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS approvals (approval TEXT PRIMARY KEY, phase TEXT NOT NULL, operation TEXT,
  requested_by TEXT, approved_by TEXT, requested_at TEXT, decided_at TEXT, seq INTEGER NOT NULL,
  details TEXT NOT NULL) WITHOUT ROWID;
"""


class PlansExtension(Extension):
    name: ClassVar[str] = "plans"
    schema: ClassVar[str] = SCHEMA
    types: ClassVar[frozenset[str]] = frozenset({"bulk_operation", "lockdown", "approval", "suspended"})

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self.reset()

    def reset(self) -> None:
        self._plans: dict[str, tuple[Any, ...]] = {}
        self._lockdowns: list[dict[str, Any]] = []
        self._locked: list[tuple[str, str, int]] = []
        self._approvals: list[dict[str, Any]] = []
        self._changes: list[tuple[str, str, str, str | None]] = []

    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        kind = ev["type"]
        if kind == "suspended":
            corr = ev.get("correlation_id") or ""
            if ev.get("origin") == "command" and corr.startswith(LOCKDOWN_PREFIX):
                self._locked.append((corr, ev["key_id"], seq))
            return
        d = ev.get("details") or {}
        text = orjson.dumps(d, option=orjson.OPT_SORT_KEYS).decode()
        if kind == "bulk_operation" and d.get("plan"):
            self._plans[d["plan"]] = (
                d["plan"], d.get("phase", ""), d.get("action"), d.get("actor"), d.get("approver"),
                d.get("total"), seq, at, text,
            )  # fmt: skip
            self._changes.append(("bulk_operation", d["plan"], str(d.get("phase", "")), None))
        elif kind == "lockdown" and d.get("lockdown"):
            self._lockdowns.append(d | {"_seq": seq, "_at": at, "_text": text, "_actor": ev.get("actor")})
            self._changes.append(("lockdown", d["lockdown"], str(d.get("phase", "")), d.get("rule")))
        elif kind == "approval" and d.get("approval"):
            self._approvals.append(d | {"_seq": seq, "_at": at, "_text": text})
            self._changes.append(("approval", d["approval"], str(d.get("phase", "")), None))

    def flush(self, db: sqlite3.Connection) -> None:
        db.executemany(
            "INSERT INTO bulk_plans VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (plan) DO UPDATE SET "
            "phase = excluded.phase, approver = coalesce(excluded.approver, approver), seq = excluded.seq, "
            "at = excluded.at, details = excluded.details",
            list(self._plans.values()),
        )
        db.executemany("INSERT OR REPLACE INTO lockdown_keys VALUES (?, ?, ?)", self._locked)
        for d in self._lockdowns:
            if d.get("phase") == "applied":
                db.execute(
                    "INSERT OR IGNORE INTO lockdowns VALUES (?, 'applied', ?, ?, ?, ?, ?, NULL, ?, ?)",
                    (d["lockdown"], d["_actor"], d.get("rule"), d.get("trigger_key"), d.get("incident"), d["_at"],
                     d["_seq"], d["_text"]),
                )  # fmt: skip
            elif d.get("phase") == "released":
                db.execute(
                    "UPDATE lockdowns SET phase = 'released', released_at = ?, seq = ? WHERE lockdown = ?",
                    (d["_at"], d["_seq"], d["lockdown"]),
                )
        for d in self._approvals:
            phase = d.get("phase")
            if phase == "requested":
                db.execute(
                    "INSERT OR IGNORE INTO approvals VALUES (?, 'requested', ?, ?, NULL, ?, NULL, ?, ?)",
                    (d["approval"], d.get("operation"), d.get("requested_by"), d["_at"], d["_seq"], d["_text"]),
                )
            else:
                db.execute(
                    "UPDATE approvals SET phase = ?, approved_by = ?, decided_at = ?, seq = ? "
                    "WHERE approval = ? AND phase = 'requested'",
                    (phase, d.get("approved_by"), d["_at"], d["_seq"], d["approval"]),
                )

    def delta(self) -> list[Any]:
        """(record type, id, phase, rule) per record projected: the exporter counts automatic lockdowns."""
        return list(self._changes)


# ----- reader side (any thread, a read-only connection) ----------------------------------------
def _row(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> dict[str, Any] | None:
    cursor = conn.execute(sql, params)
    row = cursor.fetchone()
    if row is None:
        return None
    out = dict(zip([d[0] for d in cursor.description], row, strict=True))
    out["details"] = orjson.loads(out["details"])
    return out


def lockdown(conn: sqlite3.Connection, lockdown_id: str) -> dict[str, Any] | None:
    return _row(conn, "SELECT * FROM lockdowns WHERE lockdown = ?", (lockdown_id,))


def lockdowns(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    ids = [r for (r,) in conn.execute("SELECT lockdown FROM lockdowns ORDER BY seq DESC LIMIT ?", (limit,))]
    return [found for i in ids if (found := lockdown(conn, i)) is not None]


def locked_keys(conn: sqlite3.Connection, lockdown_id: str) -> list[str]:
    """Every key the lockdown suspended."""
    rows = conn.execute("SELECT key_id FROM lockdown_keys WHERE lockdown = ? ORDER BY key_id", (lockdown_id,))
    return [k for (k,) in rows]


def still_locked(conn: sqlite3.Connection, lockdown_id: str) -> list[str]:
    """The keys the lockdown suspended whose latest transition is still that suspension."""
    rows = conn.execute(
        "SELECT lk.key_id FROM lockdown_keys lk JOIN keys k ON k.key_id = lk.key_id "
        "WHERE lk.lockdown = ? AND k.state = 'suspended' "
        "AND lk.seq = (SELECT max(t.seq) FROM transitions t WHERE t.key_id = lk.key_id) ORDER BY lk.key_id",
        (lockdown_id,),
    )
    return [k for (k,) in rows]


def approval(conn: sqlite3.Connection, approval_id: str) -> dict[str, Any] | None:
    return _row(conn, "SELECT * FROM approvals WHERE approval = ?", (approval_id,))


def approvals(conn: sqlite3.Connection, phase: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    sql = "SELECT approval FROM approvals" + (" WHERE phase = ?" if phase else "") + " ORDER BY seq DESC LIMIT ?"
    ids = [r for (r,) in conn.execute(sql, (phase, limit) if phase else (limit,))]
    return [found for i in ids if (found := approval(conn, i)) is not None]


def bulk_plan(conn: sqlite3.Connection, plan_id: str) -> dict[str, Any] | None:
    return _row(conn, "SELECT * FROM bulk_plans WHERE plan = ?", (plan_id,))


def lockdown_counts(conn: sqlite3.Connection) -> tuple[dict[str, int], int]:
    """(automatic lockdowns by rule, lockdowns applied and not released), for /metrics."""
    by_rule = dict(conn.execute("SELECT rule, count(*) FROM lockdowns WHERE rule IS NOT NULL GROUP BY rule"))
    (applied,) = conn.execute("SELECT count(*) FROM lockdowns WHERE phase = 'applied'").fetchone()
    return by_rule, applied


def lockdown_triggered(conn: sqlite3.Connection, rule: str, trigger_key: str) -> bool:
    """Whether ``rule`` already locked down around ``trigger_key`` (an automatic lockdown is applied once)."""
    found = conn.execute("SELECT 1 FROM lockdowns WHERE rule = ? AND trigger_key = ? LIMIT 1", (rule, trigger_key))
    return found.fetchone() is not None


def compromised_since(conn: sqlite3.Connection, since: str) -> list[str]:
    """Keys that became compromised at or after ``since`` (normalised time), oldest first."""
    rows = conn.execute(
        "SELECT key_id FROM transitions WHERE to_state = 'compromised' AND occurred_at >= ? "
        "GROUP BY key_id ORDER BY min(seq)",
        (since,),
    )
    return [k for (k,) in rows]
