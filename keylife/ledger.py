"""The ingest writer: one thread that journals, projects and acknowledges, with group commit.

Every request (a batch of observations, one command, a system event) is queued; the writer
takes all that is waiting, decides each line (accepted, duplicate, conflicting id, refused
command) against the registry's view (its open transaction included), appends the accepted
ones to the journal and projects them into the registry, then makes the journal durable with
one fdatasync for the whole group and answers. A failure before that fsync fails every
request in the group, so a producer never sees "accepted" for something that is not on disk.

The registry transaction is committed about once a second (or on a reader's ``sync_registry``),
not per group: the journal is what must be durable, and the registry is rebuilt from it after
a crash (``catch_up``), so per-group commits would only rewrite the same pages many times.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from audit_forwarder.journal.canonical import canonical
from audit_forwarder.journal.reader import iter_entries
from audit_forwarder.journal.writer import Entry, Journal
from keylife.events import Event, EventType, event_digest, format_time
from keylife.lifecycle import is_allowed, refusal_reason
from keylife.registry import Registry

log = logging.getLogger("keylife.ledger")

Status = Literal["accepted", "duplicate", "conflict", "refused"]


@dataclass
class Outcome:
    status: Status
    id: str
    seq: int | None = None
    error: str | None = None


@dataclass
class _Request:
    events: list[Event]
    command: bool = False
    sync: bool = False  # no events: commit the registry so readers see everything acknowledged
    all_or_nothing: bool = True
    future: Future[list[Outcome]] = field(default_factory=Future)


class LedgerStopped(RuntimeError):
    """The writer is not running (shutting down, or the journal failed)."""


class Ledger:
    def __init__(
        self,
        journal: Journal,
        registry: Registry,
        *,
        max_group_events: int = 20_000,
        registry_commit_interval: float = 1.0,
        registry_commit_events: int = 50_000,
        on_commit: Callable[[list[Entry]], None] | None = None,
    ) -> None:
        self.journal = journal
        self.registry = registry
        self.max_group_events = max_group_events
        self.registry_commit_interval = registry_commit_interval
        self.registry_commit_events = registry_commit_events
        self._staged = 0  # events projected into the open registry transaction
        self._staged_since = 0.0
        self.on_commit = on_commit
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.failure: str | None = None
        self.stats = {"groups": 0, "fsyncs": 0, "accepted": 0, "duplicate": 0, "conflict": 0, "refused": 0}

    # ----- life ----------------------------------------------------------------------------
    def start(self) -> None:
        self.catch_up()
        rec = self.journal.recovery
        if rec.cut_bytes:
            self._write_now(
                [
                    self.system_event(
                        EventType.JOURNAL_RECOVERED,
                        reason=f"torn tail of {rec.cut_bytes} bytes cut at seq {rec.cut_at_seq}; kept as {rec.kept_as}",
                    )
                ]
            )
        self._thread = threading.Thread(target=self._run, name="keylife-ledger", daemon=True)
        self._thread.start()

    def catch_up(self) -> int:
        """Bring the registry up to the journal (after a crash between fsync and registry commit)."""
        start = self.registry.last_applied_seq() + 1
        if start >= self.journal.size:
            return 0
        applied = 0
        self.registry.begin()
        batch: list[Entry] = []
        for entry in iter_entries(self.journal.directory, start):
            batch.append(entry)
            if len(batch) >= 10_000:
                self.registry.apply_many(batch)
                applied += len(batch)
                batch = []
        self.registry.apply_many(batch)
        self.registry.commit()
        applied += len(batch)
        log.info("registry caught up with the journal", extra={"entries": applied, "from_seq": start})
        return applied

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._commit_registry()
        self.journal.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    # ----- submitting ----------------------------------------------------------------------
    def submit(self, events: list[Event], *, command: bool = False) -> Future[list[Outcome]]:
        """Queue events; the future resolves once they are durable (or refused, or failed)."""
        request = _Request(events, command=command)
        if not self.running:
            request.future.set_exception(LedgerStopped(self.failure or "the journal writer is not running"))
            return request.future
        self._queue.put(request)
        return request.future

    def sync_registry(self) -> Future[list[Outcome]]:
        """Resolves once every acknowledged event is visible to registry readers."""
        request = _Request([], sync=True)
        if self._staged == 0 or not self.running:
            request.future.set_result([])
        else:
            self._queue.put(request)
        return request.future

    def system_event(self, kind: EventType, **fields: Any) -> Event:
        """An event keylife writes about itself; a random id, so two alike are never merged."""
        now = format_time(datetime.now(UTC))
        return Event.model_validate(
            {"id": f"keylife-{uuid.uuid4().hex}", "type": kind, "occurred_at": now, "actor": "keylife"} | fields
        )

    # ----- the writer ----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=0.25)
            except queue.Empty:
                self._tick()
                continue
            if first is None:
                self._tick()
                return
            group = [first]
            size = len(first.events)
            while size < self.max_group_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                group.append(more)
                size += len(more.events)
            self._process(group)
            self._tick()

    def _tick(self) -> None:
        try:
            self.journal.tick()
        except OSError as exc:
            self._fail(f"checkpoint failed: {exc}")
        if self._staged and (
            self._staged >= self.registry_commit_events
            or time.monotonic() - self._staged_since >= self.registry_commit_interval
        ):
            self._commit_registry()

    def _commit_registry(self) -> None:
        """Commit the registry's open transaction: once a second under load, not per group,
        because every commit rewrites each page it touched and the registry needs no per-group
        durability (the journal has it; ``catch_up`` replays what a crash lost)."""
        if not self._staged:
            return
        try:
            self.registry.commit()
        except Exception:
            log.exception("registry commit failed; replaying from the journal")
            self._recover_registry()
        self._staged = 0

    def _recover_registry(self) -> None:
        self.registry.rollback()
        self._staged = 0
        try:
            self.catch_up()
        except Exception as exc:
            self._fail(f"registry cannot catch up with the journal: {exc}")

    def _fail(self, reason: str) -> None:
        self.failure = reason
        log.error("journal writer failed; ingest is refused until restart", extra={"reason": reason})

    def _write_now(self, events: list[Event]) -> list[Outcome]:
        request = _Request(events)
        self._process([request])
        return request.future.result()

    def _process(self, group: list[_Request]) -> None:
        """Decide, journal and fsync a group; answer it; project it (committed later, see
        ``_commit_registry``). On failure nothing of the group is acknowledged."""
        results: list[tuple[_Request, list[Outcome]]] = []
        committed: list[Entry] = []
        try:
            if not self.registry.in_transaction:
                self.registry.begin()
                self._staged_since = time.monotonic()
            for request in group:
                outcomes, entries = self._decide(request)
                results.append((request, outcomes))
                committed += entries
            self.journal.commit()
        except Exception as exc:
            self.journal.rollback()
            reason = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, OSError):
                self._fail(reason)
            log.exception("group commit failed; nothing of it was acknowledged")
            self._recover_registry()  # drop the group's projection, replay what is durable
            for request in group:
                if not request.future.done():
                    request.future.set_exception(LedgerStopped(reason))
            return
        self._staged += len(committed)
        if any(request.sync for request in group):
            self._commit_registry()
        self.stats["groups"] += 1
        self.stats["fsyncs"] += 1
        for request, outcomes in results:
            for outcome in outcomes:
                self.stats[outcome.status] += 1
            request.future.set_result(outcomes)
        if self.on_commit and committed:
            self.on_commit(committed)

    def _decide(self, request: _Request) -> tuple[list[Outcome], list[Entry]]:
        outcomes: list[Outcome] = []
        payloads: list[dict[str, Any]] = []
        digests: list[bytes] = []
        known = self.registry.seen_many([event.id for event in request.events])
        encoded: list[bytes] = []
        for event in request.events:
            payload = event.payload()
            body = canonical(payload)
            digest = event_digest(payload, body)
            seen = known.get(event.id)
            if seen is not None:
                outcomes.append(
                    Outcome("duplicate", event.id, seen[0])
                    if seen[1] == digest
                    else Outcome("conflict", event.id, seen[0], "id was already used for a different event")
                )
                continue
            if request.command:
                state = self.registry.key_state(event.key_id or "")
                if not is_allowed(state, event.type):
                    reason = refusal_reason(state, event.type)
                    outcomes.append(Outcome("refused", event.id, None, reason))
                    refusal = self._refusal(event, reason)
                    payloads.append(refusal)
                    encoded.append(canonical(refusal))
                    digests.append(event_digest(refusal, encoded[-1]))
                    continue
            known[event.id] = (-1, digest)  # a second copy in this request is a duplicate
            outcomes.append(Outcome("accepted", event.id))
            payloads.append(payload)
            encoded.append(body)
            digests.append(digest)
        if request.all_or_nothing and any(o.status == "conflict" for o in outcomes):
            for o in outcomes:
                if o.status == "accepted":
                    o.status, o.error = "refused", "not written: another line of this request conflicts"
            return outcomes, []
        entries = self.journal.append_encoded(payloads, encoded)
        self.registry.apply_many(entries, digests)
        by_id = {e.event["id"]: e.seq for e in entries}
        for o in outcomes:
            if o.status == "accepted" or (o.status == "duplicate" and o.seq == -1):
                o.seq = by_id[o.id]
        return outcomes, entries

    def _refusal(self, event: Event, reason: str) -> dict[str, Any]:
        refusal = self.system_event(
            EventType.COMMAND_REFUSED,
            key_id=event.key_id,
            actor=event.actor,
            reason=f"{event.type} refused: {reason}",
            correlation_id=event.id,
            attributes={"command": str(event.type)},
        )
        return refusal.payload()
