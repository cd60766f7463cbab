"""Incidents projected from the journal's ``incident`` records, and the index of their timelines.

An incident is opened, moved through its statuses, assigned, noted, linked to keys and nodes, and
fed by alerts, each step one ``incident`` record whose ``correlation_id`` is the incident id. Its
timeline is a list of journal seqs (the entries stay in the journal): every entry whose
``correlation_id`` names it, the lifecycle events of its keys while it is not closed, and the
``lockdown`` / ``bulk_operation`` records whose ``details.incident`` names it.

The extension sees every entry but usage reports (it cannot know which carry an incident's
correlation id), so the common case costs two dict lookups: the open incidents' keys and the
known ids are held in memory (few: incidents are rare), reloaded from the tables after a
rollback. Times come from the records, so a rebuild gives the same tables and the metrics derived
from them survive a restart. ``incident_causes`` maps each compromise entry to the incident it
opened or joined, so a start-up can find a compromise a stop left without its incident.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from keylife.domain.events import EventType
from keylife.domain.lifecycle import TARGET_STATE
from keylife.registry.extension import Extension

SEVERITIES = ("critical", "high", "medium", "low")
STATUSES = ("open", "mitigating", "resolved", "closed")
# Allowed status changes; anything else is refused (409) before it is journaled.
TRANSITIONS: dict[str, frozenset[str]] = {
    "open": frozenset({"mitigating", "resolved", "closed"}),
    "mitigating": frozenset({"resolved", "closed"}),
    "resolved": frozenset({"closed", "open"}),  # reopened: the problem came back
    "closed": frozenset(),
}
ACTIONS = ("opened", "status", "assigned", "note", "linked", "alert")

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (id TEXT PRIMARY KEY, title TEXT NOT NULL, severity TEXT NOT NULL,
  status TEXT NOT NULL, assignee TEXT, source TEXT NOT NULL, opened_by TEXT, alert_key TEXT,
  opened_at TEXT NOT NULL, opened_seq INTEGER NOT NULL, mitigated_at TEXT, resolved_at TEXT, closed_at TEXT,
  updated_at TEXT NOT NULL, last_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS incidents_status ON incidents (status, id);
CREATE INDEX IF NOT EXISTS incidents_alert ON incidents (alert_key);
CREATE TABLE IF NOT EXISTS incident_keys (incident TEXT NOT NULL, key_id TEXT NOT NULL,
  PRIMARY KEY (incident, key_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incident_nodes (incident TEXT NOT NULL, node TEXT NOT NULL,
  PRIMARY KEY (incident, node)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incident_timeline (incident TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (incident, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS incident_causes (seq INTEGER PRIMARY KEY, incident TEXT NOT NULL);
"""

_COLUMNS = ("id", "title", "severity", "status", "assignee", "source", "opened_by", "alert_key", "opened_at",
            "opened_seq", "mitigated_at", "resolved_at", "closed_at", "updated_at", "last_seq")  # fmt: skip
_UPSERT = f"INSERT OR REPLACE INTO incidents ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
_LIFECYCLE = frozenset(TARGET_STATE)
_INCIDENT = str(EventType.INCIDENT)
_CITING = frozenset({str(EventType.LOCKDOWN), str(EventType.BULK_OPERATION)})


class IncidentsExtension(Extension):
    name = "incidents"
    schema = SCHEMA
    # Every entry may carry an incident's correlation id, except usage reports: the bulk of the journal,
    # node telemetry that no incident cites (bench journal_append: the ledger rate stays within noise).
    types = frozenset(str(t) for t in EventType) - {str(EventType.USAGE_REPORT)}

    def __init__(self, registry: Any) -> None:
        super().__init__(registry)
        self._rows: dict[str, dict[str, Any]] = {}  # staged incident rows
        self._keys: set[tuple[str, str]] = set()
        self._nodes: set[tuple[str, str]] = set()
        self._timeline: set[tuple[str, int]] = set()
        self._causes: dict[int, str] = {}  # compromise seq -> the incident it opened or joined
        self._changed: list[dict[str, Any]] = []
        self._load()

    def _load(self) -> None:
        """The in-memory indexes from the committed tables (at open, and after a rollback)."""
        db = self.registry.db
        self._status: dict[str, str] = dict(db.execute("SELECT id, status FROM incidents"))
        self._open_keys: dict[str, set[str]] = {}
        for incident, key_id in db.execute(
            "SELECT k.incident, k.key_id FROM incident_keys k JOIN incidents i ON i.id = k.incident "
            "WHERE i.status != 'closed'"
        ):
            self._open_keys.setdefault(key_id, set()).add(incident)

    def project(self, ev: dict[str, Any], seq: int, at: str) -> None:
        kind = ev["type"]
        corr = ev.get("correlation_id")
        if kind == _INCIDENT:
            if corr is not None:
                self._incident(ev, corr, seq, at)
            return
        if corr is not None and corr in self._status:
            self._timeline.add((corr, seq))
        if kind in _LIFECYCLE:
            for incident in self._open_keys.get(ev.get("key_id"), ()):  # type: ignore[arg-type]
                self._timeline.add((incident, seq))
        elif kind in _CITING:
            cited = (ev.get("details") or {}).get("incident")
            if isinstance(cited, str) and cited in self._status:
                self._timeline.add((cited, seq))

    def _row(self, incident: str) -> dict[str, Any] | None:
        row = self._rows.get(incident)
        if row is None:
            found = self.registry.db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM incidents WHERE id = ?", (incident,)
            ).fetchone()
            if found is None:
                return None
            row = self._rows[incident] = dict(zip(_COLUMNS, found, strict=True))
        return row

    def _incident(self, ev: dict[str, Any], incident: str, seq: int, at: str) -> None:
        details: dict[str, Any] = ev.get("details") or {}
        action = details.get("action")
        row = self._row(incident)
        if action == "opened" and row is None:
            row = self._rows[incident] = dict.fromkeys(_COLUMNS)
            row |= {"id": incident, "title": details.get("title") or incident, "severity": "high",
                    "status": "open", "source": details.get("source") or "manual", "opened_by": ev.get("actor"),
                    "alert_key": details.get("alert_key"), "opened_at": at, "opened_seq": seq}  # fmt: skip
            if details.get("severity") in SEVERITIES:
                row["severity"] = details["severity"]
            self._status[incident] = "open"
        if row is None:  # a record for an incident never opened: kept in the journal, projected nowhere
            return
        cause = details.get("cause_seq")
        if action in ("opened", "linked") and isinstance(cause, int) and 0 <= cause < seq:
            self._timeline.add((incident, cause))  # the compromise that opened it or joined it
            self._causes[cause] = incident
        self._timeline.add((incident, seq))
        row["updated_at"], row["last_seq"] = at, seq
        if action == "status" and details.get("status") in STATUSES:
            self._status_change(row, details["status"], at)
        if action in ("opened", "assigned") and isinstance(details.get("assignee"), str):
            row["assignee"] = details["assignee"] or None
        if action in ("opened", "linked", "alert"):
            keys = [k for k in details.get("keys") or [] if isinstance(k, str)]
            if ev.get("key_id"):
                keys.append(ev["key_id"])
            for key_id in keys:
                self._keys.add((incident, key_id))
                if row["status"] != "closed":
                    self._open_keys.setdefault(key_id, set()).add(incident)
            for node in details.get("nodes") or []:
                if isinstance(node, str):
                    self._nodes.add((incident, node))
        self._changed.append({"id": incident, "status": row["status"], "severity": row["severity"]})

    def _status_change(self, row: dict[str, Any], status: str, at: str) -> None:
        row["status"] = status
        self._status[row["id"]] = status
        if status in ("mitigating", "resolved", "closed") and row["mitigated_at"] is None:
            row["mitigated_at"] = at  # time to mitigate: the first step out of "open"
        if status == "resolved":
            row["resolved_at"] = at
        elif status == "closed":
            row["closed_at"] = at
            for incidents in self._open_keys.values():
                incidents.discard(row["id"])
        elif status == "open":
            row["resolved_at"] = None

    def flush(self, db: sqlite3.Connection) -> None:
        db.executemany(_UPSERT, [tuple(r[c] for c in _COLUMNS) for r in self._rows.values()])
        db.executemany("INSERT OR IGNORE INTO incident_keys VALUES (?, ?)", sorted(self._keys))
        db.executemany("INSERT OR IGNORE INTO incident_nodes VALUES (?, ?)", sorted(self._nodes))
        db.executemany("INSERT OR IGNORE INTO incident_timeline VALUES (?, ?)", sorted(self._timeline))
        db.executemany("INSERT OR IGNORE INTO incident_causes VALUES (?, ?)", sorted(self._causes.items()))

    def delta(self) -> list[Any]:
        return list(self._changed)

    def reset(self) -> None:
        self._rows.clear()
        self._keys.clear()
        self._nodes.clear()
        self._timeline.clear()
        self._causes.clear()
        self._changed = []
        if not self.registry.in_transaction:  # a rollback: the in-memory indexes may hold staged changes
            self._load()


# ----- reader side (any thread: pass ``registry._reader()``) -------------------------------------
def _as_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_COLUMNS, row, strict=True))


def list_incidents(
    db: sqlite3.Connection, *, status: str | None = None, severity: str | None = None, limit: int = 100
) -> list[dict[str, Any]]:
    """Incidents, newest first, optionally of one status and one severity."""
    where, args = [], []
    if status is not None:
        where.append("status = ?")
        args.append(status)
    if severity is not None:
        where.append("severity = ?")
        args.append(severity)
    sql = f"SELECT {', '.join(_COLUMNS)} FROM incidents"
    sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY opened_seq DESC LIMIT ?"
    return [_as_dict(r) for r in db.execute(sql, (*args, limit))]


def get_incident(db: sqlite3.Connection, incident: str) -> dict[str, Any] | None:
    """One incident with its keys, nodes and timeline seqs (ascending), from one read snapshot."""
    db.execute("BEGIN")
    try:
        row = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM incidents WHERE id = ?", (incident,)).fetchone()
        if row is None:
            return None
        out = _as_dict(row)
        out["keys"] = [k for (k,) in db.execute("SELECT key_id FROM incident_keys WHERE incident = ?", (incident,))]
        out["nodes"] = [n for (n,) in db.execute("SELECT node FROM incident_nodes WHERE incident = ?", (incident,))]
        out["timeline_seqs"] = [
            s for (s,) in db.execute("SELECT seq FROM incident_timeline WHERE incident = ? ORDER BY seq", (incident,))
        ]
        return out
    finally:
        db.execute("COMMIT")


def open_for_alert(db: sqlite3.Connection, alert_key: str) -> str | None:
    """The newest incident opened for ``alert_key`` that is not closed."""
    row = db.execute(
        "SELECT id FROM incidents WHERE alert_key = ? AND status != 'closed' ORDER BY opened_seq DESC LIMIT 1",
        (alert_key,),
    ).fetchone()
    return row[0] if row else None


def unhandled_compromises(db: sqlite3.Connection, since: str) -> list[int]:
    """Seqs of compromises that occurred at or after ``since`` and opened or joined no incident."""
    rows = db.execute(
        "SELECT seq FROM transitions WHERE event_type = 'compromised' AND occurred_at >= ? "
        "AND seq NOT IN (SELECT seq FROM incident_causes) ORDER BY seq",
        (since,),
    )
    return [seq for (seq,) in rows]


def open_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Incidents not yet resolved or closed, per severity."""
    rows = db.execute("SELECT severity, count(*) FROM incidents WHERE status IN ('open', 'mitigating') GROUP BY 1")
    return dict(rows)


def durations(db: sqlite3.Connection) -> tuple[list[float], list[float]]:
    """(seconds from opened to mitigated, seconds from opened to closed) of every incident that got there."""
    rows = db.execute(
        "SELECT (julianday(mitigated_at) - julianday(opened_at)) * 86400.0, "
        "(julianday(closed_at) - julianday(opened_at)) * 86400.0 FROM incidents"
    ).fetchall()
    return [max(0.0, m) for m, _ in rows if m is not None], [max(0.0, c) for _, c in rows if c is not None]
