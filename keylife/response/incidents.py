"""The incident workflow: open, change status, assign, note, link; and incidents opened by a compromise.

Every step is one ``incident`` record in the journal (``correlation_id`` = the incident id), so the
incident, its status and its timeline are projections (``keylife.registry.incidents``). A status
change is checked against the projected status first: a refused change is a ``Refusal`` (409) that
names the allowed ones, and nothing is journaled.

A compromise (a command or an observation) opens an incident through a commit reaction: the
writer thread only queues the entry, a worker thread of this service journals the ``opened``
record. Its incident id and event id derive from the compromise entry's own id, so a redelivered or
replayed compromise is a duplicate, never a second incident. A compromise whose ``correlation_id``
names an incident that is not closed links the key to it instead.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import secrets
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from keylife.config import IncidentsConfig
from keylife.domain.events import Event, EventType, format_time
from keylife.ingest.ledger import Ledger, Outcome
from keylife.journal.reader import get_entries
from keylife.journal.writer import Entry, Journal
from keylife.registry import incidents as q
from keylife.registry.projection import Registry
from keylife.registry.queries import ts

log = logging.getLogger("keylife.incidents")

WAIT_SECONDS = 30.0
CATCH_UP = timedelta(days=1)  # at start: compromises this recent without an incident get one
MAX_NODES = 256  # details lists hold at most 256 items


class Refusal(Exception):
    """A request the workflow refuses: the API answers it as problem+json with these fields."""

    def __init__(self, status: int, kind: str, title: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status, self.kind, self.title, self.detail, self.extra = status, kind, title, detail, extra


def new_incident_id(now: datetime | None = None) -> str:
    """``inc-<yyyymmdd>-<12 random hex>``: sortable by day, unguessable, <= 25 characters."""
    return f"inc-{(now or datetime.now(UTC)):%Y%m%d}-{secrets.token_hex(6)}"


def derived_incident_id(day: str, *parts: str) -> str:
    """A deterministic incident id (the same compromise or alert always gives the same one)."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:12]
    return f"inc-{day.replace('-', '')[:8]}-{digest}"


def _hash(*parts: str, n: int = 24) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:n]


class IncidentService:
    def __init__(self, config: IncidentsConfig, ledger: Ledger, registry: Registry) -> None:
        self.config, self.ledger, self.registry = config, ledger, registry
        self._queue: queue.Queue[Entry | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="incidents", daemon=True)
        self.opened_automatically = 0  # what the worker did since start (tests and logs)
        self._catch_up: Journal | None = None

    # ----- lifecycle ----------------------------------------------------------------------------
    def start(self, journal: Journal | None = None) -> None:
        """Start the worker; with ``journal``, first catch up on compromises of the last
        ``CATCH_UP`` that opened no incident (the process stopped between the two)."""
        if journal is not None and self.config.open_on_compromise:
            self._catch_up = journal
        self._thread.start()

    def stop(self) -> None:
        """Finish what is queued (before the ledger stops), then end the worker."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=WAIT_SECONDS)

    def react(self, entries: list[Entry]) -> None:
        """The commit reaction (writer thread): hand compromises to the worker, nothing more."""
        if not self.config.open_on_compromise:
            return
        for entry in entries:
            if entry.event["type"] == "compromised":
                self._queue.put(entry)

    def _run(self) -> None:
        if self._catch_up is not None:
            try:
                self.catch_up(self._catch_up)
            except Exception:
                log.exception("could not catch up on compromises without an incident")
        while (entry := self._queue.get()) is not None:
            try:
                self.on_compromise(entry)
            except Exception:  # logged; the compromise itself stands in the journal and pages anyway
                log.exception("could not open an incident for journal entry %d", entry.seq)

    def catch_up(self, journal: Journal) -> int:
        """Open the incidents of recent compromises that have none; returns how many were handled."""
        self.sync()
        since = format_time(datetime.now(UTC) - CATCH_UP)
        seqs = q.unhandled_compromises(self.registry._reader(), ts(since))
        for entry in get_entries(journal, seqs):
            try:
                self.on_compromise(entry)
            except Refusal as exc:  # one that cannot be journaled must not hold back the others
                log.error("no incident for the compromise at journal entry %d: %s", entry.seq, exc.detail)
        return len(seqs)

    # ----- reading --------------------------------------------------------------------------
    def sync(self) -> None:
        """Read-your-writes: every acknowledged entry visible to this thread's reads."""
        self.ledger.sync_registry().result(timeout=WAIT_SECONDS)

    def list(self, *, status: str | None, severity: str | None, limit: int) -> list[dict[str, Any]]:
        self.sync()
        return q.list_incidents(self.registry._reader(), status=status, severity=severity, limit=limit)

    def get(self, incident: str) -> dict[str, Any]:
        self.sync()
        found = q.get_incident(self.registry._reader(), incident)
        if found is None:
            raise Refusal(404, "incident-not-found", "No such incident", f"incident {incident!r} does not exist")
        return found

    # ----- actions ----------------------------------------------------------------------------
    def open(
        self,
        *,
        actor: str,
        title: str,
        severity: str,
        keys: Iterable[str] = (),
        nodes: Iterable[str] = (),
        assignee: str | None = None,
    ) -> dict[str, Any]:
        incident = new_incident_id()
        details: dict[str, Any] = {"action": "opened", "title": title, "severity": severity, "status": "open",
                                   "source": "manual", "keys": sorted(set(keys)),
                                   "nodes": sorted(set(nodes))}  # fmt: skip
        if assignee:
            details["assignee"] = assignee
        outcome = self._write(f"{incident}:opened", incident, actor, details)
        return {"id": incident, "status": "open", "seq": outcome.seq}

    def note(self, incident: str, *, actor: str, text: str, event_id: str | None = None) -> Outcome:
        self._current(incident)
        return self._write(event_id or self._event_id(incident, "note"), incident, actor, {"action": "note"}, text)

    def assign(self, incident: str, *, actor: str, assignee: str, event_id: str | None = None) -> Outcome:
        self._current(incident)
        details = {"action": "assigned", "assignee": assignee}
        return self._write(event_id or self._event_id(incident, "assigned"), incident, actor, details)

    def link(self, incident: str, *, actor: str, keys: list[str], nodes: list[str]) -> Outcome:
        self._current(incident)
        details = {"action": "linked", "keys": sorted(set(keys)), "nodes": sorted(set(nodes))}
        return self._write(self._event_id(incident, "linked"), incident, actor, details)

    def set_status(self, incident: str, *, actor: str, status: str, reason: str | None = None) -> Outcome:
        current = self._current(incident)["status"]
        allowed = sorted(q.TRANSITIONS[current])
        if status not in q.TRANSITIONS[current]:
            raise Refusal(
                409, "incident-status-conflict", "Status change not allowed",
                f"incident {incident} is {current}; it can move to {', '.join(allowed) or 'nothing (closed is final)'}"
                f", not {status}",
                incident=incident, current_status=current, requested=status, allowed=allowed,
            )  # fmt: skip
        details = {"action": "status", "status": status, "from": current}
        return self._write(self._event_id(incident, f"status-{status}"), incident, actor, details, reason)

    def _current(self, incident: str) -> dict[str, Any]:
        found = self.get(incident)
        if found["status"] == "closed":
            raise Refusal(
                409, "incident-closed", "Incident is closed",
                f"incident {incident} was closed at {found['closed_at']}; open a new one", incident=incident,
            )  # fmt: skip
        return found

    @staticmethod
    def _event_id(incident: str, action: str) -> str:
        return f"{incident}:{action}:{secrets.token_hex(8)}"

    def _write(
        self, event_id: str, incident: str, actor: str, details: dict[str, Any], reason: str | None = None,
        *, occurred_at: str | None = None, key_id: str | None = None,
    ) -> Outcome:  # fmt: skip
        fields: dict[str, Any] = {"id": event_id, "type": EventType.INCIDENT, "correlation_id": incident,
                                  "occurred_at": occurred_at or format_time(datetime.now(UTC)), "actor": actor,
                                  "origin": "command", "details": details}  # fmt: skip
        if reason:
            fields["reason"] = reason[:1024]
        if key_id is not None:
            fields["key_id"] = key_id
        (outcome,) = self.ledger.submit([Event.model_validate(fields)]).result(timeout=WAIT_SECONDS)
        if outcome.status not in ("accepted", "duplicate"):
            raise Refusal(409, "incident-not-journaled", "Not journaled", outcome.error or outcome.status, id=event_id)
        return outcome

    # ----- opened by a compromise --------------------------------------------------------------
    def on_compromise(self, entry: Entry) -> str | None:
        """Open (or link to) the incident for one journaled compromise; idempotent per entry."""
        ev = entry.event
        key_id: str | None = ev.get("key_id")
        if key_id is None:
            return None
        self.sync()
        db = self.registry._reader()
        nodes = sorted(set(self.registry.key_nodes(key_id)) | ({ev["node"]} if ev.get("node") else set()))
        corr = ev.get("correlation_id")
        if corr and corr.startswith("inc-"):
            target = q.get_incident(db, corr)
            if target is not None and target["status"] != "closed":
                details = {"action": "linked", "keys": [key_id], "nodes": nodes[:MAX_NODES], "cause_seq": entry.seq}
                self._write(f"{corr}:linked:{_hash(ev['id'])}", corr, "keylife", details,
                            f"{ev['type']} of a key cited this incident", occurred_at=ev["occurred_at"])  # fmt: skip
                return corr
        incident = derived_incident_id(ev["occurred_at"][:10], "compromise", ev["id"])
        if q.get_incident(db, incident) is not None:
            return incident  # opened before a restart
        details = {"action": "opened", "title": f"Key compromised: {key_id}"[:4096], "severity": "critical",
                   "status": "open", "source": "compromise", "keys": [key_id], "nodes": nodes[:MAX_NODES],
                   "cause_seq": entry.seq, "cause_event": ev["id"]}  # fmt: skip
        reason = f"opened automatically: journal entry {entry.seq} marks the key compromised"
        self._write(f"{incident}:opened", incident, "keylife", details, reason, occurred_at=ev["occurred_at"],
                    key_id=key_id)  # fmt: skip
        self.opened_automatically += 1
        log.warning("incident opened for a compromised key", extra={"incident": incident, "seq": entry.seq})
        return incident
