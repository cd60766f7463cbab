"""The ingest writer: one thread that journals, projects and acknowledges, with group commit.

Every request (a batch of observations, one command, a system event) is queued; the writer
takes all that is waiting, decides each line (accepted, duplicate, conflicting id, refused
command) against the registry's view (its open transaction included), appends the accepted
ones to the journal and projects them into the registry, then makes the journal durable with
one fdatasync for the whole group and answers. A failure before that fsync fails every
request in the group, so a producer never sees "accepted" for something that is not on disk.

An I/O failure (a full disk, too many open files, an I/O error) makes the writer *degraded*:
ingest is answered 503 with the cause, and the writer retries on its own with backoff
(``Journal.recover``: re-check the tail from the disk, probe a write + fsync, catch up the
registry) and serves again once that succeeds. Only a journal that no longer matches its own
chain, or a registry that cannot project it, stops the writer until restart. A request that
fails on its own (an event that cannot be encoded or projected) fails alone: the rest of its
group is journaled and acknowledged.

The registry transaction is committed about once a second (or on a reader's ``sync_registry``),
not per group: the journal is what must be durable, and the registry is rebuilt from it after
a crash (``catch_up``), so per-group commits would only rewrite the same pages many times.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from keylife.common.canonical import canonical
from keylife.domain.events import Event, EventType, event_digest, format_time
from keylife.domain.lifecycle import command_allowed, command_refusal
from keylife.journal.reader import iter_entries, pruned_upto
from keylife.journal.writer import Entry, Journal, JournalCorrupt, cause_name, format_observed
from keylife.registry.projection import Registry, RegistryError

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
    task: Callable[[], Any] | None = None  # run alone on the writer thread (``run_exclusive``)


class LedgerStopped(RuntimeError):
    """The writer is not running (shutting down, degraded by an I/O failure, or failed)."""


class EventRejected(ValueError):
    """This request cannot be journaled (an event that cannot be encoded or projected); the
    other requests of its group are not affected."""


RETRY_FIRST = 0.2  # seconds before the first recovery attempt; doubles up to RETRY_MAX
RETRY_MAX = 2.0
IDLE_UPKEEP = 0.002  # seconds without a request before the writer does its upkeep (see Ledger._run)
UPKEEP_MAX_DELAY = 0.25  # seconds: upkeep runs at least this often under continuous load
_SQLITE_CAUSES = {"SQLITE_FULL": "ENOSPC", "SQLITE_IOERR": "EIO", "SQLITE_CANTOPEN": "ECANTOPEN"}


@dataclass
class Degraded:
    """Why the writer refuses events for now: the step that failed first, the errno name of the
    latest failure (a retry may fail otherwise), its message, and since when."""

    operation: str
    cause: str
    detail: str
    since: float
    first_cause: str = ""

    def describe(self) -> str:
        return (
            f"journal writer degraded: {self.cause} on {self.operation} since {format_observed(self.since)}; "
            f"retrying ({self.detail})"
        )


def _cause(exc: BaseException) -> str:
    """The errno name of a failure; SQLite's full-disk and I/O errors are named like the OS's."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", "") or type(exc).__name__
        if name.startswith("SQLITE_IOERR"):
            return "EIO"
        return "ENOSPC" if name == "SQLITE_FULL" else name
    return cause_name(exc)


class _RequestFailed(Exception):
    """Internal: request ``index`` of a group raised while being decided."""

    def __init__(self, index: int, error: EventRejected) -> None:
        super().__init__(str(error))
        self.index, self.error = index, error


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
        self.failure: str | None = None  # fatal: until restart
        self.degraded: Degraded | None = None  # transient: retried with backoff
        self._retry_at = 0.0
        self._backoff = RETRY_FIRST
        self._registry_dirty = False  # the registry must catch up with the journal before serving
        self.registry_failures: dict[tuple[str, str], int] = {}  # ("registry", cause) -> count
        self.stats = {"groups": 0, "fsyncs": 0, "accepted": 0, "duplicate": 0, "conflict": 0, "refused": 0}

    # ----- life ----------------------------------------------------------------------------
    def start(self) -> None:
        self.catch_up()
        rec = self.journal.recovery
        if self.journal.integrity_fault is not None:
            self.fail_integrity(self.journal.integrity_fault)  # read-only: not even a recovery note
        elif rec.cut_bytes:
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
        """Bring the registry up to the journal (after a crash between fsync and registry commit),
        and its deferred extensions up to the registry (their state is written every few seconds)."""
        start = self.registry.last_applied_seq() + 1
        end = self.journal.committed_size  # never beyond: bytes past it may be a failed, unacknowledged write
        first = min(start, self.registry.deferred_from())
        if first >= end:
            return 0
        pruned = pruned_upto(self.journal.directory)
        if start < pruned:
            raise RegistryError(
                f"the registry stops before seq {start}, but entries {start}..{pruned - 1} were pruned from the "
                "journal (keylife journal prune): it cannot catch up; restore the registry kept with the journal"
            )
        start = max(first, pruned)  # a deferred extension behind a pruned journal goes on from what is left
        applied = 0
        self.registry.begin()
        batch: list[Entry] = []
        for entry in iter_entries(self.journal.directory, start):
            if entry.seq >= end:
                break
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
    def alive(self) -> bool:
        """The writer thread runs and has not failed for good (it may be degraded)."""
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    @property
    def running(self) -> bool:
        """The writer accepts events now: alive and not degraded."""
        return self.alive and self.degraded is None

    @property
    def problem(self) -> str | None:
        """Why events are refused now (for /readyz and 503s), or None while they are accepted."""
        if self.failure is not None:
            return self.failure
        state = self.degraded  # read once: the writer thread may clear it meanwhile
        if state is not None:
            return state.describe()
        return None if self.alive else "the journal writer is not running"

    # ----- submitting ----------------------------------------------------------------------
    def submit(self, events: list[Event], *, command: bool = False) -> Future[list[Outcome]]:
        """Queue events; the future resolves once they are durable (or refused, or failed)."""
        request = _Request(events, command=command)
        if not self.running:
            request.future.set_exception(LedgerStopped(self.problem or "the journal writer is not running"))
            return request.future
        self._queue.put(request)
        return request.future

    def run_exclusive(self, task: Callable[[], Any]) -> Future[Any]:
        """Run ``task`` on the writer thread between two groups (nothing else appends or signs
        meanwhile), then project what it journaled; the future holds its result or exception.
        A signing-key rotation goes through here on a running serve."""
        request = _Request([], task=task)
        if not self.running:
            request.future.set_exception(LedgerStopped(self.problem or "the journal writer is not running"))
            return request.future
        self._queue.put(request)
        return request.future

    def _run_task(self, request: _Request) -> None:
        if not self.running:
            request.future.set_exception(LedgerStopped(self.problem or "the journal writer is not running"))
            return
        try:
            self._commit_registry()
            result = request.task() if request.task is not None else None
        except BaseException as exc:  # answered to the caller; the writer thread goes on
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)
        if self.registry.last_applied_seq() + 1 < self.journal.committed_size:
            self._replay_registry()  # project the entries the task journaled

    def sync_registry(self) -> Future[list[Outcome]]:
        """Resolves once every acknowledged event is visible to registry readers."""
        request = _Request([], sync=True)
        if self._staged == 0 or not self.alive:
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
        """Answer groups first, maintain when idle.

        After a group is answered, the event loop still has to send the answers, and it needs
        the GIL (and, on a busy host, the core) to do so. So the writer's own upkeep (the
        registry commit of about 5 ms once a second at 1,000 events/s, starting a checkpoint)
        waits until no request has come for ``IDLE_UPKEEP`` seconds, and at most
        ``UPKEEP_MAX_DELAY`` under continuous load (``bench/ack_keepalive``).
        """
        self._upkeep_due, self._last_upkeep = False, time.monotonic()
        while True:
            try:
                first = self._queue.get(timeout=IDLE_UPKEEP if self._upkeep_due else 0.25)
            except queue.Empty:
                self._tick()
                continue
            if first is None:
                self._tick()
                return
            if first.task is not None:
                self._run_task(first)
                self._tick()
                continue
            group = [first]
            size = len(first.events)
            task = None
            while size < self.max_group_events:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                if more.task is not None:
                    task = more  # after this group, alone
                    break
                group.append(more)
                size += len(more.events)
            if self.running:
                self._process(group)
            else:
                self._refuse(group)
            if task is not None:
                self._run_task(task)
                self._tick()
            elif time.monotonic() - self._last_upkeep >= UPKEEP_MAX_DELAY:
                self._tick()
            else:
                self._upkeep_due = True

    def _tick(self) -> None:
        self._upkeep_due, self._last_upkeep = False, time.monotonic()
        if self.failure is None:
            if self.degraded is not None:
                self._try_recover()
            else:
                try:
                    self.journal.tick(wait=False)  # a due checkpoint is signed off this thread
                except OSError as exc:
                    self._degrade(getattr(exc, "operation", "checkpoint"), exc)
                else:
                    self._check_journal()
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
        except (OSError, sqlite3.OperationalError) as exc:
            self._staged = 0
            self._registry_failed(exc)
            return
        except Exception:
            log.exception("registry commit failed; replaying from the journal")
            self._recover_registry()
        self._staged = 0

    def _recover_registry(self) -> None:
        """Drop the registry's open transaction and replay what is durable in the journal."""
        error = self._replay_registry()
        if error is not None:
            self._degrade("registry", error)

    def _replay_registry(self) -> BaseException | None:
        """Roll back and catch up; returns a transient error (then ``_registry_dirty`` stays set
        and recovery replays again), or None. Anything else stops the writer."""
        try:
            self.registry.rollback()
            self._staged = 0
            self.catch_up()
        except (OSError, sqlite3.OperationalError) as exc:
            self._registry_dirty = True
            key = ("registry", _cause(exc))
            self.registry_failures[key] = self.registry_failures.get(key, 0) + 1
            return exc
        except Exception as exc:
            self._fail(f"registry cannot catch up with the journal: {exc}")
            return None
        self._registry_dirty = False
        return None

    def _registry_failed(self, exc: BaseException) -> None:
        """A transient registry failure (a full disk, EMFILE): count it and replay from the journal;
        degraded (and replayed again by recovery) if that fails too."""
        key = ("registry", _cause(exc))
        self.registry_failures[key] = self.registry_failures.get(key, 0) + 1
        self._recover_registry()

    def fail_integrity(self, reason: str) -> None:
        """The journal does not match its signed checkpoints: refuse every write until restart and
        let the journal sign nothing, so the evidence stays as found (any thread may call this)."""
        self.journal.mark_faulty(reason)
        if self.failure is None:
            self.failure = f"journal integrity fault, serving read-only: {reason}"
            log.error(
                f"journal integrity fault: {reason}; serving read-only (no writes, no checkpoints) until restart",
                extra={"reason": reason},
            )

    def _fail(self, reason: str) -> None:
        self.failure = reason
        log.error("journal writer failed; ingest is refused until restart", extra={"reason": reason})

    # ----- degraded: refuse, retry, recover ------------------------------------------------
    def _degrade(self, operation: str, exc: BaseException) -> None:
        """Enter (or stay in) the degraded state; one log line per entry into it, none per retry."""
        cause = _cause(exc)
        detail = getattr(exc, "strerror", None) or str(exc)
        if self.degraded is None:
            self.degraded = Degraded(operation, cause, str(detail), time.time(), cause)
            self._backoff = RETRY_FIRST
            log.warning(
                f"journal writer degraded: {cause} on {operation}; ingest is refused (503) while it retries",
                extra={"cause": cause, "operation": operation, "reason": str(exc)},
            )
        else:
            self.degraded.cause, self.degraded.detail = cause, str(detail)  # the first step stays named
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, RETRY_MAX)

    def _check_journal(self) -> None:
        """A commit that succeeded may still leave the journal needing recovery (its .sums hint)."""
        if self.journal.needs_recovery and self.degraded is None:
            self._degrade("sums", self.journal.last_io_error or OSError("the .sums hint could not be written"))

    def _try_recover(self) -> None:
        if time.monotonic() < self._retry_at or self.degraded is None:
            return
        try:
            self.journal.recover()
            self.journal.tick()  # a due checkpoint or roll must succeed too
        except JournalCorrupt as exc:
            self._fail(f"journal does not match its chain after an I/O failure: {exc}")
            return
        except OSError as exc:
            self._degrade(getattr(exc, "operation", "probe"), exc)
            return
        if self._registry_dirty:
            error = self._replay_registry()
            if error is not None:
                self._degrade("registry", error)
            if self._registry_dirty or self.failure is not None:
                return
        was, self.degraded = self.degraded, None
        self._backoff = RETRY_FIRST
        log.warning(
            f"journal writer recovered from {was.first_cause} on {was.operation} after "
            f"{time.time() - was.since:.1f} s; ingest is accepted again",
            extra={
                "cause": was.first_cause,
                "operation": was.operation,
                "degraded_seconds": round(time.time() - was.since, 3),
            },
        )

    def _refuse(self, group: list[_Request]) -> None:
        """While degraded or failed: answer every request at once (503), keep readers served."""
        reason = self.problem or "the journal writer is not running"
        for request in group:
            if request.sync:
                if not self._registry_dirty:
                    self._commit_registry()
                request.future.set_result([])
            elif not request.future.done():
                request.future.set_exception(LedgerStopped(reason))

    def _write_now(self, events: list[Event]) -> list[Outcome]:
        request = _Request(events)
        self._process([request])
        return request.future.result()

    def _process(self, group: list[_Request]) -> None:
        """Decide, journal and fsync a group; answer it; project it (committed later, see
        ``_commit_registry``). On an I/O failure nothing of the group is acknowledged; a request
        that fails on its own is answered alone and the group is decided again without it."""
        retried = False
        while True:
            try:
                results, committed = self._stage(group)
                self.journal.commit(maintain=False)  # checkpoints and rolls wait for tick: after the answers
            except _RequestFailed as bad:
                self.journal.rollback()
                self._recover_registry()  # drop what the group staged, replay what is durable
                request = group.pop(bad.index)
                log.error("request not journaled: %s", bad.error, extra={"reason": str(bad.error)})
                request.future.set_exception(bad.error)
                if self.running:
                    continue
                self._refuse(group)
                return
            except (OSError, sqlite3.OperationalError) as exc:
                self.journal.rollback()
                if isinstance(exc, OSError):
                    self._degrade(getattr(exc, "operation", "write"), exc)
                    self._replay_registry()  # now, so readers keep seeing what was acknowledged
                else:
                    self._registry_failed(exc)
                    if self.running and not retried:  # replayed fine: decide the group once more
                        retried = True
                        continue
                self._refuse(group)
                return
            except Exception as exc:
                self.journal.rollback()
                reason = f"{type(exc).__name__}: {exc}"
                log.exception("group commit failed; nothing of it was acknowledged")
                self._recover_registry()
                for request in group:
                    if not request.future.done():
                        request.future.set_exception(LedgerStopped(reason))
                return
            break
        self._staged += len(committed)
        if any(request.sync for request in group):
            self._commit_registry()
        self.stats["groups"] += 1
        self.stats["fsyncs"] += 1
        for request, outcomes in results:
            for outcome in outcomes:
                self.stats[outcome.status] += 1
            request.future.set_result(outcomes)
        self._check_journal()
        if self.on_commit and committed:
            self.on_commit(committed)

    def _stage(self, group: list[_Request]) -> tuple[list[tuple[_Request, list[Outcome]]], list[Entry]]:
        """Decide every request into the journal's staging and the registry's transaction."""
        if not self.registry.in_transaction:
            self.registry.begin()
            self._staged_since = time.monotonic()
        results: list[tuple[_Request, list[Outcome]]] = []
        committed: list[Entry] = []
        for index, request in enumerate(group):
            try:
                outcomes, entries = self._decide(request)
            except (OSError, sqlite3.OperationalError):
                raise  # the disk or the registry, not this request
            except EventRejected as exc:
                raise _RequestFailed(index, exc) from exc
            except Exception as exc:
                error = EventRejected(f"the request cannot be journaled: {type(exc).__name__}: {exc}")
                raise _RequestFailed(index, error) from exc
            results.append((request, outcomes))
            committed += entries
        return results, committed

    def _decide(self, request: _Request) -> tuple[list[Outcome], list[Entry]]:
        outcomes: list[Outcome] = []
        payloads: list[dict[str, Any]] = []
        digests: list[bytes] = []
        known = self.registry.seen_many([event.id for event in request.events])
        encoded: list[bytes] = []
        for event in request.events:
            try:
                payload = event.payload()
                body = canonical(payload)
                digest = event_digest(payload, body)
            except (ValueError, TypeError, OverflowError) as exc:
                raise EventRejected(f"event {event.id!r} cannot be encoded: {type(exc).__name__}: {exc}") from exc
            seen = known.get(event.id)
            if seen is not None:
                outcomes.append(
                    Outcome("duplicate", event.id, seen[0])
                    if seen[1] == digest
                    else Outcome("conflict", event.id, seen[0], "id was already used for a different event")
                )
                continue
            if request.command:
                key_id = event.key_id or ""
                state = self.registry.key_state(key_id)
                exists = state is not None or self.registry.key_exists(key_id)
                if not command_allowed(state, exists, event.type):
                    reason = command_refusal(state, exists, event.type)
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
